"""The teacher boundary: a backend turns TeacherRequests into Completions, nothing more."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from pipeline.types import Completion, TeacherRequest


class TeacherBackend(Protocol):
    """Anything that answers requests. Every request yields exactly one Completion (text, or an error)."""

    backend: str  # the backend's name as written in job files ("replay", "openai", ...)
    model: str    # the teacher model, recorded with each record

    def complete(self, requests: Sequence[TeacherRequest]) -> Iterator[Completion]:
        """Yield one Completion per request, in any order."""
        ...
