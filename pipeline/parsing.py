"""Parse raw teacher text into (rationale, label) in the task's label space, or a reject with its reason.

A reasoning model's thinking trace is split off first (`pipeline/reasoning.py`, by the teacher's trace style); an
unfinished trace is rejected `truncated` and never read for an answer. The answer is then read from the content
after the trace, or from the whole text when there is no trace, by its marker, strongest first:

    1. the task's own `answer_pattern`, when it has one (and nothing else)
    2. the last `\\boxed{…}` / `\\fbox{…}`
    3. a JSON answer object, bare or code-fenced: `{"answer": …}`, `{" ANSWER": …}`, `{"final_answer": …}`
    4. the last answer trigger: "So the answer is", "The best answer is: (X)", "Answer:", "**Final Answer**"
    5. after a trace only: the content itself, which usually is the answer (`Task.unmarked_answer`)

Chain-of-thought text is read the way few-shot CoT is written: reasoning, then an answer trigger, then the answer.
Teachers prompted few-shot often keep writing the *next* exemplar ("\\n\\nQ: ...", "\\nPremise: ..."); that
hallucinated follow-on turn is cut off first (not after a trace: a reasoning model answers one question).
The student's rationale is the job's choice (`rationale: auto | reasoning | content | both`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, ValidationError

from stepwise.pipeline.reasoning import THINK_TAGS, Trace, TraceStyle, split_trace
from stepwise.pipeline.tasks import Task
from stepwise.pipeline.tasks.latex import find_last_box, plain_answer
from stepwise.pipeline.types import Completion, Example, Parsed, RejectReason

if TYPE_CHECKING:
    from stepwise.pipeline.spec import JobSpec

# A new few-shot turn starting on a fresh line: the teacher inventing the next exemplar.
_FOLLOW_ON = re.compile(r"\n[ \t]*(?:Q|Question|Premise|Hypothesis|Context|Input|Passage)[ \t]*:")
_TRIGGER = re.compile(
    r"(?:the\s+(?:final\s+|correct\s+|best\s+)?answer(?:\s*\([^)\n]{0,40}\))?\s+(?:is|would be|will be)\b|"
    r"\banswer\s*:)\s*:?",
    re.IGNORECASE,
)
# Markdown answer headings, searched only in texts with markdown in them: `**Final Answer**`, `**Answer:**`,
# `## Final Answer`, `### **Final Answer**`
_HEADING = re.compile(
    r"(?:\*\*[ \t]*(?:final[ \t]+)?answer[ \t]*:?[ \t]*\*\*|"
    r"#{1,6}[ \t]*(?:\*\*)?[ \t]*(?:final[ \t]+)?answer\b[ \t]*:?[ \t]*(?:\*\*)?)\s*:?",
    re.IGNORECASE,
)
_CONNECTIVE = re.compile(r"(?:\b(?:so|therefore|thus|hence)\s*,?\s*)$", re.IGNORECASE)
_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$")
_ANSWER_EDGE = "*_` \t"          # markdown around an answer: `**(B)**`
_BOX_LEAD = "$([\\ \t\n"          # what sits between a lead-in and its box: `is $\boxed`, `\[\n\boxed`
_JSON_KEYS = {"answer", "final_answer", "finalanswer"}
_JSON_TAIL = 4000    # characters from the end searched for a JSON answer object
_JSON_TRIES = 16     # opening braces tried there, from the last
_TRACE_TAIL = 3000   # characters from the end of a trace read for its own conclusion


class StructuredAnswer(BaseModel):
    """What a structured-JSON prompt asks the teacher for."""

    model_config = ConfigDict(extra="ignore")
    rationale: str
    label: str | int | float | bool


@dataclass(frozen=True, slots=True)
class ParseOptions:
    """How a job's completions are read, built once per job (`ParseOptions.of`): the prompt's output format
    (`cot` or `json`), the teacher's trace style and tags, and which rationale the student gets."""

    output: str = "cot"
    reasoning: TraceStyle = "auto"
    think_tags: tuple[str, str] = THINK_TAGS
    rationale: str = "auto"

    @classmethod
    def of(cls, spec: JobSpec, output: str = "cot") -> ParseOptions:
        return cls(output, spec.teacher.reasoning, tuple(spec.teacher.think_tags), spec.rationale)


def cut_follow_on(text: str) -> tuple[str, bool]:
    """Drop a hallucinated next turn; returns the kept text and whether anything was cut."""
    m = _FOLLOW_ON.search(text)
    return (text[: m.start()], True) if m else (text, False)


def _last_match(pattern: re.Pattern[str], text: str, pos: int = 0) -> re.Match[str] | None:
    last = None
    for last in pattern.finditer(text, pos):  # noqa: B007 - we want the final match
        pass
    return last


def _last_trigger(text: str, pos: int = 0) -> tuple[int, int] | None:
    """(start, end) of the last answer trigger or heading in `text[pos:]`; the one ending last wins, and a
    "Final" before `Answer:` belongs to it."""
    last = _last_match(_TRIGGER, text, pos)
    span = (last.start(), last.end()) if last is not None else None
    if "**" in text or "#" in text:
        head = _last_match(_HEADING, text, pos)
        if head is not None and (span is None or head.end() >= span[1]):
            span = (head.start(), head.end())
    if span is not None:
        lead = max(pos, span[0] - 8)
        before = text[lead:span[0]].rstrip()
        if before[-5:].lower() == "final" and (len(before) == 5 or not before[-6].isalnum()):
            span = (lead + len(before) - 5, span[1])
    return span


def _answer_line(rest: str) -> str:
    """The answer after a trigger: the rest of its line, or the next line when a heading stands alone."""
    rest = rest.lstrip()
    line, _, after = rest.partition("\n")
    if line.strip(_ANSWER_EDGE + ":"):
        return line
    return after.lstrip().split("\n", 1)[0]


def _clean_answer(answer: str, task: Task) -> str:
    """Markdown off (`**B**.`); LaTeX read as plain text for kinds whose labels are not LaTeX."""
    if "**" in answer:
        answer = answer.replace("**", "")
    if answer[:1] in _ANSWER_EDGE or answer[-1:] in _ANSWER_EDGE:
        answer = answer.strip(_ANSWER_EDGE).lstrip(":").strip(_ANSWER_EDGE)
    if not task.latex_answers and ("\\" in answer or answer.count("$") >= 2):
        answer = plain_answer(answer)
    return answer


def _lead_in_removed(before: str) -> str:
    """The reasoning before a box or JSON answer, without the lead-in that introduced it ("So the final answer
    is $", "**Final Answer:**\\n\\[")."""
    before = before.rstrip(_BOX_LEAD)
    span = _last_trigger(before, max(0, len(before) - 120))
    if span is not None and not before[span[1]:].strip(_BOX_LEAD + ":*"):
        before = _CONNECTIVE.sub("", before[: span[0]].rstrip())
    return before


def _json_answer(text: str) -> tuple[int, str] | None:
    """(start, answer) of the last JSON object in the text with an `answer` / `final_answer` key (any case,
    any spacing), or None. Only the tail is searched, a bounded number of braces."""
    decoder = json.JSONDecoder()
    floor = max(0, len(text) - _JSON_TAIL)
    end = len(text)
    for _ in range(_JSON_TRIES):
        start = text.rfind("{", floor, end)
        if start < 0:
            return None
        end = start
        try:
            obj, _ = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            continue
        if not isinstance(obj, dict):
            continue
        for key, value in obj.items():
            if key.strip().lower().replace(" ", "_") in _JSON_KEYS and value is not None:
                return start, value if isinstance(value, str) else json.dumps(value)
    return None


def split_answer(text: str, task: Task) -> tuple[str, str] | None:
    """(rationale, answer text) around the answer marker (see the module docstring, forms 1-4), or None."""
    if task.answer_pattern is not None:
        last = _last_match(task.answer_pattern, text)
        if last is None:
            return None
        answer = last.group(1) if last.groups() else last.group(0)
        return text[: last.start()], answer
    box = find_last_box(text)
    if box is not None:
        start, _, content = box
        return _lead_in_removed(text[:start]), content if task.latex_answers else plain_answer(content)
    found = _json_answer(text) if "{" in text else None
    if found is not None:
        start, answer = found
        before = text[:start].rstrip()
        before = before.removesuffix("```json").removesuffix("```").rstrip()
        return _lead_in_removed(before), _clean_answer(answer, task)
    span = _last_trigger(text)
    if span is None:
        return None
    answer = _answer_line(text[span[1]:])
    before = text[: span[0]].rstrip()
    if before.endswith("**"):  # `**Answer: 18**`: the bold opened before the trigger
        before = before[:-2].rstrip()
    rationale = _CONNECTIVE.sub("", before)
    return rationale, _clean_answer(answer, task)


def answer_span(content: str, task: Task, *, after_trace: bool = False, output: str = "cot") -> tuple[int, int] | None:
    """[start, end) character offsets of the answer the parser reads in `content` (a record's `completion`: the
    text after any thinking trace), so a viewer can highlight it. Found as the parser finds it: a follow-on turn
    cut off first (not `after_trace`), the answer read by `split_answer` (or, after a trace, as the content's
    own last line), then its text looked up after the rationale; for `output="json"` the `label` value. None when
    there is no answer, or its text does not occur verbatim (e.g. LaTeX read as plain text)."""
    if output == "json":
        return _json_label_span(content)
    text = content if after_trace else cut_follow_on(content)[0]
    parts = split_answer(text, task) or (_unmarked(text, task) if after_trace else None)
    if parts is None:
        return None
    rationale, answer = parts
    # the answer without the sentence's full stop, or its core without markdown around it
    for needle in (answer.strip().rstrip(".,;:!? \t"), _EDGES.sub("", answer)):
        start = text.find(needle, len(rationale)) if needle else -1
        if start >= 0:
            return start, start + len(needle)
    return None


_EDGES = re.compile(r"^\W+|\W+$")
_LABEL_KEY = re.compile(r'"label"\s*:\s*')


def _json_label_span(text: str) -> tuple[int, int] | None:
    """Where the value of the last `"label"` key sits in a structured answer (inside the quotes of a string)."""
    key = _last_match(_LABEL_KEY, text)
    if key is None:
        return None
    try:
        value, end = json.JSONDecoder().raw_decode(text, key.end())
    except ValueError:
        return None
    return (key.end() + 1, end - 1) if isinstance(value, str) else (key.end(), end)


def _unmarked(content: str, task: Task) -> tuple[str, str] | None:
    """(rationale, answer) of content with no answer marker, the task reading it (`Task.unmarked_answer`)."""
    answer = task.unmarked_answer(content)
    if answer is None:
        return None
    at = content.rfind(answer)
    return (content[:at] if at >= 0 else ""), _clean_answer(answer, task)


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


def trace_label(reasoning: str, example: Example, task: Task) -> str | None:
    """The answer a trace itself concluded with, read off its end by the same markers (forms 1-4), or None."""
    parts = split_answer(reasoning[-_TRACE_TAIL:], task)
    return task.extract(parts[1], example) if parts is not None and parts[1].strip() else None


def _after_trace(trace: Trace, example: Example, task: Task, opts: ParseOptions) -> Parsed:
    """Answer from the content after a trace; the rationale the job chose; the trace's own conclusion."""
    content = trace.content
    if opts.output == "json":
        parsed = _parse_json(content, example, task)
        content_rationale = parsed.rationale
    else:
        parts = split_answer(content, task) or _unmarked(content, task)
        if parts is None:
            parsed = Parsed(None, None, RejectReason.NO_ANSWER, "no answer found after the thinking trace")
            content_rationale = content.strip() or None
        else:
            content_rationale = parts[0].strip() or None
            label = task.extract(parts[1], example)
            parsed = Parsed(None, label) if label is not None else Parsed(
                None, None, RejectReason.LABEL_OUT_OF_SPACE,
                f"answer {parts[1].strip()[:80]!r} is not in the label space")
    rationale = _chosen_rationale(trace.reasoning, content_rationale, opts.rationale)
    reject, detail = parsed.reject, parsed.detail
    if reject is None and not rationale:
        reject, detail = RejectReason.EMPTY_RATIONALE, _EMPTY_DETAIL[opts.rationale]
    return Parsed(rationale, parsed.label, reject, detail, reasoning=trace.reasoning, content=trace.content,
                  trace_label=trace_label(trace.reasoning, example, task))


_EMPTY_DETAIL = {"auto": "no reasoning with the answer", "reasoning": "an empty thinking trace",
                 "content": "no reasoning before the answer after the trace",
                 "both": "no reasoning in the trace or before the answer"}


def _chosen_rationale(reasoning: str | None, content_rationale: str | None, choice: str) -> str | None:
    """The student's rationale: `auto` the trace when there is one, else the content's reasoning."""
    if choice == "reasoning":
        return reasoning or None
    if choice == "content":
        return content_rationale or None
    if choice == "both":
        return "\n\n".join(p for p in (reasoning, content_rationale) if p) or None
    return reasoning or content_rationale or None


def _without_trace(text: str, example: Example, task: Task, opts: ParseOptions) -> tuple[Parsed, bool]:
    """A completion with no trace, read as before reasoning models: (parsed, whether a follow-on turn was cut)."""
    if opts.output == "json":
        parsed, cut = _parse_json(text, example, task), False
    else:
        kept, cut = cut_follow_on(text)
        parsed = _parse_cot(kept, example, task)
    if opts.rationale == "reasoning" and parsed.reject is None:  # the job asked for a trace and there is none
        parsed = Parsed(None, parsed.label, RejectReason.EMPTY_RATIONALE, "no reasoning trace with the answer")
    return Parsed(parsed.rationale, parsed.label, parsed.reject, parsed.detail, content=text), cut


def parse_completion(completion: Completion | None, example: Example, task: Task, output: str = "cot",
                     options: ParseOptions | None = None) -> Parsed:
    """Turn one completion into a Parsed result. `options` (built once per job with `ParseOptions.of`) says how
    to read it; without it, `output` is the prompt's format (`cot` or `json`) and the trace style is `auto`."""
    opts = options or ParseOptions(output=output)
    if completion is None or completion.text is None and (completion.error or not completion.reasoning):
        if completion is not None and completion.error:
            reason = RejectReason.TEACHER_UNAVAILABLE if completion.retryable else RejectReason.TEACHER_ERROR
            return Parsed(None, None, reason, completion.error)
        return Parsed(None, None, RejectReason.MISSING_COMPLETION, "the teacher returned no completion")
    trace = split_trace(completion, opts.reasoning, opts.think_tags)
    if trace.unfinished:  # never mined for an answer: the conclusion of an unfinished trace is a guess
        return Parsed(None, None, RejectReason.TRUNCATED, f"the thinking never ended (no {trace.missing})",
                      reasoning=trace.reasoning or None, content="")
    cut = False
    if trace.reasoning:
        parsed = _after_trace(trace, example, task, opts)
    else:
        parsed, cut = _without_trace(trace.content, example, task, opts)
    if completion.finish_reason == "length" and not cut:
        # Cut follow-on text proves the answer was finished before the token limit hit.
        return Parsed(parsed.rationale, parsed.label, RejectReason.TRUNCATED,
                      "finish_reason is 'length': the output hit max_tokens", parsed.reasoning, parsed.content,
                      parsed.trace_label)
    return parsed
