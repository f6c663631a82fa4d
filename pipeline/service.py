"""`JobService`: starts, watches, cancels and resumes jobs for the REST service, outside the request path.

Each job runs as a detached `stepwise run` process (`python -m stepwise run <spec> --corpus <corpus> --quiet`,
in its own session), so it outlives the API process that started it and a crash of one never takes the other
down. Next to the job's registry row (`storage/jobs.py`) the service keeps three small local files in its state
folder (`<corpus>/jobs/` for a local corpus):

    <job_id>.spec.json   the submitted spec (it holds no secrets: keys are named by environment variable)
    <job_id>.pid         the id of the process running it now
    <job_id>.log         that process's stdout and stderr, appended on each resume

The durable truth stays the registry row and the part files: a row that says `running` while its process is
gone (the machine or the process died) is reported as `interrupted`, and resuming starts the same command
again, which skips finished shards. This lives in `pipeline/` because it is job orchestration, not HTTP; the
API only calls it (and so never imports ray or vllm, nor runs a job itself).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from stepwise.pipeline.errors import JobConflictError, JobNotFoundError, JobStateError, StorageError
from stepwise.pipeline.run.heartbeat import Heartbeat, read_heartbeat
from stepwise.pipeline.spec import JobSpec, check_files, parse_job
from stepwise.pipeline.types import JobStatus
from stepwise.storage import layout
from stepwise.storage.jobs import JobRegistry, JobState, check_job_id
from stepwise.storage.location import CorpusLocation

if TYPE_CHECKING:
    from stepwise.pipeline.admission import Admission
    from stepwise.pipeline.run.summary import JobSummary

# statuses a job can be resumed from: everything but running (and starting) or completed
RESUMABLE = frozenset({JobStatus.CANCELLED, JobStatus.FAILED, JobStatus.BUDGET_EXHAUSTED, JobStatus.INTERRUPTED})
# environment variables a job process must not inherit from the API process
_PRIVATE_ENV = ("STEPWISE_API_TOKEN",)


@dataclass(frozen=True)
class JobView:
    """A registry row as the service reports it: the status corrected by whether its process lives, counters
    read from the part files while it runs, the reject reasons, and the job's heartbeat (rate, ETA, last errors)
    when it has one."""

    state: JobState
    alive: bool
    reject_reasons: dict[str, int] = field(default_factory=dict)
    teacher_accuracy: float | None = None
    heartbeat: Heartbeat | None = None


class JobService:
    """The runner object of the REST service. Thread-safe: handlers run in a thread pool."""

    EXIT_GRACE_S = 10.0  # how long a resume waits for a stopped job's process to exit

    def __init__(self, corpus: str | Path | CorpusLocation, state_dir: str | Path | None = None, *,
                 admission: Admission | None = None):
        """`admission` holds submitted jobs to the REST rules (data roots, teacher profiles) and confines the
        job processes to the data roots; None (a library user's own jobs) admits every job as it is."""
        self.corpus = CorpusLocation.of(corpus)
        self.admission = admission
        if state_dir is None:
            if self.corpus.local is None:
                raise StorageError(f"the corpus {self.corpus} is on an object store: give the service a local "
                                   f"state folder for its spec, pid and log files")
            state_dir = self.corpus.local / layout.JOBS
        self.state_dir = Path(state_dir).absolute()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.registry = JobRegistry(self.corpus)
        self._children: dict[str, subprocess.Popen] = {}  # processes this API process started (to reap them)
        self._lock = threading.Lock()
        # job id -> (registry row time, the part files summed, their summary); see _summary
        self._summaries: dict[str, tuple[datetime | None, frozenset[str], JobSummary]] = {}
        self._summary_locks: dict[str, threading.Lock] = {}

    # ── files ──────────────────────────────────────────────────────────────────────────────────────────────

    def spec_path(self, job_id: str) -> Path:
        return layout.service_file(self.state_dir, check_job_id(job_id), "spec.json")

    def _pid_path(self, job_id: str) -> Path:
        return layout.service_file(self.state_dir, check_job_id(job_id), "pid")

    def log_path(self, job_id: str) -> Path:
        return layout.service_file(self.state_dir, check_job_id(job_id), "log")

    # ── actions ────────────────────────────────────────────────────────────────────────────────────────────

    def submit(self, spec: JobSpec) -> str:
        """Admit the spec, write it and start the job; 409 (JobConflictError) when the id is taken."""
        if self.admission is not None:
            spec = self.admission.admit(spec)
        # once more through parse_job: the default job id (`job-` and a hash of the spec); without admission,
        # relative paths are read from this process's folder
        spec = parse_job(spec.model_dump(mode="json"), source="request body", base_dir=Path.cwd(),
                         default_job_id="job")
        check_files(spec)  # after admission: only files inside the data roots are looked at
        job_id = spec.job_id
        with self._lock:
            if self.registry.get(job_id) is not None:
                raise JobConflictError(f"job {job_id!r} already exists; resume it with POST /v1/jobs/{job_id}/resume "
                                       f"or submit with another job_id")
            try:  # O_EXCL: of two submissions of one id, exactly one wins
                fd = os.open(self.spec_path(job_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                raise JobConflictError(f"job {job_id!r} was submitted already") from None
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(spec.model_dump_json(indent=2))
            self._start(job_id)
        return job_id

    def resume(self, job_id: str) -> None:
        """Start a stopped job again; finished shards are skipped."""
        with self._lock:
            view = self.get(job_id)
            if view.alive and view.state.status in RESUMABLE:
                # the row says stopped while its process still writes the summary and exits: give it a moment
                self._wait_exit(job_id, self.EXIT_GRACE_S)
                view = self.get(job_id)
            if view.alive:
                raise JobStateError(f"job {job_id!r} is {view.state.status}; its process is still running")
            if view.state.status not in RESUMABLE:
                raise JobStateError(f"job {job_id!r} is {view.state.status}; only {', '.join(sorted(RESUMABLE))} "
                                    f"jobs can be resumed")
            path = self.spec_path(job_id)
            if not path.exists():  # a job started by `stepwise run`: its row holds the validated spec
                path.write_text(view.state.spec_json, encoding="utf-8")
            self._start(job_id)

    def cancel(self, job_id: str) -> None:
        """Ask a running job to stop; its workers stop within a second or so and finished shards are kept."""
        view = self.get(job_id)
        if view.state.status != JobStatus.RUNNING or not view.alive:
            raise JobStateError(f"job {job_id!r} is {view.state.status}; only running jobs can be cancelled")
        self.registry.request_cancel(job_id)

    def _wait_exit(self, job_id: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.alive(job_id) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _start(self, job_id: str) -> None:
        cmd = [sys.executable, "-m", "stepwise", "run", str(self.spec_path(job_id)),
               "--corpus", self.corpus.address, "--quiet"]
        if self.admission is not None:  # the job process checks its files against the data roots again
            cmd += [arg for root in self.admission.roots.roots for arg in ("--data-dir", str(root))]
        env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
        env.setdefault("COLUMNS", "200")  # the log is a file: rich would wrap error messages at 80 columns
        with self.log_path(job_id).open("ab") as log:
            log.write(f"--- {datetime.now(UTC).isoformat()} {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    cwd=self.state_dir, start_new_session=True)  # outlives the API process
        self._children[job_id] = proc
        tmp = self._pid_path(job_id).with_suffix(".pid.tmp")
        tmp.write_text(str(proc.pid))
        tmp.replace(self._pid_path(job_id))

    # ── reads ──────────────────────────────────────────────────────────────────────────────────────────────

    def alive(self, job_id: str) -> bool:
        """Whether the process last started for this job still runs."""
        child = self._children.get(job_id)
        if child is not None:
            return child.poll() is None  # our own child: poll() also reaps it (a zombie still answers kill 0)
        try:
            pid = int(self._pid_path(job_id).read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.parent.exists():  # guard against a reused pid where /proc tells us the command
            try:
                return str(self.spec_path(job_id)).encode() in cmdline.read_bytes()
            except OSError:
                return False
        return True

    def get(self, job_id: str) -> JobView:
        state = self.registry.get(job_id)
        alive = self.alive(job_id)
        if state is None:
            path = self.spec_path(job_id)
            if not path.exists():
                raise JobNotFoundError(f"no job {job_id!r}")
            # submitted, but the process has not written its registry row yet (or died before it could)
            created = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            state = JobState(job_id=job_id, status=JobStatus.STARTING if alive else JobStatus.FAILED, fingerprint="",
                             spec_json=path.read_text(encoding="utf-8"), created_at=created, updated_at=created)
            if not alive:
                state = replace(state, error=self._log_tail(job_id))
            return JobView(state, alive)
        summary, n_parts = self._summary(state)
        if state.status == JobStatus.RUNNING:
            if not alive:
                state = replace(state, status=JobStatus.INTERRUPTED,
                                error=state.error or "the job's process is gone; resume it to continue")
            else:  # the row holds the counters of the start; the part files hold the truth
                state = replace(state, shards_done=n_parts, n_records=summary.n_records,
                                n_accepted=summary.n_accepted, n_rejected=summary.n_rejected,
                                tokens_in=summary.tokens_in, tokens_out=summary.tokens_out,
                                cost_usd=summary.cost_usd)
        accuracy = summary.n_correct / summary.n_with_gold if summary.n_with_gold else None
        return JobView(state, alive, summary.reject_reasons, accuracy, read_heartbeat(self.corpus, job_id))

    def list(self) -> list[JobView]:
        """Every job: registry rows and submitted specs, newest first."""
        ids = set(self.registry.ids())
        ids |= {p.name.removesuffix(".spec.json") for p in self.state_dir.glob("*.spec.json")}
        views = []
        for job_id in ids:
            try:
                views.append(self.get(job_id))
            except (JobNotFoundError, StorageError):
                continue  # removed meanwhile, or an unreadable name: not a job
        views.sort(key=lambda v: (v.state.created_at, v.state.job_id), reverse=True)
        return views

    def _summary(self, state: JobState) -> tuple[JobSummary, int]:
        """The job's counters from its part files, and how many shards are done. A part file is replaced only by
        a run that retries its marked shard, so outside a running job's marked shards each file is read once: a
        new file adds its own summary, and a rewritten registry row (a new run, an --overwrite) starts again."""
        from stepwise.pipeline.run.summary import merge_summaries, summarize_files

        files = self.corpus.list_files(layout.RECORDS, state.job_id)
        marked = {m.removesuffix(layout.RETRY_SUFFIX) + layout.PART_SUFFIX
                  for m in self.corpus.list_files(layout.RECORDS, state.job_id, suffix=layout.RETRY_SUFFIX)}
        marked &= set(files)
        volatile = marked if state.status == JobStatus.RUNNING else set()  # may be rewritten while we look
        stable = [f for f in files if f not in volatile]
        with self._summary_locks.setdefault(state.job_id, threading.Lock()):  # one reader per job, not forty
            since, known, total = self._summaries.get(state.job_id, (None, frozenset(), None))
            if since != state.updated_at or not known <= set(stable):
                known, total = frozenset(), merge_summaries(state.job_id, ())
            new = [f for f in stable if f not in known]
            if new:
                total = merge_summaries(state.job_id, (total, summarize_files(self.corpus, state.job_id, new)))
                known = known | set(new)
            self._summaries[state.job_id] = (state.updated_at, known, total)
        if volatile:
            total = merge_summaries(state.job_id, (total, summarize_files(self.corpus, state.job_id,
                                                                          sorted(volatile))))
        return total, len(files) - len(marked)

    def _log_tail(self, job_id: str, chars: int = 2000) -> str | None:
        try:
            text = self.log_path(job_id).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        return text[-chars:].strip() or None
