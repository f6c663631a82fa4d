"""`openai_batch` backend: the OpenAI Batch API, for big jobs that can wait a while (at about half the price).

How one `submit(requests)` goes:
1. requests already in the request cache are served from it; the rest become JSONL lines, one per chat call the
   live engine would make: the samples of one example share a line with `n` (where `supports_n`), and a line's
   `custom_id` is the cache key of its first sample (the key of its only sample without `n`);
2. lines go into batches within the API's limits (requests and bytes per batch). Each batch is written to the
   batch ledger (a table beside the cache, with the custom ids of its lines) before it is polled, and a line
   that is already in an open batch of the ledger is never submitted again: a restarted job, or another shard
   that asks the same thing, polls that batch instead;
3. one background thread looks at every open batch each `poll_interval_s`. When a batch ends, its output and
   error files are downloaded, every answer is committed to the cache at once, and only the lines that failed,
   expired or went missing go into a new batch, up to `max_attempts` batches per line; what still fails becomes
   a Completion with `error` (a `teacher_error` reject), as does a request the API refuses (a 4xx in the error
   file), which is never sent again. Lines carry the live engine's body (`chat_body`: the reasoning fields too)
   and answers are read by its parser (`parse_chat`), so a trace sent in its own field is kept the same way;
4. zero-shot CoT runs as two rounds of batches: the reasoning, then the answer prompt.

A failure of the Batch API itself (after a few retries of transient errors) fails the job; its batches stay
in the ledger, so running the job again picks them up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from stepwise.storage.cache import RequestCache, open_sqlite
from stepwise.pipeline.errors import (
    MalformedResponseError,
    RateLimitedError,
    RequestRejectedError,
    TeacherAuthError,
    TeacherConnectionError,
    TeacherError,
    TeacherTimeoutError,
    TransientTeacherError,
)
from stepwise.pipeline.spec import CostSpec, OpenAIBatchTeacherSpec
from stepwise.pipeline.teachers.limits import output_budget, request_tokens
from stepwise.pipeline.teachers.cost import CostMeter
from stepwise.pipeline.teachers.keys import read_api_key
from stepwise.pipeline.teachers.transport import ChatResponse, chat_body, choice_completions, parse_chat, raise_for_status
from stepwise.pipeline.types import Completion, TeacherRequest

EventFn = Callable[[Completion, bool], None]  # (completion, served from cache)
ENDPOINT = "/v1/chat/completions"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_MAX_N = 128         # the most choices one chat request may ask for
_CALL_ATTEMPTS = 5   # tries of one Batch API call when it fails transiently
_LIST_BACK_S = 3600  # how far back a batch created just before a crash is looked for


@dataclass
class BatchStats:
    """Counters a job reports (the first six have the live engine's names)."""

    sent: int = 0             # lines submitted in new batches
    cache_hits: int = 0       # samples served from the request cache
    completed: int = 0        # samples answered by the teacher in this run
    retries: int = 0          # lines submitted again after failing, expiring or going missing
    rate_limited: int = 0     # 429s that outlasted the retries (batches are not rate-limited per request)
    failed: int = 0           # samples that ended as teacher_error
    batches_created: int = 0
    batches_resumed: int = 0  # open batches found in the ledger and polled instead of submitted again


# ── the batch ledger ──────────────────────────────────────────────────────────────────────────────────────────

_LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    batch_id TEXT,                -- NULL between uploading the input file and the API naming the batch
    input_file_id TEXT NOT NULL,
    requests_hash TEXT NOT NULL,  -- sha256 of the sorted custom ids: the batch's identity (also its metadata)
    base_url TEXT NOT NULL,
    status TEXT NOT NULL,         -- 'creating', then the API's status as last seen; 'collected' once its answers
                                  -- are in the cache, 'lost' when the server no longer knows it
    attempt INTEGER NOT NULL,     -- the how-many-th batch its lines are in
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_requests (
    batch INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    PRIMARY KEY (custom_id, batch)
);
CREATE INDEX IF NOT EXISTS batch_requests_by_batch ON batch_requests (batch);
"""
_CLOSED = ("collected", "lost")


@dataclass(frozen=True)
class LedgerRow:
    id: int
    batch_id: str | None
    input_file_id: str
    requests_hash: str
    status: str
    attempt: int
    created_at: float


class BatchLedger:
    """The batches this corpus has submitted and not yet collected, with the custom ids of their lines.

    Kept in the request cache's SQLite file (`<corpus>/cache/requests.sqlite`, or a local folder for a corpus on
    an object store: `pipeline/cache.py`), next to the completions the batches pay for, so that it is shared by
    every job and worker of the corpus as the cache is. A batch is recorded before the API is asked to create it,
    and closed only after its answers are in the cache.
    """

    def __init__(self, path: str | Path | None):
        self._db = open_sqlite(str(path) if path is not None else ":memory:", _LEDGER_SCHEMA, "batch ledger in")
        self._lock = threading.Lock()

    def open_batches_for(self, custom_ids: Sequence[str]) -> dict[str, LedgerRow]:
        """The open (not yet collected) batch holding each of these custom ids, where there is one."""
        out: dict[str, LedgerRow] = {}
        with self._lock:
            for i in range(0, len(custom_ids), 500):
                chunk = list(custom_ids[i:i + 500])
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(
                        f"SELECT r.custom_id, b.id, b.batch_id, b.input_file_id, b.requests_hash, b.status, "
                        f"b.attempt, b.created_at FROM batch_requests r JOIN batches b ON b.id = r.batch "
                        f"WHERE r.custom_id IN ({marks}) AND b.status NOT IN ('collected', 'lost') "
                        f"ORDER BY b.id", chunk):
                    out[row[0]] = LedgerRow(*row[1:])
        return out

    def record(self, input_file_id: str, requests_hash: str, base_url: str, attempt: int,
               custom_ids: Sequence[str]) -> LedgerRow:
        """A batch about to be created (status 'creating'), committed with its lines' custom ids."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT INTO batches (batch_id, input_file_id, requests_hash, base_url, status, attempt, "
                    "created_at) VALUES (NULL, ?, ?, ?, 'creating', ?, ?)",
                    (input_file_id, requests_hash, base_url, attempt, now))
                ledger_id = cur.lastrowid
                self._db.executemany("INSERT OR IGNORE INTO batch_requests VALUES (?, ?)",
                                     [(ledger_id, c) for c in custom_ids])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return LedgerRow(ledger_id, None, input_file_id, requests_hash, "creating", attempt, now)

    def named(self, ledger_id: int, batch_id: str, status: str) -> None:
        with self._lock:
            self._db.execute("UPDATE batches SET batch_id = ?, status = ? WHERE id = ?", (batch_id, status, ledger_id))

    def status(self, ledger_id: int, status: str) -> None:
        """The batch's status as last seen; 'collected' or 'lost' closes it and forgets its lines."""
        with self._lock:
            self._db.execute("UPDATE batches SET status = ? WHERE id = ?", (status, ledger_id))
            if status in _CLOSED:
                self._db.execute("DELETE FROM batch_requests WHERE batch = ?", (ledger_id,))

    def rows(self) -> list[LedgerRow]:
        """Every batch recorded, oldest first."""
        with self._lock:
            return [LedgerRow(*r) for r in self._db.execute(
                "SELECT id, batch_id, input_file_id, requests_hash, status, attempt, created_at FROM batches "
                "ORDER BY id")]

    def close(self) -> None:
        with self._lock:
            self._db.close()


# ── request bodies ────────────────────────────────────────────────────────────────────────────────────────────


@dataclass
class _Line:
    """One JSONL line: one chat call answering `members` (samples of one example, in choice order)."""

    custom_id: str
    members: list[tuple[TeacherRequest, str]]
    body: dict[str, Any]
    data: bytes  # the line as uploaded, newline included
    attempts: int = 0  # batches it has been in

    @classmethod
    def of(cls, model: str, members: list[tuple[TeacherRequest, str]]) -> _Line:
        custom_id = members[0][1]
        body = chat_body(model, members[0][0], len(members))
        data = json.dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body},
                          ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        return cls(custom_id, members, body, data)


@dataclass
class _Open:
    """A batch being polled, with the lines of one submit() it answers."""

    row: LedgerRow
    batch_id: str | None
    lines: dict[str, _Line]
    reserved: float = 0.0  # cost reserved with the meter for its worst case


@dataclass
class _Staged:
    """A two-stage (zero-shot CoT) request between its reasoning and its answer prompt."""

    req: TeacherRequest
    key: str
    stage1_key: str
    stage2: TeacherRequest | None = None
    stage2_key: str | None = None


@dataclass
class _Task:
    """One submit(): its requests, the answers so far, and the lines still on their way."""

    future: concurrent.futures.Future
    requests: list[TeacherRequest]
    keys: list[str] = field(default_factory=list)
    wanted: set[str] = field(default_factory=set)  # the requests' own keys (not the stages of two-stage ones)
    results: dict[str, Completion] = field(default_factory=dict)
    queue: list[_Line] = field(default_factory=list)  # lines waiting for a batch
    open: list[_Open] = field(default_factory=list)
    staged: list[_Staged] = field(default_factory=list)
    stage: int = 1


class OpenAIBatchBackend:
    """Teacher backend for the OpenAI Batch API. `submit()` from any thread; `close()` at the end."""

    backend = "openai_batch"
    streams = False

    def __init__(self, spec: OpenAIBatchTeacherSpec, cache: RequestCache | None = None,
                 cost: CostSpec | None = None, *, meter=None):
        """`meter` replaces this process's cost meter with a shared one (the same async methods)."""
        import openai

        self.spec = spec
        self.model = spec.model
        self.endpoint = spec.cache_namespace or spec.base_url
        self.cache = cache
        self.price = cost
        self.meter = meter if meter is not None else CostMeter(cost)
        self.stats = BatchStats()
        self.events: EventFn | None = None
        self._api_key = read_api_key(spec)
        self._openai = openai
        self.client = openai.OpenAI(base_url=spec.base_url, api_key=self._api_key or "none", max_retries=0,
                                    timeout=spec.timeout_s)
        self.ledger = BatchLedger(cache.path if cache is not None else None)
        self._fatal: TeacherError | None = None
        self._incoming: list[_Task] = []
        self._tasks: list[_Task] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._aloop: asyncio.AbstractEventLoop | None = None  # runs the meter's coroutines on the poller thread
        self._thread = threading.Thread(target=self._run, name="stepwise-batch-poller", daemon=True)
        self._thread.start()

    @classmethod
    def build(cls, spec: OpenAIBatchTeacherSpec, options) -> OpenAIBatchBackend:
        return cls(spec, cache=options.cache(), cost=options.cost, meter=options.meter)

    # ── public, thread-safe ──────────────────────────────────────────────────────────────────────────────────
    def submit(self, requests: Sequence[TeacherRequest]) -> concurrent.futures.Future[list[Completion]]:
        """Start answering `requests`; the future holds one Completion per request, in request order."""
        future: concurrent.futures.Future[list[Completion]] = concurrent.futures.Future()
        if self._stop.is_set():
            future.set_exception(TeacherError("the batch backend is closed"))
            return future
        with self._lock:
            self._incoming.append(_Task(future, list(requests)))
        self._wake.set()
        return future

    def complete(self, requests: Sequence[TeacherRequest]) -> list[Completion]:
        return self.submit(requests).result()

    def close(self) -> None:
        """Stop polling. Batches still open stay in the ledger: running the job again polls them."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=60)
        with self._lock:
            left, self._incoming = self._tasks + self._incoming, []
            self._tasks = []
        for task in left:
            if task.future.cancel():  # not started yet
                continue
            try:
                task.future.set_exception(TeacherError("the batch backend was closed; its open batches are kept "
                                                       "and polled when the job runs again"))
            except concurrent.futures.InvalidStateError:
                pass  # it ended meanwhile
        if not self._thread.is_alive():
            self.ledger.close()
        self.client.close()

    # ── the poller thread ────────────────────────────────────────────────────────────────────────────────────
    def _run(self) -> None:
        self._aloop = asyncio.new_event_loop()
        next_poll = time.monotonic() + self.spec.poll_interval_s
        try:
            while not self._stop.is_set():
                with self._lock:
                    new, self._incoming = self._incoming, []
                for task in new:
                    if not task.future.set_running_or_notify_cancel():
                        continue  # cancelled before it started
                    if not self._tasks:
                        next_poll = time.monotonic() + self.spec.poll_interval_s
                    self._tasks.append(task)
                    self._guard(task, self._start)
                if self._tasks and time.monotonic() >= next_poll:
                    seen: dict[str, Any] = {}  # a batch shared by two tasks is looked at once per round
                    for task in list(self._tasks):
                        self._guard(task, self._poll, seen)
                    next_poll = time.monotonic() + self.spec.poll_interval_s
                self._wake.wait(max(0.0, next_poll - time.monotonic()) if self._tasks else None)
                self._wake.clear()
        finally:
            self._aloop.close()

    def _guard(self, task: _Task, step: Callable[..., None], *args) -> None:
        """Run one step of a task; a failure fails that task (an auth failure every task)."""
        if task not in self._tasks:
            return
        try:
            step(task, *args)
            self._finish_if_done(task)
        except BaseException as exc:  # the future carries it to the caller
            failed = list(self._tasks) if isinstance(exc, TeacherAuthError) else [task]
            if isinstance(exc, TeacherAuthError):
                self._fatal = exc
            for t in failed:
                self._tasks.remove(t)
                if not t.future.done():
                    t.future.set_exception(exc)

    def _start(self, task: _Task) -> None:
        if self._fatal is not None:
            raise self._fatal
        task.keys = [r.cache_key() for r in task.requests]
        task.wanted = set(task.keys)
        cached = self.cache.get_many(list(dict.fromkeys(task.keys))) if self.cache is not None else {}
        fresh: list[tuple[TeacherRequest, str]] = []
        seen: set[str] = set()
        for req, key in zip(task.requests, task.keys, strict=True):
            if key in cached:
                if key not in task.results:
                    self._deliver(task, self._served(cached[key], req), cached=True)
            elif key not in seen:  # identical requests (two examples, one prompt) are sent once
                seen.add(key)
                fresh.append((req, key))
        stage1 = []
        for req, key in fresh:
            if req.followup is not None:
                first = replace(req, followup=None)
                task.staged.append(_Staged(req, key, first.cache_key()))
                stage1.append((first, task.staged[-1].stage1_key))
        task.queue = self._lines([(r, k) for r, k in fresh if r.followup is None] + self._uncached(task, stage1))
        self._launch(task)

    def _uncached(self, task: _Task, pairs: list[tuple[TeacherRequest, str]]) -> list[tuple[TeacherRequest, str]]:
        """Pairs not yet answered; cached ones (stages of two-stage requests) are put in `task.results`."""
        known = [k for _, k in pairs if k not in task.results]
        cached = self.cache.get_many(known) if self.cache is not None and known else {}
        out, seen = [], set()
        for req, key in pairs:
            if key in task.results or key in seen:
                continue
            if key in cached:
                self._deliver(task, self._served(cached[key], req), cached=True)
            else:
                seen.add(key)
                out.append((req, key))
        return out

    def _lines(self, pairs: list[tuple[TeacherRequest, str]]) -> list[_Line]:
        """One line per chat call: the samples of one example together (n) where the server supports it."""
        groups: dict[tuple, list[tuple[TeacherRequest, str]]] = defaultdict(list)
        for req, key in pairs:  # the samples of one example share one messages tuple (built once per example)
            groups[(req.example_id, id(req.messages), req.followup, req.response_schema)].append((req, key))
        lines = []
        for members in groups.values():
            if self.spec.supports_n and len(members) > 1:
                lines.extend(_Line.of(self.model, members[i:i + _MAX_N]) for i in range(0, len(members), _MAX_N))
            else:
                lines.extend(_Line.of(self.model, [m]) for m in members)
        return lines

    def _launch(self, task: _Task) -> None:
        """Put the queued lines into batches: open batches of the ledger that hold them already, else new ones."""
        lines, task.queue = task.queue, []
        if not lines:
            return
        holders = self.ledger.open_batches_for([line.custom_id for line in lines])
        adopted: dict[int, _Open] = {}
        fresh: list[_Line] = []
        for line in lines:
            row = holders.get(line.custom_id)
            if row is None:
                fresh.append(line)
                continue
            if row.id not in adopted:
                adopted[row.id] = _Open(row, row.batch_id, {})
            adopted[row.id].lines[line.custom_id] = line
            line.attempts = max(line.attempts, row.attempt)
        for op in adopted.values():
            if op.batch_id is None:  # recorded, but the run stopped before the API named it
                try:
                    op.batch_id = self._create_batch(op.row, recovering=True).id
                except RequestRejectedError:  # its input file is gone: the lines go in a new batch
                    self.ledger.status(op.row.id, "lost")
                    fresh.extend(op.lines.values())
                    continue
            self.stats.batches_resumed += 1
            task.open.append(op)
        chunk: list[_Line] = []
        size = 0
        for line in fresh:
            if len(line.data) > self.spec.max_bytes_per_batch:
                self._give_up(task, line, f"the request is {len(line.data):,} bytes, more than "
                                          f"max_bytes_per_batch ({self.spec.max_bytes_per_batch:,})", retryable=False)
                continue
            if chunk and (len(chunk) == self.spec.max_requests_per_batch
                          or size + len(line.data) > self.spec.max_bytes_per_batch):
                task.open.append(self._submit_batch(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line.data)
        if chunk:
            task.open.append(self._submit_batch(chunk))

    def _submit_batch(self, lines: list[_Line]) -> _Open:
        """Upload the lines, record the batch in the ledger, then ask the API to create it."""
        ids = sorted(line.custom_id for line in lines)
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
        attempt = max(line.attempts for line in lines) + 1
        tokens = sum(request_tokens(line.body) for line in lines)
        out_max = sum(output_budget(line.body) for line in lines)
        reserved = self._meter("reserve", tokens - out_max, out_max)  # BudgetExhaustedError before any upload
        try:
            upload = self._api("upload a batch input file", self.client.files.create,
                               file=(f"stepwise-{digest[:16]}.jsonl", b"".join(line.data for line in lines),
                                     "application/jsonl"), purpose="batch")
            row = self.ledger.record(upload.id, digest, self.spec.base_url, attempt, ids)
            batch = self._create_batch(row, recovering=False)
        except BaseException:
            self._meter("settle", reserved, 0.0)
            raise
        self.stats.batches_created += 1
        self.stats.sent += len(lines)
        self.stats.retries += sum(1 for line in lines if line.attempts > 0)
        for line in lines:
            line.attempts = attempt
        return _Open(row, batch.id, {line.custom_id: line for line in lines}, reserved)

    def _create_batch(self, row: LedgerRow, *, recovering: bool):
        """Create the batch of a recorded input file. Before creating it again after a failure (or after a
        crash between recording and naming it), look whether the API made it already: never two batches of
        one file."""
        for attempt in range(_CALL_ATTEMPTS):
            batch = None
            if recovering or attempt:
                batch = self._api("list batches", self._find_batch, row.input_file_id, row.created_at)
            if batch is None:
                try:
                    batch = self._call("create a batch", self.client.batches.create, input_file_id=row.input_file_id,
                                       endpoint=ENDPOINT, completion_window=self.spec.completion_window,
                                       metadata={"stepwise_requests": row.requests_hash})
                except TransientTeacherError as exc:
                    if attempt == _CALL_ATTEMPTS - 1:
                        raise
                    self._sleep(self._delay(attempt, exc))
                    continue
            self.ledger.named(row.id, batch.id, batch.status)
            return batch
        raise AssertionError("the loop returns or raises")  # pragma: no cover

    def _find_batch(self, input_file_id: str, since: float):
        for batch in self.client.batches.list(limit=100):  # newest first; pages are fetched as needed
            if batch.input_file_id == input_file_id:
                return batch
            if batch.created_at < since - _LIST_BACK_S:
                return None
        return None

    def _poll(self, task: _Task, seen: dict[str, Any]) -> None:
        for op in list(task.open):
            batch = seen.get(op.batch_id)
            if batch is None:
                try:
                    batch = self._api("look at a batch", self.client.batches.retrieve, op.batch_id)
                except RequestRejectedError as exc:
                    if exc.status != 404:
                        raise
                    # a server whose batch endpoint answers (a wrong base_url raises here) does not know the
                    # batch: it belongs to another server or account, and its lines go again
                    self._api("list batches", self.client.batches.list, limit=1)
                    self.ledger.status(op.row.id, "lost")
                    self._meter("settle", op.reserved, 0.0)
                    task.open.remove(op)
                    for line in op.lines.values():
                        line.attempts = max(0, line.attempts - 1)
                        task.queue.append(line)
                    continue
                seen[op.batch_id] = batch
            if batch.status != op.row.status:
                self.ledger.status(op.row.id, batch.status)
                op.row = replace(op.row, status=batch.status)
            if batch.status in TERMINAL:
                task.open.remove(op)
                self._collect(task, op, batch)
        self._launch(task)

    def _collect(self, task: _Task, op: _Open, batch) -> None:
        """Answers of an ended batch into the cache; failed, expired and missing lines back in the queue."""
        answers: dict[str, ChatResponse] = {}
        failures: dict[str, tuple[str, bool]] = {}  # custom id -> (why, worth sending again)
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = self._api("download a batch result file", lambda f=file_id: self.client.files.content(f).content)
            for raw in content.splitlines():
                if not raw.strip():
                    continue
                try:
                    result = json.loads(raw)
                    custom_id = result["custom_id"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line we cannot attribute: its request counts as missing
                if custom_id in op.lines:
                    outcome = _outcome(result, self._api_key)
                    if isinstance(outcome, ChatResponse):
                        answers[custom_id] = outcome
                    else:
                        failures[custom_id] = outcome
        latency = max(0.0, time.time() - batch.created_at) if batch.created_at else None
        actual = 0.0
        for custom_id, resp in answers.items():
            for c in self._completions(op.lines[custom_id], resp, latency):
                self._deliver(task, c)
                actual += c.cost_usd or 0.0
        self.ledger.status(op.row.id, "collected")  # only now: every answer is in the cache
        self._meter("settle", op.reserved, actual)
        why_missing = f"the batch ended {batch.status} without an answer for this request"
        if batch.errors and getattr(batch.errors, "data", None):
            why_missing += ": " + "; ".join(f"{e.code}: {e.message}" for e in batch.errors.data[:3])
        for custom_id, line in op.lines.items():
            if custom_id in answers:
                continue
            why, again = failures.get(custom_id, (why_missing, True))
            if again and line.attempts < self.spec.max_attempts:
                task.queue.append(line)
            else:
                tries = f"{line.attempts} batch{'es' if line.attempts != 1 else ''}"
                self._give_up(task, line, f"gave up after {tries}: {why}" if again else why, retryable=again)

    def _completions(self, line: _Line, resp: ChatResponse, latency: float | None) -> list[Completion]:
        out = choice_completions(line.members, resp, latency, self.model, self.price)
        for c in out:
            if self.cache is not None and c.text is not None:
                self.cache.put(c)  # durable before anything else happens: paid once, kept
            if c.text is None:
                self.stats.failed += 1
            else:
                self.stats.completed += 1
        return out

    def _give_up(self, task: _Task, line: _Line, why: str, *, retryable: bool) -> None:
        """Final answers for a line that failed: `retryable` (failed, expired, missing) ones are sent again by a
        rerun of the job; refused ones (a 4xx) are final."""
        for req, key in line.members:
            self._deliver(task, Completion(key, req.example_id, req.sample_idx, None, None, error=why,
                                           model=self.model, retryable=retryable))
            self.stats.failed += 1

    def _deliver(self, task: _Task, c: Completion, *, cached: bool = False) -> None:
        """An answer (or a final error) for a key; the caller's requests are reported as they end."""
        task.results[c.request_key] = c
        if c.request_key in task.wanted:
            if cached:
                self.stats.cache_hits += 1
            if self.events:
                self.events(c, cached)

    def _finish_if_done(self, task: _Task) -> None:
        if task.queue or task.open:
            return
        if task.staged and task.stage == 1:
            task.stage = 2
            self._second_stage(task)
            if task.queue or task.open:
                return
        for s in task.staged:
            self._deliver(task, self._combine(task, s))
        out = []
        for req, key in zip(task.requests, task.keys, strict=True):
            c = task.results[key]
            if (c.example_id, c.sample_idx) != (req.example_id, req.sample_idx):
                c = replace(c, example_id=req.example_id, sample_idx=req.sample_idx)
            out.append(c)
        self._tasks.remove(task)
        task.future.set_result(out)

    def _second_stage(self, task: _Task) -> None:
        """Zero-shot CoT: the reasoning goes back with the answer prompt, as the live engine sends it."""
        pairs = []
        for s in task.staged:
            stage1 = task.results[s.stage1_key]
            if stage1.text is None or stage1.finish_reason == "length":
                continue
            messages = (*s.req.messages, {"role": "assistant", "content": stage1.text},
                        {"role": "user", "content": s.req.followup})
            s.stage2 = replace(s.req, messages=messages, followup=None,
                               sampling=replace(s.req.sampling, max_tokens=min(64, s.req.sampling.max_tokens)))
            s.stage2_key = s.stage2.cache_key()
            pairs.append((s.stage2, s.stage2_key))
        task.queue = self._lines(self._uncached(task, pairs))
        self._launch(task)

    def _combine(self, task: _Task, s: _Staged) -> Completion:
        stage1 = task.results[s.stage1_key]
        if s.stage2_key is None:
            return replace(stage1, request_key=s.key)
        stage2 = task.results[s.stage2_key]
        if stage2.text is None:
            return replace(stage2, request_key=s.key)
        text = f"{stage1.text.rstrip()}\n{s.req.followup} {stage2.text.strip()}"
        tin = (stage1.tokens_in or 0) + (stage2.tokens_in or 0)
        tout = (stage1.tokens_out or 0) + (stage2.tokens_out or 0)
        combined = Completion(s.key, s.req.example_id, s.req.sample_idx, text, stage2.finish_reason, tin, tout,
                              (stage1.latency_s or 0) + (stage2.latency_s or 0), stage2.model, None,
                              (stage1.cost_usd or 0) + (stage2.cost_usd or 0) if self.price else None,
                              reasoning=stage1.reasoning, reasoning_tokens=stage1.reasoning_tokens)
        if self.cache is not None:
            self.cache.put(combined)
        return combined

    def _served(self, c: Completion, req: TeacherRequest) -> Completion:
        c = replace(c, example_id=req.example_id, sample_idx=req.sample_idx, latency_s=0.0,
                    cost_usd=self.price.cost(c.tokens_in, c.tokens_out) if self.price else None)
        if c.cost_usd:
            self._meter("settle", 0.0, c.cost_usd)  # paid once already: it counts towards this job's spend
        return c

    # ── the Batch API, with our exception tree ───────────────────────────────────────────────────────────────
    def _meter(self, method: str, *args):
        return self._aloop.run_until_complete(getattr(self.meter, method)(*args))

    def _api(self, what: str, fn: Callable[..., Any], *args, **kwargs) -> Any:
        """One Batch API call; transient failures (429, 5xx, timeouts, dropped connections) are tried again."""
        retrying = Retrying(retry=retry_if_exception_type(TransientTeacherError),
                            stop=stop_after_attempt(_CALL_ATTEMPTS), wait=lambda state: self._delay(state.attempt_number - 1, state.outcome.exception()),
                            sleep=self._sleep, reraise=True)
        for attempt in retrying:
            with attempt:
                return self._call(what, fn, *args, **kwargs)
        raise AssertionError("tenacity returns or raises")  # pragma: no cover

    def _call(self, what: str, fn: Callable[..., Any], *args, **kwargs) -> Any:
        openai = self._openai
        try:
            return fn(*args, **kwargs)
        except openai.APITimeoutError:
            raise TeacherTimeoutError(f"{what}: no response from {self.spec.base_url} within "
                                      f"{self.spec.timeout_s:g} s") from None
        except openai.APIConnectionError as exc:
            raise TeacherConnectionError(f"{what}: connection to {self.spec.base_url} failed "
                                         f"({type(exc).__name__})") from None
        except openai.APIStatusError as exc:
            status, text, headers = exc.status_code, exc.response.text, dict(exc.response.headers)
        except (openai.APIError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MalformedResponseError(f"{what}: unexpected answer ({type(exc).__name__}: {exc})") from None
        # mapped outside the except block, so no SDK error (whose text may echo the key) rides along
        try:
            raise_for_status(status, text, headers, self._api_key)
        except TeacherAuthError as exc:
            where = f"check the key in ${self.spec.api_key_env}" if self.spec.api_key_env else \
                "it needs an API key: set teacher.api_key_env"
            raise TeacherAuthError(f"{what}: {exc}: {where} for {self.spec.base_url}") from None
        except TeacherError as exc:
            exc.args = (f"{what}: {exc}",)
            raise
        raise AssertionError("raise_for_status raises for every error status")  # pragma: no cover

    @staticmethod
    def _delay(attempt: int, exc: BaseException | None) -> float:
        """The server's wait after a 429, else exponential backoff with jitter."""
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            return exc.retry_after
        return min(30.0, 0.5 * 2 ** attempt) + random.uniform(0, 0.5)

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise TeacherError("the batch backend was closed")


def _outcome(result: dict, secret: str | None) -> ChatResponse | tuple[str, bool]:
    """A result-file line: the chat completion, or (why it failed, whether sending it again may help)."""
    resp, error = result.get("response"), result.get("error")
    if isinstance(resp, dict) and resp.get("status_code") == 200:
        try:
            return parse_chat(resp.get("body"), {})
        except MalformedResponseError as exc:
            return str(exc), True
    if isinstance(resp, dict) and resp.get("status_code"):
        try:
            raise_for_status(int(resp["status_code"]), json.dumps(resp.get("body")), {}, secret)
        except TransientTeacherError as exc:
            return str(exc), True
        except TeacherError as exc:  # the API refused this request (a 4xx): sending it again cannot help
            return str(exc), False
    if isinstance(error, dict):
        return f"{error.get('code') or 'error'}: {error.get('message') or 'no message'}", True
    return "the result file holds neither an answer nor an error for this request", True
