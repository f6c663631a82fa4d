"""`openai` backend: any OpenAI-compatible chat completions server, driven by an asyncio engine.

The engine keeps the teacher saturated up to its limits and never pays twice:
- bounded, adaptive concurrency (halves on 429s and timeouts, climbs back when healthy);
- client-side RPM / TPM budgets, paced, and the server's Retry-After / x-ratelimit-reset-* honoured by all
  senders at once;
- retries with tenacity for transient errors only, chosen by exception type; other 4xx become
  `teacher_error` rejects; 401 / 403 stop the job at once;
- every completion is committed to the request cache the moment it arrives; requests already there are
  never sent; the samples of one example go in one request with `n` where the server supports it;
- the two-stage zero-shot CoT (reasoning, then the answer prompt) with both stages cached;
- an optional cost cap that stops dispatching cleanly (BudgetExhaustedError) and resumes with a higher cap.

The engine runs its event loop in one background thread for the whole job; the runner hands it shards
with `submit()` and gets futures back, so the next shard's requests queue while the last ones finish.
"""

from __future__ import annotations

import asyncio
import random
import concurrent.futures
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

from stepwise.storage.cache import RequestCache
from stepwise.pipeline.errors import (
    BudgetExhaustedError,
    RateLimitedError,
    RequestRejectedError,
    TeacherAuthError,
    TeacherError,
    TeacherTimeoutError,
    TransientTeacherError,
)
from stepwise.pipeline.spec import CostSpec, OpenAITeacherSpec
from stepwise.pipeline.teachers.base import ErrorBudget
from stepwise.pipeline.teachers.cost import CostMeter
from stepwise.pipeline.teachers.keys import read_api_key
from stepwise.pipeline.teachers.limits import (
    AdaptiveConcurrency,
    RateBudget,
    output_budget,
    parse_reset,
    request_tokens,
)
from stepwise.pipeline.teachers.transport import (
    ChatResponse,
    ChatTransport,
    build_transport,
    chat_body,
    import_transport,
    choice_completions,
)
from stepwise.pipeline.types import Completion, TeacherRequest

EventFn = Callable[[Completion, bool], None]  # (completion, served from cache)
_MAX_N = 128
_LOOKUP_RUN = 64  # the first run of a batch looked up in the cache and started; each next run twice as long


def _runs(requests: list[TeacherRequest], size: int) -> Iterator[list[TeacherRequest]]:
    """`requests` cut into runs of about `size`, twice that, four times... (the first requests go out at once, and
    a batch takes a handful of lookups), never between two samples of one example (one request with n)."""
    start = 0
    while start < len(requests):
        end = min(start + size, len(requests))
        while end < len(requests) and requests[end].example_id == requests[end - 1].example_id:
            end += 1
        yield requests[start:end]
        start, size = end, size * 2


@dataclass
class EngineStats:
    """Counters a job reports: what was sent, served from cache, retried, rate-limited and failed."""

    sent: int = 0            # HTTP requests that got a response (any status)
    cache_hits: int = 0      # samples served from the request cache
    completed: int = 0       # samples completed by the teacher in this run
    retries: int = 0
    rate_limited: int = 0    # 429s received
    failed: int = 0          # samples that ended as teacher_error


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The engine's loop: uvloop's where it is installed (its transports and timers in C take about a third less
    CPU per request than asyncio's own; `bench/scale.py`), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class OpenAIBackend:
    """Teacher backend for OpenAI-compatible servers. Use `submit()` from any thread; `close()` at the end."""

    backend = "openai"
    streams = True

    def __init__(self, spec: OpenAITeacherSpec, cache: RequestCache | None = None, cost: CostSpec | None = None,
                 *, rate=None, meter=None, max_error_rate: float | None = None,
                 transport: ChatTransport | None = None):
        """`rate` and `meter` replace this process's RPM/TPM budget and cost meter with shared ones (objects
        with the same async methods), so that several workers of one job share one budget. `max_error_rate`
        stops the job once more requests than that share failed (`ErrorBudget`); None never stops it.
        `transport` replaces the HTTP client (`spec.transport`) with any `ChatTransport`, e.g. a stand-in that
        answers in-process for tests of the retry and rate logic, as httpx's MockTransport does."""
        self.spec = spec
        self.model = spec.model
        self.endpoint = spec.cache_namespace or spec.base_url
        self.errors = ErrorBudget(max_error_rate, spec.base_url) if max_error_rate is not None else None
        self.cache = cache
        self.price = cost
        self.meter = meter if meter is not None else CostMeter(cost)
        self._shared_rate = rate
        self.stats = EngineStats()
        self.events: EventFn | None = None
        self._api_key = read_api_key(spec)
        self._fatal: TeacherError | None = None
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stepwise-teacher", daemon=True)
        self._thread.start()
        self._transport = transport
        if transport is None:
            import_transport(spec.transport)
        self._rate = None
        self._slots = None
        self._budgeted = True  # whether requests are counted against a budget (set with the transport)
        self._tasks: set[asyncio.Future] = set()
        self._batches: set[asyncio.Task] = set()  # the `_complete` calls running
        # request key -> the batches waiting for its answer (None: none yet), while a call for it is out
        self._asked: dict[str, list[asyncio.Future] | None] = {}
        self._pending: list[tuple[list[Completion], asyncio.Future]] = []  # completions waiting for their commit
        self._writing = False  # a commit is running on the writer thread
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stepwise-cache")
        asyncio.run_coroutine_threadsafe(self._warm(), self._loop)

    @classmethod
    def build(cls, spec: OpenAITeacherSpec, options) -> OpenAIBackend:
        return cls(spec, cache=options.cache(), cost=options.cost, rate=options.rate, meter=options.meter,
                   max_error_rate=options.max_error_rate)

    # ── public, thread-safe ──────────────────────────────────────────────────────────────────────────────────
    def submit(self, requests: Sequence[TeacherRequest]) -> concurrent.futures.Future[list[Completion]]:
        """Start completing `requests`; the future holds one Completion per request, in order."""
        return asyncio.run_coroutine_threadsafe(self._complete(list(requests)), self._loop)

    def complete(self, requests: Sequence[TeacherRequest]) -> list[Completion]:
        return self.submit(requests).result()

    def close(self) -> None:
        async def _shutdown() -> None:
            for task in list(self._tasks):
                task.cancel()
            # each submit's future settles (cancelled, or with its error) before the loop stops
            if self._batches:
                await asyncio.wait(list(self._batches), timeout=10)
            if self._transport is not None:
                await self._transport.close()

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(_shutdown(), self._loop).result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        self._loop.close()
        self._writer.shutdown(wait=True)

    # ── engine, on the loop thread ───────────────────────────────────────────────────────────────────────────
    def _ensure_started(self) -> None:
        if self._slots is None:
            s = self.spec
            if self._transport is None:
                self._transport = build_transport(s.transport, s.base_url, self._api_key, s.timeout_s,
                                                  s.max_concurrency)
            self._rate = self._shared_rate if self._shared_rate is not None else RateBudget(s.rpm, s.tpm)
            self._budgeted = bool(self._shared_rate is not None or s.rpm or s.tpm or self.price
                                  or not isinstance(self.meter, CostMeter))
            self._slots = AdaptiveConcurrency(s.max_concurrency)

    async def _warm(self) -> None:
        """Set up the engine and let the transport open its first connection (TCP and TLS handshakes) while the
        job is still reading its first shard; what fails here is the first request's to meet and report."""
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            self._ensure_started()
            warm = getattr(self._transport, "warm", None)
            if warm is not None:
                await warm()
        except Exception:  # reported by the request that meets it
            pass
        finally:
            self._tasks.discard(task)

    async def _complete(self, requests: list[TeacherRequest]) -> list[Completion]:
        batch = asyncio.current_task()
        self._batches.add(batch)
        try:
            return await self._complete_batch(requests)
        finally:
            self._batches.discard(batch)

    async def _complete_batch(self, requests: list[TeacherRequest]) -> list[Completion]:
        """Look up a run of requests in the cache, start the calls it misses, let them go out, then the next run
        (`_runs`): the first request leaves after one short run's lookups, not the whole batch's. A request asked
        for twice is sent once: twice in this batch, or while another batch's call for it is out (its answer
        serves both)."""
        self._ensure_started()
        keys: list[str] = []
        results: dict[str, Completion] = {}
        first_seen: set[str] = set()
        mine: list[str] = []  # the requests this batch asks the teacher for
        shared: dict[str, tuple[TeacherRequest, asyncio.Future]] = {}  # those another batch's call is out for
        tasks: list[asyncio.Future] = []
        try:
            for run in _runs(requests, _LOOKUP_RUN):
                if self._fatal is not None:
                    break
                run_keys = [r.cache_key() for r in run]
                keys += run_keys
                cached = self.cache.get_many(run_keys) if self.cache is not None else {}
                groups: dict[tuple, list[tuple[TeacherRequest, str]]] = defaultdict(list)
                for req, key in zip(run, run_keys, strict=True):
                    if key in cached:
                        results[key] = await self._from_cache(cached[key], req)
                    elif key in first_seen:  # identical requests (two examples, one prompt) are sent once
                        continue
                    elif key in self._asked:  # another batch's call for it is out: its answer serves both
                        first_seen.add(key)
                        answer = self._loop.create_future()
                        shared[key] = (req, answer)
                        self._asked[key] = [*(self._asked[key] or ()), answer]
                    else:
                        first_seen.add(key)
                        self._asked[key] = None
                        mine.append(key)
                        # the samples of one example share one messages tuple (built once per example)
                        groups[(req.example_id, id(req.messages), req.followup, req.response_schema)].append(
                            (req, key))
                started = [asyncio.ensure_future(self._owned(call, call_keys))
                           for call, call_keys in self._calls(groups.values())]
                tasks += started
                self._tasks.update(started)
                if started:
                    await asyncio.sleep(0)  # they take their first step (a request out) before the next run
        except BaseException:  # a lookup failed, or the batch was cancelled: the calls started stop too
            for t in tasks:
                t.cancel()
            self._tasks.difference_update(tasks)
            self._answered(mine, None)  # each sharer asks for itself (a call cancelled unstarted tells none)
            raise
        try:
            for done in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(done, BaseException):
                    raise done
                for c in done:
                    results[c.request_key] = c
        finally:
            self._tasks.difference_update(tasks)
            if self._fatal is not None:
                for t in tasks:
                    t.cancel()
        if self._fatal is not None:
            raise self._fatal
        for key, (req, answer) in shared.items():
            c = await answer
            if c is None:  # that call failed or was cancelled: asked for here
                ((call, _),) = self._calls([[(req, key)]])
                c = (await call)[0]
            results[key] = c
        out = []
        for req, key in zip(requests, keys, strict=True):
            c = results[key]
            if (c.example_id, c.sample_idx) != (req.example_id, req.sample_idx):
                c = replace(c, example_id=req.example_id, sample_idx=req.sample_idx)
            out.append(c)
        return out

    def _calls(self, groups) -> list[tuple[Coroutine, list[str]]]:
        """The calls for groups of requests (the samples of one example), with the keys each answers: two-stage
        ones one by one, the rest together with `n` where the server supports it."""
        calls = []
        for members in groups:
            if members[0][0].followup is not None:
                calls.extend((self._two_stage(req, key), [key]) for req, key in members)
            elif self.spec.supports_n and len(members) > 1:
                calls.extend((self._call(members[i:i + _MAX_N]), [k for _, k in members[i:i + _MAX_N]])
                             for i in range(0, len(members), _MAX_N))
            else:
                calls.extend((self._call([m]), [m[1]]) for m in members)
        return calls

    async def _owned(self, call: Coroutine, keys: list[str]) -> list[Completion]:
        """A call for requests this batch registered as out; when it ends, the batches waiting for them get its
        answers."""
        out = None
        try:
            out = await call
            return out
        finally:
            self._answered(keys, out)

    def _answered(self, keys: list[str], completions: list[Completion] | None) -> None:
        """`keys` are no longer out; the batches waiting for them get their answers (None when the call failed or
        was cancelled: each then asks for itself)."""
        got = None
        for key in keys:
            waiting = self._asked.pop(key, None)
            if waiting:
                if got is None:
                    got = {c.request_key: c for c in completions or ()}
                for answer in waiting:
                    if not answer.done():
                        answer.set_result(got.get(key))

    async def _from_cache(self, c: Completion, req: TeacherRequest) -> Completion:
        c = replace(c, example_id=req.example_id, sample_idx=req.sample_idx, latency_s=0.0,
                    cost_usd=self.price.cost(c.tokens_in, c.tokens_out) if self.price else None)
        self.stats.cache_hits += 1
        if c.cost_usd:
            await self.meter.settle(0.0, c.cost_usd)  # paid once already: it counts towards this job's spend
        self._emit(c, True)
        return c

    def _emit(self, c: Completion, cached: bool) -> None:
        if self.events:
            self.events(c, cached)

    async def _call(self, members: list[tuple[TeacherRequest, str]],
                    messages: Sequence[dict[str, str]] | None = None) -> list[Completion]:
        """One HTTP request for one or more samples of an example (n = len(members))."""
        first = members[0][0]
        body = chat_body(self.spec.model, first, len(members), messages, self.spec.structured_output)
        headers = {}
        if self.spec.request_id_headers:  # the simulator's bookkeeping; ids percent-encoded: headers are ASCII
            headers = {"X-Stepwise-Request-Keys": ",".join(k[:16] for _, k in members),
                       "X-Stepwise-Example-Id": quote(first.example_id, safe=""),
                       "X-Stepwise-Sample-Idx": ",".join(str(r.sample_idx) for r, _ in members)}
        try:
            resp, latency = await self._send_with_retries(body, headers)
        except (RequestRejectedError, TransientTeacherError) as exc:
            retryable = isinstance(exc, TransientTeacherError)
            reason = f"gave up after {self.spec.max_attempts} attempts: {exc}" if retryable else str(exc)
            out = [Completion(k, r.example_id, r.sample_idx, None, None, error=reason, model=self.model,
                              retryable=retryable) for r, k in members]
            self._count(out)
            for c in out:
                self._emit(c, False)
            return out
        try:
            return await self._completions(members, resp, latency)
        finally:
            # the slot is freed once the answer is committed: a kill loses at most what holds a slot
            self._slots.release("ok")

    async def _completions(self, members, resp: ChatResponse, latency: float) -> list[Completion]:
        out = choice_completions(members, resp, latency, self.model, self.price)
        await self._store(out)  # durable before anything else happens: paid once, kept
        self._count(out)
        for c in out:
            self._emit(c, False)
        return out

    async def _store(self, completions: list[Completion]) -> None:
        """Commit completions to the request cache. One commit at a time runs on a worker thread, so the event loop
        never waits on the disk; answers that arrive while it runs wait for the next one and are committed
        together, in one transaction (the busier the teacher, the larger the batch). Each caller resumes only
        once its completions are committed."""
        if self.cache is None:
            return
        future = self._loop.create_future()
        self._pending.append((completions, future))
        if not self._writing:
            self._flush()
        await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        self._writing = True
        done = self._loop.run_in_executor(self._writer, self.cache.put_many, [c for cs, _ in batch for c in cs])

        def settle(result: asyncio.Future) -> None:
            error = result.exception()
            for _, future in batch:
                if not future.done():
                    future.set_exception(error) if error else future.set_result(None)
            self._writing = False
            if self._pending:
                self._flush()

        done.add_done_callback(settle)

    def _count(self, out: list[Completion]) -> None:
        """Count answers and failures; past the error budget the job stops (TeacherFailingError)."""
        failed = [c for c in out if c.text is None]
        self.stats.completed += len(out) - len(failed)
        self.stats.failed += len(failed)
        if self.errors is not None and self._fatal is None:
            stop = self.errors.record(ok=len(out) - len(failed), failed=len(failed),
                                      error=failed[-1].error if failed else None)
            if stop is not None:
                self._fatal = stop

    async def _two_stage(self, req: TeacherRequest, key: str) -> list[Completion]:
        """Zero-shot CoT: stage 1 asks for reasoning; stage 2 sends it back with the answer prompt."""
        stage1_req = replace(req, followup=None)
        stage1 = (await self._cached_or_call(stage1_req))[0]
        if stage1.text is None or stage1.finish_reason == "length":
            return [replace(stage1, request_key=key)]
        messages = (*req.messages, {"role": "assistant", "content": stage1.text},
                    {"role": "user", "content": req.followup})
        stage2_req = replace(req, messages=messages, followup=None,
                             sampling=replace(req.sampling, max_tokens=min(64, req.sampling.max_tokens)))
        stage2 = (await self._cached_or_call(stage2_req))[0]
        if stage2.text is None:
            return [replace(stage2, request_key=key)]
        text = f"{stage1.text.rstrip()}\n{req.followup} {stage2.text.strip()}"
        tin = (stage1.tokens_in or 0) + (stage2.tokens_in or 0)
        tout = (stage1.tokens_out or 0) + (stage2.tokens_out or 0)
        combined = Completion(key, req.example_id, req.sample_idx, text, stage2.finish_reason, tin, tout,
                              (stage1.latency_s or 0) + (stage2.latency_s or 0), stage2.model, None,
                              (stage1.cost_usd or 0) + (stage2.cost_usd or 0) if self.price else None,
                              reasoning=stage1.reasoning, reasoning_tokens=stage1.reasoning_tokens)
        await self._store([combined])
        return [combined]

    async def _cached_or_call(self, req: TeacherRequest) -> list[Completion]:
        key = req.cache_key()
        hit = self.cache.get_many([key]).get(key) if self.cache is not None else None
        if hit is not None:
            return [await self._from_cache(hit, req)]
        return await self._call([(req, key)])

    async def _send_with_retries(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[ChatResponse, float]:
        """The first attempt goes straight out; only a request that failed for a transient reason gets tenacity's
        machinery (built per call, so it is not built for the requests that need none)."""
        try:
            return await self._send(body, headers)
        except TransientTeacherError as exc:
            if self.spec.max_attempts == 1:
                raise
            self.stats.retries += 1
            await asyncio.sleep(self._first_wait(exc))
        # imported with the first retry: a run whose requests all succeed never loads it
        from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

        backoff = wait_exponential(multiplier=1.0, max=30.0) + wait_random(0, 0.5)  # from the second retry on

        def wait(state) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
                return exc.retry_after
            return backoff(state)

        retrying = AsyncRetrying(retry=retry_if_exception_type(TransientTeacherError),
                                 stop=stop_after_attempt(self.spec.max_attempts - 1), wait=wait, reraise=True,
                                 before_sleep=self._count_retry)
        async for attempt in retrying:
            with attempt:
                return await self._send(body, headers)
        raise AssertionError("tenacity returns or raises")  # pragma: no cover

    def _first_wait(self, exc: TransientTeacherError) -> float:
        """The wait after a first failure: the server's, else the first step of the backoff."""
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            return exc.retry_after
        return 0.5 + random.uniform(0, 0.5)

    def _count_retry(self, state) -> None:
        self.stats.retries += 1

    async def _send(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[ChatResponse, float]:
        if self._fatal is not None:
            raise self._fatal
        # budgets (RPM / TPM, a price or cost cap, a budget shared by Ray workers) count what a request may cost;
        # a job with none skips the counting, but never a pause the server asked for (a 429's Retry-After)
        budgeted = self._budgeted
        if budgeted:
            tokens = request_tokens(body)
            out_max = output_budget(body)  # max_completion_tokens when the job sets it, else max_tokens
            await self._rate.acquire(tokens)
        elif self._rate.pause_until > time.monotonic():
            await self._rate.acquire(0)
        await self._slots.acquire()
        outcome, held = "error", False
        reserved, actual = 0.0, None
        try:
            if self._fatal is not None:  # the job stopped while this request waited for its turn
                raise self._fatal
            if budgeted:
                try:
                    reserved = await self.meter.reserve(tokens - out_max, out_max)  # only what is about to fly
                except BudgetExhaustedError as exc:
                    self._fatal = exc
                    raise
            started = time.monotonic()
            try:
                resp = await self._transport.chat(body, headers)
            except RateLimitedError as exc:
                outcome = "throttled"
                self.stats.rate_limited += 1
                self._rate.pause(exc.retry_after if exc.retry_after is not None else 1.0)
                raise
            except TeacherTimeoutError:
                outcome = "throttled"
                raise
            except TeacherAuthError as exc:
                self._fatal = TeacherAuthError(
                    f"{exc}: check the key in ${self.spec.api_key_env} for {self.spec.base_url}"
                    if self.spec.api_key_env else f"{exc} ({self.spec.base_url} needs an API key: set "
                                                  f"teacher.api_key_env)")
                raise self._fatal from None
            finally:
                self.stats.sent += 1
            outcome = "ok"
            latency = time.monotonic() - started
            self._respect_headers(resp.headers)
            if self.price:
                actual = self.price.cost(resp.tokens_in, resp.tokens_out)
            held = True  # an answer keeps its slot until it is committed (`_call` releases it)
            return resp, latency
        finally:
            if not held:
                self._slots.release(outcome)
            if budgeted:
                await self.meter.settle(reserved, actual)

    def _respect_headers(self, headers: dict[str, str]) -> None:
        """When the server says a budget is used up, hold every sender until its reset."""
        lower = {k.lower(): v for k, v in headers.items()}
        for kind in ("requests", "tokens"):
            if lower.get(f"x-ratelimit-remaining-{kind}") == "0":
                reset = parse_reset(lower.get(f"x-ratelimit-reset-{kind}"))
                if reset:
                    self._rate.pause(reset)
