"""`answer_span`: where the answer the parser reads sits in a completion, for the viewer to highlight."""

from __future__ import annotations

import pytest

from stepwise.pipeline.parsing import answer_span
from stepwise.pipeline.spec import TaskSpec
from stepwise.pipeline.tasks import build_task

ARITHMETIC = build_task(TaskSpec(kind="arithmetic"))
CHOICE = build_task(TaskSpec(kind="multiple_choice"))


@pytest.mark.parametrize("text,task,expected", [
    ("3 + 4 = 7. So the answer is 7.", ARITHMETIC, "7"),
    ("The answer is 12 apples.", ARITHMETIC, "12 apples"),
    ("Add them: 5 + 6 = 11.\n\n**Final Answer:** **11**", ARITHMETIC, "11"),
    ("Half of 8 is 4, so \\boxed{4}.", ARITHMETIC, "4"),
    ('Counting gives 9.\n```json\n{"answer": 9}\n```', ARITHMETIC, "9"),
    ("Paris is in France. So the answer is (B).", CHOICE, "(B)"),
    ("It has 3 legs. So the answer is 3.\n\nQ: A cat has how many legs?\nA: So the answer is 4.", ARITHMETIC, "3"),
])
def test_the_span_holds_the_answer_the_parser_reads(text, task, expected):
    start, end = answer_span(text, task)
    assert text[start:end] == expected


def test_after_a_trace_an_unmarked_last_line_is_the_answer():
    content = "Adding up.\n42"
    start, end = answer_span(content, ARITHMETIC, after_trace=True)
    assert content[start:end] == "42"
    assert answer_span(content, ARITHMETIC) is None  # without a trace an unmarked line is no answer


def test_a_structured_answer_span_is_its_label_value():
    text = '{"rationale": "the label is 5, see", "label": "5"}'
    start, end = answer_span(text, ARITHMETIC, output="json")
    assert (text[start:end], text[start - 1]) == ("5", '"')
    number = '{"rationale": "r", "label": 12}'
    assert number[slice(*answer_span(number, ARITHMETIC, output="json"))] == "12"
    assert answer_span('{"rationale": "r"}', ARITHMETIC, output="json") is None


@pytest.mark.parametrize("text", ["I do not know.", "", "So the answer is $\\frac{1}{2}$ of them."])
def test_no_span_without_an_answer_or_when_its_text_is_not_verbatim(text):
    assert answer_span(text, ARITHMETIC) is None  # the last one is read as "(1)/(2) of them."
