"""The `openai` teacher engine against the real simulator over loopback HTTP.

Every test asserts exact counts from the simulator's /stats (what reached the server, what it answered), so a
request sent twice, a sample sent alone when it could share a request, or a retry that never happened shows up
as a wrong number, not as a silent slowdown.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stepwise.storage.cache import RequestCache
from stepwise.pipeline.errors import BudgetExhaustedError, TeacherAuthError
from stepwise.pipeline.spec import CostSpec, OpenAITeacherSpec
from stepwise.pipeline.teachers.limits import estimate_tokens
from stepwise.pipeline.teachers.openai_compat import OpenAIBackend
from stepwise.pipeline.types import Completion, Sampling, TeacherRequest
from tests.conftest import write_jsonl

MODEL = "stepwise-sim"
GENERIC = "Adding the numbers step by step gives 42. So the answer is 42."  # the simulator's answer without a dataset
FAST = ("--latency", "0.05")
WRONG_KEY = "sk-wrong-SECRET-123"
FOLLOWUP = "Therefore, the answer is"
SCHEMA = json.dumps({"type": "object", "properties": {"rationale": {"type": "string"}, "label": {"type": "string"}},
                     "required": ["rationale", "label"], "additionalProperties": False}, sort_keys=True)


def question(i: int) -> str:
    return f"Mia has {3 + i} marbles and finds {2 * i + 1} more. How many marbles does she have now?"


def gold(i: int) -> int:
    return 3 + i + 2 * i + 1


def messages(i: int) -> tuple[dict[str, str], ...]:
    return ({"role": "system", "content": "Answer with a short chain of thought."},
            {"role": "user", "content": question(i)})


def prompt_tokens(msgs) -> int:
    """What the simulator reports as prompt_tokens: its estimate over the message contents."""
    return sum(estimate_tokens(m["content"]) for m in msgs)


def make_requests(n_examples: int, n_samples: int = 1, *, start: int = 0, max_tokens: int = 64,
                  followup: str | None = None, schema: str | None = None,
                  sample_major: bool = False) -> list[TeacherRequest]:
    """Requests as the runner builds them: one messages tuple per example, shared by its samples."""
    msgs = {i: messages(i) for i in range(start, start + n_examples)}
    pairs = [(i, k) for i in msgs for k in range(n_samples)]
    if sample_major:  # interleave the examples, so that request order differs from grouping order
        pairs.sort(key=lambda p: (p[1], p[0]))
    return [TeacherRequest(f"ex{i}", k, msgs[i], Sampling(max_tokens=max_tokens), "few_shot_cot", "hash", "openai",
                           MODEL, followup, schema) for i, k in pairs]


def dataset(tmp_path: Path, n: int) -> Path:
    return write_jsonl(tmp_path / "sim-dataset.jsonl",
                       [{"id": f"ex{i}", "question": question(i), "answer": str(gold(i))} for i in range(n)])


@pytest.fixture
def open_backend(tmp_path: Path) -> Iterator[Callable[..., OpenAIBackend]]:
    """`open_backend(sim, cache="a", cost=..., **teacher_fields)`: a backend closed at teardown.
    Backends given the same `cache` name share one request cache file (None: no cache)."""
    opened: list[OpenAIBackend] = []

    def make(sim, *, cache: str | None = "cache", cost: CostSpec | None = None, **fields) -> OpenAIBackend:
        fields.setdefault("api_key_env", None)
        fields.setdefault("request_id_headers", True)  # the simulator counts requests by key
        spec = OpenAITeacherSpec(backend="openai", model=MODEL, base_url=sim.base_url, **fields)
        store = RequestCache(tmp_path / f"{cache}.sqlite") if cache else None
        backend = OpenAIBackend(spec, cache=store, cost=cost)
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()
        if backend.cache is not None:
            backend.cache.close()


def assert_in_request_order(requests: list[TeacherRequest], out: list[Completion]) -> None:
    assert len(out) == len(requests)
    for req, c in zip(requests, out, strict=True):
        assert (c.example_id, c.sample_idx, c.request_key) == (req.example_id, req.sample_idx, req.cache_key())


# ── (a) n per request ───────────────────────────────────────────────────────────────────────────────────────────


def test_samples_share_one_request_with_n_and_go_alone_without_it(start_sim, open_backend, tmp_path):
    sim = start_sim(*FAST, "--dataset", str(dataset(tmp_path, 4)), "--wrong-rate", "0")
    reqs = make_requests(4, 3, sample_major=True)

    with_n = open_backend(sim, cache="with-n", supports_n=True)
    out_n = with_n.complete(reqs)
    stats = sim.stats()
    assert stats["statuses"] == {"200": 4}  # one HTTP request per example
    assert (stats["received"], stats["distinct_completed"], stats["completed_more_than_once"]) == (12, 12, 0)
    assert (with_n.stats.sent, with_n.stats.completed, with_n.stats.cache_hits) == (4, 12, 0)

    alone = open_backend(sim, cache="alone", supports_n=False)
    out_1 = alone.complete(reqs)
    stats = sim.stats()
    assert stats["statuses"] == {"200": 4 + 12}  # one HTTP request per sample
    assert stats["received"] == 24 and stats["distinct_received"] == 12  # the same twelve keys, sent again
    assert (alone.stats.sent, alone.stats.completed) == (12, 12)

    for out in (out_n, out_1):
        assert_in_request_order(reqs, out)
        for c in out:
            g = gold(int(c.example_id[2:]))
            assert c.error is None and c.finish_reason == "stop" and c.model == MODEL
            assert c.text.endswith(f" gives {g}. So the answer is {g}."), c.text  # this example's answer
            assert c.tokens_out == estimate_tokens(c.text)
            assert 0.05 <= c.latency_s < 5
    # the simulator's answer depends on (example, sample index) only: both ways give the same samples,
    # so choice i of an n-request really is sample i
    assert [c.text for c in out_n] == [c.text for c in out_1]
    assert len({(c.example_id, c.text) for c in out_n}) > 4  # samples differ within an example
    for i in range(4):
        p = prompt_tokens(messages(i))
        assert sum(c.tokens_in for c in out_n if c.example_id == f"ex{i}") == p  # one prompt, split over n
        assert [c.tokens_in for c in out_1 if c.example_id == f"ex{i}"] == [p, p, p]
    assert with_n.cache.count() == 12 and alone.cache.count() == 12


def test_non_consecutive_samples_of_an_example_still_share_one_request(start_sim, open_backend):
    sim = start_sim(*FAST)
    backend = open_backend(sim)
    reqs = make_requests(1, 5)
    out = backend.complete(reqs[:2] + reqs[3:])  # sample 2 missing: the rest still go in one request
    assert [c.sample_idx for c in out] == [0, 1, 3, 4]
    assert all(c.text == GENERIC for c in out)
    assert sim.stats()["statuses"] == {"200": 1}


# ── (b) the request cache ───────────────────────────────────────────────────────────────────────────────────────


def test_a_second_backend_on_the_same_cache_sends_nothing(start_sim, open_backend):
    sim = start_sim(*FAST)
    reqs = make_requests(5, 2)
    first = open_backend(sim).complete(reqs)
    before = sim.stats()
    assert before["statuses"] == {"200": 5} and before["received"] == 10

    again = open_backend(sim)
    seen: list[tuple[str, bool]] = []
    again.events = lambda c, cached: seen.append((c.request_key, cached))
    second = again.complete(reqs)
    assert sim.stats()["received"] == 10  # nothing sent
    assert (again.stats.sent, again.stats.cache_hits, again.stats.completed) == (0, 10, 0)
    assert sorted(seen) == sorted((r.cache_key(), True) for r in reqs)
    assert_in_request_order(reqs, second)
    for a, b in zip(first, second, strict=True):
        assert (a.text, a.finish_reason, a.tokens_in, a.tokens_out, a.model) == \
               (b.text, b.finish_reason, b.tokens_in, b.tokens_out, b.model)
        assert b.latency_s == 0.0

    # a mix: the cached ten are served, only the three new examples go out
    mixed = open_backend(sim)
    out = mixed.complete(reqs + make_requests(3, 2, start=5))
    assert len(out) == 16 and all(c.text == GENERIC for c in out)
    assert (mixed.stats.cache_hits, mixed.stats.sent, mixed.stats.completed) == (10, 3, 6)
    stats = sim.stats()
    assert stats["received"] == 16 and stats["completed_more_than_once"] == 0


# ── (c) faults ──────────────────────────────────────────────────────────────────────────────────────────────────


def test_every_request_survives_a_faulty_teacher_without_paying_twice(start_sim, open_backend):
    # stalled requests hang for 30 s, far past the client timeout (0.5 s) and past this test
    sim = start_sim(*FAST, "--faults", "error_500=0.05,error_503=0.05,stall=0.05,malformed=0.05,truncated=0.05,"
                                       "drop=0.05,garbage=0.05", "--stall", "30",
                    "--seed", "3")  # this seed draws every retried kind (500, 503, drop, malformed, a stall)
    backend = open_backend(sim, timeout_s=0.5, max_attempts=8, max_concurrency=16)
    reqs = make_requests(30)
    started = time.monotonic()
    out = backend.complete(reqs)
    assert time.monotonic() - started < 20
    assert_in_request_order(reqs, out)
    texts = [c for c in out if c.text is not None]
    errors = [c for c in out if c.text is None]
    assert all(c.error for c in errors) and all(c.error is None for c in texts)
    assert backend.stats.failed == len(errors) == 0  # 8 attempts are plenty at a 35 % fault rate
    truncated = GENERIC[: len(GENERIC) // 2]
    for c in texts:  # truncated and garbage answers are 200s: kept as they are (parsing rejects them), not retried
        assert (c.text, c.finish_reason) in ((GENERIC, "stop"), (truncated, "length")) or \
            (len(c.text) == 40 and set(c.text) <= set("qwxz #%&") and c.finish_reason == "stop"), c.text

    stats = sim.stats()
    statuses = stats["statuses"]
    assert stats["completed_more_than_once"] == 0
    assert stats["completed"] == statuses["200"] == 30
    assert stats["received"] == backend.stats.sent  # every attempt reached the server once
    assert backend.stats.retries == backend.stats.sent - 30 > 0
    stalled = stats["received"] - sum(statuses.values())  # still hanging in the simulator
    assert backend.stats.retries == sum(statuses.get(k, 0) for k in ("500", "503", "malformed", "drop")) + stalled
    assert backend.cache.count() == 30


def test_a_stalled_teacher_times_out_and_the_request_gives_up_as_an_error(start_sim, open_backend):
    sim = start_sim(*FAST, "--faults", "stall=1.0", "--stall", "30")
    backend = open_backend(sim, timeout_s=0.2, max_attempts=2)
    started = time.monotonic()
    out = backend.complete(make_requests(3))
    assert time.monotonic() - started < 6
    for c in out:
        assert c.text is None and "gave up after 2 attempts" in c.error and "timeout" in c.error
    assert (backend.stats.sent, backend.stats.retries, backend.stats.failed, backend.stats.completed) == (6, 3, 3, 0)
    stats = sim.stats()
    assert (stats["received"], stats["distinct_received"], stats["completed"]) == (6, 3, 0)
    assert backend.cache.count() == 0  # errors are never cached


def test_a_stalled_request_the_client_gave_up_on_is_not_counted_as_completed(start_sim, open_backend):
    sim = start_sim(*FAST, "--faults", "stall=1.0", "--stall", "0.4")
    backend = open_backend(sim, timeout_s=0.15, max_attempts=2)
    out = backend.complete(make_requests(3))
    assert all(c.text is None for c in out)  # the client received nothing
    time.sleep(0.8)  # let the simulator finish the abandoned handlers (0.4 s stall + 0.05 s latency)
    stats = sim.stats()
    assert stats["received"] == 6
    assert stats["completed"] == 0, stats
    assert stats["completed_more_than_once"] == 0, stats


# ── (d) a refused request is not retried ────────────────────────────────────────────────────────────────────────


def test_a_4xx_is_not_retried_and_becomes_the_completion_error(start_sim, open_backend):
    sim = start_sim(*FAST, "--no-n")  # answers 400 to n > 1
    backend = open_backend(sim, supports_n=True)
    reqs = make_requests(3, 2)
    out = backend.complete(reqs)
    assert_in_request_order(reqs, out)
    for c in out:
        assert c.text is None and "HTTP 400" in c.error and "n > 1" in c.error
        assert "gave up" not in c.error
    stats = sim.stats(keys=True)
    assert stats["statuses"] == {"400": 3}  # one request per example, never again
    assert stats["received"] == 6 and all(v == {"received": 1, "completed": 0} for v in stats["per_key"].values())
    assert len(stats["per_key"]) == 6
    assert (backend.stats.sent, backend.stats.retries, backend.stats.failed) == (3, 0, 6)
    assert backend.cache.count() == 0


# ── (e) 429 ─────────────────────────────────────────────────────────────────────────────────────────────────────


def test_429s_are_waited_out_and_every_request_completes_once(start_sim, open_backend):
    sim = start_sim(*FAST, "--rpm", "10", "--window", "2")
    backend = open_backend(sim, max_attempts=8, max_concurrency=32)  # no client-side budget
    reqs = make_requests(30)
    started = time.monotonic()
    out = backend.complete(reqs)
    elapsed = time.monotonic() - started
    assert all(c.text == GENERIC for c in out)
    stats = sim.stats()
    assert stats["statuses"]["200"] == 30 and stats["statuses"]["429"] > 0
    assert set(stats["statuses"]) == {"200", "429"}
    assert backend.stats.rate_limited == stats["statuses"]["429"] > 0
    assert backend.stats.retries == stats["statuses"]["429"]
    assert stats["completed_more_than_once"] == 0 and stats["distinct_completed"] == 30
    assert 3.5 <= elapsed < 15  # 10 per 2 s: the last ten cannot start before t = 4 s


# ── (f) credentials ─────────────────────────────────────────────────────────────────────────────────────────────


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def test_a_refused_key_stops_the_job_at_once_and_never_shows_the_key(start_sim, open_backend, monkeypatch):
    sim = start_sim(*FAST, "--api-key-env", "SIM_KEY", env={"SIM_KEY": "sk-sim-right-456"})
    monkeypatch.setenv("STEPWISE_TEST_TEACHER_KEY", WRONG_KEY)
    backend = open_backend(sim, api_key_env="STEPWISE_TEST_TEACHER_KEY", max_concurrency=4)
    started = time.monotonic()
    with pytest.raises(TeacherAuthError) as info:
        backend.submit(make_requests(20)).result(timeout=10)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "refused the credentials" in message and "STEPWISE_TEST_TEACHER_KEY" in message
    for exc in _chain(info.value):
        assert WRONG_KEY not in str(exc) and WRONG_KEY not in repr(exc)
    assert WRONG_KEY not in "".join(traceback.format_exception(info.value))
    stats = sim.stats()
    assert set(stats["statuses"]) == {"401"} and 1 <= stats["statuses"]["401"] <= 4  # at most one round
    assert stats["completed"] == 0

    received = stats["received"]
    with pytest.raises(TeacherAuthError):  # stopped for good: nothing more is sent
        backend.submit(make_requests(2, start=50)).result(timeout=5)
    assert sim.stats()["received"] == received

    monkeypatch.setenv("STEPWISE_TEST_RIGHT_KEY", "sk-sim-right-456")  # the same server takes the right key
    good = open_backend(sim, cache=None, api_key_env="STEPWISE_TEST_RIGHT_KEY")
    assert [c.text for c in good.complete(make_requests(2))] == [GENERIC, GENERIC]


@pytest.mark.parametrize("value", [None, ""])
def test_a_missing_key_variable_is_named(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("STEPWISE_TEST_MISSING_KEY", raising=False)
    else:
        monkeypatch.setenv("STEPWISE_TEST_MISSING_KEY", value)
    spec = OpenAITeacherSpec(backend="openai", model=MODEL, base_url="http://127.0.0.1:9/v1",
                             api_key_env="STEPWISE_TEST_MISSING_KEY")
    with pytest.raises(TeacherAuthError, match="STEPWISE_TEST_MISSING_KEY"):
        OpenAIBackend(spec)


# ── (g) two-stage zero-shot CoT ─────────────────────────────────────────────────────────────────────────────────




def test_two_stage_sends_reasoning_then_the_answer_prompt(start_sim, open_backend, tmp_path):
    sim = start_sim(*FAST, "--dataset", str(dataset(tmp_path, 3)), "--wrong-rate", "0")
    backend = open_backend(sim)
    reqs = make_requests(3, followup=FOLLOWUP)
    out = backend.complete(reqs)
    assert_in_request_order(reqs, out)
    for i, c in enumerate(out):
        reasoning, _, answer = c.text.partition("\n")
        assert reasoning.endswith(f" gives {gold(i)}. So the answer is {gold(i)}.")
        assert answer == f"{FOLLOWUP} {gold(i)}."
        stage1_in = prompt_tokens(messages(i))
        stage2_in = stage1_in + estimate_tokens(reasoning) + estimate_tokens(FOLLOWUP)
        assert c.tokens_in == stage1_in + stage2_in
        assert c.tokens_out == estimate_tokens(reasoning) + estimate_tokens(f" {gold(i)}.")
    stats = sim.stats()
    assert stats["statuses"] == {"200": 6} and stats["distinct_received"] == 6  # two requests per example

    again = open_backend(sim)
    assert [c.text for c in again.complete(reqs)] == [c.text for c in out]
    assert sim.stats()["received"] == 6
    assert (again.stats.sent, again.stats.cache_hits) == (0, 3)


def test_two_stage_reuses_a_cached_first_stage(start_sim, open_backend):
    sim = start_sim(*FAST)
    backend = open_backend(sim)
    plain = backend.complete(make_requests(3))  # the same messages, without an answer prompt
    assert sim.stats()["statuses"] == {"200": 3}
    out = open_backend(sim).complete(make_requests(3, followup=FOLLOWUP))
    assert [c.text for c in out] == [f"{p.text}\n{FOLLOWUP} 42." for p in plain]
    assert sim.stats()["statuses"] == {"200": 6}  # only the answer stage was sent


# ── (h) structured output ───────────────────────────────────────────────────────────────────────────────────────


def test_a_response_schema_is_sent_as_response_format(start_sim, open_backend):
    sim = start_sim(*FAST)  # answers JSON only when the body carries response_format
    out = open_backend(sim).complete(make_requests(2, schema=SCHEMA) + make_requests(1, start=2))
    assert [json.loads(c.text) for c in out[:2]] == [{"rationale": "Adding the numbers step by step gives 42.", "label": "42"}] * 2
    assert out[2].text == GENERIC
    # vLLM's parameters instead (the simulator honours them as vLLM does); the generic answer without one
    for mode in ("structured_outputs", "guided_json"):
        guided = open_backend(sim, cache=mode, structured_output=mode).complete(make_requests(1, schema=SCHEMA))
        assert json.loads(guided[0].text) == {"rationale": "Adding the numbers step by step gives 42.", "label": "42"}
    assert sim.stats()["statuses"] == {"200": 5}


# ── (i) cost cap ────────────────────────────────────────────────────────────────────────────────────────────────


def test_the_budget_stops_dispatch_and_a_higher_cap_finishes_without_paying_twice(start_sim, open_backend):
    sim = start_sim(*FAST)
    price = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}  # $0.001 a token
    reqs = make_requests(12, max_tokens=64)
    worst = [(prompt_tokens(messages(i)) + 64) / 1000 for i in range(12)]  # reserved before each is sent
    budget = sum(worst[:3]) + worst[3] / 2  # room for exactly three requests at their worst case

    capped = open_backend(sim, cost=CostSpec(**price, budget_usd=budget))
    with pytest.raises(BudgetExhaustedError, match="budget"):
        capped.complete(reqs)
    stats = sim.stats()
    assert stats["statuses"] == {"200": 3} and stats["received"] == 3
    assert capped.cache.count() == 3  # the requests in flight finished and were kept
    assert capped.stats.completed == 3
    assert 0 < capped.meter.spent <= budget

    more = open_backend(sim, cost=CostSpec(**price, budget_usd=100.0))
    out = more.complete(reqs)
    assert all(c.text == GENERIC for c in out)
    assert (more.stats.cache_hits, more.stats.sent, more.stats.completed) == (3, 9, 9)
    stats = sim.stats()
    assert stats["completed"] == 12 and stats["completed_more_than_once"] == 0
    for c in out:
        assert c.cost_usd == pytest.approx((c.tokens_in + c.tokens_out) / 1000)


# ── (j) the openai SDK transport ────────────────────────────────────────────────────────────────────────────────


def test_the_sdk_transport_completes_requests_with_n(start_sim, open_backend):
    sim = start_sim(*FAST)
    backend = open_backend(sim, transport="openai_sdk")
    reqs = make_requests(3, 2)
    out = backend.complete(reqs)
    assert_in_request_order(reqs, out)
    assert all(c.text == GENERIC and c.finish_reason == "stop" for c in out)
    assert sum(c.tokens_in for c in out[:2]) == prompt_tokens(messages(0))
    stats = sim.stats()
    assert stats["statuses"] == {"200": 3} and stats["received"] == 6  # n=2 per request, our keys header sent


def test_the_sdk_transport_maps_401_to_an_auth_error(start_sim, open_backend, monkeypatch):
    sim = start_sim(*FAST, "--api-key-env", "SIM_KEY", env={"SIM_KEY": "sk-sim-right-456"})
    monkeypatch.setenv("STEPWISE_TEST_TEACHER_KEY", WRONG_KEY)
    backend = open_backend(sim, transport="openai_sdk", api_key_env="STEPWISE_TEST_TEACHER_KEY", max_concurrency=2)
    started = time.monotonic()
    with pytest.raises(TeacherAuthError) as info:
        backend.submit(make_requests(6)).result(timeout=10)
    assert time.monotonic() - started < 5
    for exc in _chain(info.value):
        assert WRONG_KEY not in str(exc) and WRONG_KEY not in repr(exc)
    stats = sim.stats()
    assert set(stats["statuses"]) == {"401"} and stats["statuses"]["401"] <= 2


def test_the_sdk_transport_retries_429s(start_sim, open_backend):
    sim = start_sim(*FAST, "--rpm", "4", "--window", "1")
    backend = open_backend(sim, transport="openai_sdk", max_attempts=8)
    out = backend.complete(make_requests(10))
    assert all(c.text == GENERIC for c in out)
    stats = sim.stats()
    assert stats["statuses"]["200"] == 10 and stats["statuses"]["429"] > 0
    assert backend.stats.rate_limited == stats["statuses"]["429"]
    assert stats["completed_more_than_once"] == 0


@pytest.mark.parametrize("transport", ["aiohttp", "openai_sdk"])
@pytest.mark.parametrize("style", ["field", "reasoning_content"])
def test_a_trace_in_its_own_field_is_captured_and_cached_by_either_transport(start_sim, open_backend, tmp_path,
                                                                             transport, style):
    """`message.reasoning` (vLLM) and `message.reasoning_content` (DeepSeek): the SDK's typed objects lack both,
    so either transport reads them from the raw body."""
    sim = start_sim(*FAST, "--dataset", str(dataset(tmp_path, 3)), "--wrong-rate", "0", "--reasoning", style)
    reqs = make_requests(3, 2)
    out = open_backend(sim, transport=transport).complete(reqs)
    assert_in_request_order(reqs, out)
    for c in out:
        g = gold(int(c.example_id[2:]))
        assert c.text.endswith(f"so the answer is \\boxed{{{g}}}.") and "think>" not in c.text  # the content
        assert c.reasoning.startswith("Okay, let me work through this. The problem: Mia has")
        assert c.reasoning.endswith(f"So the answer is {g}.")
        assert c.reasoning_tokens == estimate_tokens(c.reasoning)  # n=2: split by the length of each trace
    assert sim.stats()["statuses"] == {"200": 3}
    again = open_backend(sim, transport=transport).complete(reqs)  # the same cache: nothing sent
    assert sim.stats()["statuses"] == {"200": 3}
    assert [(c.text, c.reasoning, c.reasoning_tokens) for c in again] == \
        [(c.text, c.reasoning, c.reasoning_tokens) for c in out]


# ── client-side budgets ─────────────────────────────────────────────────────────────────────────────────────────


def test_a_client_rpm_budget_paces_the_requests(start_sim, open_backend):
    sim = start_sim(*FAST)
    backend = open_backend(sim, rpm=1200)  # one request every 60.5 / 1200 s
    started = time.monotonic()
    out = backend.complete(make_requests(20))
    elapsed = time.monotonic() - started
    assert all(c.text == GENERIC for c in out)
    assert sim.stats()["statuses"] == {"200": 20}
    assert 19 * 60.5 / 1200 * 0.95 <= elapsed < 5


def test_a_client_tpm_budget_holds_what_does_not_fit_and_close_cancels_it(start_sim, open_backend):
    sim = start_sim(*FAST)
    reqs = make_requests(6, max_tokens=64)
    tokens = [prompt_tokens(messages(i)) + 64 for i in range(6)]  # what a rate limiter counts per request
    backend = open_backend(sim, tpm=sum(tokens[:3]) + tokens[3] // 2)
    future = backend.submit(reqs)
    deadline = time.monotonic() + 5
    while sim.stats()["completed"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.5)
    assert sim.stats()["received"] == 3  # the fourth does not fit in this minute's tokens
    assert not future.done()
    started = time.monotonic()
    backend.close()
    assert time.monotonic() - started < 5
    assert future.done()
    assert future.cancelled() or future.exception() is not None
    assert backend.cache.count() == 3


def test_the_budget_reserves_only_for_requests_in_flight(start_sim, open_backend):
    sim = start_sim(*FAST)
    reqs = make_requests(12, max_tokens=64)
    worst = [(prompt_tokens(messages(i)) + 64) / 1000 for i in range(12)]
    actual = [(prompt_tokens(messages(i)) + estimate_tokens(GENERIC)) / 1000 for i in range(12)]
    budget = sum(worst[:3]) + worst[3] / 2
    # one request in flight at a time: each starts when what was spent plus its own worst case fits
    expected, spent = 0, 0.0
    for w, a in zip(worst, actual, strict=True):
        if spent + w > budget:
            break
        spent, expected = spent + a, expected + 1
    assert expected > 3

    backend = open_backend(sim, max_concurrency=1,
                           cost=CostSpec(input_per_mtok=1000.0, output_per_mtok=1000.0, budget_usd=budget))
    with pytest.raises(BudgetExhaustedError):
        backend.complete(reqs)
    assert sim.stats()["completed"] == expected, (
        "requests still waiting for a concurrency slot should not hold a reservation")


# ── identical prompts of different examples ─────────────────────────────────────────────────────────────────────


def _same_question_requests() -> list[TeacherRequest]:
    """Two examples whose rendered prompts are equal (duplicate questions are common in real datasets)."""
    out = []
    for example_id in ("dup-a", "dup-b"):
        msgs = ({"role": "user", "content": "What is 40 plus 2?"},)  # a fresh tuple per example, as the runner has
        out += [TeacherRequest(example_id, k, msgs, Sampling(max_tokens=32), "few_shot_cot", "hash", "openai",
                               MODEL) for k in range(2)]
    return out




def test_identical_prompts_of_two_examples_each_get_their_own_completion(start_sim, open_backend):
    sim = start_sim(*FAST)
    reqs = _same_question_requests()
    out = open_backend(sim).complete(reqs)
    assert all(c.text == GENERIC for c in out)
    assert [(c.example_id, c.sample_idx) for c in out] == [(r.example_id, r.sample_idx) for r in reqs]


def test_identical_prompts_in_one_batch_are_paid_for_once(start_sim, open_backend):
    sim = start_sim(*FAST)
    open_backend(sim).complete(_same_question_requests())
    stats = sim.stats()
    assert stats["distinct_completed"] == 2  # two distinct requests: sample 0 and sample 1
    assert stats["completed_more_than_once"] == 0, stats
