"""Teacher API keys: read from the environment variable a job *names*, never stored, never in a message."""

from __future__ import annotations

import os

from stepwise.pipeline.errors import TeacherAuthError


def read_api_key(spec) -> str | None:
    """The key of a teacher spec with `api_key_env` and `base_url`; None when it names no variable."""
    if spec.api_key_env is None:
        return None
    key = os.environ.get(spec.api_key_env)
    if not key:
        raise TeacherAuthError(f"environment variable {spec.api_key_env} is not set: it should hold the API key "
                               f"for {spec.base_url} (teacher.api_key_env names it)")
    return key
