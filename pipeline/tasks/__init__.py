"""Task kinds: answer extraction, normalisation and comparison, shared by the pipeline and the trainer."""

from __future__ import annotations

from collections.abc import Iterable

from stepwise.pipeline.errors import TaskError
from stepwise.pipeline.spec import TaskSpec
from stepwise.pipeline.tasks.base import Task, normalize_text
from stepwise.pipeline.tasks.kinds import (
    NLI_ALIASES,
    ArithmeticTask,
    CustomTask,
    ExactTask,
    MultipleChoiceTask,
    NliTask,
    YesNoTask,
)
from stepwise.pipeline.tasks.numbers import UnsafeExpression, evaluate
from stepwise.pipeline.types import Example

__all__ = ["Task", "build_task", "infer_kind", "normalize_text"]

_SIMPLE = {
    "multiple_choice": MultipleChoiceTask,
    "nli": NliTask,
    "arithmetic": ArithmeticTask,
    "yes_no": YesNoTask,
    "exact": ExactTask,
}


def build_task(spec: TaskSpec, sample: Iterable[Example] = ()) -> Task:
    """The Task for a spec; kind `auto` is decided from a sample of examples (see `infer_kind`)."""
    kind = spec.kind if spec.kind != "auto" else infer_kind(sample)
    if kind == "custom":
        return CustomTask(tuple(spec.labels or ()), spec.aliases, spec.answer_pattern)
    try:
        cls = _SIMPLE[kind]
    except KeyError:
        raise TaskError(f"unknown task kind {kind!r}") from None
    return cls(answer_pattern=spec.answer_pattern)


def infer_kind(examples: Iterable[Example]) -> str:
    """Guess the task kind from gold answers: nli, yes_no, multiple_choice, arithmetic, else exact."""
    golds: list[str] = []
    with_choices = with_premise = gold_is_choice = True
    mc = MultipleChoiceTask()
    for ex in examples:
        if ex.gold is None:
            continue
        golds.append(ex.gold.strip())
        choices = mc.prepare(ex).choices
        with_choices &= bool(choices)
        with_premise &= "premise" in ex.meta
        if choices:
            try:
                mc.normalize_gold(ex.gold, mc.prepare(ex))
            except ValueError:
                gold_is_choice = False
    if not golds:
        raise TaskError("task: auto needs labeled examples (set dataset.answer_field) or an explicit kind")
    lowered = {normalize_text(g) for g in golds}
    if lowered <= {"entailment", "neutral", "contradiction"} or (with_premise and lowered <= set(NLI_ALIASES)):
        return "nli"
    if lowered <= {"yes", "no", "true", "false"}:
        return "yes_no"
    if with_choices and gold_is_choice:
        return "multiple_choice"
    try:
        for g in golds:
            evaluate(g.replace(",", "").replace("$", ""))
        return "arithmetic"
    except UnsafeExpression:
        return "exact"
