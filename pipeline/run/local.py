"""The local executor: shards in this process, pipelined. While one shard's last answers arrive, the next one's
requests are already queued at the teacher, so there is no idle tail between shards."""

from __future__ import annotations

import concurrent.futures
import time
from collections import deque
from collections.abc import Iterator
from functools import partial

from stepwise.pipeline.errors import BudgetExhaustedError, JobCancelledError
from stepwise.pipeline.run.context import Item, JobContext
from stepwise.pipeline.run.executors import POLL_S, CancelCheck, teacher_counters
from stepwise.pipeline.run.shard import Progress, StartedShard, start_shard
from stepwise.pipeline.spec import ExecutorSpec
from stepwise.storage.location import CorpusLocation

LOOKAHEAD = 2  # shards in flight at once: the next shard's requests queue while the last ones finish


class LocalExecutor:
    def __init__(self, spec: ExecutorSpec):
        self.counters: dict[str, float] = {}

    def run(self, ctx: JobContext, work: Iterator[tuple[int, list[Item]]], corpus: CorpusLocation,
            progress: Progress | None, cancelled: CancelCheck) -> None:
        pending: deque[StartedShard] = deque()
        wait = partial(_answers, cancelled=_Every(cancelled))

        def finish_first() -> None:
            result = pending[0].finish(wait)  # still pending while it finishes: a stop below reaches all its pieces
            pending.popleft()
            if progress:
                progress.shard_done(result)

        try:
            for index, items in work:
                started = start_shard(ctx, corpus, index, items)
                if started is not None:
                    pending.append(started)
                while len(pending) >= LOOKAHEAD:
                    finish_first()
            while pending:
                finish_first()
        except BudgetExhaustedError:
            # requests in flight finish and are cached: they are paid for
            for answers in (a for shard in pending for a in shard.answers):
                try:
                    answers.result()
                except BudgetExhaustedError:
                    pass
            raise
        except BaseException:
            for shard in pending:
                for answers in shard.answers:
                    answers.cancel()
            raise
        finally:
            self.counters = teacher_counters(ctx.backend)


class _Every:
    """A cancel check made at most once every POLL_S (on an object store each is a request); False in between."""

    def __init__(self, cancelled: CancelCheck):
        self.cancelled, self.last = cancelled, time.monotonic()

    def __call__(self) -> bool:
        if time.monotonic() - self.last < POLL_S:
            return False
        self.last = time.monotonic()
        return self.cancelled()


def _answers(future: concurrent.futures.Future, cancelled: CancelCheck):
    """A batch's completions, looking for a cancel request every POLL_S, however fast batches come back (a job
    whose batches each take less than that still stops)."""
    while True:
        if cancelled():
            future.cancel()
            raise JobCancelledError("cancelled on request; finished shards are kept")
        try:
            return future.result(timeout=POLL_S)
        except concurrent.futures.TimeoutError:
            continue
