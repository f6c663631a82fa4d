"""The local executor: shards in this process, pipelined. While one shard's last answers arrive, the next one's
requests are already queued at the teacher, so there is no idle tail between shards."""

from __future__ import annotations

import concurrent.futures
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
        wait = partial(_answers, cancelled=cancelled)

        def finish_first() -> None:
            result = pending.popleft().finish(wait)
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
            for shard in pending:  # requests in flight finish and are cached: they are paid for
                try:
                    shard.answers.result()
                except BudgetExhaustedError:
                    pass
            raise
        except BaseException:
            for shard in pending:
                shard.answers.cancel()
            raise
        finally:
            self.counters = teacher_counters(ctx.backend)


def _answers(future: concurrent.futures.Future, cancelled: CancelCheck):
    """A shard's completions, looking for a cancel request every POLL_S while they come."""
    while True:
        try:
            return future.result(timeout=POLL_S)
        except concurrent.futures.TimeoutError:
            if cancelled():
                future.cancel()
                raise JobCancelledError("cancelled on request; finished shards are kept") from None
