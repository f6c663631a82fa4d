"""The teacher boundary: a backend turns TeacherRequests into Completions, nothing more."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from typing import Protocol

from pipeline.types import Completion, TeacherRequest


class TeacherBackend(Protocol):
    """Anything that answers requests. Every request gets exactly one Completion (text, or an error)."""

    backend: str  # the backend's name as written in job files ("replay", "openai", ...)
    model: str    # the teacher model, recorded with each record
    events: Callable[[Completion, bool], None] | None  # live backends report each completion as it arrives

    def submit(self, requests: Sequence[TeacherRequest]) -> concurrent.futures.Future[list[Completion]]:
        """Start answering; the future holds one Completion per request, in request order."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...


def completed_future(completions: list[Completion]) -> concurrent.futures.Future[list[Completion]]:
    future: concurrent.futures.Future[list[Completion]] = concurrent.futures.Future()
    future.set_result(completions)
    return future
