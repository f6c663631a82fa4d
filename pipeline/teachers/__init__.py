"""Teacher backends. Networked backends are imported only when a job uses them."""

from __future__ import annotations

from pathlib import Path

from stepwise.pipeline.errors import TeacherError
from stepwise.pipeline.teachers.base import TeacherBackend


def build_backend(spec, *, corpus: str | Path | None = None, cost=None, rate=None, meter=None,
                  max_error_rate: float | None = None) -> TeacherBackend:
    """The backend a job's `teacher` block asks for. Live backends cache completions under the corpus; the live
    engine stops the job once more than `max_error_rate` of its requests failed."""
    if spec.backend == "replay":
        from stepwise.pipeline.teachers.replay import ReplayBackend

        return ReplayBackend.from_file(spec.path, spec.model)
    if spec.backend == "openai":
        from stepwise.pipeline.cache import RequestCache
        from stepwise.pipeline.teachers.openai_compat import OpenAIBackend

        cache = RequestCache.for_corpus(corpus) if corpus is not None else None
        return OpenAIBackend(spec, cache=cache, cost=cost, rate=rate, meter=meter, max_error_rate=max_error_rate)
    if spec.backend == "vllm":
        from stepwise.pipeline.cache import RequestCache
        from stepwise.pipeline.teachers.vllm_backend import VLLMBackend

        cache = RequestCache.for_corpus(corpus) if corpus is not None else None
        return VLLMBackend(spec, cache=cache, cost=cost)
    if spec.backend == "openai_batch":
        from stepwise.pipeline.cache import RequestCache
        from stepwise.pipeline.teachers.openai_batch import OpenAIBatchBackend

        cache = RequestCache.for_corpus(corpus) if corpus is not None else None
        return OpenAIBatchBackend(spec, cache=cache, cost=cost, meter=meter)
    raise TeacherError(f"unknown teacher backend {spec.backend!r}")


__all__ = ["TeacherBackend", "build_backend"]
