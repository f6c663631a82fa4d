"""The Ray executor: shards run in worker actors, on a local Ray instance or an existing cluster.

- `ray.init()` starts a local instance by default (nothing to set up); `executor.address`, `--ray-address`
  or `RAY_ADDRESS` joins a cluster.
- Each `ShardWorker` actor builds the job context once (task, prompt, teacher backend) and runs whole
  shards with the one shard path (`run/shard.py`): part files are written by the worker, atomically; only
  counts come back, so the driver does no per-record work.
- One `JobBudget` actor holds the job's RPM / TPM budget and cost cap for all workers: limits are shared,
  never copied per worker.
- A worker that dies is restarted by Ray and its shard is retried; a shard whose part file exists is skipped,
  so nothing is written twice, and the request cache means nothing is paid twice.
- Cancel (`stepwise cancel`) stops all workers within a second or so; finished shards stay.
- Workers are given the corpus root as a string (an absolute path, or an object-store URI such as
  `s3://bucket/corpus`), so on a cluster every node writes where the driver reads.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import ray

from stepwise.pipeline.errors import (
    BudgetExhaustedError,
    JobCancelledError,
    StepwiseError,
    TeacherAuthError,
    TeacherFailingError,
)
from stepwise.pipeline.run.context import Item, JobContext, prepare_context
from stepwise.pipeline.run.executors import POLL_S, CancelCheck, teacher_counters
from stepwise.pipeline.run.shard import Progress, ShardResult, run_shard
from stepwise.pipeline.spec import CostSpec, ExecutorSpec, JobSpec
from stepwise.storage.location import CorpusLocation

IN_FLIGHT_PER_WORKER = 2  # two shards per worker: one finishing while the next one's requests go out


@ray.remote
class JobBudget:
    """The job's one RPM / TPM budget and cost meter, shared by every worker (an async actor)."""

    def __init__(self, rpm: int | None, tpm: int | None, cost: dict | None):
        from stepwise.pipeline.teachers.cost import CostMeter
        from stepwise.pipeline.teachers.limits import RateBudget

        self.rate = RateBudget(rpm, tpm)
        self.meter = CostMeter(CostSpec(**cost) if cost else None)

    async def acquire(self, tokens: int) -> None:
        await self.rate.acquire(tokens)

    async def pause(self, seconds: float) -> None:
        self.rate.pause(seconds)

    async def reserve(self, tokens_in: int, tokens_out_max: int) -> float | None:
        return self.meter.try_reserve(tokens_in, tokens_out_max)

    async def settle(self, reserved: float, actual: float | None) -> None:
        await self.meter.settle(reserved, actual)

    async def exhausted_message(self) -> str:
        return self.meter.exhausted_message()

    async def spent(self) -> float:
        return self.meter.spent


class SharedBudget:
    """Worker-side view of the JobBudget actor, with the engine's rate and meter methods."""

    def __init__(self, actor):
        self.actor = actor

    async def acquire(self, tokens: int) -> None:
        await self.actor.acquire.remote(tokens)

    def pause(self, seconds: float) -> None:
        self.actor.pause.remote(seconds)  # fire and forget: every worker's next acquire waits

    async def reserve(self, tokens_in: int, tokens_out_max: int) -> float:
        reserved = await self.actor.reserve.remote(tokens_in, tokens_out_max)
        if reserved is None:
            raise BudgetExhaustedError(await self.actor.exhausted_message.remote())
        return reserved

    async def settle(self, reserved: float, actual: float | None) -> None:
        if reserved or actual:
            await self.actor.settle.remote(reserved, actual)


@ray.remote(max_restarts=3, max_task_retries=3)
class ShardWorker:
    """Builds the job context once and runs whole shards (threaded: IN_FLIGHT_PER_WORKER at a time)."""

    def __init__(self, spec_json: str, task_kind: str, prompt, backend, root: str, budget):
        spec = JobSpec.model_validate_json(spec_json)
        spec = spec.model_copy(update={"task": spec.task.model_copy(update={"kind": task_kind})})
        if backend is None:
            from stepwise.pipeline.teachers import build_backend

            shared = SharedBudget(budget) if budget is not None else None
            backend = build_backend(spec.teacher, corpus=root, cost=spec.cost, rate=shared, meter=shared,
                                    max_error_rate=spec.max_error_rate)
        self.corpus = CorpusLocation(root)  # a URI stays a URI: never through Path, which would make s3:/ of it
        self.ctx = prepare_context(spec, [], backend=backend, prompt=prompt, corpus=root)

    def pid(self) -> int:
        return os.getpid()

    def run(self, index: int, items: Sequence[Item]) -> ShardResult:
        return run_shard(self.ctx, self.corpus, index, items)

    def teacher_counters(self) -> dict[str, float]:
        return teacher_counters(self.ctx.backend)


def ensure_ray(spec: ExecutorSpec) -> None:
    if ray.is_initialized():
        return
    address = spec.address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"address": address, "log_to_driver": False, "configure_logging": False}
    if address is None:  # a local instance for this job: sized to the workers, without the dashboard
        # "local", not None: None would join whatever cluster `ray start` last left on this machine
        kwargs.update(address="local", num_cpus=max(os.cpu_count() or 1, int(spec.workers * spec.num_cpus) + 1),
                      include_dashboard=False)
    # workers import `stepwise` from where the driver does (a source checkout, or site-packages)
    home = str(Path(sys.modules["stepwise"].__file__).resolve().parent.parent)
    kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(
        p for p in (home, os.environ.get("PYTHONPATH")) if p)}}
    ray.init(**kwargs)


class RayExecutor:
    """Runs shards on Ray worker actors; see the module docstring."""

    def __init__(self, spec: ExecutorSpec):
        self.spec = spec
        self.counters: dict[str, float] = {}

    def run(self, ctx: JobContext, work: Iterator[tuple[int, list[Item]]], corpus: CorpusLocation,
            progress: Progress | None, cancelled: CancelCheck) -> None:
        ensure_ray(self.spec)
        job = ctx.spec
        # the first shards say how many workers are worth starting (a job with two shards left needs two)
        queue = list(itertools.islice(work, self.spec.workers))
        if not queue:
            return
        queue.reverse()  # popped from the end: in shard order
        budget = None
        live = ctx.backend.backend != "replay"
        if live and (getattr(job.teacher, "rpm", None) or getattr(job.teacher, "tpm", None)
                     or (job.cost and job.cost.budget_usd)):
            budget = JobBudget.remote(job.teacher.rpm, job.teacher.tpm,
                                      job.cost.model_dump() if job.cost else None)
        backend = None if live else ctx.backend  # recorded teachers travel; live ones are built in each worker
        n_workers = len(queue)
        options: dict[str, Any] = {"num_cpus": self.spec.num_cpus, "max_concurrency": IN_FLIGHT_PER_WORKER}
        if job.teacher.backend == "vllm":  # each worker holds the GPUs of its own engine, one shard at a time
            options.update(num_gpus=job.teacher.num_gpus or job.teacher.tensor_parallel_size, max_concurrency=1)
        workers = [ShardWorker.options(**options)
                   .remote(job.model_dump_json(), ctx.task.kind, ctx.prompt, backend, corpus.address, budget)
                   for _ in range(n_workers)]
        # a shard is read from `work` when a worker has room for it, and kept until its part file is written
        # (a worker that dies hands it back to the queue)
        in_flight: dict[Any, tuple[int, list[Item], int]] = {}  # ref -> (shard index, items, worker)
        load = [0] * n_workers
        stop: BudgetExhaustedError | TeacherFailingError | None = None  # raised once the shards in flight end
        try:
            while True:
                while min(load) < IN_FLIGHT_PER_WORKER and stop is None:
                    shard = queue.pop() if queue else next(work, None)
                    if shard is None:
                        break
                    w = load.index(min(load))
                    in_flight[workers[w].run.remote(*shard)] = (*shard, w)
                    load[w] += 1
                if not in_flight:
                    break
                done, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_S)
                if cancelled():  # the workers are killed on the way out (finally): in-flight shards stop at once
                    raise JobCancelledError("cancelled on request; finished shards are kept")
                for ref in done:
                    index, items, w = in_flight.pop(ref)
                    load[w] -= 1
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        cause = exc.cause if hasattr(exc, "cause") else None
                        if isinstance(cause, BudgetExhaustedError | TeacherFailingError):
                            stop = stop or cause  # no new shards; those in flight finish: their requests are paid for
                            continue
                        if isinstance(cause, StepwiseError | TeacherAuthError):
                            raise cause from None
                        raise
                    except ray.exceptions.RayActorError:
                        queue.append((index, items))  # the worker died for good: another one takes the shard
                        continue
                    if progress:
                        progress.shard_done(result)
            if stop is not None:
                raise stop
        finally:
            self.counters = _summed_counters(workers)
            # killing an actor stops the shard it is running (a part file is either whole or absent);
            # ray.cancel(force=True) is not allowed for actor tasks
            for w in workers:
                ray.kill(w, no_restart=True)
            if budget is not None:
                ray.kill(budget)
            time.sleep(0)  # let Ray process the kills before the driver moves on


def _summed_counters(workers: list) -> dict[str, float]:
    """The teacher counters of every worker that still answers (workers run shards on their own threads, so they
    answer during a shard too), summed."""
    counters: dict[str, float] = {}
    refs = [w.teacher_counters.remote() for w in workers]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=10)
    for ref in ready:
        try:
            found = ray.get(ref)
        except ray.exceptions.RayError:  # a worker that died: its counters died with it
            continue
        for k, v in found.items():
            counters[k] = counters.get(k, 0) + v
    return counters
