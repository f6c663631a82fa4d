"""`stepwise sim`: an OpenAI-compatible teacher simulator for the demo, tests and benchmarks.

It is a test tool that stands in for a paid teacher at the outer boundary, never the default teacher of a real
job. It behaves like a GPU inference server behind a rate-limited API:

- latency: fixed + per output token, with jitter; `capacity` requests are served at once, the rest queue;
- RPM and TPM limits over a sliding 60 s window, answered with 429, `Retry-After` and `x-ratelimit-*` headers;
- faults at set rates: 500, 503, dropped connections, stalls past the client timeout, malformed JSON,
  truncated completions (`finish_reason: "length"`), garbage text;
- `/stats` counts requests received and completed per request key (the `X-Stepwise-Request-Keys` header our
  client sends, else a hash of the body), so a test can prove no completed request was sent twice;
- the Batch API (`/v1/files`, `/v1/batches`): a batch is `in_progress` once looked at and `completed` after
  `batch_delay_s`, its lines answered like chat requests (each line's `custom_id` counted as a request key),
  lines failing at `batch_fail_rate` into the error file, and with `batch_expire` the run's first batch expires
  with no output at all.

Answers come from a completions file (the replay format), from a labeled dataset (task-aware: it reasons to
the gold answer, or to a wrong one at `wrong_rate`), or else a generic short chain of thought.

With `reasoning` set it answers like a reasoning model: a thinking trace that works the problem, then a short
final answer with `\boxed{label}`, and `usage.completion_tokens_details.reasoning_tokens`. The trace goes where
servers put it (`REASONING_STYLES`): in `message.reasoning` (`field`: vLLM, OpenRouter), in
`message.reasoning_content` (DeepSeek's API, SGLang), inline in the content between `<think>` and `</think>`
(`inline`), or prefilled (the chat template opened the trace, so the content starts inside it and only
`</think>` appears, as R1-Distill models answer). A truncated answer is then an unfinished trace: no closing tag
for the inline styles, a trace with empty content for the field styles, `finish_reason: "length"` for all.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from stepwise.pipeline.sim.limits import Window, charged_tokens, text_tokens

FAULTS = ("error_500", "error_503", "drop", "stall", "malformed", "truncated", "garbage")
REASONING_STYLES = ("none", "field", "reasoning_content", "inline", "prefilled")
_FIELD_OF = {"field": "reasoning", "reasoning_content": "reasoning_content"}  # styles that send the trace apart


@dataclass
class SimConfig:
    """Simulator settings; the CLI flags have the same names."""

    latency_s: float = 0.5
    per_token_s: float = 0.0
    jitter_s: float = 0.0
    capacity: int = 128
    rpm: int | None = None
    tpm: int | None = None
    window_s: float = 60.0  # the rate-limit window; shorter in tests so limits bite within seconds
    faults: dict[str, float] = field(default_factory=dict)
    stall_s: float = 30.0
    api_key: str | None = None  # when set, requests must carry it as a bearer token
    supports_n: bool = True
    answers: str | None = None  # replay-format completions file
    dataset: str | None = None  # labeled JSONL for task-aware answers: {id, question, answer}
    wrong_rate: float = 0.1
    seed: int = 0
    model: str = "stepwise-sim"
    batch_delay_s: float = 2.0  # a batch completes this long after it was created
    batch_fail_rate: float = 0.0  # share of batch lines that fail (error file)
    batch_expire: bool = False  # the first batch of the run expires with no output
    reasoning: str = "none"  # answer like a reasoning model, the trace where this style puts it

    def __post_init__(self) -> None:
        if self.reasoning not in REASONING_STYLES:
            raise ValueError(f"unknown reasoning style {self.reasoning!r}; known: {', '.join(REASONING_STYLES)}")
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULTS)}")
        if sum(self.faults.values()) > 1:
            raise ValueError("fault rates add up to more than 1")
        if not 0 <= self.batch_fail_rate <= 1:
            raise ValueError("batch_fail_rate must be between 0 and 1")


class Simulator:
    """The server state: limits, queue, answer sources and counters."""

    def __init__(self, config: SimConfig):
        self.config = config
        self.rng = random.Random(config.seed)
        self.slots = asyncio.Semaphore(config.capacity)
        self.rpm = Window(config.rpm, config.window_s) if config.rpm else None
        self.tpm = Window(config.tpm, config.window_s) if config.tpm else None
        self.received: Counter[str] = Counter()
        self.completed: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.accepted_times: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.started = time.monotonic()
        self.files: dict[str, tuple[dict, bytes]] = {}  # file id -> (file object, content)
        self.batches: dict[str, dict] = {}  # batch id -> batch object, in creation order
        self.batch_work: dict[str, dict] = {}  # batch id -> its lines, problems, start time, fate
        self.batch_rng = random.Random(f"{config.seed}:batch")
        self.batches_created = 0
        self.files_uploaded = 0
        self.largest_upload = 0
        self.recorded: dict[tuple[str, int], dict] = {}
        self.gold: dict[str, str] = {}
        self.questions: dict[str, str] = {}  # question text -> example id
        self.question_of: dict[str, str] = {}  # example id -> question text
        if config.answers:
            for line in Path(config.answers).read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.recorded[(str(row["example_id"]), int(row.get("sample_idx") or 0))] = row
        if config.dataset:
            for line in Path(config.dataset).read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.gold[str(row["id"])] = str(row["answer"])
                    self.questions[str(row["question"])] = str(row["id"])
                    self.question_of[str(row["id"])] = str(row["question"])

    # ── answers ──────────────────────────────────────────────────────────────────────────────────────────────
    def _example_id(self, request: web.Request, body: dict) -> str | None:
        if request.headers.get("X-Stepwise-Example-Id"):
            return unquote(request.headers["X-Stepwise-Example-Id"])
        last = next((m.get("content", "") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        return next((eid for q, eid in self.questions.items() if q in last), None)

    def _example_in(self, body: dict) -> str | None:
        """The dataset example of a batch line (no headers there): the latest user message holding a question,
        so that the answer prompt of a two-stage request finds its example too."""
        for m in reversed(body.get("messages", [])):
            if isinstance(m, dict) and m.get("role") == "user":
                content = str(m.get("content", ""))
                found = next((eid for q, eid in self.questions.items() if q in content), None)
                if found is not None:
                    return found
        return None

    def answer(self, example_id: str | None, sample_idx: int, body: dict) -> Reply:
        """What the model says for one choice, before the reasoning style places its trace."""
        rec = self.recorded.get((example_id, sample_idx)) if example_id else None
        if rec is not None:
            trace = rec.get("reasoning") if self.config.reasoning != "none" else None
            return Reply(str(rec.get("text") or ""), str(trace) if trace else None,
                         str(rec.get("finish_reason") or "stop"))
        messages = body.get("messages", [])
        if messages and "Therefore, the answer" in str(messages[-1].get("content", "")):
            # second stage of zero-shot CoT: only the answer
            return Reply(f" {self.gold.get(example_id or '', '42')}.")
        rng = random.Random(f"{self.config.seed}:{example_id}:{sample_idx}")
        if example_id in self.gold:
            gold = self.gold[example_id]
            if rng.random() < self.config.wrong_rate:
                label = _wrong(gold, rng)
                rationale = f"Working it through, I get {label}."
            else:
                label = gold
                rationale = f"{rng.choice(_OPENINGS)} it out step by step gives {gold}."
        else:
            label, rationale = "42", "Adding the numbers step by step gives 42."
        structured = body.get("response_format") or body.get("structured_outputs") or body.get("guided_json")
        if self.config.reasoning == "none":
            # structured output as OpenAI (response_format) and vLLM (structured_outputs, guided_json) ask for it
            if structured:
                return Reply(json.dumps({"rationale": rationale, "label": label}))
            return Reply(f"{rationale} So the answer is {label}.")
        trace = self._trace(example_id, label, rng)
        if structured:
            return Reply(json.dumps({"rationale": rationale, "label": label}), trace)
        return Reply(f"{rationale.removesuffix('.')}, so the answer is \\boxed{{{label}}}.", trace)

    def _trace(self, example_id: str | None, label: str, rng: random.Random) -> str:
        """A reasoning model's thinking: it restates the problem, works it, checks, and concludes with `label`."""
        question = self.question_of.get(example_id or "", "the question above")
        steps = rng.sample(_STEPS, 2)
        return (f"Okay, let me work through this. The problem: {question.strip()}\n\n"
                f"{steps[0]} {steps[1]} Putting it together gives {label}.\n\n"
                f"Wait, let me double-check that before answering. Going over each step again, I still get "
                f"{label}. So the answer is {label}.")

    def dress(self, reply: Reply, truncated: bool) -> tuple[dict[str, Any], str, int, int]:
        """(message, finish_reason, output tokens, reasoning tokens) of one choice in the configured style; a
        truncated choice is cut in half, and a reasoning model's is cut inside its trace."""
        style, trace, content, finish = self.config.reasoning, reply.trace, reply.content, reply.finish
        if trace is None:  # no trace: what every style sends is the content
            if truncated:
                content, finish = content[: max(1, len(content) // 2)], "length"
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if style in _FIELD_OF:
                message[_FIELD_OF[style]] = None
            return message, finish, text_tokens(content), 0
        if truncated:
            trace, finish = trace[: max(1, len(trace) // 2)], "length"
        if style in _FIELD_OF:
            # cut off while thinking: vLLM sends no content at all, DeepSeek's API an empty one
            said = None if truncated and style == "field" else ("" if truncated else content)
            message = {"role": "assistant", "content": said, _FIELD_OF[style]: trace}
            return message, finish, text_tokens(trace) + (text_tokens(said) if said else 0), text_tokens(trace)
        opened = "<think>\n" if style == "inline" else ""
        text = f"{opened}{trace}" if truncated else f"{opened}{trace}\n</think>\n\n{content}"
        return {"role": "assistant", "content": text}, finish, text_tokens(text), text_tokens(trace)

    # ── limits ───────────────────────────────────────────────────────────────────────────────────────────────
    def _limit_headers(self, now: float) -> dict[str, str]:
        h = {}
        if self.rpm:
            h["x-ratelimit-limit-requests"] = str(self.rpm.limit)
            h["x-ratelimit-remaining-requests"] = str(self.rpm.remaining(now))
            reset = self.rpm.wait(now, self.rpm.limit) if self.rpm.used else 0.0
            h["x-ratelimit-reset-requests"] = f"{max(0.0, reset):.3f}s"
        if self.tpm:
            h["x-ratelimit-limit-tokens"] = str(self.tpm.limit)
            h["x-ratelimit-remaining-tokens"] = str(self.tpm.remaining(now))
            reset = self.tpm.wait(now, self.tpm.limit) if self.tpm.used else 0.0
            h["x-ratelimit-reset-tokens"] = f"{max(0.0, reset):.3f}s"
        return h

    def _admit(self, tokens: int) -> float:
        """0 and the request is counted, or the seconds to wait (a 429)."""
        now = time.monotonic()
        wait = max(self.rpm.wait(now, 1) if self.rpm else 0.0,
                   self.tpm.wait(now, tokens) if self.tpm else 0.0)
        if wait > 0:
            return wait
        if self.rpm:
            self.rpm.admit(now, 1)
        if self.tpm:
            self.tpm.admit(now, tokens)
        return 0.0

    # ── handlers ─────────────────────────────────────────────────────────────────────────────────────────────
    def _error(self, status: int, message: str, kind: str, headers: dict | None = None) -> web.Response:
        self.statuses[str(status)] += 1
        return web.json_response({"error": {"message": message, "type": kind, "code": None}}, status=status,
                                 headers=headers)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        keys = [k for k in request.headers.get("X-Stepwise-Request-Keys", "").split(",") if k]
        if not keys:
            keys = [hashlib.sha256(raw).hexdigest()[:16]]
        for k in keys:
            self.received[k] += 1
        if self.config.api_key is not None:
            auth = request.headers.get("Authorization", "")
            if auth != f"Bearer {self.config.api_key}":
                return self._error(401, "Incorrect API key provided.", "invalid_request_error")
        try:
            body = json.loads(raw)
            messages = body["messages"]
            if not isinstance(messages, list) or not messages:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return self._error(400, "body must be JSON with a non-empty 'messages' list", "invalid_request_error")
        n = int(body.get("n") or 1)
        if n > 1 and not self.config.supports_n:
            return self._error(400, "n > 1 is not supported by this server", "invalid_request_error")
        tokens = charged_tokens(body)
        wait = self._admit(tokens)
        now = time.monotonic()
        if wait > 0:
            headers = self._limit_headers(now)
            headers["retry-after"] = str(max(1, math.ceil(wait)))
            headers["retry-after-ms"] = str(int(wait * 1000) + 1)
            return self._error(429, "Rate limit reached; please retry after the indicated time.", "requests",
                               headers)
        self.accepted_times.append(now)
        fault = self._draw_fault()
        if fault in ("error_500", "error_503"):
            return self._error(int(fault[-3:]), "The server had an error while processing your request.",
                               "server_error")
        if fault == "stall":
            await asyncio.sleep(self.config.stall_s)
        async with self.slots:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                example_id = self._example_id(request, body)
                idxs = [int(i) for i in request.headers.get("X-Stepwise-Sample-Idx", "").split(",") if i.strip()]
                idxs = (idxs + list(range(len(idxs), n)))[:n] if idxs else list(range(n))
                choices, out_tokens, thought = [], 0, 0
                for i in range(n):
                    reply = self.answer(example_id, idxs[i], body)
                    if fault == "garbage":
                        reply = Reply("".join(self.rng.choice("qwxz #%&") for _ in range(40)))
                    message, finish, choice_tokens, reasoning_tokens = self.dress(reply, fault == "truncated")
                    out_tokens += choice_tokens
                    thought += reasoning_tokens
                    choices.append({"index": i, "message": message, "finish_reason": finish, "logprobs": None})
                delay = self.config.latency_s + self.config.per_token_s * out_tokens / n
                if self.config.jitter_s:
                    delay += self.rng.uniform(-self.config.jitter_s, self.config.jitter_s)
                await asyncio.sleep(max(0.0, delay))
            finally:
                self.in_flight -= 1
        if fault == "drop":
            self.statuses["drop"] += 1
            request.transport.close() if request.transport else None
            raise ConnectionResetError("simulated dropped connection")
        if fault == "malformed":
            self.statuses["malformed"] += 1
            return web.Response(text='{"id": "chatcmpl-x", "choices": [', content_type="application/json")
        prompt_tokens = tokens - n * int(body.get("max_completion_tokens") or body.get("max_tokens") or 256)
        payload = {
            "id": f"chatcmpl-{self.rng.getrandbits(48):012x}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model") or self.config.model, "choices": choices,
            "usage": self._usage(prompt_tokens, out_tokens, thought),
        }
        for k in keys:
            self.completed[k] += 1
        self.statuses["200"] += 1
        return web.json_response(payload, headers=self._limit_headers(time.monotonic()))

    # ── the Batch API ────────────────────────────────────────────────────────────────────────────────────────
    def _refused(self, request: web.Request) -> web.Response | None:
        if self.config.api_key is not None and \
                request.headers.get("Authorization", "") != f"Bearer {self.config.api_key}":
            return self._error(401, "Incorrect API key provided.", "invalid_request_error")
        return None

    def _not_found(self, kind: str, name: str) -> web.Response:
        return self._error(404, f"No such {kind} object: {name}", "invalid_request_error")

    def _store_file(self, content: bytes, filename: str, purpose: str) -> dict:
        file = {"id": f"file-{uuid.uuid4().hex[:24]}", "object": "file", "bytes": len(content),
                "created_at": int(time.time()), "filename": filename, "purpose": purpose, "status": "processed",
                "expires_at": None, "status_details": None}
        self.files[file["id"]] = (file, content)
        return file

    async def upload_file(self, request: web.Request) -> web.Response:
        """POST /v1/files (multipart: purpose, file)."""
        if (refused := self._refused(request)) is not None:
            return refused
        try:
            form = await request.post()
        except ValueError:
            return self._error(400, "expected a multipart form with 'purpose' and 'file'", "invalid_request_error")
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, web.FileField) or not isinstance(purpose, str) or not purpose:
            return self._error(400, "expected a multipart form with 'purpose' and 'file'", "invalid_request_error")
        content = upload.file.read()
        self.files_uploaded += 1
        self.largest_upload = max(self.largest_upload, len(content))
        return web.json_response(self._store_file(content, upload.filename or "upload.jsonl", purpose))

    async def file_info(self, request: web.Request) -> web.Response:
        """GET /v1/files/{file_id}."""
        if (refused := self._refused(request)) is not None:
            return refused
        entry = self.files.get(request.match_info["file_id"])
        return web.json_response(entry[0]) if entry else self._not_found("File", request.match_info["file_id"])

    async def file_content(self, request: web.Request) -> web.Response:
        """GET /v1/files/{file_id}/content."""
        if (refused := self._refused(request)) is not None:
            return refused
        entry = self.files.get(request.match_info["file_id"])
        if entry is None:
            return self._not_found("File", request.match_info["file_id"])
        return web.Response(body=entry[1], content_type="application/octet-stream")

    async def create_batch(self, request: web.Request) -> web.Response:
        """POST /v1/batches: lines are checked now (a bad file fails the batch, as the API does) and answered
        when the batch's time is up."""
        if (refused := self._refused(request)) is not None:
            return refused
        try:
            body = await request.json()
            file_id, endpoint, window = body["input_file_id"], body["endpoint"], body["completion_window"]
        except (ValueError, KeyError, TypeError):
            return self._error(400, "expected JSON with input_file_id, endpoint and completion_window",
                               "invalid_request_error")
        if endpoint != "/v1/chat/completions":
            return self._error(400, f"this simulator batches only /v1/chat/completions, not {endpoint}",
                               "invalid_request_error")
        if window != "24h":
            return self._error(400, "completion_window must be 24h", "invalid_request_error")
        entry = self.files.get(file_id)
        if entry is None:
            return self._not_found("File", file_id)
        if entry[0]["purpose"] != "batch":
            return self._error(400, f"file {file_id} has purpose {entry[0]['purpose']!r}, not 'batch'",
                               "invalid_request_error")
        lines, problems, seen = [], [], set()
        for number, raw in enumerate(entry[1].decode("utf-8", errors="replace").splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                custom_id = str(line["custom_id"])
                if line.get("url") != endpoint or line.get("method") != "POST" or \
                        not isinstance(line.get("body"), dict):
                    raise ValueError(f"needs method POST, url {endpoint} and a body")
                if custom_id in seen:
                    raise ValueError(f"custom_id {custom_id!r} appears twice")
            except (ValueError, KeyError, TypeError) as exc:
                problems.append({"code": "invalid_request", "message": str(exc) or "not a batch line",
                                 "param": None, "line": number})
                continue
            seen.add(custom_id)
            lines.append(line)
        now = int(time.time())
        batch = {"id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch", "endpoint": endpoint, "errors": None,
                 "input_file_id": file_id, "completion_window": window, "status": "validating",
                 "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
                 "expires_at": now + 86400, "finalizing_at": None, "completed_at": None, "failed_at": None,
                 "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                 "metadata": body.get("metadata")}
        for line in lines:
            self.received[str(line["custom_id"])] += 1
        self.batches_created += 1
        self.batches[batch["id"]] = batch
        self.batch_work[batch["id"]] = {"lines": lines, "problems": problems, "started": time.monotonic(),
                                        "expire": self.config.batch_expire and self.batches_created == 1}
        return web.json_response(batch)

    async def get_batch(self, request: web.Request) -> web.Response:
        """GET /v1/batches/{batch_id}: looking at a batch moves it along."""
        if (refused := self._refused(request)) is not None:
            return refused
        batch_id = request.match_info["batch_id"]
        if batch_id not in self.batches:
            return self._not_found("Batch", batch_id)
        self._advance(batch_id)
        return web.json_response(self.batches[batch_id])

    async def list_batches(self, request: web.Request) -> web.Response:
        """GET /v1/batches: newest first, all on one page."""
        if (refused := self._refused(request)) is not None:
            return refused
        data = list(reversed(self.batches.values()))
        return web.json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None, "has_more": False})

    def _advance(self, batch_id: str) -> None:
        batch, work = self.batches[batch_id], self.batch_work[batch_id]
        if batch["status"] not in ("validating", "in_progress"):
            return
        now = int(time.time())
        if work["problems"]:
            batch.update(status="failed", failed_at=now, errors={"object": "list", "data": work["problems"]})
            return
        if batch["status"] == "validating":
            batch.update(status="in_progress", in_progress_at=now)
        if time.monotonic() - work["started"] < self.config.batch_delay_s:
            return
        if work["expire"]:
            batch.update(status="expired", expired_at=now)
            return
        outputs, errors = [], []
        for line in work["lines"]:
            custom_id, body = str(line["custom_id"]), line["body"]
            request_id = f"batch_req_{uuid.uuid4().hex[:24]}"
            n = int(body.get("n") or 1)
            if self.batch_rng.random() < self.config.batch_fail_rate:
                errors.append({"id": request_id, "custom_id": custom_id, "response": None,
                               "error": {"code": "server_error", "message": "The server had an error while "
                                                                            "processing this request."}})
            elif not isinstance(body.get("messages"), list) or not body["messages"] or \
                    (n > 1 and not self.config.supports_n):
                message = "n > 1 is not supported by this server" if body.get("messages") else \
                    "body must have a non-empty 'messages' list"
                errors.append({"id": request_id, "custom_id": custom_id, "error": None, "response": {
                    "status_code": 400, "request_id": request_id,
                    "body": {"error": {"message": message, "type": "invalid_request_error", "code": None}}}})
            else:
                outputs.append({"id": request_id, "custom_id": custom_id, "error": None, "response": {
                    "status_code": 200, "request_id": request_id, "body": self._batch_answer(body, n)}})
                self.completed[custom_id] += 1
        if outputs:
            batch["output_file_id"] = self._store_file(_jsonl(outputs), f"{batch_id}_output.jsonl",
                                                       "batch_output")["id"]
        if errors:
            batch["error_file_id"] = self._store_file(_jsonl(errors), f"{batch_id}_error.jsonl",
                                                      "batch_output")["id"]
        batch.update(status="completed", finalizing_at=now, completed_at=now,
                     request_counts={"total": len(work["lines"]), "completed": len(outputs), "failed": len(errors)})

    def _batch_answer(self, body: dict, n: int) -> dict:
        """The chat completion one batch line gets: the same answers as a chat request without our headers."""
        example_id = self._example_in(body)
        choices, out_tokens, thought = [], 0, 0
        for i in range(n):
            message, finish, choice_tokens, reasoning_tokens = self.dress(self.answer(example_id, i, body), False)
            out_tokens += choice_tokens
            thought += reasoning_tokens
            choices.append({"index": i, "message": message, "finish_reason": finish, "logprobs": None})
        prompt_tokens = charged_tokens(body) - n * int(body.get("max_completion_tokens") or body.get("max_tokens")
                                                       or 256)
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model") or self.config.model, "choices": choices,
                "usage": self._usage(prompt_tokens, out_tokens, thought)}

    def _usage(self, prompt_tokens: int, out_tokens: int, reasoning_tokens: int) -> dict[str, Any]:
        """OpenAI's usage object; a reasoning model's counts its trace in `completion_tokens` and apart."""
        usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": out_tokens,
                                 "total_tokens": prompt_tokens + out_tokens}
        if self.config.reasoning != "none":
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
        return usage

    def _draw_fault(self) -> str | None:
        r = self.rng.random()
        for kind in FAULTS:
            rate = self.config.faults.get(kind, 0.0)
            if r < rate:
                return kind
            r -= rate
        return None

    def stats(self) -> dict[str, Any]:
        times = self.accepted_times
        best, j = 0, 0
        for i, t in enumerate(times):  # the most requests accepted in any 60 s window
            while times[j] <= t - 60.0:
                j += 1
            best = max(best, i - j + 1)
        return {
            "received": sum(self.received.values()),
            "completed": sum(self.completed.values()),
            "distinct_received": len(self.received),
            "distinct_completed": len(self.completed),
            "completed_more_than_once": sum(1 for c in self.completed.values() if c > 1),
            "batches_created": self.batches_created,
            "files_uploaded": self.files_uploaded,
            "largest_upload_bytes": self.largest_upload,
            "statuses": dict(self.statuses),
            "max_in_flight": self.max_in_flight,
            "max_accepted_in_any_60s": best,
            "uptime_s": round(time.monotonic() - self.started, 3),
        }

    async def stats_handler(self, request: web.Request) -> web.Response:
        data = self.stats()
        if request.query.get("keys"):
            data["per_key"] = {k: {"received": self.received[k], "completed": self.completed[k]}
                               for k in self.received}
        return web.json_response(data)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.config.model, "object": "model"}]})


_OPENINGS = ("Reading the question carefully and working", "Taking the quantities one at a time and working",
             "Writing down what is known and working", "Checking each step as I go and working")
_STEPS = ("First I write down every quantity the problem gives.", "Then I see which of them change, and how.",
          "I take the changes in the order they happen.", "Each step only uses what the one before it found.",
          "Nothing in the question is left unused.", "The units stay the same throughout.")


@dataclass(frozen=True)
class Reply:
    """One choice as the model says it: its answer, its thinking trace (a reasoning model's), why it ended."""

    content: str
    trace: str | None = None
    finish: str = "stop"


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _wrong(gold: str, rng: random.Random) -> str:
    try:
        value = float(gold)
        return str(int(value) + rng.choice((-2, -1, 1, 3))) if value == int(value) else f"{value + 1:g}"
    except ValueError:
        return {"yes": "no", "no": "yes"}.get(gold.lower(), "none of them")


SIMULATOR = web.AppKey("simulator", Simulator)


def build_app(config: SimConfig) -> web.Application:
    sim = Simulator(config)
    app = web.Application(client_max_size=256 * 1024 * 1024)  # batch input files go up to 200 MB
    app[SIMULATOR] = sim
    app.router.add_post("/v1/chat/completions", sim.chat)
    app.router.add_get("/stats", sim.stats_handler)
    app.router.add_get("/v1/models", sim.models)
    app.router.add_post("/v1/files", sim.upload_file)
    app.router.add_get("/v1/files/{file_id}", sim.file_info)
    app.router.add_get("/v1/files/{file_id}/content", sim.file_content)
    app.router.add_post("/v1/batches", sim.create_batch)
    app.router.add_get("/v1/batches", sim.list_batches)
    app.router.add_get("/v1/batches/{batch_id}", sim.get_batch)
    return app


def parse_faults(text: str | None) -> dict[str, float]:
    """`error_503=0.1,stall=0.05` -> {"error_503": 0.1, "stall": 0.05}."""
    out: dict[str, float] = {}
    for part in filter(None, re.split(r"\s*,\s*", text or "")):
        name, _, rate = part.partition("=")
        out[name.strip()] = float(rate)
    return out


async def serve(config: SimConfig, host: str = "127.0.0.1", port: int = 0, ready=None) -> None:
    """Run until cancelled; calls `ready(port)` once listening."""
    # handler_cancellation: a request whose client hung up stops there and is not counted as completed
    runner = web.AppRunner(build_app(config), access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked for
    if ready:
        ready(bound)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
