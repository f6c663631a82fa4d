"""A running job's heartbeat: live progress, throughput, ETA and the last teacher errors, as a small JSON file.

The part files are the durable truth of what a job has done, but they move a shard at a time and say nothing
about speed. So the process that runs a job (`run_job`, local or Ray driver) also keeps
`jobs/<job_id>.progress.json` (`storage/layout.py`) up to date, rewritten whole every second (five on an object
store) by a background thread.
The REST service reads it to report requests done, requests per second, the ETA and the last errors; a job run
by hand with `stepwise run` shows up the same way. Losing the file loses nothing but these figures.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from datetime import UTC, datetime

from pydantic import BaseModel, Field, ValidationError

from stepwise.pipeline.types import Completion
from stepwise.storage import layout
from stepwise.storage.location import CorpusLocation

log = logging.getLogger("stepwise.heartbeat")
WINDOW_S = 30.0  # requests per second are measured over this trailing window
LAST_ERRORS = 10


class TeacherErrorNote(BaseModel):
    """One request that failed: refused by the teacher (a `teacher_error` reject) or failed after its retries (a
    `teacher_unavailable` one, retried by the next run)."""

    at: datetime
    example_id: str | None = None
    sample_idx: int | None = None
    message: str


class Heartbeat(BaseModel):
    """What `<job_id>.progress.json` holds."""

    pid: int
    started_at: datetime = Field(description="when this run of the job started (a resume starts a new run)")
    updated_at: datetime
    finished: bool = False
    live: bool = Field(description="counted per request (a live local teacher) rather than per shard")
    requests_total: int = Field(description="requests this run has to make (finished shards excluded)")
    requests_done: int = 0
    cached: int = Field(0, description="requests answered from the request cache, not paid again")
    shards_total: int
    shards_skipped: int = Field(0, description="shards finished by an earlier run")
    shards_done: int = Field(0, description="shards this run finished")
    records: int = 0
    requests_per_s: float | None = Field(None, description="over the last 30 s; the run's average once finished")
    shards_per_s: float | None = None
    eta_s: float | None = None
    last_errors: list[TeacherErrorNote] = []

    @property
    def fraction(self) -> float:
        """How much of the whole job is done, 0..1, counting requests inside unfinished shards when live."""
        if not self.shards_total:
            return 0.0
        todo = self.shards_total - self.shards_skipped
        if self.live and self.requests_total:
            part = min(self.requests_done / self.requests_total, 1.0) * todo
        else:
            part = self.shards_done
        return min((self.shards_skipped + part) / self.shards_total, 1.0)


def read_heartbeat(corpus: CorpusLocation, job_id: str) -> Heartbeat | None:
    """The job's last heartbeat; None when there is none or it cannot be read (it is advisory)."""
    data = corpus.read_bytes(*layout.progress_file(job_id))
    if not data:
        return None
    try:
        return Heartbeat.model_validate_json(data)
    except ValidationError:
        return None


class _Rate:
    """Events per second over a trailing window, from (time, count) samples."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, count: int) -> None:
        self.samples.append((now, count))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window_s:
            self.samples.popleft()

    def per_s(self, now: float, count: int) -> float | None:
        if not self.samples:
            return None
        t0, c0 = self.samples[0]
        return (count - c0) / (now - t0) if now - t0 >= 1.0 else None


class HeartbeatWriter:
    """A `Progress` that keeps the heartbeat file and passes every event on to `inner` (e.g. the progress bar).
    Use it as a context manager: a thread writes the file every `interval_s` until exit, and once more at exit."""

    def __init__(self, corpus: CorpusLocation, job_id: str, inner=None, interval_s: float | None = None):
        # an object store bills and rate-limits each PUT: every 5 s there, every second on a disk
        if interval_s is None:
            interval_s = 1.0 if corpus.local is not None else 5.0
        self.corpus, self.job_id, self.inner, self.interval_s = corpus, job_id, inner, interval_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self._requests = _Rate(WINDOW_S)
        self._shards = _Rate(WINDOW_S)
        now = datetime.now(UTC)
        self.beat = Heartbeat(pid=os.getpid(), started_at=now, updated_at=now, live=False, requests_total=0,
                              shards_total=0)

    # ── Progress ───────────────────────────────────────────────────────────────────────────────────────────

    def start(self, total_requests: int, total_shards: int, live: bool) -> None:
        with self._lock:
            self.beat.requests_total, self.beat.shards_total, self.beat.live = total_requests, total_shards, live
        if self.inner:
            self.inner.start(total_requests, total_shards, live)

    def completion(self, completion: Completion, cached: bool) -> None:
        with self._lock:
            self.beat.requests_done += 1
            self.beat.cached += cached
            if completion.error:
                errors = [*self.beat.last_errors, TeacherErrorNote(
                    at=datetime.now(UTC), example_id=completion.example_id, sample_idx=completion.sample_idx,
                    message=completion.error[:500])]
                self.beat.last_errors = errors[-LAST_ERRORS:]
        if self.inner:
            self.inner.completion(completion, cached)

    def shard_done(self, result) -> None:
        with self._lock:
            if result.skipped:
                self.beat.shards_skipped += 1
            else:
                self.beat.shards_done += 1
                self.beat.records += result.records
        if self.inner:
            self.inner.shard_done(result)

    # ── the file ───────────────────────────────────────────────────────────────────────────────────────────

    def __enter__(self) -> HeartbeatWriter:
        self._write_quietly()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{self.job_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._write_quietly(finished=True)  # never in place of the job's own outcome or exception

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._write_quietly()

    def _write_quietly(self, finished: bool = False) -> None:
        """Advisory: a failed write (a full disk, an object store that hiccups) must never stop or fail the job."""
        try:
            self.write(finished)
        except Exception as exc:  # noqa: BLE001
            log.warning("job %s: cannot write its heartbeat: %s", self.job_id, exc)

    def write(self, finished: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            b = self.beat
            self._requests.add(now, b.requests_done)
            self._shards.add(now, b.shards_done)
            if finished:
                elapsed = max(now - self._t0, 1e-9)
                requests_per_s, shards_per_s = b.requests_done / elapsed, b.shards_done / elapsed
                eta = None
            else:
                requests_per_s = self._requests.per_s(now, b.requests_done)
                shards_per_s = self._shards.per_s(now, b.shards_done)
                eta = self._eta(requests_per_s, shards_per_s)
            beat = b.model_copy(update=dict(updated_at=datetime.now(UTC), finished=finished, eta_s=eta,
                                            requests_per_s=requests_per_s, shards_per_s=shards_per_s))
        self.corpus.write_bytes(beat.model_dump_json().encode(), *layout.progress_file(self.job_id))

    def _eta(self, requests_per_s: float | None, shards_per_s: float | None) -> float | None:
        b = self.beat
        if b.live and b.requests_total:
            left = b.requests_total - b.requests_done
            return left / requests_per_s if requests_per_s else (0.0 if left <= 0 else None)
        left = b.shards_total - b.shards_skipped - b.shards_done
        return left / shards_per_s if shards_per_s else (0.0 if left <= 0 else None)
