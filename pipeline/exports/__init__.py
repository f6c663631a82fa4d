"""Student-ready exports of a job's accepted records.

Each format is a module of this package that registers an `ExportFormat` in `FORMATS` (imported with it): the
CLI's `--format`, the REST export's `format` and `export_job` read the registry, so a new format is a new module.
The built-in ones (one row per accepted record unless said otherwise):
  dsbs          Distilling step-by-step multi-task: two rows per record,
                `predict: <input>` -> label and `explain: <input>` -> rationale
  finetune_cot  Fine-tune-CoT: prompt `<input> ###`, completion ` <rationale> --> <label> END`
  chat          OpenAI fine-tuning JSONL: user = input, assistant = rationale + "So the answer is <label>.";
                with a thinking trace, the trace in `reasoning_content` and what followed it as `content`
  chat_think    chat with the trace inline: `<think>\n<trace>\n</think>\n\n<content>` (the R1-distill format)
  parquet       columns example_id, sample_idx, input, rationale, label, gold_label, teacher_label
  hf            a Hugging Face dataset folder: data/<split>-00000-of-00001.parquet and a README.md card

With a split (e.g. 0.8,0.1,0.1) the output path is a folder holding train/valid/test files. Examples, not
records, are assigned to splits (a seeded hash of the example id), so samples of one question never leak
across splits. A split without rows gets no file (the summary names it), and a split smaller than its
consumer asks for (the chat formats: OpenAI fine-tuning takes at least 10 examples) is a warning.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stepwise.pipeline.errors import StepwiseError, StorageError
from stepwise.pipeline.exports.base import (
    ARROW,
    EXPLAIN_PREFIX,
    EXPORT_SCHEMA,
    FORMATS,
    PREDICT_PREFIX,
    FolderExport,
    FormatName,
    ExportFormat,
    write_jsonl,
)

__all__ = ["ARROW", "EXPLAIN_PREFIX", "EXPORT_SCHEMA", "FORMATS", "FormatName", "PREDICT_PREFIX", "SPLITS", "ExportFormat",
           "ExportSummary", "FolderExport", "accepted_records", "assign_split", "export_job", "parse_split",
           "small_split_warnings", "write_jsonl"]

SPLITS = ("train", "valid", "test")


@dataclass
class ExportSummary:
    """What an export wrote: rows per split written (`all` without a split), the splits left without rows (no
    file is written for them), and warnings for the reader (a split too small for the format's consumer)."""

    path: str
    format: str
    rows: dict[str, int] = field(default_factory=dict)  # split -> rows written
    records: int = 0
    skipped_no_gold: int = 0
    empty_splits: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


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
    label (the teacher's), gold_label, and for the chat formats reasoning (the thinking trace, None without one)
    and completion (what the teacher wrote after it; None without a trace, so raw few-shot completions are not
    read for nothing), and gold_rationale (the dataset's own solution, None without one). Shared by the exports
    and the trainer."""
    from stepwise.storage.catalog import connect  # DuckDB: imported by the export, not by the CLI's parser

    con = connect(root)
    try:
        if not con.execute("SELECT count(*) FROM records WHERE job_id = ?", [job_id]).fetchone()[0]:
            raise StorageError(f"job {job_id!r} has no records in {root}")
        cur = con.execute(
            "SELECT example_id, sample_idx, input, rationale, label, gold_label, reasoning, "
            "CASE WHEN reasoning IS NULL THEN NULL ELSE completion END AS completion, gold_rationale FROM records "
            "WHERE job_id = ? AND accepted ORDER BY example_id, sample_idx", [job_id])
        cols = [d[0] for d in cur.description]
        while batch := cur.fetchmany(10_000):
            for values in batch:
                yield dict(zip(cols, values, strict=True))
    finally:
        con.close()


def export_job(root: str | Path, job_id: str, fmt: str, out: str | Path, *,
               label_source: Literal["teacher", "gold"] = "teacher",
               split: tuple[float, float, float] | None = None, seed: int = 0) -> ExportSummary:
    """Write a job's accepted records in a student format; returns what was written. A split without rows gets
    no file (a file of that name left by an earlier export is removed: it would hold other examples); without
    a split the one output file is written even when empty, since it is what the caller asked for."""
    try:
        form = FORMATS.get(fmt)
    except KeyError as exc:
        raise StepwiseError(str(exc.args[0])) from None
    if label_source not in ("teacher", "gold"):
        raise StepwiseError(f"label source must be 'teacher' or 'gold', not {label_source!r}")
    out = Path(out)  # the corpus may be an object-store URI; the export is a local file or folder
    summary = ExportSummary(path=str(out), format=fmt)
    whole = "train" if form.folder else "all"  # the one split without --split (a dataset's is `train`)
    buckets: dict[str, list[dict]] = {s: [] for s in SPLITS} if split else {whole: []}
    for r in accepted_records(root, job_id):
        label = r["gold_label"] if label_source == "gold" else r["label"]
        if label is None:
            summary.skipped_no_gold += 1
            continue
        bucket = assign_split(r["example_id"], split, seed) if split else whole
        buckets[bucket].extend(form.rows(r, label))
        summary.records += 1
    written = {name: rows for name, rows in buckets.items() if rows or (not split and not form.folder)}
    if form.folder is not None:
        if not written:
            raise StepwiseError(f"job {job_id!r} has no {label_source}-labelled accepted records to export as {fmt}")
        form.folder(FolderExport(root, job_id, out, written, label_source, split, seed))
    else:
        for name, rows in buckets.items():
            path = out / f"{name}.{form.suffix}" if split else out
            if name in written:
                form.write(rows, path)
            else:
                path.unlink(missing_ok=True)
    summary.rows = {name: len(rows) for name, rows in written.items()}
    summary.empty_splits = [name for name in buckets if name not in written]
    summary.warnings = small_split_warnings(form, summary.rows)
    return summary


def small_split_warnings(form: ExportFormat, rows: dict[str, int]) -> list[str]:
    """A warning for each written split with fewer rows than the format's consumer asks for, and for an empty
    export: a file a trainer refuses (or learns nothing from) should not pass in silence."""
    warnings = []
    for name, n in rows.items():
        where = "the export" if name == "all" else f"split {name}"
        if n == 0:
            warnings.append(f"{where} has no rows")
        elif n < form.min_rows:
            warnings.append(f"{where} has {n:,} rows; {form.min_rows_for} asks for at least {form.min_rows}")
    return warnings


for _module in pkgutil.iter_modules(__path__):  # each module registers the format it defines
    importlib.import_module(f"{__name__}.{_module.name}")
