"""Reasoning-model teachers at the teacher boundary: the trace is captured wherever a server puts it, the reasoning
sampling fields reach the server's body, and the request cache keeps both.

The live jobs run the real CLI against the real simulator (`stepwise sim --reasoning STYLE`) over HTTP, one style
each; every style answers with the same trace and the same final answer (the simulator builds one reply and only
places the trace differently), so the records of every style must agree. What each test expects comes from the
simulator's own reply for that example and sample, never from the code under test.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sqlite3
from pathlib import Path

import pytest

from stepwise.pipeline.errors import BudgetExhaustedError, MalformedResponseError, TeacherError
from stepwise.pipeline.run.job import run_job as run_in_process
from stepwise.pipeline.sim.limits import text_tokens
from stepwise.pipeline.sim.server import Reply, SimConfig, Simulator
from stepwise.pipeline.spec import CostSpec, OpenAITeacherSpec, load_job
from stepwise.pipeline.teachers.limits import output_budget, request_tokens, request_timeout_s
from stepwise.pipeline.teachers.openai_compat import OpenAIBackend
from stepwise.pipeline.teachers.replay import ReplayBackend
from stepwise.pipeline.teachers.transport import ChatResponse, Choice, chat_body, choice_completions, parse_chat
from stepwise.pipeline.types import Completion, Sampling, TeacherRequest
from stepwise.storage.cache import RequestCache
from tests.conftest import write_jsonl
from tests.pipeline.teachers.test_live_jobs import make_job, ok, problems, rows, run_job, sim_for
from tests.pipeline.teachers.test_transport_standin import ScriptedTransport

# the other half of issue 12 (pipeline/reasoning.py) splits traces out of the text; until it is there, records
# carry no trace, and only what the backends captured is checked
PARSER_SPLITS = importlib.util.find_spec("stepwise.pipeline.reasoning") is not None
WRONG_RATE = "0.3"
BOXED = re.compile(r"\\boxed\{([^}]*)\}")

# (simulator style, teacher.reasoning): a field style is found by `auto`; an inline trace by `inline` or `auto`
STYLES = [("field", "auto"), ("reasoning_content", "auto"), ("inline", "inline"), ("inline", "auto"),
          ("prefilled", "prefilled")]


def expected(folder: Path, style: str, example_id: str, sample_idx: int) -> Reply:
    """The simulator's reply for one sample, computed by a simulator of the same settings in this process."""
    sim = Simulator(SimConfig(reasoning=style, dataset=str(folder / "problems.jsonl"), wrong_rate=float(WRONG_RATE)))
    return sim.answer(example_id, sample_idx, {"messages": [{"role": "user", "content": "?"}]})


def sent_text(style: str, reply: Reply) -> str | None:
    """The content a server of this style sends for a finished reply."""
    return {"inline": f"<think>\n{reply.trace}\n</think>\n\n{reply.content}",
            "prefilled": f"{reply.trace}\n</think>\n\n{reply.content}"}.get(style, reply.content)


def cached(corpus: Path, keys: list[str]) -> dict[str, Completion]:
    cache = RequestCache.for_corpus(corpus)
    try:
        return cache.get_many(keys)
    finally:
        cache.close()


def reasoning_job(folder: Path, mode: str, n_problems: int, **fields) -> Path:
    """A live job whose teacher thinks: one request per sample (so usage is exact per sample), room for a trace."""
    teacher = {"reasoning": mode, "supports_n": False, **fields.pop("teacher", {})}
    sampling = {"n": 2, "temperature": 0.7, "max_completion_tokens": 2048, **fields.pop("sampling", {})}
    return make_job(folder, n_problems, teacher=teacher, sampling=sampling, **fields)


# ── a live job per style: the same trace, label and verdict ─────────────────────────────────────────────────────


@pytest.mark.parametrize(("style", "mode"), STYLES, ids=[f"{s}-{m}" for s, m in STYLES])
def test_a_live_job_in_each_reasoning_style_keeps_the_same_trace_label_and_verdict(start_sim, tmp_path, style, mode):
    folder = tmp_path / "job"
    job = reasoning_job(folder, mode, 6)
    sim = sim_for(start_sim, folder, "--latency", "0.02", "--wrong-rate", WRONG_RATE, "--reasoning", style)
    corpus = tmp_path / "corpus"
    ok(run_job(job, corpus, sim))

    records = rows(corpus, "SELECT * FROM records ORDER BY example_id, sample_idx")
    assert len(records) == 12 and sim.stats()["received"] == 12
    golds = {p["id"]: p["answer"] for p in problems(6)}
    got = cached(corpus, [r["request_key"] for r in records])
    verdicts = set()
    for r in records:
        reply = expected(folder, style, r["example_id"], r["sample_idx"])
        label = BOXED.search(reply.content).group(1)
        # captured by the backend: a trace sent in its own field apart, an inline one as the server sent it
        c = got[r["request_key"]]
        assert c.text == sent_text(style, reply)
        assert c.reasoning == (reply.trace if style in ("field", "reasoning_content") else None)
        assert c.reasoning_tokens == r["reasoning_tokens"] == text_tokens(reply.trace)
        assert r["finish_reason"] == "stop"
        # judged on the final answer, the same in every style
        assert r["label"] == label and r["correct"] is (label == golds[r["example_id"]])
        verdicts.add(r["correct"])
        if PARSER_SPLITS:
            assert r["reasoning"].strip() == reply.trace.strip()
            assert r["completion"].strip() == reply.content.strip()
    assert verdicts == {True, False}  # the wrong-answer rate shows: both verdicts are covered


@pytest.mark.parametrize(("style", "mode"), [s for s in STYLES if s != ("inline", "auto")],
                         ids=[f"{s}-{m}" for s, m in STYLES if (s, m) != ("inline", "auto")])
def test_a_trace_cut_off_by_the_token_limit_is_an_unfinished_trace_rejected_as_truncated(start_sim, tmp_path,
                                                                                         style, mode):
    folder = tmp_path / "job"
    job = reasoning_job(folder, mode, 3, sampling={"n": 1})
    sim = sim_for(start_sim, folder, "--latency", "0.02", "--reasoning", style, "--faults", "truncated=1")
    corpus = tmp_path / "corpus"
    ok(run_job(job, corpus, sim))

    records = rows(corpus, "SELECT * FROM records ORDER BY example_id")
    got = cached(corpus, [r["request_key"] for r in records])
    assert len(records) == 3
    for r in records:
        trace = expected(folder, style, r["example_id"], 0).trace
        half = trace[: len(trace) // 2]
        c = got[r["request_key"]]
        assert (c.finish_reason, r["finish_reason"], r["reject_reason"]) == ("length", "length", "truncated")
        if PARSER_SPLITS:
            assert r["label"] is None  # an unfinished trace is never mined for an answer
        assert r["reasoning_tokens"] == text_tokens(half)
        if style in ("field", "reasoning_content"):
            assert (c.text, c.reasoning) == ("", half)  # no content (vLLM: null, DeepSeek: "") is still an answer
        else:
            assert c.text == ("<think>\n" if style == "inline" else "") + half and c.reasoning is None


# ── the other backends capture the trace too ────────────────────────────────────────────────────────────────────


def test_a_replay_file_serves_the_recorded_trace_and_reasoning_tokens(tmp_path):
    path = write_jsonl(tmp_path / "completions.jsonl", [
        {"example_id": "a", "text": "The answer is \\boxed{4}.", "reasoning": "Two and two make four.",
         "usage": {"prompt_tokens": 9, "completion_tokens": 30, "completion_tokens_details": {"reasoning_tokens": 21}}},
        {"example_id": "b", "text": "<think>\nTwo and three.\n</think>\n\n\\boxed{5}", "reasoning_tokens": 4},
        {"example_id": "c", "text": None, "reasoning": "Still thinking about", "finish_reason": "length"},
        {"example_id": "d", "text": "So the answer is 6."},
    ])
    backend = ReplayBackend.from_file(path)
    reqs = [TeacherRequest(e, 0, ({"role": "user", "content": e},), Sampling(), "p", None, "replay", "replay")
            for e in "abcd"]
    a, b, c, d = backend.submit(reqs).result()
    assert (a.text, a.reasoning, a.tokens_in, a.tokens_out, a.reasoning_tokens) == (
        "The answer is \\boxed{4}.", "Two and two make four.", 9, 30, 21)
    assert (b.reasoning, b.reasoning_tokens) == (None, 4) and b.text.startswith("<think>")  # the parser splits it
    assert (c.text, c.reasoning, c.finish_reason) == ("", "Still thinking about", "length")
    assert (d.reasoning, d.reasoning_tokens) == (None, None)


@pytest.mark.parametrize("row", [{"example_id": "a", "text": "x", "reasoning": ["not", "text"]},
                                 {"example_id": "a", "text": "x", "reasoning": 3}])
def test_a_replay_row_whose_trace_is_not_text_is_refused_naming_the_line(tmp_path, row):
    path = write_jsonl(tmp_path / "completions.jsonl", [row])
    with pytest.raises(TeacherError, match=r"line 1: 'reasoning' must be a string or null"):
        ReplayBackend.from_file(path)


# ── what the server is sent, and what changes the cache key ─────────────────────────────────────────────────────


REASONING_SAMPLING = {"max_tokens": 64, "max_completion_tokens": 4096, "reasoning_effort": "high",
                      "chat_template_kwargs": {"enable_thinking": True}, "extra_body": {"top_k": 20, "min_p": 0.05}}


def listener_job(folder: Path, base_url: str, transport: str, sampling: dict) -> Path:
    write_jsonl(folder / "d.jsonl", [{"id": "q1", "question": "What is 2 + 2?", "answer": "4"}])
    (folder / "job.yaml").write_text(json.dumps({
        "job_id": "bodies", "dataset": {"path": "d.jsonl", "id_field": "id", "answer_field": "answer"},
        "task": "arithmetic", "prompt": "few_shot_cot",
        "teacher": {"backend": "openai", "model": "m", "base_url": base_url, "api_key_env": None,
                    "transport": transport},
        "sampling": sampling}), encoding="utf-8")
    return folder / "job.yaml"


@pytest.mark.parametrize("transport", ["aiohttp", "openai_sdk"])
def test_the_reasoning_fields_reach_the_servers_body_and_are_part_of_the_cache_key(listener, tmp_path, transport):
    job = listener_job(tmp_path, listener.base_url, transport, REASONING_SAMPLING)
    run_in_process(load_job(job), tmp_path / "corpus")
    (body,) = listener.bodies
    assert body["max_completion_tokens"] == 4096 and "max_tokens" not in body  # instead, never beside it
    assert body["reasoning_effort"] == "high"
    assert body["chat_template_kwargs"] == {"enable_thinking": True}  # top level, as vLLM and SGLang take it
    assert (body["top_k"], body["min_p"]) == (20, 0.05)  # extra_body merged into the body

    run_in_process(load_job(job), tmp_path / "corpus", overwrite=True)
    assert len(listener.bodies) == 1  # the same fields: served from the cache
    changes = {"chat_template_kwargs": {"enable_thinking": False}, "extra_body": {"top_k": 40},
               "reasoning_effort": "low", "max_completion_tokens": 2048}
    for name, value in changes.items():
        job = listener_job(tmp_path, listener.base_url, transport, {**REASONING_SAMPLING, name: value})
        run_in_process(load_job(job), tmp_path / "corpus", overwrite=True)
        sent = listener.bodies[-1]
        assert (sent.get(name) if name != "extra_body" else {"top_k": sent["top_k"]}) == value
    assert len(listener.bodies) == 1 + len(changes)  # each change is a new cache key: sent once more


def test_a_job_without_the_reasoning_fields_sends_the_body_it_always_sent(listener, tmp_path):
    job = listener_job(tmp_path, listener.base_url, "aiohttp", {"max_tokens": 64})
    run_in_process(load_job(job), tmp_path / "corpus")
    (body,) = listener.bodies
    assert set(body) == {"model", "messages", "temperature", "top_p", "max_tokens"}


def request(**sampling) -> TeacherRequest:
    return TeacherRequest("e", 0, ({"role": "user", "content": "2 + 2?"},), Sampling(**sampling), "p", None,
                          "openai", "m")


def test_extra_body_never_overrides_a_field_stepwise_sets():
    body = chat_body("m", request(max_tokens=9, extra_body=json.dumps({"max_tokens": 1, "model": "x", "top_k": 5})), 1)
    assert (body["max_tokens"], body["model"], body["top_k"]) == (9, "m", 5)


def test_the_cost_cap_reserves_the_completion_budget_not_max_tokens():
    transport = ScriptedTransport()
    spec = OpenAITeacherSpec(backend="openai", model="m", base_url="http://teacher.invalid/v1", api_key_env=None)
    price = CostSpec(input_per_mtok=0.0, output_per_mtok=100.0, budget_usd=1.0)
    backend = OpenAIBackend(spec, cost=price, transport=transport)
    try:
        assert backend.complete([request(max_tokens=512)])[0].text  # 512 tokens may cost $0.05: sent
        with pytest.raises(BudgetExhaustedError):  # 32k tokens may cost $3.28: past the cap before it is sent
            backend.complete([request(max_tokens=512, max_completion_tokens=32768)])
        assert len(transport.bodies) == 1
    finally:
        backend.close()


def test_budgets_and_the_default_timeout_follow_the_output_limit():
    body = chat_body("m", request(max_tokens=64, max_completion_tokens=32768), 2)
    assert output_budget(body) == 2 * 32768 and request_tokens(body) == 2 * 32768 + 1
    assert request_timeout_s(body) == pytest.approx(120 + 32768 / 20)  # ~29 min for a 32k-token answer
    assert request_timeout_s(chat_body("m", request(max_tokens=512), 1)) == pytest.approx(145.6)
    assert OpenAITeacherSpec(backend="openai", model="m").timeout_s is None  # unless the job sets one


# ── the protocol parser and the split over n choices ────────────────────────────────────────────────────────────


def completion_body(message: dict, usage: dict | None = None) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}],
            "usage": usage or {"prompt_tokens": 3, "completion_tokens": 7}, "model": "m"}


@pytest.mark.parametrize(("message", "trace"), [
    ({"content": "4", "reasoning": "two and two"}, "two and two"),               # vLLM, OpenRouter
    ({"content": "4", "reasoning_content": "two and two"}, "two and two"),       # DeepSeek, SGLang, older vLLM
    ({"content": "4", "reasoning": None, "reasoning_content": "r"}, "r"),
    ({"content": "4", "reasoning": "", "reasoning_content": ""}, None),           # an empty field is no trace
    ({"content": "<think>t</think>4"}, None),                                    # inline: the parser's to split
])
def test_the_trace_is_read_from_either_field(message, trace):
    (choice,) = parse_chat(completion_body(message), {}).choices
    assert (choice.text, choice.reasoning) == (message["content"], trace)


@pytest.mark.parametrize(("usage", "tokens"), [
    ({"completion_tokens": 7, "completion_tokens_details": {"reasoning_tokens": 5}}, 5),
    ({"completion_tokens": 7, "completion_tokens_details": None}, None),
    ({"completion_tokens": 7}, None),
])
def test_reasoning_tokens_are_read_from_the_usage_details(usage, tokens):
    assert parse_chat(completion_body({"content": "4"}, usage), {}).reasoning_tokens == tokens


def test_a_trace_that_is_not_text_is_a_malformed_response():
    with pytest.raises(MalformedResponseError, match="message.reasoning_content is not a string"):
        parse_chat(completion_body({"content": "4", "reasoning_content": {"steps": []}}), {})


def test_reasoning_tokens_are_split_over_the_choices_by_the_length_of_each_trace():
    members = [(request(), f"k{i}") for i in range(2)]
    resp = ChatResponse([Choice("a", "stop", "x" * 400), Choice(None, "length", "x" * 1200)], 10, 500, "m", {}, 400)
    short, long = choice_completions(members, resp, None, "m")
    assert (short.reasoning_tokens, long.reasoning_tokens) == (100, 300)
    assert (long.text, long.error, long.retryable) == ("", None, False)  # a trace without content is an answer
    assert short.tokens_out + long.tokens_out == 500


# ── the request cache keeps the trace, and a cache file from before keeps working ───────────────────────────────

OLD_SCHEMA = """CREATE TABLE completions (key TEXT PRIMARY KEY, text TEXT NOT NULL, finish_reason TEXT,
    tokens_in INTEGER, tokens_out INTEGER, latency_s REAL, model TEXT, created_at REAL NOT NULL)"""


def test_a_cache_file_of_the_old_schema_gains_the_trace_columns_and_keeps_its_completions(tmp_path):
    path = tmp_path / "requests.sqlite"
    db = sqlite3.connect(path)
    db.execute(OLD_SCHEMA)
    db.execute("INSERT INTO completions VALUES ('old', 'So the answer is 4.', 'stop', 5, 9, 0.2, 'm', 0)")
    db.commit()
    db.close()

    first, second = RequestCache(path), RequestCache(path)  # two openers of one old file add each column once
    try:
        old = first.get_many(["old"])["old"]
        assert (old.text, old.tokens_out, old.reasoning, old.reasoning_tokens) == ("So the answer is 4.", 9, None,
                                                                                  None)
        first.put(Completion("new", "e", 0, "\\boxed{4}", "stop", 5, 40, 1.0, "m", reasoning="two and two",
                             reasoning_tokens=31))
        new = second.get_many(["new"])["new"]
        assert (new.text, new.reasoning, new.reasoning_tokens) == ("\\boxed{4}", "two and two", 31)
        assert second.count() == 2
    finally:
        first.close()
        second.close()
