"""HTTP transports for OpenAI-compatible chat completions, mapping every failure onto our exception tree.

Three clients, one contract (`chat(body, headers) -> ChatResponse`):
- `HttpToolsTransport` (default): keep-alive HTTP/1.1 connections on the event loop's own transports, responses
  read by httptools (llhttp, the parser uvicorn uses). About 25 µs of CPU per request where aiohttp's client
  takes ~150 (bench/scale.py): on a fast local teacher the client, not the teacher, was the limit.
- `AiohttpTransport`: an aiohttp session, for what the lean client leaves out (redirects, compressed responses).
- `OpenAISDKTransport`: the `openai` package's AsyncOpenAI over its aiohttp transport, for users who want the
  SDK's behaviour; it costs ~1.7 ms of CPU per request here, so it saturates less on small machines.

Both read the raw JSON body with one parser (`parse_chat`), so what the SDK's typed objects leave out (vLLM's
`message.reasoning`, DeepSeek's and SGLang's `message.reasoning_content`) is read the same way by either. Without a
`timeout_s` on the teacher, each request waits as long as its own output limit needs (`request_timeout_s`).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit
from typing import Any, NamedTuple, Protocol

import orjson

from stepwise.pipeline.errors import (
    MalformedResponseError,
    RateLimitedError,
    RequestRejectedError,
    TeacherAuthError,
    TeacherConnectionError,
    TeacherServerError,
    TeacherTimeoutError,
)
from stepwise.pipeline.teachers.limits import estimate_tokens, request_timeout_s, retry_after_seconds
from stepwise.pipeline.types import Completion, TeacherRequest


class Choice(NamedTuple):
    """One choice of a chat completion: the content as the server sent it (inline `<think>` tags included: the
    parser splits those), why it ended, and the thinking trace when the server sent it in a field of its own."""

    text: str | None
    finish_reason: str | None
    reasoning: str | None = None


@dataclass(frozen=True, slots=True)
class ChatResponse:
    choices: list[Choice]  # in index order
    tokens_in: int | None
    tokens_out: int | None  # all output tokens, the trace's included (as OpenAI and vLLM count them)
    model: str | None
    headers: dict[str, str]
    reasoning_tokens: int | None = None  # usage.completion_tokens_details.reasoning_tokens, when given


class ChatTransport(Protocol):
    async def chat(self, body: dict[str, Any], headers: dict[str, str]) -> ChatResponse: ...
    async def close(self) -> None: ...


def chat_body(model: str, req: TeacherRequest, n: int, messages: Sequence[dict[str, str]] | None = None,
              structured_output: str = "response_format") -> dict[str, Any]:
    """The chat completions body for `n` samples of one request, as every OpenAI-protocol backend sends it.

    Samples sent one request each get the seed offset by their index, so they differ; structured output goes
    as OpenAI's `response_format`, or vLLM's `structured_outputs` / `guided_json`. `max_completion_tokens`, when
    set, goes instead of `max_tokens` (hosted reasoning models refuse the latter); `chat_template_kwargs` is a
    top-level field, as vLLM and SGLang take it; `extra_body` fields are merged in, never over a field set here.
    """
    s = req.sampling
    body: dict[str, Any] = {"model": model, "messages": list(messages if messages is not None else req.messages),
                            "temperature": s.temperature, "top_p": s.top_p}
    if s.max_completion_tokens is not None:
        body["max_completion_tokens"] = s.max_completion_tokens
    else:
        body["max_tokens"] = s.max_tokens
    if s.reasoning_effort is not None:
        body["reasoning_effort"] = s.reasoning_effort
    if s.chat_template_kwargs is not None:
        body["chat_template_kwargs"] = json.loads(s.chat_template_kwargs)
    if n > 1:
        body["n"] = n
    if s.seed is not None:
        body["seed"] = s.seed + req.sample_idx
    if s.stop:
        body["stop"] = list(s.stop)
    if req.response_schema is not None:
        schema = json.loads(req.response_schema)
        if structured_output == "structured_outputs":
            body["structured_outputs"] = {"json": schema}
        elif structured_output == "guided_json":
            body["guided_json"] = schema
        else:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "rationale_and_label", "schema": schema, "strict": True}}
    if s.extra_body is not None:
        for name, value in json.loads(s.extra_body).items():
            body.setdefault(name, value)
    return body


def choice_completions(members: Sequence[tuple[TeacherRequest, str]], resp: ChatResponse, latency: float | None,
                       model: str, price=None) -> list[Completion]:
    """One Completion per sample of a response with n choices. The prompt was paid once, so its tokens are
    split over the samples; the output tokens by the length of each choice (trace and content), the reasoning
    tokens by the length of each trace. A trace without content (a reasoning model cut off while thinking) is an
    answer with empty text, for the parser to judge; only a choice with neither is a failure."""
    n = len(members)
    choices = [resp.choices[i] if i < len(resp.choices) else Choice(None, None) for i in range(n)]
    texts = [c.text if c.text is not None or c.reasoning is None else "" for c in choices]
    est = [estimate_tokens((c.reasoning or "") + (t or "")) for c, t in zip(choices, texts, strict=True)]
    total_out = resp.tokens_out if resp.tokens_out is not None else sum(est)
    traces = [estimate_tokens(c.reasoning) if c.reasoning else 0 for c in choices]
    trace_weights = traces if any(traces) else est  # a hidden trace (OpenAI's): shared like the output
    out = []
    for i, ((req, key), choice, text) in enumerate(zip(members, choices, texts, strict=True)):
        tin = None if resp.tokens_in is None else resp.tokens_in // n + (resp.tokens_in % n if i == 0 else 0)
        tout = _share(total_out, est, i)
        thought = None if resp.reasoning_tokens is None else _share(resp.reasoning_tokens, trace_weights, i)
        out.append(Completion(key, req.example_id, req.sample_idx, text, choice.finish_reason or "stop", tin, tout,
                              latency, resp.model or model,
                              None if text is not None else "the teacher returned no text",
                              price.cost(tin, tout) if price else None, retryable=text is None,
                              reasoning=choice.reasoning, reasoning_tokens=thought))
    return out


def _share(total: int, weights: Sequence[int], i: int) -> int:
    """Item i's part of `total`, split in proportion to `weights`."""
    return round(total * weights[i] / max(1, sum(weights)))


def _scrub(text: str, secret: str | None) -> str:
    text = text[:300]
    return text.replace(secret, "***") if secret else text


def raise_for_status(status: int, payload_text: str, headers: dict[str, str], secret: str | None) -> None:
    """Map a non-200 status onto the exception tree (by status, never by message text)."""
    if status in (401, 403):
        # the body is not repeated: providers echo part of the key in it
        raise TeacherAuthError(f"HTTP {status}: the teacher refused the credentials")
    detail = _error_message(payload_text, secret)
    if status == 429:
        raise RateLimitedError(f"HTTP 429: {detail}", status, retry_after_seconds(headers))
    if status == 408:
        raise TeacherTimeoutError(f"HTTP 408: {detail}", status)
    if status == 409 or status >= 500:
        raise TeacherServerError(f"HTTP {status}: {detail}", status)
    raise RequestRejectedError(f"HTTP {status}: {detail}", status)


def _error_message(payload_text: str, secret: str | None) -> str:
    try:
        err = json.loads(payload_text).get("error") or {}
        message = err.get("message") if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        message = payload_text
    return _scrub(str(message or "no error message").strip(), secret)


def parse_chat(payload: Any, headers: dict[str, str]) -> ChatResponse:
    """Read a chat completion body; anything that is not one raises MalformedResponseError.

    The trace is read from `message.reasoning` (current vLLM, OpenRouter, Ollama) or `message.reasoning_content`
    (DeepSeek's API, SGLang, older vLLM), and the reasoning tokens from `usage.completion_tokens_details`."""
    try:
        raw = payload["choices"]
        choices = [Choice(None, None)] * len(raw)
        for pos, ch in enumerate(raw):
            idx = ch.get("index", pos)
            message = ch["message"]
            reasoning = _text(message, "reasoning") or _text(message, "reasoning_content") or None
            choices[idx] = Choice(_text(message, "content"), ch.get("finish_reason"), reasoning)
        usage = payload.get("usage") or {}
        details = usage.get("completion_tokens_details") or {}
        thought = details.get("reasoning_tokens") if isinstance(details, dict) else None
        return ChatResponse(choices, usage.get("prompt_tokens"), usage.get("completion_tokens"),
                            payload.get("model"), headers, thought if isinstance(thought, int) else None)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise MalformedResponseError(f"not a chat completion: {type(exc).__name__}: {exc}") from None


def _text(message: dict[str, Any], name: str) -> str | None:
    value = message.get(name)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"message.{name} is not a string")
    return value


def parse_chat_text(text: str | bytes, headers: dict[str, str]) -> ChatResponse:
    """A 200 body (text, or its bytes) -> ChatResponse; not JSON, or not a chat completion, is
    MalformedResponseError."""
    try:
        payload = load_json(text)
    except ValueError:
        raise MalformedResponseError("the response body is not JSON") from None
    return parse_chat(payload, headers)


def load_json(data: str | bytes) -> Any:
    """JSON in, with orjson (a fifth of the standard module's CPU on the engine's hot path); what orjson refuses
    and JSON allows (a lone surrogate escape) is read by the standard module, so what is accepted never changes;
    an integer past 64 bits (no response field holds one) reads as a float. Raises ValueError for what is not
    JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dump_json(value: Any) -> bytes:
    """A request body as JSON bytes: orjson's, or the standard module's for what orjson cannot write (an
    integer past 64 bits in a job's extra_body)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value).encode()


def chat_url(base_url: str) -> str:
    """{base_url}/chat/completions, a query (Azure's ?api-version=) kept after the path."""
    url = urlsplit(base_url)
    return urlunsplit(url._replace(path=f"{url.path.rstrip('/')}/chat/completions"))


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its response read by httptools' callbacks."""

    def __init__(self, pool: HttpToolsTransport):
        self.pool = pool
        self.parser = pool._httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.chunks: list[bytes] = []
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.closed = False

    def send(self, data: bytes) -> asyncio.Future:
        self.waiter = waiter = self.pool._loop.create_future()
        self.transport.write(data)
        return waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self._gone()

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except self.pool._httptools.HttpParserError as exc:
            self._fail(TeacherConnectionError(f"connection failed: not an HTTP response ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.headers_done and not {"content-length", "transfer-encoding"} & self.headers.keys():
            self.on_message_complete()  # a body without a length ends with the connection (HTTP/1.0 style)
        self._fail(TeacherConnectionError("connection failed: the server closed the connection"))
        self._gone()

    # httptools' callbacks
    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        body, self.chunks = b"".join(self.chunks), []
        headers, self.headers, self.headers_done = self.headers, {}, False
        if waiter is None:  # an answer nobody asked for: this connection cannot be trusted
            self.close()
        elif not waiter.done():
            waiter.set_result((self.parser.get_status_code(), body, headers, self.parser.should_keep_alive()))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _gone(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool._lost()


class HttpToolsTransport:
    """POST {base_url}/chat/completions over a pool of keep-alive HTTP/1.1 connections (at most
    `max_connections` + 8). A response is read whole, by Content-Length or chunks; a connection goes back to the
    pool unless the server closes it. A request fails over to tenacity's retry, never resent here: a connection
    lost before the answer is a TeacherConnectionError, as with aiohttp; a body without Content-Length or chunks
    ends with the connection. Not done (choose transport `aiohttp`): proxies, redirects, compressed responses
    (none is asked for: no Accept-Encoding is sent)."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float | None, max_connections: int):
        import httptools

        self._httptools = httptools
        url = urlsplit(chat_url(base_url))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = url.scheme == "https"  # the TLS context is built on the first connection
        host = f"[{self.host}]" if ":" in self.host else self.host
        if url.port is not None:
            host += f":{url.port}"
        target = url.path + (f"?{url.query}" if url.query else "")
        head = (f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Accept: application/json\r\nUser-Agent: stepwise\r\n")
        if api_key:
            head += f"Authorization: Bearer {api_key}\r\n"
        self._head = head.encode("latin-1")
        self.secret = api_key
        self.timeout_s = timeout_s
        self._limit = max_connections + 8
        self._open = 0  # connections open or opening
        self._idle: list[_Connection] = []
        self._waiters: deque[asyncio.Future] = deque()  # requests waiting for a connection
        self._loop: asyncio.AbstractEventLoop | None = None

    async def chat(self, body: dict[str, Any], headers: dict[str, str]) -> ChatResponse:
        seconds = self.timeout_s or request_timeout_s(body)
        payload = dump_json(body)
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("latin-1")
        message = b"%s%sContent-Length: %d\r\n\r\n%s" % (self._head, extra, len(payload), payload)
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        conn = answer = None
        try:
            async with asyncio.timeout(seconds):
                conn = await self._acquire()
                answer = await conn.send(message)
        except TimeoutError:
            raise TeacherTimeoutError(f"no response within the client timeout ({seconds:g} s)") from None
        except OSError as exc:  # refused, reset, unreachable, a name that does not resolve, a TLS failure
            raise TeacherConnectionError(f"connection failed: {type(exc).__name__}") from None
        finally:
            # cancelled, timed out or failed with the request out, even just as its answer came (read, the task
            # not yet resumed): the connection is in an unknown state, and is never handed back
            if conn is not None and answer is None:
                conn.waiter = None
                conn.close()
        status, raw, got, keep = answer
        self._release(conn, keep)
        if status != 200:
            raise_for_status(status, raw.decode("utf-8", errors="replace"), got, self.secret)
        return parse_chat_text(raw, got)

    async def warm(self) -> None:
        """Open one connection ahead of the first request and pool it, unless one is open or opening; a failure
        is left for the first request, which opens its own and reports it."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if self._open:
            return
        self._open += 1
        try:
            async with asyncio.timeout(self.timeout_s or 60):
                conn = await self._connect()
        except Exception:  # `_connect` gave its slot back
            return
        self._release(conn, True)

    async def _acquire(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        if self._open >= self._limit:
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                conn = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self._release(waiter.result(), True)  # handed over as this waiter gave up: pass it on
                elif waiter.done() and not waiter.cancelled():
                    self._lost()  # a free slot handed over as this waiter gave up: pass it on
                raise
            if conn is not None:
                return conn
            # None: a free slot, handed over by `_lost` (already counted)
        else:
            self._open += 1
        return await self._connect()

    async def _connect(self) -> _Connection:
        loop = self._loop
        if self._ssl is True:
            import ssl

            self._ssl = ssl.create_default_context()
        conn = _Connection(self)
        try:
            await loop.create_connection(lambda: conn, self.host, self.port, ssl=self._ssl or None)
        except BaseException:
            # its slot back, once: a connection made and then closed as this gave up (a timeout or a cancel
            # just after connecting) reports the same loss from connection_lost
            conn._gone()
            raise
        return conn

    def _release(self, conn: _Connection, keep: bool) -> None:
        """A connection done with its request: to the next waiter, else the pool; closed unless kept alive."""
        if not keep or conn.closed:
            conn.close()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _lost(self) -> None:
        """A connection closed (or never opened): its slot goes to the next waiter, else back to the count."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the waiter opens a connection in this slot
                return
        self._open -= 1

    async def close(self) -> None:
        for conn in list(self._idle):
            conn.close()
        self._idle.clear()


class AiohttpTransport:
    """POST {base_url}/chat/completions with aiohttp; one session and connection pool per backend."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float | None, max_connections: int):
        import aiohttp

        self._aiohttp = aiohttp
        self.url = chat_url(base_url)
        self.secret = api_key
        self.timeout_s = timeout_s
        self._timeouts: dict[float, Any] = {}
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max_connections + 8),
                                             headers=self.headers)

    async def chat(self, body: dict[str, Any], headers: dict[str, str]) -> ChatResponse:
        aiohttp = self._aiohttp
        seconds = self.timeout_s or request_timeout_s(body)
        try:
            # the body as a ready payload: aiohttp's own lookup of a payload type per request is skipped
            data = aiohttp.payload.BytesPayload(dump_json(body), content_type="application/json")
            async with self.session.post(self.url, data=data, headers=headers,
                                         timeout=self._timeout(seconds)) as resp:
                raw = await resp.read()
                got = dict(resp.headers)
                status = resp.status
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise TeacherTimeoutError(f"no response within the client timeout ({seconds:g} s)") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise TeacherConnectionError(f"connection failed: {type(exc).__name__}") from None
        if status != 200:
            raise_for_status(status, raw.decode("utf-8", errors="replace"), got, self.secret)
        return parse_chat_text(raw, got)

    def _timeout(self, seconds: float):
        """The ClientTimeout of a request: one per distinct value (a job has one or a few), built once."""
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = self._aiohttp.ClientTimeout(total=seconds)
        return timeout

    async def close(self) -> None:
        await self.session.close()


class OpenAISDKTransport:
    """The `openai` package's AsyncOpenAI client (aiohttp transport, its own retries off: we retry)."""

    # the body fields `create()` takes by name; the rest (chat_template_kwargs, vLLM's structured_outputs, the
    # job's extra_body) go through `extra_body`, which the SDK merges into the JSON as they are
    KNOWN = frozenset({"model", "messages", "n", "temperature", "top_p", "max_tokens", "max_completion_tokens",
                       "reasoning_effort", "seed", "stop", "response_format"})

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float | None, max_connections: int):
        import openai
        from openai import AsyncOpenAI, DefaultAioHttpClient

        self._openai = openai
        self.secret = api_key
        self.timeout_s = timeout_s
        self.client = AsyncOpenAI(base_url=base_url, api_key=api_key or "none", max_retries=0,
                                  http_client=DefaultAioHttpClient())

    async def chat(self, body: dict[str, Any], headers: dict[str, str]) -> ChatResponse:
        openai = self._openai
        kwargs = {k: v for k, v in body.items() if k in self.KNOWN}
        extra = {k: v for k, v in body.items() if k not in self.KNOWN}
        seconds = self.timeout_s or request_timeout_s(body)
        try:
            raw = await self.client.chat.completions.with_raw_response.create(
                **kwargs, extra_body=extra or None, extra_headers=headers, timeout=seconds)
            text = raw.http_response.text  # the raw JSON: fields the SDK's types lack are parsed as well
            got = dict(raw.headers)
        except openai.APITimeoutError:
            raise TeacherTimeoutError(f"no response within the client timeout ({seconds:g} s)") from None
        except openai.APIConnectionError as exc:
            raise TeacherConnectionError(f"connection failed: {type(exc).__name__}") from None
        except openai.APIStatusError as exc:
            raise_for_status(exc.status_code, exc.response.text, dict(exc.response.headers), self.secret)
            raise  # unreachable: raise_for_status always raises for non-200
        return parse_chat_text(text, got)

    async def close(self) -> None:
        await self.client.close()


def import_transport(kind: str) -> None:
    """Import the HTTP client a transport kind uses, ahead of its first request (the backend does this when it is
    built, so the first shard's clock does not start with a quarter of a second of imports)."""
    import importlib

    importlib.import_module({"openai_sdk": "openai", "aiohttp": "aiohttp"}.get(kind, "httptools"))


def build_transport(kind: str, base_url: str, api_key: str | None, timeout_s: float | None,
                    max_connections: int) -> ChatTransport:
    """The transport `kind` names; `timeout_s` None sizes each request's timeout by its output limit."""
    cls = {"openai_sdk": OpenAISDKTransport, "aiohttp": AiohttpTransport}.get(kind, HttpToolsTransport)
    return cls(base_url, api_key, timeout_s, max_connections)
