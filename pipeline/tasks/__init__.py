"""Task kinds: answer extraction, normalisation and comparison, shared by the pipeline and the trainer.

Each kind is a `Task` subclass with a `kind` name, registered in `TASKS` as its module is imported; every module
of this package is imported with it, so a new kind is a new module here (and its prompt template variants).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from stepwise.pipeline.errors import TaskError
from stepwise.pipeline.tasks.base import TASKS, Task, normalize_text
from stepwise.pipeline.tasks.kinds import NLI_ALIASES, MultipleChoiceTask
from stepwise.pipeline.tasks.numbers import UnsafeExpression, evaluate
from stepwise.pipeline.types import Example

if TYPE_CHECKING:
    from stepwise.pipeline.spec import TaskSpec

__all__ = ["TASKS", "Task", "build_task", "infer_kind", "normalize_text"]

# a LaTeX command (`\frac`, `\boxed`, `\text`), a braced super- or subscript, or a `$…$` span: a math answer
_LATEX = re.compile(r"\\[A-Za-z]{2,}|[\^_]\{|\$[^$\n]+\$")

for _module in pkgutil.iter_modules(__path__):  # each module registers the kinds it defines
    importlib.import_module(f"{__name__}.{_module.name}")


def build_task(spec: TaskSpec, sample: Iterable[Example] = ()) -> Task:
    """The Task for a spec; kind `auto` is decided from a sample of examples (see `infer_kind`)."""
    kind = spec.kind if spec.kind != "auto" else infer_kind(sample)
    try:
        cls = TASKS.get(kind)
    except KeyError as exc:
        raise TaskError(str(exc.args[0])) from None
    return cls.from_spec(spec)


def infer_kind(examples: Iterable[Example]) -> str:
    """Guess the task kind from gold answers: nli, yes_no, multiple_choice, arithmetic (numbers, or GSM8K's
    solutions ending `#### 18`), math (LaTeX answers or solutions with a `\\boxed{}` answer), else exact."""
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
            evaluate(g.rpartition("####")[2].replace(",", "").replace("$", ""))
        return "arithmetic"
    except UnsafeExpression:
        pass
    return "math" if any(_LATEX.search(g) for g in golds) else "exact"
