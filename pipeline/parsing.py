"""Parse raw teacher text into (rationale, label) in the task's label space, or a reject with its reason.

Chain-of-thought text is read the way few-shot CoT is written: reasoning, then an answer trigger
("So the answer is", "Therefore, the answer is", "Answer:"), then the answer. Teachers prompted few-shot
often keep writing the *next* exemplar ("\n\nQ: ...", "\nPremise: ..."); that hallucinated follow-on turn is
cut off first. When several answer triggers remain, the last one wins.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, ValidationError

from stepwise.pipeline.tasks import Task
from stepwise.pipeline.types import Completion, Example, Parsed, RejectReason

# A new few-shot turn starting on a fresh line: the teacher inventing the next exemplar.
_FOLLOW_ON = re.compile(r"\n[ \t]*(?:Q|Question|Premise|Hypothesis|Context|Input|Passage)[ \t]*:")
_TRIGGER = re.compile(
    r"(?:the\s+(?:final\s+|correct\s+|best\s+)?answer(?:\s*\([^)\n]{0,40}\))?\s+(?:is|would be|will be)\b|"
    r"\banswer\s*:)\s*:?",
    re.IGNORECASE,
)
_CONNECTIVE = re.compile(r"(?:\b(?:so|therefore|thus|hence)\s*,?\s*)$", re.IGNORECASE)
_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$")


class StructuredAnswer(BaseModel):
    """What a structured-JSON prompt asks the teacher for."""

    model_config = ConfigDict(extra="ignore")
    rationale: str
    label: str | int | float | bool


def cut_follow_on(text: str) -> tuple[str, bool]:
    """Drop a hallucinated next turn; returns the kept text and whether anything was cut."""
    m = _FOLLOW_ON.search(text)
    return (text[: m.start()], True) if m else (text, False)


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for last in pattern.finditer(text):  # noqa: B007 - we want the final match
        pass
    return last


def split_answer(text: str, task: Task) -> tuple[str, str] | None:
    """(rationale, answer text) around the last answer trigger, or None when there is none."""
    if task.answer_pattern is not None:
        last = _last_match(task.answer_pattern, text)
        if last is None:
            return None
        answer = last.group(1) if last.groups() else last.group(0)
        return text[: last.start()], answer
    last = _last_match(_TRIGGER, text)
    if last is None:
        return None
    rest = text[last.end():].lstrip()
    answer = rest.split("\n", 1)[0]
    rationale = _CONNECTIVE.sub("", text[: last.start()].rstrip())
    return rationale, answer


def _labelled(rationale: str, answer: str, example: Example, task: Task, what: str) -> Parsed:
    """Map the answer into the label space and check there is reasoning before it."""
    label = task.extract(answer, example)
    rationale = rationale.strip()
    if label is None:
        return Parsed(rationale or None, None, RejectReason.LABEL_OUT_OF_SPACE,
                      f"{what} {answer.strip()[:80]!r} is not in the label space")
    if not rationale:
        return Parsed(None, label, RejectReason.EMPTY_RATIONALE, f"no reasoning with the {what}")
    return Parsed(rationale, label)


def _parse_cot(text: str, example: Example, task: Task) -> Parsed:
    parts = split_answer(text, task)
    if parts is None:
        return Parsed(rationale=text.strip() or None, label=None, reject=RejectReason.NO_ANSWER,
                      detail="no answer trigger found")
    return _labelled(*parts, example, task, "answer")


def _parse_json(text: str, example: Example, task: Task) -> Parsed:
    try:
        obj = StructuredAnswer.model_validate_json(_FENCE.sub("", text))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"])) or "(document)"
        return Parsed(rationale=None, label=None, reject=RejectReason.INVALID_JSON, detail=f"{where}: {err['msg']}")
    return _labelled(obj.rationale, str(obj.label), example, task, "label")


def parse_completion(completion: Completion | None, example: Example, task: Task, output: str = "cot") -> Parsed:
    """Turn one completion into a Parsed result. `output` is the prompt's format: `cot` or `json`."""
    if completion is None or completion.text is None:
        if completion is not None and completion.error:
            reason = RejectReason.TEACHER_UNAVAILABLE if completion.retryable else RejectReason.TEACHER_ERROR
            return Parsed(None, None, reason, completion.error)
        return Parsed(None, None, RejectReason.MISSING_COMPLETION, "the teacher returned no completion")
    if output == "json":
        parsed = _parse_json(completion.text, example, task)
        cut = False
    else:
        text, cut = cut_follow_on(completion.text)
        parsed = _parse_cot(text, example, task)
    if completion.finish_reason == "length" and not cut:
        # Cut follow-on text proves the answer was finished before the token limit hit.
        return Parsed(parsed.rationale, parsed.label, RejectReason.TRUNCATED,
                      "finish_reason is 'length': the output hit max_tokens")
    return parsed
