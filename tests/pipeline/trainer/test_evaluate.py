"""Scoring the student: the answer read from its output, then the task's own extract and compare, the very
methods the pipeline uses for `records.correct`."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepwise.pipeline.parsing import cut_follow_on, split_answer
from stepwise.pipeline.spec import TaskSpec
from stepwise.pipeline.tasks import build_task
from stepwise.pipeline.trainer.data import Record, eval_examples, read_job
from stepwise.pipeline.trainer.evaluate import answer_text, score
from stepwise.pipeline.types import Example
from stepwise.storage.catalog import query
from tests.pipeline.trainer.conftest import CQA_JOB, SVAMP_JOB

ARITH = build_task(TaskSpec(kind="arithmetic"))
MC = build_task(TaskSpec(kind="multiple_choice"))
MC_EXAMPLE = MC.prepare(Example("m", "Where do you keep milk?\nAnswer Choices:\n(a) oven\n(b) fridge\n(c) shelf"))
PLAIN = Example("p", "How many?")


@pytest.mark.parametrize(("prediction", "answer"), [
    ("3 + 4 = 7 --> 7", " 7"),
    ("x --> y --> 12", " 12"),            # the last arrow wins
    ("no arrow at all, 7", None),        # no arrow: no answer
    ("ends with an arrow -->", ""),
])
def test_cot_answer_is_after_the_last_arrow(prediction: str, answer: str | None):
    assert answer_text(prediction, "cot") == answer
    assert answer_text(prediction, "standard") == prediction == answer_text(prediction, "multitask")


@pytest.mark.parametrize(("prediction", "mode", "label", "correct"), [
    ("42", "standard", "42", True),
    ("$1,234.50", "standard", "1234.5", False),
    ("84 / 2 = 42", "standard", "42", True),
    ("42.00001", "standard", "42.00001", True),       # within the arithmetic comparator's tolerance
    ("41", "standard", "41", False),
    ("Half of 84. --> 42", "cot", "42", True),
    ("Half of 84 is 42", "cot", None, False),         # no arrow, no label, even though 42 is in the text
    ("Half of 84. -->", "cot", None, False),
    ("I am not sure", "standard", None, False),
])
def test_arithmetic_predictions(prediction: str, mode: str, label: str | None, correct: bool):
    s = score(ARITH, PLAIN, "42", prediction, mode)
    assert (s.label, s.correct) == (label, correct)


@pytest.mark.parametrize(("prediction", "label", "correct"), [
    ("fridge", "fridge", True),
    ("(b)", "fridge", True),
    ("B", "fridge", True),
    ("(b) fridge", "fridge", True),
    ("c", "shelf", False),
    ("(z)", None, False),
    ("a freezer", None, False),
])
def test_multiple_choice_letters_and_texts(prediction: str, label: str | None, correct: bool):
    s = score(MC, MC_EXAMPLE, "fridge", prediction, "standard")
    assert (s.label, s.correct) == (label, correct)
    cot = score(MC, MC_EXAMPLE, "fridge", f"Milk stays cold in a fridge. --> {prediction}", "cot")
    assert (cot.label, cot.correct) == (label, correct)


@pytest.mark.parametrize("job", [SVAMP_JOB, CQA_JOB])
def test_scoring_a_teacher_answer_gives_the_records_correct(release_corpus: Path, job: str):
    """For every record with a label: the teacher's label, and its raw answer text behind an arrow, scored
    through the trainer's evaluation path, agree with the `correct` the pipeline stored."""
    _, task_spec = read_job(str(release_corpus), job, (0.8, 0.1, 0.1), 0)
    task = build_task(task_spec)
    rows = query(release_corpus, f"SELECT example_id, input, label, gold_label, correct, completion FROM records "
                                 f"WHERE job_id = '{job}' AND label IS NOT NULL AND gold_label IS NOT NULL").table.to_pylist()
    assert len(rows) > 150
    checked = wrong = 0
    for r in rows:
        [example], _ = eval_examples([Record(r["example_id"], 0, r["input"], None, r["label"], r["gold_label"])],
                                     task)
        by_label = score(task, example.example, example.gold_label, r["label"], "standard")
        assert by_label.label == r["label"] and by_label.correct == r["correct"], r
        _, answer = split_answer(cut_follow_on(r["completion"])[0], task)
        by_answer = score(task, example.example, example.gold_label, f"some reasoning --> {answer}", "cot")
        assert (by_answer.label, by_answer.correct) == (r["label"], r["correct"]), (answer, r)
        checked += 1
        wrong += not r["correct"]
    assert wrong > 10 and checked - wrong > 100  # both outcomes are exercised
