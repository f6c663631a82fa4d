"""Executors schedule shards; they never touch records. Local and Ray run the same shard functions.

An executor's `run` returns (status, message, teacher counters): `completed`, `budget_exhausted`, `cancelled`,
or `failed` when the teacher kept failing past the job's error budget; any other failure raises.
"""

from __future__ import annotations

import concurrent.futures
from collections import deque
from collections.abc import Callable, Sequence

from stepwise.pipeline.errors import BudgetExhaustedError, StepwiseError, TeacherFailingError
from stepwise.pipeline.runner import (
    Item,
    JobContext,
    Progress,
    ShardPlan,
    finish_shard,
    plan_shard,
    write_part,
)
from stepwise.pipeline.spec import ExecutorSpec
from stepwise.storage.location import CorpusLocation

Outcome = tuple[str, str | None, dict[str, float]]
CancelCheck = Callable[[], bool]
LOOKAHEAD = 2  # shards in flight at once: the next shard's requests queue while the last ones finish
POLL_S = 0.5   # how often a waiting executor looks for a cancel request


def teacher_counters(backend) -> dict[str, float]:
    stats = getattr(backend, "stats", None)
    if stats is None:
        return {}
    return {k: getattr(stats, k) for k in ("sent", "cache_hits", "completed", "retries", "rate_limited", "failed")}


class LocalExecutor:
    """Shards in this process, pipelined: while one shard's last answers arrive the next one's requests are
    already queued at the teacher, so there is no idle tail between shards."""

    def run(self, ctx: JobContext, shards: Sequence[Sequence[Item]], todo: list[int], corpus: CorpusLocation,
            progress: Progress | None, cancelled: CancelCheck) -> Outcome:
        pending: deque[tuple[int, ShardPlan, concurrent.futures.Future]] = deque()
        try:
            for position, index in enumerate(todo):
                plan = plan_shard(ctx, shards[index])
                pending.append((index, plan, ctx.backend.submit(plan.requests)))
                last = position == len(todo) - 1
                while pending and (len(pending) >= LOOKAHEAD or last):
                    done_index, done_plan, future = pending.popleft()
                    completions = self._wait(future, cancelled)
                    if completions is None:
                        for _, _, f in pending:
                            f.cancel()
                        return "cancelled", "cancelled on request; finished shards are kept", \
                            teacher_counters(ctx.backend)
                    result = write_part(corpus, ctx.job_id, done_index, finish_shard(ctx, done_plan, completions))
                    if progress:
                        progress.shard_done(result)
        except BudgetExhaustedError as exc:
            for _, _, future in pending:  # requests in flight finish and are cached: they are paid for
                try:
                    future.result()
                except BudgetExhaustedError:
                    pass
            return "budget_exhausted", str(exc), teacher_counters(ctx.backend)
        except TeacherFailingError as exc:  # the engine stops sending; answers already in are cached
            for _, _, future in pending:
                future.cancel()
            return "failed", str(exc), teacher_counters(ctx.backend)
        except BaseException:
            for _, _, future in pending:
                future.cancel()
            raise
        return "completed", None, teacher_counters(ctx.backend)

    @staticmethod
    def _wait(future: concurrent.futures.Future, cancelled: CancelCheck):
        while True:
            try:
                return future.result(timeout=POLL_S)
            except concurrent.futures.TimeoutError:
                if cancelled():
                    future.cancel()
                    return None


def get_executor(spec: ExecutorSpec):
    if spec.kind == "local":
        return LocalExecutor()
    try:
        from stepwise.pipeline.ray_executor import RayExecutor
    except ImportError as exc:
        if "ray" in str(exc):
            raise StepwiseError("executor 'ray' needs the ray extra: pip install 'stepwise[ray]'") from None
        raise
    return RayExecutor(spec)
