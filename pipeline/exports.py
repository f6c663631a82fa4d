"""Student-ready exports of a job's accepted records.

Formats (one row per accepted record unless said otherwise):
  dsbs          Distilling step-by-step multi-task: two rows per record,
                `predict: <input>` -> label and `explain: <input>` -> rationale
  finetune_cot  Fine-tune-CoT: prompt `<input> ###`, completion ` <rationale> --> <label> END`
  chat          OpenAI fine-tuning JSONL: user = input, assistant = rationale + "So the answer is <label>."
  parquet       columns example_id, sample_idx, input, rationale, label, gold_label, teacher_label

With a split (e.g. 0.8,0.1,0.1) the output path is a folder holding train/valid/test files. Examples, not
records, are assigned to splits (a seeded hash of the example id), so samples of one question never leak
across splits.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa

from stepwise.pipeline.errors import StepwiseError, StorageError
from stepwise.storage.catalog import connect
from stepwise.storage.parquet import write_table_atomic

ExportFormat = Literal["dsbs", "finetune_cot", "chat", "parquet"]
FORMATS: tuple[str, ...] = ("dsbs", "finetune_cot", "chat", "parquet")
SPLITS = ("train", "valid", "test")
# the student formats' markers, shared with the trainer (pipeline/trainer) so a student sees what the exports write
PREDICT_PREFIX, EXPLAIN_PREFIX = "predict: ", "explain: "
ARROW = "-->"

EXPORT_SCHEMA = pa.schema([
    ("example_id", pa.string()), ("sample_idx", pa.int32()), ("input", pa.string()), ("rationale", pa.string()),
    ("label", pa.string()), ("gold_label", pa.string()), ("teacher_label", pa.string()),
])


@dataclass
class ExportSummary:
    path: str
    format: str
    rows: dict[str, int] = field(default_factory=dict)  # split -> rows written
    records: int = 0
    skipped_no_gold: int = 0


def parse_split(text: str | None) -> tuple[float, float, float] | None:
    """`0.8,0.1,0.1` -> (0.8, 0.1, 0.1); the parts must be non-negative and sum to 1."""
    if not text:
        return None
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise StepwiseError(f"--split {text!r}: expected three numbers such as 0.8,0.1,0.1") from None
    if len(parts) != 3 or not all(math.isfinite(p) and p >= 0 for p in parts) or abs(sum(parts) - 1.0) > 1e-6:
        raise StepwiseError(f"--split {text!r}: expected three non-negative fractions that sum to 1")
    return parts  # type: ignore[return-value]


def assign_split(example_id: str, split: tuple[float, float, float], seed: int) -> str:
    """Deterministic split for an example: a seeded hash, independent of row order."""
    digest = hashlib.sha256(f"{seed}:{example_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < split[0]:
        return "train"
    if u < split[0] + split[1]:
        return "valid"
    return "test"


def accepted_records(root: str | Path, job_id: str) -> Iterator[dict]:
    """A job's accepted records in (example_id, sample_idx) order: example_id, sample_idx, input, rationale,
    label (the teacher's), gold_label. Shared by the exports and the trainer."""
    con = connect(root)
    try:
        if not con.execute("SELECT count(*) FROM records WHERE job_id = ?", [job_id]).fetchone()[0]:
            raise StorageError(f"job {job_id!r} has no records in {root}")
        cur = con.execute(
            "SELECT example_id, sample_idx, input, rationale, label, gold_label FROM records "
            "WHERE job_id = ? AND accepted ORDER BY example_id, sample_idx", [job_id])
        cols = [d[0] for d in cur.description]
        while batch := cur.fetchmany(10_000):
            for values in batch:
                yield dict(zip(cols, values, strict=True))
    finally:
        con.close()


def _format_row(fmt: str, r: dict, label: str) -> list[dict]:
    if fmt == "dsbs":
        base = {"example_id": r["example_id"], "sample_idx": r["sample_idx"]}
        return [
            {**base, "task": "predict", "input": f"{PREDICT_PREFIX}{r['input']}", "target": label},
            {**base, "task": "explain", "input": f"{EXPLAIN_PREFIX}{r['input']}", "target": r["rationale"]},
        ]
    if fmt == "finetune_cot":
        return [{"example_id": r["example_id"], "sample_idx": r["sample_idx"], "prompt": f"{r['input']} ###",
                 "completion": f" {r['rationale']} {ARROW} {label} END"}]
    if fmt == "chat":
        return [{"messages": [{"role": "user", "content": r["input"]},
                              {"role": "assistant", "content": f"{r['rationale']}\nSo the answer is {label}."}]}]
    return [{"example_id": r["example_id"], "sample_idx": r["sample_idx"], "input": r["input"],
             "rationale": r["rationale"], "label": label, "gold_label": r["gold_label"], "teacher_label": r["label"]}]


def _write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False))
            fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def export_job(root: str | Path, job_id: str, fmt: str, out: str | Path, *,
               label_source: Literal["teacher", "gold"] = "teacher",
               split: tuple[float, float, float] | None = None, seed: int = 0) -> ExportSummary:
    """Write a job's accepted records in a student format; returns what was written."""
    if fmt not in FORMATS:
        raise StepwiseError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if label_source not in ("teacher", "gold"):
        raise StepwiseError(f"label source must be 'teacher' or 'gold', not {label_source!r}")
    out = Path(out)  # the corpus may be an object-store URI; the export is a local file or folder
    summary = ExportSummary(path=str(out), format=fmt)
    buckets: dict[str, list[dict]] = {s: [] for s in SPLITS} if split else {"all": []}
    for r in accepted_records(root, job_id):
        label = r["gold_label"] if label_source == "gold" else r["label"]
        if label is None:
            summary.skipped_no_gold += 1
            continue
        bucket = assign_split(r["example_id"], split, seed) if split else "all"
        buckets[bucket].extend(_format_row(fmt, r, label))
        summary.records += 1
    ext = "parquet" if fmt == "parquet" else "jsonl"
    for name, rows in buckets.items():
        path = out / f"{name}.{ext}" if split else out
        if fmt == "parquet":
            write_table_atomic(pa.Table.from_pylist(rows, schema=EXPORT_SCHEMA), path)
        else:
            _write_jsonl(rows, path)
        summary.rows[name] = len(rows)
    return summary
