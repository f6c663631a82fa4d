"""Prompt templates: YAML files in `prompts/templates/`, versioned by a hash of their bytes.

`few_shot_cot` has one variant per task kind (`templates/few_shot_cot/<kind>.yaml`); the others are generic.
Every record stores the prompt id and the template hash, so a corpus says exactly which prompt made it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stepwise.pipeline.errors import PromptError
from stepwise.pipeline.yamlfile import read_yaml

if TYPE_CHECKING:
    from stepwise.pipeline.spec import PromptSpec
    from stepwise.pipeline.tasks import Task
    from stepwise.pipeline.types import Example

TEMPLATES = Path(__file__).parent / "templates"
BUILTIN = ("few_shot_cot", "zero_shot_cot", "structured_json", "rationalize")
_KEYS = {"id", "kind", "output", "system", "user", "assistant", "exemplars", "answer_prompt", "needs_gold"}


class _Vars(dict):
    def __missing__(self, key: str) -> str:
        raise PromptError(f"template uses {{{key}}}, which is not a prompt variable "
                          f"(use input, question, premise, hypothesis, gold, labels)")


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded template; `render` turns an example into chat messages."""

    id: str
    hash: str | None
    output: str
    user: str
    system: str | None = None
    assistant: str = "{rationale} So the answer is {answer}."
    exemplars: tuple[dict[str, str], ...] = ()
    answer_prompt: str | None = None
    needs_gold: bool = False
    path: str = ""

    def variables(self, example: Example, task: Task, gold_label: str | None) -> dict[str, str]:
        return _Vars(
            input=task.student_input(example),
            question=example.input,
            premise=example.meta.get("premise", ""),
            hypothesis=example.meta.get("hypothesis", ""),
            gold=gold_label or "",
            labels=label_hint(task, example),
        )

    def render(self, example: Example, task: Task, gold_label: str | None = None) -> tuple[dict[str, str], ...]:
        """Chat messages: optional system, exemplars as user/assistant turns, then the question."""
        if self.needs_gold and gold_label is None:
            raise PromptError(f"prompt {self.id!r} needs a gold answer and this example has none")
        messages: list[dict[str, str]] = []
        if self.system:
            messages.append({"role": "system", "content": self.system.format_map(self.variables(example, task, gold_label))})
        for shot in self.exemplars:
            messages.append({"role": "user", "content": self.user.format_map(_Vars(shot, labels=""))})
            messages.append({"role": "assistant", "content": self.assistant.format_map(_Vars(shot))})
        messages.append({"role": "user", "content": self.user.format_map(self.variables(example, task, gold_label))})
        return tuple(messages)


    def render_followup(self, example: Example, task: Task, gold_label: str | None = None) -> str | None:
        """The second-stage answer prompt of a two-stage template (zero-shot CoT), or None."""
        if not self.answer_prompt:
            return None
        return self.answer_prompt.format_map(self.variables(example, task, gold_label))


def label_hint(task: Task, example: Example) -> str:
    """How prompts describe the allowed answers."""
    choices = task.label_choices(example)
    if choices:
        return "one of: " + ", ".join(choices)
    return {"arithmetic": "a number", "math": "a LaTeX expression", "exact": "a short answer"}.get(
        task.kind, "a short answer")


def _read(path: Path) -> PromptTemplate:
    """Load a template file with the strict YAML loader (no aliases, no key given twice, a BOM is fine);
    errors name the line, never quote the file."""
    data, raw = read_yaml(path, "prompt template", PromptError)
    if not isinstance(data, dict):
        raise PromptError(f"prompt template {path} should be a mapping")
    unknown = set(data) - _KEYS
    if unknown:
        raise PromptError(f"prompt template {path}: unknown keys {sorted(str(k)[:40] for k in unknown)[:10]}")
    for key in ("id", "user"):
        if not isinstance(data.get(key), str):
            raise PromptError(f"prompt template {path}: '{key}' is required and must be a string")
    output = data.get("output", "cot")
    if output not in ("cot", "json"):
        raise PromptError(f"prompt template {path}: output must be 'cot' or 'json'")
    exemplars = data.get("exemplars") or []
    for i, shot in enumerate(exemplars):
        if not isinstance(shot, dict) or not {"input", "rationale", "answer"} <= set(shot):
            raise PromptError(f"prompt template {path}: exemplars[{i}] needs input, rationale and answer")
    return PromptTemplate(
        id=data["id"],
        hash=hashlib.sha256(raw).hexdigest()[:16],
        output=output,
        user=data["user"],
        system=data.get("system"),
        assistant=data.get("assistant", PromptTemplate.assistant),
        exemplars=tuple({k: str(v) for k, v in shot.items()} for shot in exemplars),
        answer_prompt=data.get("answer_prompt"),
        needs_gold=bool(data.get("needs_gold", False)),
        path=str(path),
    )


def load_prompt(spec: PromptSpec, task_kind: str) -> PromptTemplate:
    """The template for a job: the file at `spec.path`, or the built-in one for the id and task kind."""
    if spec.path:
        return _read(Path(spec.path))
    folder = TEMPLATES / spec.id
    if folder.is_dir():
        path = folder / f"{task_kind}.yaml"
        if not path.is_file():
            kinds = sorted(p.stem for p in folder.glob("*.yaml"))
            raise PromptError(f"prompt {spec.id!r} has no variant for task kind {task_kind!r} (it has {kinds}); "
                              f"write your own template and give it as prompt.path")
        return _read(path)
    path = TEMPLATES / f"{spec.id}.yaml"
    if not path.is_file():
        raise PromptError(f"unknown prompt {spec.id!r}: built-in prompts are {list(BUILTIN)}, or give prompt.path")
    return _read(path)


def answer_schema(task: Task, example: Example) -> dict[str, Any]:
    """JSON schema of a structured answer for this example (OpenAI `response_format`, vLLM guided decoding)."""
    choices = task.label_choices(example)
    label: dict[str, Any] = {"type": "string"}
    if choices:
        label["enum"] = list(dict.fromkeys(choices))
    elif task.kind == "arithmetic":
        label = {"type": ["number", "string"]}
    return {
        "type": "object",
        "properties": {"rationale": {"type": "string", "minLength": 1}, "label": label},
        "required": ["rationale", "label"],
        "additionalProperties": False,
    }
