"""Teacher backends. Each is declared once, by its spec class in `pipeline/spec.py` (`TEACHER_SPECS`), whose
`factory` names the class that runs it; that class is imported only when a job uses it."""

from __future__ import annotations

import importlib
from pathlib import Path

from stepwise.pipeline.teachers.base import BuildOptions, TeacherBackend


def build_backend(spec, *, corpus: str | Path | None = None, cost=None, rate=None, meter=None,
                  max_error_rate: float | None = None) -> TeacherBackend:
    """The backend a job's `teacher` block asks for. Live backends cache completions under the corpus; the live
    engine stops the job once more than `max_error_rate` of its requests failed."""
    module, _, name = spec.factory.partition(":")
    cls = getattr(importlib.import_module(module), name)
    return cls.build(spec, BuildOptions(corpus, cost, rate, meter, max_error_rate))


__all__ = ["BuildOptions", "TeacherBackend", "build_backend"]
