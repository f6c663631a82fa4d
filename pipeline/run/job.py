"""`run_job`: run (or resume) a job to the end. Read the examples, cut them into deterministic shards, let the
executor run the shards not done yet (`run/shard.py`), then write the job's status and counters.

A job's status is decided here and only here: `completed`; `budget_exhausted` when the cost cap stopped it;
`cancelled` on request; `failed` when its teacher kept failing past `max_error_rate`, or when requests failed after
their retries and a rerun must retry them, or on any other error (re-raised).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from stepwise.pipeline.errors import BudgetExhaustedError, JobCancelledError, JobConflictError, TeacherFailingError
from stepwise.pipeline.datasets import count_rows, read_shards
from stepwise.pipeline.run.context import SAMPLE_ROWS, Item, first_items, prepare_context, prepared
from stepwise.pipeline.run.executors import get_executor
from stepwise.pipeline.run.heartbeat import HeartbeatWriter
from stepwise.pipeline.run.shard import Progress, ShardResult, done_shards
from stepwise.pipeline.run.summary import JobSummary, summarize
from stepwise.pipeline.spec import JobSpec, check_files
from stepwise.pipeline.teachers import TeacherBackend
from stepwise.pipeline.types import JobStatus, RejectReason
from stepwise.prompts import PromptTemplate
from stepwise.storage import layout
from stepwise.storage.id_index import IdIndex
from stepwise.storage.jobs import JobRegistry, JobState
from stepwise.storage.location import CorpusLocation

# how a run that stopped early ends: the status it gets (its message is the exception's)
STOPPED = ((BudgetExhaustedError, JobStatus.BUDGET_EXHAUSTED), (TeacherFailingError, JobStatus.FAILED),
           (JobCancelledError, JobStatus.CANCELLED))


def run_job(spec: JobSpec, root: str | Path | CorpusLocation, *, items: Sequence[Item] | None = None,
            backend: TeacherBackend | None = None, prompt: PromptTemplate | None = None,
            overwrite: bool = False, progress: Progress | None = None) -> JobSummary:
    """Run (or resume) a job to the end and return its summary (see the module docstring for its status).

    The dataset is streamed a shard at a time (memory holds the shards in flight, never the dataset); `items`, when
    given (an importer, a test), are the rows instead."""
    if getattr(spec.teacher, "profile", None) is not None:
        from stepwise.pipeline.admission import resolve_profile

        spec = resolve_profile(spec)  # teacher.profile: the fields of the profile STEPWISE_TEACHERS declares
    # the files the job names, then its field mapping (first_items, prepare_context): job-file errors, raised
    # before anything is written or removed
    check_files(spec, dataset=items is None, prompt=prompt is None, teacher=backend is None)
    corpus = CorpusLocation.of(root)
    job_id = spec.job_id
    assert job_id, "parse_job gives every spec a job id"
    registry = JobRegistry(corpus)
    previous = registry.get(job_id)
    fingerprint = spec.fingerprint()
    if previous is not None and previous.fingerprint != fingerprint and not overwrite:
        raise JobConflictError(f"job {job_id!r} already exists in {corpus} with a different spec; "
                               f"use another job_id, or --overwrite to replace its records")
    sample = first_items(spec) if items is None else iter(items[:SAMPLE_ROWS])
    executor = get_executor(spec.executor)
    owns_backend = backend is None
    try:
        ctx = prepare_context(spec, sample, backend=backend, prompt=prompt, corpus=corpus.address)
    finally:
        if items is None:
            sample.close()  # read only as far as the task and its gold check needed
    status, message = JobStatus.COMPLETED, None
    ids = None
    try:
        if overwrite:
            corpus.remove_folder(layout.RECORDS, job_id)
            previous = None
        size = spec.shard_size
        n_rows, n_shards = None, 0  # counted once the first shard is out; 0 shards: not known before the end
        now = datetime.now(UTC)
        state = JobState(
            job_id=job_id, status=JobStatus.RUNNING, fingerprint=fingerprint, spec_json=spec.model_dump_json(),
            task=ctx.task.kind, prompt_id=ctx.prompt.id, prompt_hash=ctx.prompt.hash,
            teacher_backend=ctx.backend.backend, teacher_model=ctx.backend.model,
            created_at=previous.created_at if previous else now, updated_at=now,
        )
        registry.clear_cancel(job_id)
        corpus.remove_stale_temp_files(layout.RECORDS, job_id)
        finished = done_shards(corpus, job_id)
        if items is None:
            ids = IdIndex(layout.id_index(corpus.address, job_id), signature=_signature(spec, overwrite))
            # the index is closed (its WAL checkpointed) once the dataset is read, while the last shards are still
            # out, not after their last answer
            rows = _then(read_shards(spec.dataset, size, finished, ids), ids.close)
        else:
            rows = ((i // size, list(items[i:i + size])) for i in range(0, len(items), size)
                    if i // size not in finished)
        # the heartbeat file (live rate, ETA, last errors for the REST service) sees every event first
        kept = _Kept(progress)  # the counters of the shards this run writes: their footers are not read again
        with HeartbeatWriter(corpus, job_id, inner=kept) as beat:
            per_example = spec.sampling.stop_after_accepted or spec.sampling.n  # the fewest asked for
            per_request = ctx.backend.backend != "replay" and spec.executor.kind == "local"

            def started() -> None:
                """Once the first shard is out (its requests do not wait for this): the dataset's size, the
                progress display (its totals, and the shards skipped), and the registry row that marks the job
                running."""
                nonlocal n_rows, n_shards, state
                n_rows = count_rows(spec.dataset) if items is None else len(items)
                n_shards = max(1, -(-n_rows // size)) if n_rows is not None else 0
                skipped = len(finished & set(range(n_shards))) if n_shards else len(finished)
                beat.start(max(0, (n_rows or 0) - skipped * size) * per_example, n_shards, per_request)
                for i in sorted(finished):
                    beat.shard_done(ShardResult(i, skipped=True))
                state = replace(state, n_shards=n_shards, n_examples=n_rows or 0)
                registry.save(state)

            shards = _Shards(ctx, rows, started=started)
            if per_request:
                ctx.backend.events = beat.completion
            gc.freeze()  # what lives for the whole run (imports, the context) is never walked again by the collector
            try:
                executor.run(ctx, iter(shards), corpus, beat, lambda: registry.cancel_requested(job_id))
            except tuple(kind for kind, _ in STOPPED) as exc:
                status = next(s for kind, s in STOPPED if isinstance(exc, kind))
                message = str(exc)
            except BaseException as exc:
                status = JobStatus.CANCELLED if isinstance(exc, KeyboardInterrupt) else JobStatus.FAILED
                registry.save(replace(state, status=status, error=f"{type(exc).__name__}: {exc}"[:2000]))
                raise
            finally:
                gc.unfreeze()
    finally:
        if owns_backend:
            ctx.backend.close()
        if ids is not None:
            ids.close()
    registry.clear_cancel(job_id)
    summary = summarize(corpus, job_id, kept.summaries)
    unavailable = summary.reject_reasons.get(RejectReason.TEACHER_UNAVAILABLE, 0)
    if status == JobStatus.COMPLETED and unavailable:  # the work failed in part: never `completed`, exit 0
        where = getattr(spec.teacher, "base_url", None) or f"the {spec.teacher.backend} backend"
        status, message = JobStatus.FAILED, (f"{unavailable:,} requests to the teacher at {where} failed after "
                                             f"their retries (teacher_unavailable records); run the job again to "
                                             f"retry exactly those")
    summary.status, summary.message, summary.teacher = status, message, executor.counters
    if spec.sampling.stop_after_accepted:
        summary.count_saved(spec.sampling.n)
    finished_now = done_shards(corpus, job_id)
    n_shards = max(n_shards, shards.last + 1, max(finished_now, default=-1) + 1)
    summary.shards_run = len(shards.started & finished_now)
    summary.shards_skipped = len(finished & set(range(n_shards)))
    registry.save(replace(
        state, status=status, shards_done=len(finished_now & set(range(n_shards))), n_shards=n_shards,
        n_examples=max(n_rows or 0, summary.n_examples), n_records=summary.n_records,
        n_accepted=summary.n_accepted, n_rejected=summary.n_rejected, tokens_in=summary.tokens_in,
        tokens_out=summary.tokens_out, cost_usd=summary.cost_usd, error=message,
    ))
    return summary


def _then(items: Iterator, done: Callable[[], object]) -> Iterator:
    """`items`, then `done()` once they are all out."""
    yield from items
    done()


class _Shards:
    """The shards to run, completed by the task as they are read; remembers which it handed out, and calls
    `started` once the executor has taken the first (when it asks for the next one, or there is none)."""

    def __init__(self, ctx, rows: Iterator[tuple[int, list[Item]]], started: Callable[[], object]):
        self.ctx, self.rows, self.on_started = ctx, rows, started
        self.started: set[int] = set()
        self.last = -1

    def __iter__(self) -> Iterator[tuple[int, list[Item]]]:
        first = True
        for index, items in self.rows:
            self.started.add(index)
            self.last = max(self.last, index)
            yield index, prepared(self.ctx, items)
            if first:
                first = False
                self.on_started()
        if first:
            self.on_started()


class _Kept:
    """A progress display in between (or none) that keeps each finished shard's counters."""

    def __init__(self, inner: Progress | None):
        self.inner = inner
        self.summaries: dict[int, dict] = {}

    def start(self, total_requests: int, total_shards: int, live: bool) -> None:
        if self.inner:
            self.inner.start(total_requests, total_shards, live)

    def completion(self, completion, cached: bool) -> None:
        if self.inner:
            self.inner.completion(completion, cached)

    def shard_done(self, result: ShardResult) -> None:
        if result.summary is not None:
            self.summaries[result.index] = result.summary
        if self.inner:
            self.inner.shard_done(result)


def _signature(spec: JobSpec, overwrite: bool) -> str:
    """What the id index describes: the dataset file as it is now (a changed file starts the index again)."""
    st = Path(spec.dataset.path).stat()
    return f"{Path(spec.dataset.path).resolve()}:{st.st_size}:{st.st_mtime_ns}:{spec.dataset.limit}" + \
        (":overwrite" if overwrite else "")
