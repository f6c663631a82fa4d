"""What every shard of a job needs, built once: the spec, the task, the prompt and the teacher backend."""

from __future__ import annotations

import json
import itertools
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from stepwise.pipeline.datasets import check_fields, check_gold, read_examples
from stepwise.pipeline.spec import JobSpec
from stepwise.pipeline.tasks import Task, build_task
from stepwise.pipeline.teachers import TeacherBackend, build_backend
from stepwise.pipeline.types import Completion, Example, RowReject, Sampling
from stepwise.prompts import PromptTemplate, load_prompt

if TYPE_CHECKING:
    from stepwise.pipeline.parsing import ParseOptions

Item = Example | RowReject


@dataclass(frozen=True)
class JobContext:
    """Everything a shard needs, built once per job."""

    job_id: str
    spec: JobSpec
    task: Task
    prompt: PromptTemplate
    backend: TeacherBackend

    @cached_property
    def parsing(self) -> ParseOptions:
        """How the job's completions are read (output format, trace style and tags, the student's rationale)."""
        from stepwise.pipeline.parsing import ParseOptions  # with the first answers, not before the first request

        return ParseOptions.of(self.spec, self.prompt.output)

    @cached_property
    def sampling(self) -> Sampling:
        """The job's sampling as requests carry it; the mappings as canonical JSON, and only when set, so a job
        without the reasoning fields keeps the cache keys it always had."""
        s = self.spec.sampling
        return Sampling(s.temperature, s.top_p, s.max_tokens, s.seed, tuple(s.stop),
                        reasoning_effort=s.reasoning_effort, max_completion_tokens=s.max_completion_tokens,
                        chat_template_kwargs=_canonical(s.chat_template_kwargs),
                        extra_body=_canonical(s.extra_body))

    def cost_of(self, c: Completion | None) -> float | None:
        if c is None:
            return None
        if c.cost_usd is not None:
            return c.cost_usd
        return self.spec.cost.cost(c.tokens_in, c.tokens_out) if self.spec.cost else None


def _canonical(mapping: dict) -> str | None:
    """A mapping as canonical JSON text (sorted keys, no spaces), or None when it is empty."""
    return json.dumps(mapping, sort_keys=True, ensure_ascii=False, separators=(",", ":")) if mapping else None


SAMPLE_ROWS = 1000  # the first rows a job reads to decide `task: auto` and to check its gold answers


def first_items(spec: JobSpec) -> Generator[Item, None, None]:
    """The dataset's first rows, read as they are asked for (close it when done), after `check_fields` made sure
    the field mapping fits the data (a field that no row has is a JobSpecError, not a corpus of bad rows)."""
    check_fields(spec.dataset)
    return read_examples(spec.dataset, head=SAMPLE_ROWS)


def prepare_context(spec: JobSpec, sample: Iterable[Item], *, backend: TeacherBackend | None = None,
                    prompt: PromptTemplate | None = None, corpus: str | Path | None = None) -> JobContext:
    """Build the task (inferring `auto` from a sample of the data), prompt and backend. The sample is read only
    as far as needed: all of it for `auto`, else up to the first labeled example that fits the task."""
    examples: Iterable[Example] = (i for i in sample if isinstance(i, Example))
    if spec.task.kind == "auto":
        examples = list(examples)
    task = build_task(spec.task, itertools.islice(examples, 500))
    check_gold(task, examples)  # before any request: gold that never fits the task is a job-file mistake
    prompt = prompt or load_prompt(spec.prompt, task.kind)
    backend = backend or build_backend(spec.teacher, corpus=corpus, cost=spec.cost,
                                       max_error_rate=spec.max_error_rate)
    return JobContext(spec.job_id, spec, task, prompt, backend)


def prepared(ctx: JobContext, items: Sequence[Item]) -> list[Item]:
    """A shard's items with each example completed by the task (e.g. choices written inline in the question)."""
    return [ctx.task.prepare(i) if isinstance(i, Example) else i for i in items]
