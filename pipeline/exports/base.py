"""What an export format is (`ExportFormat`), the registry of them (`FORMATS`), and what formats share: the student
markers the trainer reads back and the atomic writers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from stepwise.pipeline.registry import Registry
from stepwise.storage.parquet import write_table_atomic

# the student formats' markers, shared with the trainer (pipeline/trainer) so a student sees what the exports write
PREDICT_PREFIX, EXPLAIN_PREFIX = "predict: ", "explain: "
ARROW = "-->"
# OpenAI fine-tuning refuses a training file of fewer examples; the chat formats warn below it
OPENAI_MIN_EXAMPLES = 10

EXPORT_SCHEMA = pa.schema([
    ("example_id", pa.string()), ("sample_idx", pa.int32()), ("input", pa.string()), ("rationale", pa.string()),
    ("label", pa.string()), ("gold_label", pa.string()), ("teacher_label", pa.string()),
])

Row = dict  # an accepted record: example_id, sample_idx, input, rationale, label (the teacher's), gold_label


def write_jsonl(rows: list[dict], path: Path) -> None:
    """One JSON object a line, written to a temp file, fsynced and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False))
            fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_parquet(rows: list[dict], path: Path) -> None:
    write_table_atomic(pa.Table.from_pylist(rows, schema=EXPORT_SCHEMA), path)


@dataclass(frozen=True)
class FolderExport:
    """What a folder format writes its layout from: the rows of each split that has any (never an empty one), the
    job they came from (for a dataset card's provenance) and how they were chosen and split."""

    root: str | Path
    job_id: str
    out: Path
    splits: dict[str, list[dict]]
    label_source: str
    split: tuple[float, float, float] | None
    seed: int


@dataclass(frozen=True)
class ExportFormat:
    """A student format: the rows one accepted record becomes (given the label to train on), the file suffix,
    and how rows are written. `register()` adds it to FORMATS under `name`.

    `folder` makes a folder format: `--out` is always a folder and `folder` writes all of it (its own file
    layout, a card), not `write` once per split; without `--split` its one split is `train`. `min_rows` is the
    fewest rows a split needs for the format's consumer (`min_rows_for`, which says who asks); an export with a
    smaller split warns."""

    name: str
    rows: Callable[[Row, str], list[dict]]
    suffix: str = "jsonl"
    write: Callable[[list[dict], Path], None] = write_jsonl
    media_type: str = "application/x-ndjson"
    folder: Callable[[FolderExport], None] | None = None
    min_rows: int = 0
    min_rows_for: str = ""

    def register(self) -> ExportFormat:
        return FORMATS.register(self.name, self)


FORMATS: Registry[ExportFormat] = Registry("export format")
FormatName = FORMATS.field()  # the pydantic type of a field naming a registered format
