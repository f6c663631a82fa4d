"""What every task kind owns: gold normalisation, answer extraction, comparison, the student input.

A task maps free text into its *label space* (a canonical string per answer) and compares canonical labels.
The pipeline (for `records.correct`) and the trainer's evaluation call the same methods, so there is one
comparator per task kind.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from stepwise.pipeline.registry import Registry
from stepwise.pipeline.types import Example

if TYPE_CHECKING:
    from stepwise.pipeline.spec import TaskSpec

# Every task kind, by name: a Task subclass with a `kind` registers itself when its module is imported (the
# modules of this package are imported with it). The job schema's `task.kind`, the CLI and the trainer read it.
TASKS: Registry[type[Task]] = Registry("task kind")

_WS = re.compile(r"\s+")
_EDGE_PUNCT = " \t\n\"'`*.,;:!?"
_UNMARKED_MAX_CHARS = 100  # a last line longer than this is more reasoning, not an answer


def normalize_text(text: str) -> str:
    """Lower-case, fold white space, strip quotes and edge punctuation: the house string normalisation."""
    return _WS.sub(" ", text).strip(_EDGE_PUNCT).lower()


class Task(ABC):
    """A task kind. Subclasses are small and stateless apart from their configuration."""

    kind: str = ""
    #: labels the prompt should offer and the JSON schema should enumerate; None when open-ended
    labels: tuple[str, ...] | None = None
    #: whether `extract` reads LaTeX as it is (math); other kinds get a boxed answer as plain text
    latex_answers: bool = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            TASKS.register(cls.kind, cls)

    def __init__(self, answer_pattern: str | None = None):
        self.answer_pattern = re.compile(answer_pattern, re.IGNORECASE | re.DOTALL) if answer_pattern else None

    @classmethod
    def from_spec(cls, spec: TaskSpec) -> Task:
        """The task a job's `task` block asks for (kinds with a label set of the job's own read it here)."""
        return cls(answer_pattern=spec.answer_pattern)

    def prepare(self, example: Example) -> Example:
        """Complete an example read from a dataset (e.g. choices written inline in the question)."""
        return example

    @abstractmethod
    def normalize_gold(self, gold: str, example: Example) -> str:
        """Map a raw gold answer into the label space; raise ValueError saying why it is not valid."""

    @abstractmethod
    def extract(self, answer: str, example: Example) -> str | None:
        """Map the teacher's answer text (what follows the answer trigger) into the label space, or None."""

    def unmarked_answer(self, content: str) -> str | None:
        """The answer text of a reasoning model's content that has no answer marker. After the trace a short
        content *is* the answer ("B", "Probably (B).", "Yes, because ..."): its last line. A long content with no
        marker is a worked solution that never reached its answer (often cut off): None."""
        content = content.strip()
        if len(content) > _UNMARKED_MAX_CHARS * 3:
            return None
        line = content.rpartition("\n")[2].strip()
        return line if 0 < len(line) <= _UNMARKED_MAX_CHARS else None

    def compare(self, label: str, gold_label: str) -> bool:
        """Whether two canonical labels are the same answer."""
        return label == gold_label

    def student_input(self, example: Example) -> str:
        """The text the student sees (exports and training)."""
        return example.input

    def label_choices(self, example: Example) -> tuple[str, ...] | None:
        """The labels a teacher may choose from for this example, for prompts and JSON schemas."""
        return self.labels
