"""The trace filters of judge_example: one parametrised test per rule, on samples of our own making and on the
real traces of ../shared/data (R1 reasoning sets, the svamp release's looping PaLM completions)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from stepwise.pipeline.parsing import cut_follow_on
from stepwise.pipeline.spec import FilterSpec, TaskSpec
from stepwise.pipeline.tasks import build_task
from stepwise.pipeline.types import Parsed, RejectReason
from stepwise.pipeline.validate import (
    REPETITION_N,
    foreign_script_share,
    judge_example,
    repeated_ngrams,
    repetition_share,
    writing_system,
)
from tests.conftest import SHARED_DATA, _need, load_dsbs_pairs

R = RejectReason
ARITH = build_task(TaskSpec(kind="arithmetic"))
LATIN = frozenset({"Latin"})
PROMPT = "A crate holds 3 pears and a farmer adds 4 more. How many pears are in the crate now?"
STEP = "The crate starts with 3 pears and 4 more are added, so it holds 3 + 4 = 7 pears. "
TRACE = ("Okay, let me see. The crate starts with 3 pears. Then the farmer adds 4 more, so I add them: 3 + 4 = 7. "
         "Let me double-check that by counting up from 3: four, five, six, seven. Yes, 7 pears.")
CHINESE = "我们先把苹果和梨的数量加起来，然后再检查一遍总数是否正确。"
LOOP = TRACE + " Wait, so the crate holds 7 pears after the farmer adds 4 more." * 40


def sample(trace: str | None = TRACE, label: str = "7", trace_label: str | None = None,
           rationale: str | None = None) -> Parsed:
    return Parsed(rationale=rationale if rationale is not None else (trace or STEP), label=label, reasoning=trace,
                  content="The crate holds \\boxed{7} pears.", trace_label=trace_label)


def judge_one(p: Parsed, prompt: str | None = PROMPT, tokens: int | None = None, gold: str | None = "7",
              **filters):
    (v,) = judge_example([p], gold, ARITH, FilterSpec(**filters), prompt=prompt, reasoning_tokens=[tokens])
    return v


# ── trace length: characters ─────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("trace", "filters", "reason", "detail"), [
    (TRACE, {"min_reasoning_chars": 10, "max_reasoning_chars": 1000}, None, None),
    ("Short.", {"min_reasoning_chars": 10}, R.TRACE_TOO_SHORT, "trace has 6 characters, fewer than 10"),
    (None, {"min_reasoning_chars": 10}, R.TRACE_TOO_SHORT, "no thinking trace (0 characters), fewer than 10"),
    (None, {}, None, None),  # no bounds asked for: a teacher without a trace is judged as before
    (TRACE, {"max_reasoning_chars": 50}, R.TRACE_TOO_LONG, f"trace has {len(TRACE)} characters, more than 50"),
    ("x" * 50, {"max_reasoning_chars": 50}, None, None),
])
def test_trace_length_in_characters(trace, filters, reason, detail):
    v = judge_one(sample(trace), **filters)
    assert (v.accepted, v.reason, v.detail) == (reason is None, reason, detail)


# ── trace length: tokens ─────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("trace", "tokens", "limit", "reason", "detail"), [
    ("y" * 400, 120, 100, R.TRACE_TOO_LONG, "trace has 120 tokens (server usage), more than 100"),
    ("y" * 4000, 90, 100, None, None),  # the server's count wins over the estimate
    ("y" * 401, None, 100, R.TRACE_TOO_LONG,
     "trace has about 101 tokens (estimated at 4 characters a token from 401 characters; the server gave no "
     "count), more than 100"),
    ("y" * 400, None, 100, None, None),
    (None, None, 1, None, None),  # no trace: nothing to bound from above
])
def test_trace_length_in_tokens(trace, tokens, limit, reason, detail):
    v = judge_one(sample(trace), tokens=tokens, max_reasoning_tokens=limit)
    assert (v.reason, v.detail) == (reason, detail)


def test_tokens_are_read_per_sample():
    parsed = [sample("y" * 40), sample("z" * 40)]
    vs = judge_example(parsed, "7", ARITH, FilterSpec(max_reasoning_tokens=100), reasoning_tokens=[None, 500])
    assert [v.reason for v in vs] == [None, R.TRACE_TOO_LONG]


# ── repetition ───────────────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("p", "limit", "reason", "detail_start"), [
    (sample(TRACE), 0.3, None, None),
    (sample(LOOP), 0.3, R.REPETITION, "trace repeats itself: 0.9"),
    (sample(LOOP), 0.99, None, None),
    # a teacher without a trace: the rationale is what loops (as in the svamp release)
    (sample(None, rationale=STEP * 5), 0.3, R.REPETITION, "rationale repeats itself: 0.7"),
    (sample(None, rationale=STEP), 0.3, None, None),
])
def test_repetition(p, limit, reason, detail_start):
    v = judge_one(p, max_repetition=limit)
    assert v.reason == reason
    if detail_start:
        assert v.detail.startswith(detail_start) and f"more than max_repetition {limit}" in v.detail
        assert f"of its {REPETITION_N}-word sequences" in v.detail


@pytest.mark.parametrize(("text", "expected"), [
    ("one two three four five six", (0, 1)),
    ("one two three four five", (0, 0)),  # fewer words than n
    ("a b c d e f " * 4, (13, 19)),      # a loop of period 6 has 6 distinct 6-grams, every other one repeats
    ("The cat sat. " * 10, (22, 25)),    # period 3: 3 distinct
])
def test_repeated_ngrams_counts(text, expected):
    assert repeated_ngrams(text) == expected


@pytest.mark.parametrize("k", [2, 5, 20, 100])
def test_a_passage_said_k_times_scores_about_k_minus_one_over_k(k):
    passage = " ".join(f"w{i}" for i in range(60))
    assert repetition_share(" ".join([passage] * k)) == pytest.approx((k - 1) / k, abs=0.1 / k + 0.01)


# ── language mixing ──────────────────────────────────────────────────────────────────────────────────────────────
MATH = "Let θ be the angle, so the area is πr² = 4π and sin θ = √2/2; with α ≠ β the ratio is 3:4, ½ of it."


@pytest.mark.parametrize(("prompt", "trace", "reason", "foreign_in_detail"), [
    (PROMPT, TRACE, None, None),
    (PROMPT, TRACE + "\n\n" + CHINESE + "\n\n" + TRACE, R.LANGUAGE_MIXING, "mostly Han"),  # a Qwen-style slip
    (PROMPT, TRACE + " " + MATH, None, None),   # lone Greek letters in formulas are symbols, not a language
    (PROMPT, TRACE + " Я думаю, что ответ семь, и это правильно.", R.LANGUAGE_MIXING, "mostly Cyrillic"),
    ("Сколько груш в ящике, если в нём 3 груши и добавили ещё 4?", TRACE, R.LANGUAGE_MIXING, "mostly Latin"),
    ("Сколько груш в ящике, если в нём 3 груши и добавили ещё 4?", "В ящике 3 груши, добавили 4, x = 7 груш.",
     None, None),                            # a lone x is a symbol in any script
    ("箱子里有3个梨，又放进4个，现在有几个？", CHINESE * 3, None, None),
    ("箱の中に梨が3個あり、4個足しました。今は何個ですか？", "梨は3個で、4個を足すと7個になります。", None, None),  # Han + kana
    ("사과가 3개 있고 4개를 더하면 몇 개입니까?", "사과 3개에 4개를 더하면 7개입니다 (漢字로 七個).", None, None),  # Hangul + Han
    (None, TRACE + "\n\n" + CHINESE + "\n\n" + TRACE, R.LANGUAGE_MIXING, "mostly Han"),  # no prompt: its own script
    ("3 + 4 = ?", TRACE, None, None),  # a prompt without letters: the trace's own script
])
def test_language_mixing(prompt, trace, reason, foreign_in_detail):
    v = judge_one(sample(trace), prompt=prompt, max_foreign_script=0.01)
    assert v.reason == reason, v.detail
    if foreign_in_detail:
        assert foreign_in_detail in v.detail and "more than max_foreign_script 0.01" in v.detail


def test_language_mixing_detail_is_precise():
    trace = "ab cd " + "我们"
    v = judge_one(sample(trace), max_foreign_script=0.2)
    assert v.detail == ("trace mixes scripts: 0.333 of its letters (2 of 6, mostly Han) are outside the prompt's "
                        "Latin script, more than max_foreign_script 0.2")


@pytest.mark.parametrize(("text", "system"), [
    ("How many pears?", {"Latin"}), ("Wie viele Birnen gibt es für Müller?", {"Latin"}),
    ("Сколько груш?", {"Cyrillic"}),
    ("有几个梨？", {"Han"}), ("梨は何個ですか", {"Han", "Kana"}), ("몇 개입니까", {"Hangul", "Han"}),
    ("كم عدد الكمثرى؟", {"Arabic"}), ("कितने नाशपाती हैं?", {"Indic"}), ("Πόσα αχλάδια;", {"Greek"}), ("42 + 7", None),
])
def test_writing_system_of_a_prompt(text, system):
    assert writing_system(text) == (frozenset(system) if system else None)


# ── a final answer that contradicts the trace ────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("label", "trace_label", "reject", "reason"), [
    ("8", "7", True, R.CONTRADICTS_TRACE),
    ("8", "7", False, None),          # recorded (trace_label), rejected only when asked
    ("7", "7.0", True, None),         # compared as the task compares answers
    ("7", None, True, None),          # the trace's conclusion could not be read: nothing to contradict
])
def test_contradiction(label, trace_label, reject, reason):
    v = judge_one(sample(label=label, trace_label=trace_label), gold=None, reject_contradiction=reject)
    assert v.reason == reason
    if reason:
        assert v.detail == f"final answer {label!r} contradicts the trace's own conclusion {trace_label!r}"


# ── the order of the checks ──────────────────────────────────────────────────────────────────────────────────────
ALL = {"max_repetition": 0.3, "max_foreign_script": 0.01, "reject_contradiction": True}


@pytest.mark.parametrize(("p", "filters", "reason"), [
    (sample(LOOP, label="8"), ALL, R.REPETITION),                        # before incorrect: the loop is what it is
    (sample(LOOP + CHINESE * 20, label="8", trace_label="9"), ALL, R.REPETITION),  # cheap ones first
    (sample(TRACE + CHINESE * 5, label="8", trace_label="9"), ALL, R.LANGUAGE_MIXING),
    (sample(TRACE, label="8", trace_label="9"), ALL, R.CONTRADICTS_TRACE),
    (sample(TRACE, label="8", trace_label="8"), ALL, R.INCORRECT),
    (sample(LOOP, rationale=""), ALL, R.TOO_SHORT),                       # the rationale's own bounds come first
    (sample("x", label="8"), {**ALL, "min_reasoning_chars": 5}, R.TRACE_TOO_SHORT),
    (Parsed(None, None, R.TRUNCATED, "the thinking never ended", reasoning=LOOP), ALL, R.TRUNCATED),
])
def test_trace_filters_run_after_the_rationale_bounds_and_before_gold(p, filters, reason):
    assert judge_one(p, **filters).reason == reason


def test_a_rejected_trace_does_not_count_as_a_seen_rationale():
    parsed = [sample(LOOP, rationale="same words"), sample(TRACE, rationale="same words")]
    vs = judge_example(parsed, "7", ARITH, FilterSpec(max_repetition=0.3), prompt=PROMPT)
    assert [v.reason for v in vs] == [R.REPETITION, None]


def test_the_measures_are_linear_in_the_trace():
    trace = (TRACE + " " + MATH + " ") * 400 + CHINESE * 50   # ~110,000 characters
    p = sample(trace)
    start = time.process_time()
    for _ in range(5):
        judge_one(p, max_repetition=0.99, max_foreign_script=0.5, max_reasoning_chars=10**6)
    assert (time.process_time() - start) / 5 < 0.1  # ~10 ms here; a quadratic pass would take seconds


# ── real traces ──────────────────────────────────────────────────────────────────────────────────────────────────
REASONING_SETS = ("tli-r1q1.5b-gsm8k", "tli-r1q14b-math500", "xannadoo-r1-hyperbaton")


def shared_traces(name: str) -> list[tuple[str, str, bool]]:
    """(question, trace, finished) of one shared reasoning set: the text before `</think>`, or all of it."""
    folder = _need(SHARED_DATA / "reasoning" / name)
    questions = {r["id"]: r["question"] for r in map(json.loads, (folder / "data.jsonl").open(encoding="utf-8"))}
    out = []
    for row in map(json.loads, (folder / "completions.jsonl").open(encoding="utf-8")):
        trace, sep, _ = row["text"].removeprefix("<think>").partition("</think>")
        out.append((questions[row["example_id"]], trace, bool(sep)))
    return out


@pytest.mark.parametrize("name", REASONING_SETS)
def test_real_finished_traces_pass_the_suggested_limits(name):
    finished = [(q, t) for q, t, done in shared_traces(name) if done]
    assert len(finished) > 150
    reps = [repetition_share(t) for _, t in finished]
    mixes = [foreign_script_share(t, writing_system(q)) for q, t in finished]
    assert max(reps) < 0.25 and sorted(reps)[len(reps) // 2] < 0.03
    assert max(mixes) < 0.005
    for q, t in finished:
        assert judge_one(sample(t), prompt=q, gold=None, max_rationale_chars=10**6, max_repetition=0.3,
                         max_foreign_script=0.01).accepted


def test_real_looping_traces_are_rejected():
    # R1-Distill-Qwen-1.5B ran into its token cap on 31 GSM8K questions, many of them in a loop
    unfinished = [(q, t) for q, t, done in shared_traces("tli-r1q1.5b-gsm8k") if not done]
    verdicts = [judge_one(sample(t), prompt=q, gold=None, max_repetition=0.3) for q, t in unfinished]
    looping = [v for v in verdicts if v.reason == R.REPETITION]
    assert len(looping) >= 10
    assert max(float(v.detail.split(": ")[1].split(" ")[0]) for v in looping) > 0.7


def test_real_svamp_loops_are_rejected_and_normal_rationales_are_not(dsbs_dir: Path):
    # PaLM's few-shot CoT, as the parser reads it (cut before the next few-shot turn it went on to invent)
    texts = [cut_follow_on(text)[0] for _, text in load_dsbs_pairs(dsbs_dir, "svamp", "train") if text]
    verdicts = [judge_one(sample(None, rationale=t), gold=None, max_repetition=0.3) for t in texts]
    rejected = [t for t, v in zip(texts, verdicts, strict=True) if v.reason == R.REPETITION]
    assert 3 <= len(rejected) <= 0.02 * len(texts)
    assert any(t.count("32 sacks were not harvested") > 5 for t in rejected)
    assert all(v.detail.startswith("rationale repeats itself") for v in verdicts if v.reason)


def test_a_real_trace_with_a_chinese_paragraph_is_mixed():
    question, trace, _ = next(x for x in shared_traces("xannadoo-r1-hyperbaton") if x[2])
    cut = trace.index("\n\n", len(trace) // 2)
    mixed = f"{trace[:cut]}\n\n{CHINESE * 2}{trace[cut:]}"
    assert foreign_script_share(trace, LATIN) == 0.0
    assert 0.01 < foreign_script_share(mixed, writing_system(question)) < 0.1
    assert judge_one(sample(mixed), prompt=question, gold=None, max_foreign_script=0.01).reason == R.LANGUAGE_MIXING
