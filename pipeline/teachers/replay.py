"""`replay` backend: serves recorded completions instead of calling a live teacher.

Accepted files: JSONL or Parquet with `example_id`, `sample_idx` (default 0), `text`, optional
`finish_reason`, `reasoning` (a reasoning model's trace, when it was recorded apart from the text) and `usage`
(`{"prompt_tokens": .., "completion_tokens": .., "completion_tokens_details": {"reasoning_tokens": ..}}`). The text
is served as it was recorded: inline `<think>` tags are the parser's to split. A request with no recorded
completion gets a Completion without text, which becomes a `missing_completion` reject.
"""

from __future__ import annotations

import json
import concurrent.futures
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from stepwise.pipeline.errors import TeacherError
from stepwise.pipeline.teachers.base import completed_future
from stepwise.pipeline.types import Completion, TeacherRequest


class Recorded(NamedTuple):
    """One recorded completion (a plain 4-tuple of the first fields is one too)."""

    text: str | None
    finish_reason: str | None
    tokens_in: int | None
    tokens_out: int | None
    reasoning: str | None = None
    reasoning_tokens: int | None = None


_NOTHING = Recorded(None, None, None, None)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _usage(row: Mapping[str, Any]) -> tuple[int | None, int | None, int | None]:
    """(prompt, completion, reasoning) tokens from `usage`, else from flat `tokens_in` / `tokens_out` /
    `reasoning_tokens` fields."""
    usage = row.get("usage") or {}
    if not isinstance(usage, dict):
        usage = {}
    details = usage.get("completion_tokens_details") or {}
    if not isinstance(details, dict):
        details = {}
    return (_count(usage.get("prompt_tokens", row.get("tokens_in"))),
            _count(usage.get("completion_tokens", row.get("tokens_out"))),
            _count(details.get("reasoning_tokens", row.get("reasoning_tokens"))))


def _parse_row(row: Any, where: str) -> tuple[tuple[str, int], Recorded]:
    if not isinstance(row, dict):
        raise TeacherError(f"{where}: expected an object, got {type(row).__name__}")
    example_id = row.get("example_id")
    if not isinstance(example_id, str | int) or example_id == "":
        raise TeacherError(f"{where}: 'example_id' is missing or not a string")
    sample_idx = row.get("sample_idx", 0)
    if sample_idx is None:
        sample_idx = 0
    if not isinstance(sample_idx, int) or sample_idx < 0:
        raise TeacherError(f"{where}: 'sample_idx' must be a non-negative integer")
    text, reasoning = row.get("text"), row.get("reasoning")
    for name, value in (("text", text), ("reasoning", reasoning)):
        if value is not None and not isinstance(value, str):
            raise TeacherError(f"{where}: '{name}' must be a string or null")
    if text is None and reasoning:
        text = ""  # a trace without an answer (cut off while thinking) is still a completion
    finish = row.get("finish_reason")
    tin, tout, thought = _usage(row)
    return (str(example_id), sample_idx), Recorded(text, finish if isinstance(finish, str) else None, tin, tout,
                                                   reasoning or None, thought)


def load_recorded(path: Path) -> dict[tuple[str, int], Recorded]:
    """Read a completions file into {(example_id, sample_idx): recorded}. Later duplicates win."""
    if not path.is_file():
        raise TeacherError(f"replay file not found: {path}")
    out: dict[tuple[str, int], Recorded] = {}
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist()):
            key, rec = _parse_row(row, f"{path} row {i}")
            out[key] = rec
        return out
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise TeacherError(f"{path} line {lineno}: invalid JSON ({exc})") from None
            except RecursionError:
                raise TeacherError(f"{path} line {lineno}: nested too deeply") from None
            key, rec = _parse_row(row, f"{path} line {lineno}")
            out[key] = rec
    return out


class ReplayBackend:
    """A teacher that answers from recorded completions."""

    backend = "replay"
    streams = False
    endpoint = None  # no server: the model (a path or hub id) names the weights
    events = None

    def __init__(self, recorded: Mapping[tuple[str, int], Recorded], model: str = "replay"):
        self.recorded = recorded
        self.model = model

    @classmethod
    def build(cls, spec, options) -> ReplayBackend:
        return cls.from_file(spec.path, spec.model)

    @classmethod
    def from_file(cls, path: str | Path, model: str = "replay") -> ReplayBackend:
        return cls(load_recorded(Path(path)), model)

    def submit(self, requests: Sequence[TeacherRequest]) -> concurrent.futures.Future[list[Completion]]:
        out = []
        for req in requests:
            rec = Recorded(*self.recorded.get((req.example_id, req.sample_idx), _NOTHING))
            out.append(Completion(req.cache_key(), req.example_id, req.sample_idx, rec.text, rec.finish_reason,
                                  rec.tokens_in, rec.tokens_out, None, self.model, reasoning=rec.reasoning,
                                  reasoning_tokens=rec.reasoning_tokens))
        return completed_future(out)

    def close(self) -> None:
        pass
