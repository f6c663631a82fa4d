"""The teacher boundary: a backend turns TeacherRequests into Completions, nothing more."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stepwise.pipeline.errors import TeacherFailingError
from stepwise.pipeline.types import Completion, TeacherRequest
from stepwise.storage.cache import RequestCache


@dataclass(frozen=True)
class BuildOptions:
    """What a backend is built with besides its spec: the corpus (its request cache), prices and the cap, the
    shared rate budget and cost meter of a Ray job, and the error budget."""

    corpus: str | Path | None = None
    cost: Any = None            # CostSpec
    rate: Any = None            # a shared RateBudget (Ray)
    meter: Any = None           # a shared CostMeter (Ray)
    max_error_rate: float | None = None

    def cache(self) -> RequestCache | None:
        """The corpus's request cache: completions are paid once."""
        return RequestCache.for_corpus(self.corpus) if self.corpus is not None else None


class TeacherBackend(Protocol):
    """Anything that answers requests. Every request gets exactly one Completion (text, or an error)."""

    backend: str  # the backend's name as written in job files ("replay", "openai", ...)
    model: str    # the teacher model, recorded with each record
    endpoint: str | None  # the server answering, part of each request's cache key (None: the model says it all)
    events: Callable[[Completion, bool], None] | None  # live backends report each completion as it arrives
    # its answers come one by one as the teacher gives them (a live server), so a shard sent in pieces is judged
    # as they come; False: a batch is answered whole (an offline engine, a batch API, a replay), a shard in one
    streams: bool

    def submit(self, requests: Sequence[TeacherRequest]) -> concurrent.futures.Future[list[Completion]]:
        """Start answering; the future holds one Completion per request, in request order."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...

    @classmethod
    def build(cls, spec: Any, options: BuildOptions) -> TeacherBackend:
        """The backend for a job's `teacher` block (the spec class names this class as its `factory`)."""
        ...


def completed_future(completions: list[Completion]) -> concurrent.futures.Future[list[Completion]]:
    future: concurrent.futures.Future[list[Completion]] = concurrent.futures.Future()
    future.set_result(completions)
    return future


class ErrorBudget:
    """How many requests a job lets fail before it stops early.

    A request that still fails after its retries (connection refused, 5xx, timeouts, a body that is not a
    completion) is `teacher_unavailable`, not final: a rerun sends it again; one the teacher refuses (a 4xx) is
    a final `teacher_error`. When more than `max_rate` of the finished requests failed either way (once
    `MIN_FAILED` have), the teacher is down or the job is misconfigured (a wrong model name), and going on
    would only fail the rest slowly: `record` returns the error that stops the job, naming the teacher's URL.
    """

    MIN_FAILED = 10  # a handful of failures among the first requests is not yet a rate

    def __init__(self, max_rate: float, where: str):
        self.max_rate, self.where = max_rate, where
        self.ok = self.failed = 0
        self.last_error: str | None = None

    def record(self, ok: int = 0, failed: int = 0, error: str | None = None) -> TeacherFailingError | None:
        """Count finished requests; the error to stop the job with once the budget is exceeded, else None."""
        self.ok += ok
        self.failed += failed
        if error:
            self.last_error = error
        done = self.ok + self.failed
        if self.failed >= self.MIN_FAILED and self.failed > self.max_rate * done:
            return TeacherFailingError(
                f"the teacher at {self.where} is failing: {self.failed:,} of {done:,} requests failed after their "
                f"retries, more than max_error_rate={self.max_rate:g} (last: {self.last_error}); finished "
                f"shards and every completed request are kept: run the job again once the teacher is back")
        return None
