"""parse_completion and judge_example, on hand-written text and on real PaLM completions from the DSBS release."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from stepwise.pipeline.parsing import ParseOptions, cut_follow_on, parse_completion
from stepwise.pipeline.spec import FilterSpec, TaskSpec
from stepwise.pipeline.tasks import Task, build_task
from stepwise.pipeline.types import Completion, Example, Parsed, RejectReason
from stepwise.pipeline.validate import judge_example
from tests.conftest import load_dsbs_pairs

R = RejectReason
CHOICES = ("park", "coloring book", "garden center", "math problem", "gravity")
MC_EX = Example(id="mc", input="What is this an example of?", choices=CHOICES)
PLAIN = Example(id="p", input="q")


def task(kind: str, **kw) -> Task:
    return build_task(TaskSpec(kind=kind, **kw))


def comp(text: str | None, finish: str | None = "stop", error: str | None = None) -> Completion:
    return Completion(request_key="key", example_id="ex", sample_idx=0, text=text, finish_reason=finish, error=error)


def parse(text, kind="multiple_choice", example=MC_EX, finish="stop", output="cot", **kw) -> Parsed:
    return parse_completion(comp(text, finish), example, task(kind, **kw), output=output)


# ── answer triggers ──────────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("text, rationale, label", [
    ("Apples fall. So the answer is (d) math problem.", "Apples fall.", "math problem"),
    ("Apples fall. The answer is (d).", "Apples fall.", "math problem"),
    ("Apples fall. Therefore, the answer is math problem.", "Apples fall.", "math problem"),
    ("Apples fall.\nAnswer: (d)", "Apples fall.", "math problem"),
    ("Apples fall. Thus the final answer is: d", "Apples fall.", "math problem"),
    ("Apples fall. Hence, the best answer is (D).", "Apples fall.", "math problem"),
    ("Apples fall. The correct answer would be (e) gravity", "Apples fall.", "gravity"),
    ("Apples fall. So the answer is\n(d) math problem", "Apples fall.", "math problem"),
    ("Apples fall.\n\nSO THE ANSWER IS (A) PARK.", "Apples fall.", "park"),
])
def test_answer_triggers(text, rationale, label):
    p = parse(text)
    assert (p.reject, p.rationale, p.label) == (None, rationale, label)


def test_trigger_with_a_unit_in_parentheses():
    p = parse("He has 3 + 4 = 7 apples. The answer (in apples) is 7.", kind="arithmetic", example=PLAIN)
    assert (p.reject, p.rationale, p.label) == (None, "He has 3 + 4 = 7 apples.", "7")


@pytest.mark.parametrize("text, rationale, label", [
    ("The answer is (a) park. Wait, it counts. So the answer is (d) math problem.",
     "The answer is (a) park. Wait, it counts.", "math problem"),
    ("Answer: (a)\nNo, it counts apples.\nAnswer: (e)", "Answer: (a)\nNo, it counts apples.", "gravity"),
])
def test_the_last_answer_wins(text, rationale, label):
    p = parse(text)
    assert (p.reject, p.rationale, p.label) == (None, rationale, label)


# ── hallucinated follow-on turns ─────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("text, kept, was_cut", [
    ("A.\n\nQ: next", "A.\n", True),
    ("A.\nQ: next", "A.", True),
    ("A.\n  Question: next", "A.", True),
    ("A.\nPremise: p\nHypothesis: h", "A.", True),
    ("A.\nHypothesis: h", "A.", True),
    ("A.\nContext: c", "A.", True),
    ("A. He asked Q: why?", "A. He asked Q: why?", False),
    ("Q: at the very start", "Q: at the very start", False),
    ("A.\nQuestions remain.", "A.\nQuestions remain.", False),
])
def test_cut_follow_on(text, kept, was_cut):
    assert cut_follow_on(text) == (kept, was_cut)


@pytest.mark.parametrize("text, kind, example, rationale, label", [
    ("Counting apples. So the answer is (d) math problem.\n\nQ: Where do ducks live?\nAnswer Choices:\n(a) park\n"
     "A: Ducks live in parks. So the answer is (a) park.", "multiple_choice", MC_EX, "Counting apples.", "math problem"),
    ("The kids wear jerseys.\nAnswer: entailment\n\nPremise: Kids play.\nHypothesis: Nobody plays.\n"
     "Reasonings: Kids are somebody.\nAnswer: contradiction", "nli", PLAIN, "The kids wear jerseys.", "entailment"),
    ("84 / 2 = 42. The answer is (84 / 2).\nQ: There are 3 cars and 2 more arrive.\nA: 3 + 2 = 5. The answer is 5.",
     "arithmetic", PLAIN, "84 / 2 = 42.", "42"),
])
def test_follow_on_turns_are_cut_before_parsing(text, kind, example, rationale, label):
    p = parse(text, kind=kind, example=example)
    assert (p.reject, p.rationale, p.label) == (None, rationale, label)


def test_follow_on_without_an_answer_before_it_is_no_answer():
    p = parse("Thinking hard.\n\nQ: Another one?\nA: So the answer is (a) park.")
    assert (p.reject, p.label, p.rationale) == (R.NO_ANSWER, None, "Thinking hard.")


# ── truncation ───────────────────────────────────────────────────────────────────────────────────────────────────
def test_length_without_a_follow_on_is_truncated_but_keeps_what_was_parsed():
    p = parse("Apples fall. So the answer is (d) math problem.", finish="length")
    assert (p.reject, p.label, p.rationale) == (R.TRUNCATED, "math problem", "Apples fall.")
    assert "max_tokens" in p.detail


def test_length_overrides_no_answer():
    p = parse("Apples fall and then we count and", finish="length")
    assert (p.reject, p.label) == (R.TRUNCATED, None)


def test_length_with_a_cut_follow_on_is_not_truncated():
    # the cut turn proves the answer was complete before the token limit hit
    p = parse("Apples fall. So the answer is (d) math problem.\n\nQ: Where do ducks", finish="length")
    assert (p.reject, p.label, p.rationale) == (None, "math problem", "Apples fall.")


def test_length_with_a_cut_follow_on_but_no_answer_is_no_answer():
    p = parse("Apples fall.\n\nQ: Where do ducks live?\nA: So the answer is (a) park.", finish="length")
    assert p.reject == R.NO_ANSWER


# ── rejects of the cot parser ────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("text, kind, reject, label, rationale", [
    ("So the answer is (d) math problem.", "multiple_choice", R.EMPTY_RATIONALE, "math problem", None),
    ("Therefore, the answer is (d).", "multiple_choice", R.EMPTY_RATIONALE, "math problem", None),
    ("Answer: neutral", "nli", R.EMPTY_RATIONALE, "neutral", None),
    ("I think it is a math problem.", "multiple_choice", R.NO_ANSWER, None, "I think it is a math problem."),
    ("", "multiple_choice", R.NO_ANSWER, None, None),
    ("   \n", "nli", R.NO_ANSWER, None, None),
    ("Counting. So the answer is banana.", "multiple_choice", R.LABEL_OUT_OF_SPACE, None, "Counting."),
    ("Counting. So the answer is either (a) park or (e) gravity.", "multiple_choice", R.LABEL_OUT_OF_SPACE, None,
     "Counting."),
    ("They differ. Answer: perhaps", "nli", R.LABEL_OUT_OF_SPACE, None, "They differ."),
    ("Count them. The answer is twelve.", "arithmetic", R.LABEL_OUT_OF_SPACE, None, "Count them."),
])
def test_cot_rejects(text, kind, reject, label, rationale):
    example = MC_EX if kind == "multiple_choice" else PLAIN
    p = parse(text, kind=kind, example=example)
    assert (p.reject, p.label, p.rationale) == (reject, label, rationale)


def test_label_out_of_space_detail_quotes_the_answer():
    p = parse("Counting. So the answer is banana.")
    assert p.detail == "answer 'banana.' is not in the label space"


@pytest.mark.parametrize("text, rationale, label", [
    ("The review praises the food. Sentiment = good", "The review praises the food.", "positive"),
    ("First Sentiment = neg, then Sentiment = mixed", "First Sentiment = neg, then", "mixed"),
])
def test_custom_answer_pattern(text, rationale, label):
    p = parse(text, kind="custom", example=PLAIN, labels=["positive", "negative", "mixed"],
              aliases={"good": "positive", "neg": "negative"}, answer_pattern=r"Sentiment\s*=\s*(\w+)")
    assert (p.reject, p.rationale, p.label) == (None, rationale, label)


def test_custom_answer_pattern_without_a_match_is_no_answer():
    p = parse("So the answer is positive.", kind="custom", example=PLAIN, labels=["positive", "negative"],
              answer_pattern=r"Sentiment\s*=\s*(\w+)")
    assert p.reject == R.NO_ANSWER


# ── structured JSON ──────────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("text, kind, rationale, label", [
    ('{"rationale": "Apples fall.", "label": "(d) math problem"}', "multiple_choice", "Apples fall.", "math problem"),
    ('```json\n{"rationale": "Apples fall.", "label": "d"}\n```', "multiple_choice", "Apples fall.", "math problem"),
    ('```\n{"rationale": " Apples fall. ", "label": "gravity"}\n```  ', "multiple_choice", "Apples fall.", "gravity"),
    ('{"label": "Yes", "rationale": "Frost in December.", "confidence": 0.9}', "yes_no", "Frost in December.", "yes"),
    ('{"rationale": "It is cold.", "label": true}', "yes_no", "It is cold.", "yes"),
    ('{"rationale": "84 / 2", "label": 42}', "arithmetic", "84 / 2", "42"),
    ('{"rationale": "5 / 2", "label": 2.5}', "arithmetic", "5 / 2", "2.5"),
    ('{"rationale": "Jerseys.", "label": "entailment"}', "nli", "Jerseys.", "entailment"),
])
def test_json_valid(text, kind, rationale, label):
    p = parse(text, kind=kind, example=MC_EX if kind == "multiple_choice" else PLAIN, output="json")
    assert (p.reject, p.rationale, p.label) == (None, rationale, label)


@pytest.mark.parametrize("text, detail", [
    ("not json", "(document): Invalid JSON"),
    ("", "(document): Invalid JSON"),
    ("[]", "(document): Input should be an object"),
    ('{"rationale": "r"}', "label: Field required"),
    ('{"label": "yes"}', "rationale: Field required"),
    ('{"rationale": 5, "label": "yes"}', "rationale: Input should be a valid string"),
    ('{"rationale": "r", "label": "yes"', "(document): Invalid JSON"),
    ('Sure! {"rationale": "r", "label": "yes"}', "(document): Invalid JSON"),
])
def test_json_invalid(text, detail):
    p = parse(text, kind="yes_no", example=PLAIN, output="json")
    assert (p.reject, p.label, p.rationale) == (R.INVALID_JSON, None, None)
    assert p.detail.startswith(detail)


def test_json_label_out_of_space_keeps_the_rationale():
    p = parse('{"rationale": "It depends.", "label": "perhaps"}', kind="yes_no", example=PLAIN, output="json")
    assert (p.reject, p.label, p.rationale) == (R.LABEL_OUT_OF_SPACE, None, "It depends.")
    assert p.detail == "label 'perhaps' is not in the label space"


def test_json_empty_rationale():
    p = parse('{"rationale": "  ", "label": "no"}', kind="yes_no", example=PLAIN, output="json")
    assert (p.reject, p.label, p.rationale) == (R.EMPTY_RATIONALE, "no", None)


def test_json_truncated():
    p = parse('{"rationale": "Cold.", "label": "yes"}', kind="yes_no", example=PLAIN, output="json", finish="length")
    assert (p.reject, p.label) == (R.TRUNCATED, "yes")


# ── missing completions and teacher errors ───────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("completion, reject, detail", [
    (None, R.MISSING_COMPLETION, "the teacher returned no completion"),
    (comp(None), R.MISSING_COMPLETION, "the teacher returned no completion"),
    (comp(None, finish=None, error="400: prompt too long"), R.TEACHER_ERROR, "400: prompt too long"),
])
@pytest.mark.parametrize("output", ["cot", "json"])
def test_no_text(completion, reject, detail, output):
    p = parse_completion(completion, MC_EX, task("multiple_choice"), output=output)
    assert p == Parsed(None, None, reject, detail)


# ── judge_example ────────────────────────────────────────────────────────────────────────────────────────────────
NLI = task("nli")


def ok(label: str, rationale: str = "a rationale of some length") -> Parsed:
    return Parsed(rationale=rationale, label=label)


def judge(parsed, gold="entailment", **filters):
    return judge_example(parsed, gold, NLI, FilterSpec(**filters))


def reasons(verdicts):
    return [v.reason for v in verdicts]


def test_correctness():
    vs = judge([ok("entailment", "r1"), ok("neutral", "r2")])
    assert [(v.correct, v.accepted, v.reason) for v in vs] == [(True, True, None), (False, False, R.INCORRECT)]
    assert vs[1].detail == "label 'neutral' disagrees with gold"


def test_correctness_is_recorded_but_not_required():
    vs = judge([ok("entailment", "r1"), ok("neutral", "r2")], require_correct=False)
    assert [(v.correct, v.accepted) for v in vs] == [(True, True), (False, True)]


def test_without_gold_correct_is_none_and_nothing_is_incorrect():
    vs = judge([ok("entailment", "r1"), ok("neutral", "r2")], gold=None)
    assert [(v.correct, v.accepted) for v in vs] == [(None, True), (None, True)]


def test_consensus_and_agreement():
    labels = ["entailment", "entailment", "neutral", "entailment", "contradiction"]
    vs = judge([ok(lab, f"r{i}") for i, lab in enumerate(labels)], require_correct=False)
    assert {(v.consensus_label, v.agreement) for v in vs} == {("entailment", 0.6)}
    assert all(v.accepted for v in vs)  # self-consistency is off by default


def test_self_consistency_rejects_the_minority():
    labels = ["entailment", "entailment", "neutral", "entailment", "contradiction"]
    vs = judge([ok(lab, f"r{i}") for i, lab in enumerate(labels)], require_correct=False, self_consistency=True)
    assert reasons(vs) == [None, None, R.MINORITY, None, R.MINORITY]
    assert vs[2].detail == "label 'neutral' disagrees with the majority 'entailment'"


def test_self_consistency_majority_can_disagree_with_gold():
    labels = ["neutral", "neutral", "entailment"]
    vs = judge([ok(lab, f"r{i}") for i, lab in enumerate(labels)], gold="entailment", self_consistency=True)
    assert reasons(vs) == [R.INCORRECT, R.INCORRECT, R.MINORITY]
    assert vs[2].consensus_label == "neutral"


def test_parse_rejects_do_not_vote_and_keep_their_reason():
    parsed = [
        Parsed("cut off", "entailment", R.TRUNCATED, "finish_reason is 'length'"),
        ok("neutral", "r1"),
        ok("neutral", "r2"),
        ok("entailment", "r3"),
        Parsed(None, None, R.NO_ANSWER, "no answer trigger found"),
    ]
    vs = judge(parsed, gold="neutral", require_correct=False, self_consistency=True)
    assert reasons(vs) == [R.TRUNCATED, None, None, R.MINORITY, R.NO_ANSWER]
    assert [v.correct for v in vs] == [False, True, True, False, None]
    assert {(v.consensus_label, v.agreement) for v in vs} == {("neutral", 2 / 3)}
    assert vs[0].detail == "finish_reason is 'length'"


def test_no_votes_gives_no_consensus():
    vs = judge([Parsed(None, None, R.NO_ANSWER, "x"), Parsed(None, None, R.MISSING_COMPLETION, "y")])
    assert [(v.consensus_label, v.agreement, v.accepted, v.correct) for v in vs] == [(None, None, False, None)] * 2


@pytest.mark.parametrize("min_agreement, accepted", [(0.0, True), (0.6, True), (0.61, False), (1.0, False)])
def test_min_agreement(min_agreement, accepted):
    labels = ["entailment", "entailment", "neutral", "entailment", "contradiction"]
    vs = judge([ok(lab, f"r{i}") for i, lab in enumerate(labels)], require_correct=False, min_agreement=min_agreement)
    assert [v.accepted for v in vs] == [accepted] * 5  # every sample, the majority too
    if not accepted:
        assert {v.reason for v in vs} == {R.MINORITY}
        assert vs[0].detail == f"agreement 0.60 is below min_agreement {min_agreement:.2f}"


@pytest.mark.parametrize("rationale, reason", [
    ("a" * 9, R.TOO_SHORT),
    ("a" * 10, None),
    ("a" * 20, None),
    ("a" * 21, R.TOO_LONG),
])
def test_rationale_length_bounds(rationale, reason):
    (v,) = judge([ok("entailment", rationale)], min_rationale_chars=10, max_rationale_chars=20)
    assert v.reason == reason


def test_length_details():
    vs = judge([ok("entailment", "short"), ok("entailment", "x" * 30)], min_rationale_chars=10, max_rationale_chars=20)
    assert [v.detail for v in vs] == ["rationale has 5 characters, fewer than 10",
                                      "rationale has 30 characters, more than 20"]


def test_duplicates_of_an_accepted_sample_are_rejected():
    parsed = [ok("entailment", "Kids wear jerseys."), ok("entailment", "Kids  wear\njerseys."),
              ok("entailment", "Kids wear shirts.")]
    vs = judge(parsed)
    assert reasons(vs) == [None, R.DUPLICATE, None]
    assert vs[1].detail == "same rationale as an earlier sample of this example"


def test_duplicates_of_a_rejected_sample_are_accepted():
    parsed = [ok("neutral", "Kids wear jerseys."), ok("entailment", "Kids wear jerseys."),
              ok("entailment", "Kids wear jerseys.")]
    assert reasons(judge(parsed)) == [R.INCORRECT, None, R.DUPLICATE]


def test_duplicates_of_a_parse_reject_are_accepted():
    parsed = [Parsed("Kids wear jerseys.", "entailment", R.TRUNCATED, "t"), ok("entailment", "Kids wear jerseys.")]
    assert reasons(judge(parsed)) == [R.TRUNCATED, None]


def test_dedupe_off_keeps_duplicates():
    parsed = [ok("entailment", "Kids wear jerseys.")] * 3
    assert reasons(judge(parsed, dedupe=False)) == [None, None, None]


@pytest.mark.parametrize("parsed, gold, filters, expected", [
    # a parse reject beats every filter
    ([Parsed("x", "neutral", R.TRUNCATED, "t")], "entailment", dict(min_rationale_chars=5), [R.TRUNCATED]),
    # too short beats incorrect
    ([ok("neutral", "abc")], "entailment", dict(min_rationale_chars=5), [R.TOO_SHORT]),
    # too long beats incorrect
    ([ok("neutral", "x" * 50)], "entailment", dict(max_rationale_chars=10), [R.TOO_LONG]),
    # incorrect beats minority
    ([ok("entailment", "r1"), ok("entailment", "r2"), ok("neutral", "r3")], "entailment",
     dict(self_consistency=True), [None, None, R.INCORRECT]),
    # minority beats duplicate
    ([ok("entailment", "same"), ok("entailment", "r2"), ok("neutral", "same")], None,
     dict(self_consistency=True), [None, None, R.MINORITY]),
    # low agreement beats duplicate
    ([ok("entailment", "same"), ok("neutral", "same")], None, dict(min_agreement=0.9), [R.MINORITY, R.MINORITY]),
    # duplicate is the last check
    ([ok("entailment", "same"), ok("entailment", "same")], "entailment", dict(self_consistency=True),
     [None, R.DUPLICATE]),
])
def test_order_of_reasons(parsed, gold, filters, expected):
    assert reasons(judge(parsed, gold=gold, **filters)) == expected


def test_parse_then_judge():
    mc = task("multiple_choice")
    texts = [
        ("Apples fall. So the answer is (d) math problem.", "stop"),
        ("Apples  fall. So the answer is (d).", "stop"),
        ("Counting apples. So the answer is (a) park.", "stop"),
        ("Counting. So the answer is (d) math problem.", "length"),
        (None, None),
    ]
    parsed = [parse_completion(comp(t, f), MC_EX, mc) for t, f in texts]
    gold = mc.normalize_gold("D", MC_EX)
    vs = judge_example(parsed, gold, mc, FilterSpec(self_consistency=True))
    assert reasons(vs) == [None, R.DUPLICATE, R.INCORRECT, R.TRUNCATED, R.MISSING_COMPLETION]
    assert (vs[0].consensus_label, vs[0].agreement) == ("math problem", 2 / 3)
    assert [v.correct for v in vs] == [True, True, False, True, None]


# ── real completions: the Distilling step-by-step release ───────────────────────────────────────────────────────
DATASETS = {  # name: (split, task kind)
    "cqa": ("train", "multiple_choice"),
    "svamp": ("train", "arithmetic"),
    "esnli": ("valid", "nli"),
}


def to_example(name: str, row: dict, index: int) -> Example:
    if name == "cqa":
        return Example(id=str(index), input=row["question"], gold=row["answer"], choices=tuple(row["choices"]))
    if name == "svamp":
        return Example(id=str(index), input=row["input"], gold=row["label"])
    return Example(id=str(index), input=f"Premise: {row['premise']}\nHypothesis: {row['hypothesis']}",
                   gold=str(row["label"]), meta={"premise": row["premise"], "hypothesis": row["hypothesis"]})


@cache
def _pairs(dsbs: Path, name: str) -> list[tuple[dict, str]]:
    return load_dsbs_pairs(dsbs, name, DATASETS[name][0])


@cache
def _parsed(dsbs: Path, name: str) -> list[tuple[Example, str, Parsed]]:
    """(example, normalised gold, parsed) for every row of the split."""
    t = task(DATASETS[name][1])
    out = []
    for i, (row, text) in enumerate(_pairs(dsbs, name)):
        ex = to_example(name, row, i)
        out.append((ex, t.normalize_gold(ex.gold, ex), parse_completion(comp(text), ex, t)))
    return out


@pytest.mark.parametrize("name, split, rows", [("cqa", "train", 9741), ("svamp", "train", 800),
                                               ("esnli", "valid", 9842)])
def test_release_splits_pair_every_row_with_a_completion(dsbs_dir, name, split, rows):
    pairs = _pairs(dsbs_dir, name)
    assert len(pairs) == rows
    assert all(isinstance(text, str) and text for _, text in pairs)


# parse rate over the first 300 rows, measured 0.970 / 0.990 / 0.997
@pytest.mark.parametrize("name, min_rate", [("cqa", 0.95), ("svamp", 0.97), ("esnli", 0.98)])
def test_parse_rate_on_real_completions(dsbs_dir, name, min_rate):
    head = _parsed(dsbs_dir, name)[:300]
    rate = sum(p.reject is None for _, _, p in head) / len(head)
    assert rate >= min_rate, f"{name}: parse rate {rate:.3f} < {min_rate}"


@pytest.mark.parametrize("name, row, reject, label, correct", [
    ("cqa", 0, None, "math problem", True),        # "So the answer is (d) math problem."
    ("cqa", 1, None, "train station", False),      # "(c) train station"; gold is bridge
    ("cqa", 4, None, "destroyer", False),          # "(d) destroyer"
    ("cqa", 5, None, "canada", False),             # "(d) canada"
    ("cqa", 7, None, "in charge of project", True),
    ("cqa", 16, R.LABEL_OUT_OF_SPACE, None, None),  # "either (a) aquarium or (e) pond."
    ("svamp", 0, None, "42", True),                 # "84 / 2 = 42. The answer is (84 / 2)."
    ("svamp", 1, None, "252", False),               # "The answer is (7 * 36)."; gold is 7 * 30
    ("svamp", 2, None, "34", True),                 # "The answer is (17 + 15 + 2)."
    ("svamp", 3, None, "2", False),                 # "The answer is (30 - 28)."
    ("svamp", 5, None, "1088", True),               # "The answer is (16 * 17) * 4."
    ("svamp", 65, R.NO_ANSWER, None, None),         # reasoning runs on, no trigger
    ("esnli", 0, None, "neutral", True),            # "Answer: neutral"
    ("esnli", 1, None, "entailment", True),
    ("esnli", 2, None, "contradiction", True),
    ("esnli", 6, None, "neutral", False),           # gold is 2 (contradiction)
    ("esnli", 9, None, "neutral", False),
    ("esnli", 133, R.NO_ANSWER, None, None),
])
def test_hand_picked_real_rows(dsbs_dir, name, row, reject, label, correct):
    ex, gold, p = _parsed(dsbs_dir, name)[row]
    assert (p.reject, p.label) == (reject, label)
    if label is not None:
        assert task(DATASETS[name][1]).compare(p.label, gold) is correct
        assert p.rationale and p.rationale[0].isupper()


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_rationales_never_contain_the_follow_on_turn(dsbs_dir, name):
    head = _pairs(dsbs_dir, name)[:300]
    parsed = _parsed(dsbs_dir, name)[:300]
    assert sum("\nQ:" in text or "\nPremise:" in text for _, text in head) >= 290  # the raw text does
    for (_, text), (_, _, p) in zip(head, parsed, strict=True):
        if p.rationale is not None:
            assert "\nQ:" not in p.rationale and "\nPremise:" not in p.rationale
            assert "\nHypothesis:" not in p.rationale
            assert p.rationale in text
        if p.reject is None:
            assert "\nA:" not in p.rationale


# teacher accuracy over whole splits; the release parser gets 0.743 / 0.735 / 0.7316, we measured
# 0.75855 / 0.74625 / 0.73166 (parse rates 0.9814 / 0.9862 / 0.9996)
@pytest.mark.parametrize("name, min_accuracy, min_parse_rate", [
    ("cqa", 0.743, 0.975),
    ("svamp", 0.735, 0.98),
    ("esnli", 0.7316, 0.999),
])
def test_teacher_accuracy_on_whole_splits(dsbs_dir, name, min_accuracy, min_parse_rate):
    t = task(DATASETS[name][1])
    rows = _parsed(dsbs_dir, name)
    right = sum(p.reject is None and t.compare(p.label, gold) for _, gold, p in rows)
    parsed = sum(p.reject is None for _, _, p in rows)
    accuracy, parse_rate = right / len(rows), parsed / len(rows)
    assert accuracy >= min_accuracy, f"{name}: accuracy {accuracy:.5f} < {min_accuracy}"
    assert parse_rate >= min_parse_rate, f"{name}: parse rate {parse_rate:.4f} < {min_parse_rate}"


# ── reasoning models: the answer after the trace ─────────────────────────────────────────────────────────────────
def rparse(text, kind="arithmetic", example=PLAIN, style="auto", rationale="auto", finish="stop", reasoning=None,
           output="cot", **kw) -> Parsed:
    c = Completion("key", "ex", 0, text, finish, reasoning=reasoning)
    opts = ParseOptions(output=output, reasoning=style, rationale=rationale)
    return parse_completion(c, example, task(kind, **kw), options=opts)


TRACE = "Two apples and two more. That makes 4, so the answer is 4."


@pytest.mark.parametrize("style, text, reasoning", [
    ("auto", f"<think>\n{TRACE}\n</think>\n\nWe add: 2 + 2 = 4. The answer is \\boxed{{4}}.", None),
    ("auto", "We add: 2 + 2 = 4. The answer is \\boxed{4}.", TRACE),                       # the server's field
    ("inline", f"<think>{TRACE}</think>We add: 2 + 2 = 4. The answer is \\boxed{{4}}.", None),
    ("prefilled", f"{TRACE}\n</think>\n\nWe add: 2 + 2 = 4. The answer is \\boxed{{4}}.", None),
    ("auto", f"{TRACE}\n</think>\n\nWe add: 2 + 2 = 4. The answer is \\boxed{{4}}.", None),  # auto sees prefilled
    ("auto", f"<|channel|>analysis<|message|>{TRACE}<|end|><|start|>assistant<|channel|>final<|message|>"
             "We add: 2 + 2 = 4. The answer is \\boxed{4}.<|return|>", None),                 # gpt-oss, raw
])
def test_every_style_gives_the_same_record(style, text, reasoning):
    p = rparse(text, style=style, reasoning=reasoning)
    assert (p.reject, p.label, p.reasoning, p.rationale, p.trace_label) == (None, "4", TRACE, TRACE, "4")
    assert p.content == "We add: 2 + 2 = 4. The answer is \\boxed{4}."


@pytest.mark.parametrize("style, text", [
    ("prefilled", "Two apples... so \\boxed{4} maybe, and then"),
    ("inline", "<think>Two apples... so the answer is 4 and then"),
    ("auto", "<think>Two apples... so the answer is 4 and then"),
])
def test_an_unfinished_trace_is_truncated_and_never_mined(style, text):
    p = rparse(text, style=style)
    assert (p.reject, p.label, p.rationale, p.trace_label, p.content) == (R.TRUNCATED, None, None, None, "")
    assert p.detail == "the thinking never ended (no </think>)"
    assert p.reasoning.startswith("Two apples")


def test_an_unfinished_harmony_trace_names_the_final_channel():
    p = rparse("<|channel|>analysis<|message|>So the answer is 4 and")
    assert (p.reject, p.label, p.detail) == (R.TRUNCATED, None, "the thinking never ended (no harmony's final channel)")


def test_the_answer_is_read_after_the_trace_only():
    p = rparse(f"<think>{TRACE}</think>Counting again, the answer is 5.")
    assert (p.reject, p.label, p.trace_label) == (None, "5", "4")  # a contradiction is recorded, not rejected


@pytest.mark.parametrize("choice, rationale", [
    ("auto", TRACE),
    ("reasoning", TRACE),
    ("content", "We add: 2 + 2 = 4."),
    ("both", f"{TRACE}\n\nWe add: 2 + 2 = 4."),
])
def test_the_job_chooses_the_rationale(choice, rationale):
    p = rparse(f"<think>{TRACE}</think>We add: 2 + 2 = 4. So the answer is 4.", rationale=choice)
    assert (p.reject, p.label, p.rationale) == (None, "4", rationale)


@pytest.mark.parametrize("choice, reject, rationale", [
    ("auto", None, TRACE),
    ("content", R.EMPTY_RATIONALE, None),  # the content is the bare answer
    ("both", None, TRACE),
])
def test_a_bare_answer_after_the_trace(choice, reject, rationale):
    p = rparse(f"<think>{TRACE}</think>\\boxed{{4}}", rationale=choice)
    assert (p.reject, p.label, p.rationale) == (reject, "4", rationale)


def test_rationale_reasoning_without_a_trace_is_empty():
    p = rparse("We add: 2 + 2 = 4. So the answer is 4.", rationale="reasoning")
    assert (p.reject, p.label, p.rationale) == (R.EMPTY_RATIONALE, "4", None)


def test_an_empty_trace_reads_the_content_as_before():  # Qwen3 with thinking off
    p = rparse("<think>\n\n</think>\n\nWe add: 2 + 2 = 4. So the answer is 4.")
    assert (p.reject, p.label, p.rationale, p.reasoning) == (None, "4", "We add: 2 + 2 = 4.", None)


def test_a_reasoning_field_with_no_content_is_no_answer():
    p = rparse(None, reasoning=TRACE)
    assert (p.reject, p.label, p.reasoning, p.trace_label) == (R.NO_ANSWER, None, TRACE, "4")


def test_length_after_a_finished_trace_is_truncated_and_keeps_the_trace():
    p = rparse(f"<think>{TRACE}</think>So the answer is 4.", finish="length")
    assert (p.reject, p.label, p.reasoning) == (R.TRUNCATED, "4", TRACE)
    assert "max_tokens" in p.detail


def test_style_none_keeps_the_tags_in_the_content():
    p = rparse(f"<think>{TRACE}</think>We add. So the answer is 5.", style="none")
    assert (p.reject, p.label, p.reasoning) == (None, "5", None)
    assert p.rationale.startswith("<think>")


def test_json_output_after_a_trace():
    p = rparse(f'<think>{TRACE}</think>{{"rationale": "2 + 2", "label": 4}}', output="json")
    assert (p.reject, p.label, p.rationale, p.trace_label) == (None, "4", TRACE, "4")


def test_non_reasoning_text_keeps_its_whole_text_as_content():
    p = rparse("We add: 2 + 2 = 4. So the answer is 4.")
    assert (p.reasoning, p.content, p.trace_label) == (None, "We add: 2 + 2 = 4. So the answer is 4.", None)


def test_parse_options_come_from_the_job():
    from stepwise.pipeline.spec import parse_job

    spec = parse_job({"task": "math", "prompt": "zero_shot_cot", "rationale": "both",
                      "dataset": {"path": "d.jsonl"},
                      "teacher": {"backend": "replay", "path": "c.jsonl", "reasoning": "prefilled",
                                  "think_tags": ["<r>", "</r>"]}})
    assert ParseOptions.of(spec, "json") == ParseOptions("json", "prefilled", ("<r>", "</r>"), "both")


# ── answer forms ─────────────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("content, label", [
    ("The total is \\boxed{12}.", "12"),
    ("So \\boxed{1{,}200} dollars.", "1200"),
    ("It is \\boxed 7 in all.", "7"),
    ("\\fbox{9}", "9"),
    ("First \\boxed{3}, but recounting gives \\boxed{5}.", "5"),            # the last box wins
    ("$\\boxed{\\frac{3}{4}}$", "0.75"),                                     # nested braces
    ("First \\boxed{3}. Then \\boxed{5", "3"),                               # an unbalanced box is skipped
    ("First \\boxed{3}. Then \\boxed{}", "3"),                               # so is an empty one
    ("\\boxed{\\$18.00}", "18"),
    ("\\boxed{18 \\text{ dollars}}", "18"),
])
def test_boxed_answers(content, label):
    p = rparse(f"<think>{TRACE}</think>{content}")
    assert (p.reject, p.label) == (None, label)


@pytest.mark.parametrize("content, label", [
    ("We add.\n\nFinal Answer: 6", "6"),
    ("We add.\n\n**Final Answer**\n\n6", "6"),
    ("We add.\n\n**Final Answer:** 6", "6"),
    ("We add.\n\n**Answer:** 6", "6"),
    ("We add.\n\nAnswer: 6", "6"),
    ("We add.\n\n## Final Answer\n6", "6"),
    ("We add.\n\n### **Final Answer**\n\nShe makes **$6** a day.", "6"),
    ("We add.\n\n**Answer: 6**", "6"),
    ("We add.\n\nThe final answer is 6.", "6"),
])
def test_final_answer_headings(content, label):
    p = rparse(f"<think>{TRACE}</think>{content}", rationale="content")
    assert (p.reject, p.label, p.rationale) == (None, label, "We add.")


@pytest.mark.parametrize("content, label", [
    ('```json\n{"answer": "True"}\n```', "yes"),
    ('{" ANSWER": "True"}', "yes"),
    ('{"Answer": false}', "no"),
    ('Here it is: {"final_answer": "no", "why": "cold"}', "no"),
    ('{"Final Answer": "yes"}', "yes"),
    ('{"reasoning": {"steps": 2}, "answer": "yes"}', "yes"),  # nested objects
])
def test_json_answers(content, label):
    p = rparse(f"<think>{TRACE}</think>{content}", kind="yes_no")
    assert (p.reject, p.label) == (None, label)


@pytest.mark.parametrize("text, label", [
    ("Apples fall.\n\nThe best answer is: (D)", "math problem"),
    ("Apples fall.\n\nThe best answer is (D)", "math problem"),
    ("Apples fall.\n\nThe best answer is: **(D)**", "math problem"),
    ("Apples fall. So the answer is most likely E.", "gravity"),
    ("Apples fall. So the answer is probably (b)", "coloring book"),
    ("Apples fall. Answer: A, park.", "park"),
    ("Apples fall. Answer: (C): garden center.", "garden center"),
    ("Apples fall. Answer: \\boxed{\\text{(D)}}", "math problem"),
])
def test_multiple_choice_answer_forms(text, label):
    p = parse(text)
    assert (p.reject, p.label) == (None, label)


@pytest.mark.parametrize("content, label", [
    ("Most likely E.", "gravity"),
    ("Probably (B).", "coloring book"),
    ("(C): garden center.", "garden center"),
    ("D", "math problem"),
])
def test_multiple_choice_content_that_is_the_answer(content, label):
    p = rparse(f"<think>Apples fall down.</think>{content}", kind="multiple_choice", example=MC_EX)
    assert (p.reject, p.label, p.rationale) == (None, label, "Apples fall down.")


@pytest.mark.parametrize("text", [
    "Apples fall. So the answer is most likely A or B.",
    "Apples fall. So the answer is probably (a) or (b).",
    "Apples fall. Answer: A, B.",
    "Counting. So the answer is either (a) park or (e) gravity.",
])
def test_an_answer_naming_several_options_is_rejected(text):
    assert (parse(text).reject, parse(text).label) == (R.LABEL_OUT_OF_SPACE, None)


def test_a_long_content_with_no_marker_is_no_answer():
    content = "We add the apples. " * 30 + "\nThen 2 + 2 = 4"
    p = rparse(f"<think>{TRACE}</think>{content}")
    assert (p.reject, p.label) == (R.NO_ANSWER, None)


def test_exact_can_ignore_white_space_inside_the_answer():
    p = rparse("<think>Last letters: n, a, o, a.</think>The answer is n a o a.", kind="exact",
               ignore_whitespace=True)
    t = task("exact", ignore_whitespace=True)
    assert (p.reject, p.label) == (None, "naoa")
    assert t.compare(p.label, t.normalize_gold("naoa", PLAIN))


@pytest.mark.parametrize("content, gold", [
    ("The area is $\\boxed{\\dfrac{14}{3}}$.", "\\frac{14}{3}"),
    ("**Final Answer**\n\\[\n\\boxed{[1, 2)}\n\\]", "[1,2)"),
    ("Therefore the answer is $x = 5$.", "5"),
    ("So the side is $2\\sqrt{5}$ units.\n\nThat is all.", "\\sqrt{20}"),  # no marker: math-verify reads it
])
def test_math_answers(content, gold):
    t = task("math")
    p = rparse(f"<think>{TRACE}</think>{content}", kind="math")
    assert p.reject is None and t.compare(p.label, t.normalize_gold(gold, PLAIN)), p


def test_few_shot_math_exemplars_parse_back_to_their_answers():
    from stepwise.pipeline.spec import PromptSpec
    from stepwise.prompts import load_prompt

    t = task("math")
    prompt = load_prompt(PromptSpec(id="few_shot_cot"), "math")
    for shot in prompt.exemplars:
        p = parse_completion(comp(prompt.assistant.format_map(shot)), PLAIN, t)
        assert p.reject is None and t.compare(p.label, t.normalize_gold(shot["answer"], PLAIN)), (shot, p)
        assert p.rationale == shot["rationale"]


# the shapes other reasoning models answer in (written for these tests, after their public formats)
@pytest.mark.parametrize("kind, example, text, reasoning, style, label", [
    # QwQ / R1-Distill served raw: the template opened the trace
    ("arithmetic", PLAIN, "Okay, 3 boxes of 4 is 12.\n</think>\n\nThere are $3 \\times 4 = 12$ apples.\n\n"
     "**Final Answer**\n\\boxed{12}", None, "prefilled", "12"),
    # Qwen3 thinking mode without a reasoning parser: inline tags, a bold letter
    ("multiple_choice", MC_EX, "<think>\nApples fall because of gravity.\n</think>\n\nThe answer is **E**.", None,
     "auto", "gravity"),
    # DeepSeek API / vLLM with --reasoning-parser: the trace in its own field
    ("multiple_choice", MC_EX, "The best answer is: (E)", "Apples fall because of gravity.", "auto", "gravity"),
    # gpt-oss through a server with no parser: harmony channels in the text
    ("yes_no", PLAIN, "<|channel|>analysis<|message|>Ice is frozen water, it is cold.<|end|><|start|>assistant"
     "<|channel|>final<|message|>**Yes.** Ice is cold.<|return|>", None, "auto", "yes"),
    # a hosted model in JSON mode, its trace hidden from the content
    ("yes_no", PLAIN, '```json\n{"Answer": "No"}\n```', "Fire is hot, so not cold.", "auto", "no"),
    # Minerva-style math answer
    ("math", PLAIN, "We solve $2x = 1$.\n\nFinal Answer: The final answer is $\\boxed{\\frac{1}{2}}$. "
     "I hope it is correct.", "x is one half.", "auto", "\\frac{1}{2}"),
])
def test_reasoning_model_shapes(kind, example, text, reasoning, style, label):
    p = rparse(text, kind=kind, example=example, style=style, reasoning=reasoning)
    assert (p.reject, p.label) == (None, label)
    assert p.reasoning and "<think>" not in p.rationale and "<|" not in p.rationale
