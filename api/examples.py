"""One example of a job as the viewer shows it: the records of its samples, the prompt rendered again from the
record with the job's own template, and where each completion's answer sits (the pipeline's own parsing)."""

from __future__ import annotations

from typing import Any

from stepwise.api.encode import json_safe
from stepwise.api.schemas import ChatMessage, ExampleSample, ExampleView
from stepwise.pipeline.admission import Admission
from stepwise.pipeline.errors import StepwiseError
from stepwise.pipeline.parsing import answer_span
from stepwise.pipeline.spec import JobSpec
from stepwise.pipeline.tasks import Task, build_task
from stepwise.pipeline.types import Example
from stepwise.prompts import PromptTemplate, load_prompt

_SAMPLE_FIELDS = tuple(ExampleSample.model_fields)


def example_view(spec_json: str, records: list[dict[str, Any]], admission: Admission | None) -> ExampleView:
    """The view of one example from its records (one per sample, in order) and its job's spec (JSON)."""
    rows = json_safe(records)
    first = rows[0]
    task, prompt = _task_and_prompt(spec_json, first["task"], admission)
    output = prompt.output if prompt is not None else "cot"
    samples = [ExampleSample.model_validate(
        {**{k: r.get(k) for k in _SAMPLE_FIELDS},
         "answer_span": _span(r, task, output)}) for r in rows]
    return ExampleView(
        job_id=first["job_id"], example_id=first["example_id"], task=first["task"], input=first["input"],
        gold_label=first["gold_label"], gold_rationale=first["gold_rationale"],
        consensus_label=first["consensus_label"], agreement=first["agreement"], prompt_id=first["prompt_id"],
        prompt_hash=first["prompt_hash"], prompt=_messages(prompt, task, first), samples=samples)


def _task_and_prompt(spec_json: str, kind: str,
                     admission: Admission | None) -> tuple[Task | None, PromptTemplate | None]:
    """The job's task (of the kind its records name: `auto` was decided when it ran) and prompt template; None
    for what cannot be built now. A REST server reads a template only inside its data roots."""
    try:
        spec = JobSpec.model_validate_json(spec_json)
        task = build_task(spec.task.model_copy(update={"kind": kind}))
    except (StepwiseError, ValueError):
        return None, None
    try:
        prompt_spec = spec.prompt
        if prompt_spec.path and admission is not None:
            prompt_spec = prompt_spec.model_copy(update={"path": admission.roots.resolve("prompt.path",
                                                                                         prompt_spec.path)})
        return task, load_prompt(prompt_spec, task.kind)
    except (StepwiseError, OSError, ValueError):
        return task, None


def _messages(prompt: PromptTemplate | None, task: Task | None, record: dict[str, Any]) -> list[ChatMessage] | None:
    """The prompt's messages for the record's input and gold; None when the template is not the one the job used
    (its hash differs) or it cannot render this record."""
    if prompt is None or task is None or (record["prompt_hash"] and prompt.hash != record["prompt_hash"]):
        return None
    gold = record["gold_label"]
    try:
        example = task.prepare(Example(id=record["example_id"], input=record["input"] or "", gold=gold))
        return [ChatMessage(role=m["role"], content=m["content"]) for m in prompt.render(example, task, gold)]
    except (StepwiseError, ValueError, KeyError):
        return None


def _span(record: dict[str, Any], task: Task | None, output: str) -> tuple[int, int] | None:
    if task is None or not record.get("completion"):
        return None
    return answer_span(record["completion"], task, after_trace=bool(record.get("reasoning")), output=output)
