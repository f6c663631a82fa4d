"""Teacher backends. Heavy or networked backends are imported only when a job uses them."""

from __future__ import annotations

from pipeline.errors import TeacherError
from pipeline.teachers.base import TeacherBackend


def build_backend(spec) -> TeacherBackend:
    """The backend a job's `teacher` block asks for."""
    if spec.backend == "replay":
        from pipeline.teachers.replay import ReplayBackend

        return ReplayBackend.from_file(spec.path, spec.model)
    raise TeacherError(f"unknown teacher backend {spec.backend!r}")


__all__ = ["TeacherBackend", "build_backend"]
