"""HTTP transports for OpenAI-compatible chat completions, mapping every failure onto our exception tree.

Two clients, one contract (`chat(body, headers) -> ChatResponse`):
- `AiohttpTransport` (default): a lean aiohttp session. On two cores it keeps a teacher with 128 slots
  at ~97 % of its limit for ~0.3 ms of CPU per request (see bench/teacher_throughput.py).
- `OpenAISDKTransport`: the `openai` package's AsyncOpenAI over its aiohttp transport, for users who want the
  SDK's behaviour; it costs ~1.7 ms of CPU per request here, so it saturates less on small machines.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any, Protocol

from stepwise.pipeline.errors import (
    MalformedResponseError,
    RateLimitedError,
    RequestRejectedError,
    TeacherAuthError,
    TeacherConnectionError,
    TeacherServerError,
    TeacherTimeoutError,
)
from stepwise.pipeline.teachers.limits import estimate_tokens, retry_after_seconds
from stepwise.pipeline.types import Completion, TeacherRequest


@dataclass(frozen=True, slots=True)
class ChatResponse:
    choices: list[tuple[str | None, str | None]]  # (text, finish_reason) per choice, in index order
    tokens_in: int | None
    tokens_out: int | None
    model: str | None
    headers: dict[str, str]


class ChatTransport(Protocol):
    async def chat(self, body: dict[str, Any], headers: dict[str, str]) -> ChatResponse: ...
    async def close(self) -> None: ...


def chat_body(model: str, req: TeacherRequest, n: int, messages: Sequence[dict[str, str]] | None = None,
              structured_output: str = "response_format") -> dict[str, Any]:
    """The chat completions body for `n` samples of one request, as every OpenAI-protocol backend sends it.

    Samples sent one request each get the seed offset by their index, so they differ; structured output goes
    as OpenAI's `response_format`, or vLLM's `structured_outputs` / `guided_json`.
    """
    s = req.sampling
    body: dict[str, Any] = {"model": model, "messages": list(messages if messages is not None else req.messages),
                            "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
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
    return body


def choice_completions(members: Sequence[tuple[TeacherRequest, str]], resp: ChatResponse, latency: float | None,
                       model: str, price=None) -> list[Completion]:
    """One Completion per sample of a response with n choices. The prompt was paid once, so its tokens are
    split over the samples; the output tokens by the length of each choice."""
    n = len(members)
    texts = [resp.choices[i] if i < len(resp.choices) else (None, None) for i in range(n)]
    est = [estimate_tokens(t or "") for t, _ in texts]
    total_out = resp.tokens_out if resp.tokens_out is not None else sum(est)
    out = []
    for i, ((req, key), (text, finish)) in enumerate(zip(members, texts, strict=True)):
        tin = None if resp.tokens_in is None else resp.tokens_in // n + (resp.tokens_in % n if i == 0 else 0)
        tout = round(total_out * est[i] / max(1, sum(est)))
        out.append(Completion(key, req.example_id, req.sample_idx, text, finish or "stop", tin, tout, latency,
                              resp.model or model, None if text is not None else "the teacher returned no text",
                              price.cost(tin, tout) if price else None, retryable=text is None))
    return out


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
    """Read a chat completion body; anything that is not one raises MalformedResponseError."""
    try:
        raw = payload["choices"]
        choices: list[tuple[str | None, str | None]] = [(None, None)] * len(raw)
        for pos, ch in enumerate(raw):
            idx = ch.get("index", pos)
            content = ch["message"].get("content")
            if content is not None and not isinstance(content, str):
                raise TypeError("message.content is not a string")
            choices[idx] = (content, ch.get("finish_reason"))
        usage = payload.get("usage") or {}
        return ChatResponse(choices, usage.get("prompt_tokens"), usage.get("completion_tokens"),
                            payload.get("model"), headers)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise MalformedResponseError(f"not a chat completion: {type(exc).__name__}: {exc}") from None


def parse_chat_text(text: str, headers: dict[str, str]) -> ChatResponse:
    """A 200 body as text -> ChatResponse; not JSON, or not a chat completion, is MalformedResponseError."""
    try:
        payload = json.loads(text)
    except ValueError:
        raise MalformedResponseError("the response body is not JSON") from None
    return parse_chat(payload, headers)


class AiohttpTransport:
    """POST {base_url}/chat/completions with aiohttp; one session and connection pool per backend."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float, max_connections: int):
        import aiohttp

        self._aiohttp = aiohttp
        self.url = f"{base_url.rstrip('/')}/chat/completions"
        self.secret = api_key
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max_connections + 8),
                                             timeout=self.timeout, headers=self.headers)

    async def chat(self, body: dict[str, Any], headers: dict[str, str]) -> ChatResponse:
        aiohttp = self._aiohttp
        try:
            async with self.session.post(self.url, data=json.dumps(body), headers=headers) as resp:
                text = await resp.text()
                got = dict(resp.headers)
                status = resp.status
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise TeacherTimeoutError("no response within the client timeout") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise TeacherConnectionError(f"connection failed: {type(exc).__name__}") from None
        if status != 200:
            raise_for_status(status, text, got, self.secret)
        return parse_chat_text(text, got)

    async def close(self) -> None:
        await self.session.close()


class OpenAISDKTransport:
    """The `openai` package's AsyncOpenAI client (aiohttp transport, its own retries off: we retry)."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float, max_connections: int):
        import openai
        from openai import AsyncOpenAI, DefaultAioHttpClient

        self._openai = openai
        self.secret = api_key
        self.client = AsyncOpenAI(base_url=base_url, api_key=api_key or "none", max_retries=0, timeout=timeout_s,
                                  http_client=DefaultAioHttpClient())

    async def chat(self, body: dict[str, Any], headers: dict[str, str]) -> ChatResponse:
        openai = self._openai
        known = {"model", "messages", "n", "temperature", "top_p", "max_tokens", "seed", "stop", "response_format"}
        kwargs = {k: v for k, v in body.items() if k in known}
        extra = {k: v for k, v in body.items() if k not in known}
        try:
            raw = await self.client.chat.completions.with_raw_response.create(
                **kwargs, extra_body=extra or None, extra_headers=headers)
            text = raw.http_response.text
            got = dict(raw.headers)
        except openai.APITimeoutError:
            raise TeacherTimeoutError("no response within the client timeout") from None
        except openai.APIConnectionError as exc:
            raise TeacherConnectionError(f"connection failed: {type(exc).__name__}") from None
        except openai.APIStatusError as exc:
            raise_for_status(exc.status_code, exc.response.text, dict(exc.response.headers), self.secret)
            raise  # unreachable: raise_for_status always raises for non-200
        return parse_chat_text(text, got)

    async def close(self) -> None:
        await self.client.close()


def build_transport(kind: str, base_url: str, api_key: str | None, timeout_s: float,
                    max_connections: int) -> ChatTransport:
    cls = OpenAISDKTransport if kind == "openai_sdk" else AiohttpTransport
    return cls(base_url, api_key, timeout_s, max_connections)
