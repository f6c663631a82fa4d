"""The engine's retry, refusal, rate and error-budget logic in-process, against a stand-in `ChatTransport` (the
boundary the engine talks HTTP through, as httpx tests use MockTransport). The same behaviour over real HTTP
against the simulator is in test_engine.py and test_failures.py."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterator

import pytest

from stepwise.pipeline.errors import (
    RateLimitedError,
    RequestRejectedError,
    TeacherAuthError,
    TeacherFailingError,
    TeacherServerError,
    TeacherTimeoutError,
)
from stepwise.pipeline.spec import OpenAITeacherSpec
from stepwise.pipeline.teachers.openai_compat import OpenAIBackend
from stepwise.pipeline.teachers.transport import ChatResponse, Choice
from stepwise.pipeline.types import Sampling, TeacherRequest


class ScriptedTransport:
    """Answers each call with the next scripted outcome: an exception of our tree is raised, a text is the answer
    of every choice. It keeps the bodies and the times it was called."""

    def __init__(self, *script):
        self.script = deque(script)
        self.bodies: list[dict] = []
        self.times: list[float] = []

    async def chat(self, body, headers) -> ChatResponse:
        self.bodies.append(body)
        self.times.append(time.monotonic())
        outcome = self.script.popleft() if self.script else "Two and two. So the answer is 4."
        if isinstance(outcome, Exception):
            raise outcome
        n = int(body.get("n") or 1)
        return ChatResponse([Choice(outcome, "stop")] * n, 12, 7 * n, "m", {})

    async def close(self) -> None:
        pass


def requests(count: int, samples: int = 1) -> list[TeacherRequest]:
    """The samples of an example share one messages tuple, as the shard planner builds them."""
    messages = [({"role": "user", "content": f"question {i}"},) for i in range(count)]
    return [TeacherRequest(f"ex{i}", k, messages[i], Sampling(), "p", None, "openai", "m")
            for i in range(count) for k in range(samples)]


@pytest.fixture
def engine() -> Iterator:
    opened = []

    def make(transport: ScriptedTransport, **fields) -> OpenAIBackend:
        backend_kw = {k: fields.pop(k) for k in ("max_error_rate",) if k in fields}
        fields.setdefault("api_key_env", None)
        spec = OpenAITeacherSpec(backend="openai", model="m", base_url="http://teacher.invalid/v1", **fields)
        backend = OpenAIBackend(spec, transport=transport, **backend_kw)
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


def test_transient_errors_are_retried_until_an_answer(engine):
    transport = ScriptedTransport(TeacherServerError("HTTP 503", 503), TeacherTimeoutError("slow"))
    backend = engine(transport, max_attempts=3)
    (answer,) = backend.complete(requests(1))
    assert answer.text and answer.error is None
    assert len(transport.bodies) == 3 and backend.stats.retries == 2 and backend.stats.completed == 1


def test_transient_errors_past_the_attempts_end_as_a_retryable_failure(engine):
    transport = ScriptedTransport(*[TeacherServerError("HTTP 500", 500)] * 2)
    backend = engine(transport, max_attempts=2)
    (answer,) = backend.complete(requests(1))
    assert answer.text is None and answer.retryable and "gave up after 2 attempts" in answer.error
    assert backend.stats.failed == 1


def test_a_refusal_is_not_retried_and_is_final(engine):
    transport = ScriptedTransport(RequestRejectedError("HTTP 400: context too long", 400))
    backend = engine(transport, max_attempts=5)
    (answer,) = backend.complete(requests(1))
    assert len(transport.bodies) == 1
    assert answer.text is None and not answer.retryable and "context too long" in answer.error


def test_a_rate_limit_holds_every_sender_for_the_servers_wait(engine):
    transport = ScriptedTransport(RateLimitedError("HTTP 429", 429, retry_after=0.4))
    backend = engine(transport, max_attempts=3, max_concurrency=1)
    answers = backend.complete(requests(2))
    assert all(a.text for a in answers) and backend.stats.rate_limited == 1
    first, *later = transport.times
    assert all(t - first >= 0.39 for t in later)  # nothing went out before the wait was over


def test_refused_credentials_stop_at_once_naming_the_variable(engine, monkeypatch):
    monkeypatch.setenv("STANDIN_KEY", "sk-standin")
    transport = ScriptedTransport(*[TeacherAuthError("HTTP 401: the teacher refused the credentials")] * 5)
    backend = engine(transport, api_key_env="STANDIN_KEY", max_concurrency=1)
    with pytest.raises(TeacherAuthError, match="STANDIN_KEY"):
        backend.complete(requests(5))
    assert len(transport.bodies) == 1


def test_the_error_budget_stops_sending_once_exceeded(engine):
    transport = ScriptedTransport(*[RequestRejectedError("HTTP 404: no such model", 404)] * 30)
    backend = engine(transport, max_concurrency=1, max_error_rate=0.1)
    with pytest.raises(TeacherFailingError, match="teacher.invalid.*no such model"):
        backend.complete(requests(30))
    assert len(transport.bodies) == 10  # one at a time: the tenth failure stops it


def test_the_samples_of_an_example_go_in_one_call_with_n(engine):
    transport = ScriptedTransport()
    backend = engine(transport)
    answers = backend.complete(requests(2, samples=3))
    assert [b.get("n") for b in transport.bodies] == [3, 3]
    assert [(a.example_id, a.sample_idx) for a in answers] == [(f"ex{i}", k) for i in range(2) for k in range(3)]


def test_a_batch_larger_than_one_lookup_run_keeps_each_examples_samples_in_one_call(engine):
    """A shard is looked up and started a run of requests at a time; a run never splits an example, so 50 examples
    of 5 samples are 50 calls with n=5, and every answer comes back in order."""
    transport = ScriptedTransport()
    backend = engine(transport)
    answers = backend.complete(requests(50, samples=5))
    assert [b.get("n") for b in transport.bodies] == [5] * 50
    assert sorted(b["messages"][0]["content"] for b in transport.bodies) == sorted(f"question {i}" for i in range(50))
    assert [(a.example_id, a.sample_idx) for a in answers] == [(f"ex{i}", k) for i in range(50) for k in range(5)]


def test_identical_requests_in_different_lookup_runs_are_sent_once(engine):
    """The first and the last of 200 examples ask the same thing: one call answers both."""
    transport = ScriptedTransport()
    backend = engine(transport)
    reqs = requests(200)
    reqs[-1] = TeacherRequest("ex199", 0, reqs[0].messages, Sampling(), "p", None, "openai", "m")
    answers = backend.complete(reqs)
    assert len(transport.bodies) == 199
    assert answers[-1].example_id == "ex199" and answers[-1].text == answers[0].text


class SlowTransport(ScriptedTransport):
    """Answers after `delay` seconds, so that batches submitted together are out at the same time."""

    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay
        self.calls = 0  # begun (a cancelled one is not answered, nor kept in `bodies`)

    async def chat(self, body, headers) -> ChatResponse:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return await super().chat(body, headers)


def test_a_request_out_for_one_batch_serves_another_batch_that_asks_for_it(engine):
    """Two batches (two shards, or two pieces of one) that ask for the same thing while its call is out pay once;
    each gets its own answer, under its own example id."""
    transport = SlowTransport(0.2)
    backend = engine(transport)
    first = requests(3)
    second = [TeacherRequest("other", 0, first[1].messages, Sampling(), "p", None, "openai", "m")]
    a, b = backend.submit(first), backend.submit(second)
    (shared,), answers = b.result(timeout=10), a.result(timeout=10)
    assert transport.calls == len(transport.bodies) == 3
    assert (shared.example_id, shared.text) == ("other", answers[1].text)


def test_a_batch_whose_call_it_shared_was_cancelled_asks_for_itself(engine):
    """When the batch that sent a shared request is cancelled, the batch waiting for that answer sends it itself."""
    transport = SlowTransport(0.3)
    backend = engine(transport)
    first = requests(1)
    second = [TeacherRequest("other", 0, first[0].messages, Sampling(), "p", None, "openai", "m")]
    a, b = backend.submit(first), backend.submit(second)
    time.sleep(0.1)  # both are out (the second waiting on the first's call)
    a.cancel()
    (answer,) = b.result(timeout=10)
    assert answer.example_id == "other" and answer.text
    assert transport.calls == 2 and len(transport.bodies) == 1  # the cancelled call, then its own
