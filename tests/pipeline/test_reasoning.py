"""Trace splitting (`pipeline/reasoning.py`): one test per style and rule, adversarial texts included."""

from __future__ import annotations

import time

import pytest

from stepwise.pipeline.reasoning import Trace, split_text, split_trace
from stepwise.pipeline.types import Completion

FINISHED = Trace("I add them.", "So the answer is 4.")
NO_TRACE = "Two and two make four. So the answer is 4."


def comp(text: str | None, reasoning: str | None = None) -> Completion:
    return Completion("key", "ex", 0, text, "stop", reasoning=reasoning)


# ── auto ─────────────────────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("text, expected", [
    ("<think>\nI add them.\n</think>\n\nSo the answer is 4.", FINISHED),                  # inline block
    ("  <think>I add them.</think>So the answer is 4.", FINISHED),                         # blank before the tag
    ("I add them.\n</think>\n\nSo the answer is 4.", FINISHED),                            # prefilled: closing only
    ("<think>\nI add them and then", Trace("I add them and then", "", True, "</think>")),  # opened, never closed
    (NO_TRACE, Trace(None, NO_TRACE)),                                                     # no tags: no trace
    ("We write <think> in prompts. Answer: 4", Trace(None, "We write <think> in prompts. Answer: 4")),  # quoted tag
    ("<think></think>\n\nSo the answer is 4.", Trace("", "So the answer is 4.")),          # empty trace (Qwen3)
])
def test_auto(text, expected):
    assert split_text(text, "auto") == expected


def test_auto_a_closing_tag_before_an_opening_one_is_a_prefilled_trace():
    text = "I add them.</think>So the answer is 4, and <think> is a tag.</think>"
    assert split_text(text, "auto") == Trace("I add them.", "So the answer is 4, and <think> is a tag.</think>")


@pytest.mark.parametrize("style", ["auto", "inline", "prefilled", "none"])
def test_a_server_field_is_the_trace_in_every_style(style):
    c = comp("So the answer is 4.", reasoning="I add them.")
    assert split_trace(c, style) == FINISHED


def test_a_server_field_with_no_content():
    assert split_trace(comp(None, reasoning="I add them.")) == Trace("I add them.", "")


@pytest.mark.parametrize("text, expected", [
    ("<|start|>assistant<|channel|>analysis<|message|>I add them.<|end|><|start|>assistant<|channel|>final"
     "<|message|>So the answer is 4.<|return|>", FINISHED),
    ("<|channel|>analysis<|message|>I add<|end|><|channel|>analysis<|message|>them.<|end|>"
     "<|channel|>final<|message|>So the answer is 4.", Trace("I add\n\nthem.", "So the answer is 4.")),
    ("<|channel|>analysis<|message|>I add them and", Trace("I add them and", "", True, "harmony's final channel")),
    ("<|channel|>final<|message|>So the answer is 4.<|return|>", Trace(None, "So the answer is 4.")),
    ("analysisI add them.assistantfinalSo the answer is 4.", FINISHED),  # special tokens decoded away
    ("analysis of the data shows 4. Answer: 4", Trace(None, "analysis of the data shows 4. Answer: 4")),
])
def test_auto_reads_gpt_oss_harmony_channels(text, expected):
    assert split_text(text, "auto") == expected


# ── inline, prefilled, none ──────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("text, expected", [
    ("<think>I add them.</think>So the answer is 4.", FINISHED),
    ("Sure. <think>I add them.</think>So the answer is 4.", FINISHED),
    ("Sure. <think>I add them and", Trace("I add them and", "", True, "</think>")),  # opened anywhere: unfinished
    (NO_TRACE, Trace(None, NO_TRACE)),
])
def test_inline(text, expected):
    assert split_text(text, "inline") == expected


@pytest.mark.parametrize("text, expected", [
    ("I add them.</think>So the answer is 4.", FINISHED),
    ("<think>\nI add them.</think>So the answer is 4.", FINISHED),  # the opening tag echoed back
    ("I add them and", Trace("I add them and", "", True, "</think>")),
    ("</think>So the answer is 4.", Trace("", "So the answer is 4.")),
    # the first closing tag ends the trace: one inside the answer stays in the answer
    ("I add them.</think>The tag </think> ends a trace. \\boxed{4}",
     Trace("I add them.", "The tag </think> ends a trace. \\boxed{4}")),
])
def test_prefilled(text, expected):
    assert split_text(text, "prefilled") == expected


@pytest.mark.parametrize("text", ["<think>I add them.</think>So the answer is 4.", "I add them.</think>4", "<think>x"])
def test_none_never_splits(text):
    assert split_text(text, "none") == Trace(None, text)


TAGS = ("<reasoning>", "</reasoning>")


@pytest.mark.parametrize("style", ["auto", "inline", "prefilled"])
def test_custom_tags(style):
    text = ("" if style == "prefilled" else "<reasoning>") + "I add them.</reasoning>So the answer is 4."
    assert split_text(text, style, TAGS) == FINISHED


@pytest.mark.parametrize("style, expected", [
    ("auto", Trace(None, "<think>I add them.</think>4")),
    ("inline", Trace(None, "<think>I add them.</think>4")),
    ("prefilled", Trace("<think>I add them.</think>4", "", True, "</reasoning>")),
])
def test_custom_tags_leave_other_tags_alone(style, expected):
    assert split_text("<think>I add them.</think>4", style, TAGS) == expected


def test_inline_takes_a_closing_tag_alone_as_a_prefilled_trace():
    assert split_text("I add them.</think>So the answer is 4.", "inline") == FINISHED


def test_long_texts_split_in_linear_time():
    trace = "Let me think about this again. " * 20_000  # 600k characters
    start = time.perf_counter()
    for style in ("auto", "inline", "prefilled"):
        for text in (f"<think>{trace}</think>4", f"{trace}</think>4", f"<think>{trace}", f"<think>{trace}<think>"):
            split_text(text, style)
    assert time.perf_counter() - start < 0.5
