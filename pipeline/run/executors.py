"""Executors schedule shards; they never touch records. Every executor runs the one shard path of `run/shard.py`.

An executor's `run` takes the shards to run as an iterator of (shard index, items), read from the dataset as the
executor asks for them (so memory holds the shards in flight, never the dataset), and returns when every one is
written. It stops by raising: JobCancelledError on a cancel request, BudgetExhaustedError or TeacherFailingError
when the job's cost cap or error budget stops it (requests already in flight finish first, so what was paid is
kept), anything else on a failure. The job driver
(`run/job.py`) turns those into the job's status, in one place. Whatever happens, `counters` ends up holding the
teacher's counters (requests sent, cache hits, retries, ...), summed over the executor's workers.

Executor kinds are declared once, with the dotted path of their class, in `pipeline/spec.py` (`EXECUTORS`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Protocol

from stepwise.pipeline.errors import StepwiseError
from stepwise.pipeline.run.context import Item, JobContext
from stepwise.pipeline.run.shard import Progress
from stepwise.pipeline.spec import EXECUTORS, ExecutorSpec
from stepwise.storage.location import CorpusLocation

CancelCheck = Callable[[], bool]
POLL_S = 0.5  # how often a waiting executor looks for a cancel request
COUNTERS = ("sent", "cache_hits", "completed", "retries", "rate_limited", "failed")


class Executor(Protocol):
    counters: dict[str, float]

    def run(self, ctx: JobContext, work: Iterator[tuple[int, list[Item]]], corpus: CorpusLocation,
            progress: Progress | None, cancelled: CancelCheck) -> None: ...


def teacher_counters(backend) -> dict[str, float]:
    stats = getattr(backend, "stats", None)
    return {} if stats is None else {k: getattr(stats, k) for k in COUNTERS}


def get_executor(spec: ExecutorSpec) -> Executor:
    """The executor the job's `executor.kind` names."""
    module, _, name = EXECUTORS[spec.kind].partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] == spec.kind:
            raise StepwiseError(f"executor {spec.kind!r} needs the {spec.kind} extra: "
                                f"pip install 'stepwise-distill[{spec.kind}]'") from None
        raise
    return cls(spec)
