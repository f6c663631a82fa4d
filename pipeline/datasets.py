"""Read JSONL, JSON (array), CSV and Parquet datasets into Examples.

A row that cannot become an Example (missing field, wrong type, invalid UTF-8, larger than
`max_row_bytes`, duplicate id) becomes a `RowReject` with a precise reason: the job goes on and the row is
stored as a rejected record. Only a file that cannot be read at all raises `DatasetError`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import DatasetError
from pipeline.spec import DatasetSpec
from pipeline.types import Example, RowReject

Row = dict[str, Any]
RawItem = tuple[int, Row | None, str | None, int]  # (row index, row, problem, size in bytes)


def detect_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":  # JSON array, or JSON lines despite the name (as in the DSBS release)
        with path.open("rb") as fh:
            head = fh.read(4096).lstrip()
        return "json" if head[:1] in (b"[", b"{") and not _looks_like_lines(path) else "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise DatasetError(f"cannot tell the format of {path}: give dataset.format (jsonl, json, csv, parquet)")


def _looks_like_lines(path: Path) -> bool:
    """True when the first line is a complete JSON object on its own (JSON lines named .json),
    unless that object is a `{"data": [...]}` wrapper written on one line."""
    with path.open("rb") as fh:
        first = fh.readline()
    try:
        obj = json.loads(first)
    except ValueError:
        return False
    return isinstance(obj, dict) and not isinstance(obj.get("data"), list)


def _nbytes(row: Any) -> int:
    """Size of a row in UTF-8 bytes, as JSON."""
    return len(json.dumps(row, ensure_ascii=False, default=str).encode("utf-8", errors="surrogateescape"))


def _has_surrogates(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_surrogates(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_surrogates(v) for v in value)
    return False


def _read_jsonl(path: Path, max_bytes: int) -> Iterator[RawItem]:
    with path.open("rb") as fh:
        index = -1
        for line in fh:
            if not line.strip():
                continue
            index += 1
            size = len(line)
            if size > max_bytes:
                yield index, None, f"row is {size} bytes, larger than max_row_bytes={max_bytes}", size
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield index, None, f"invalid UTF-8 at byte {exc.start}", size
                continue
            try:
                row = json.loads(text)
            except ValueError as exc:
                yield index, None, f"invalid JSON: {exc}", size
                continue
            yield index, row, None, size


def _read_json(path: Path, max_bytes: int) -> Iterator[RawItem]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8", errors="surrogateescape"))
    except ValueError as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):  # {"metadata": ..., "data": [...]}
        data = data["data"]
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON array of objects, got {type(data).__name__}")
    for index, row in enumerate(data):
        if _has_surrogates(row):
            yield index, None, "invalid UTF-8 in a string value", 0
            continue
        size = _nbytes(row) if isinstance(row, dict) else 0
        if size > max_bytes:
            yield index, None, f"row is {size} bytes, larger than max_row_bytes={max_bytes}", size
            continue
        yield index, row, None, size


def _read_csv(path: Path, max_bytes: int) -> Iterator[RawItem]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open("r", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        index = -1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                index += 1
                yield index, None, f"malformed CSV: {exc}", 0
                continue
            index += 1
            if None in row:
                yield index, None, f"row has {len(row) - 1 + len(row[None])} fields, the header has {len(row) - 1}", 0
                continue
            size = sum(len(v.encode("utf-8", errors="surrogateescape")) for v in row.values() if isinstance(v, str))
            if size > max_bytes:
                yield index, None, f"row is {size} bytes, larger than max_row_bytes={max_bytes}", size
            elif _has_surrogates(row):
                yield index, None, "invalid UTF-8 in a field", size
            else:
                yield index, row, None, size


def _read_parquet(path: Path, max_bytes: int) -> Iterator[RawItem]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DatasetError(f"cannot read Parquet file {path}: {exc}") from None
    index = -1
    for batch in pf.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            index += 1
            size = _nbytes(row)
            if size > max_bytes:
                yield index, None, f"row is {size} bytes, larger than max_row_bytes={max_bytes}", size
            else:
                yield index, row, None, size


_READERS = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}


def content_id(row: Row) -> str:
    """A stable id from the row's content, for datasets without an id column."""
    blob = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8", errors="surrogatepass")).hexdigest()[:16]


def _text(row: Row, field: str) -> str:
    if field not in row:
        raise ValueError(f"missing field {field!r}")
    value = row[field]
    if not isinstance(value, str):
        raise ValueError(f"field {field!r} should be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"field {field!r} is empty")
    return value


def _gold(row: Row, field: str) -> str:
    if field not in row:
        raise ValueError(f"missing field {field!r}")
    value = row[field]
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    raise ValueError(f"field {field!r} should be a string or a number, got {type(value).__name__}: {value!r}")


def _choices(row: Row, field: str) -> tuple[str, ...]:
    if field not in row:
        raise ValueError(f"missing field {field!r}")
    value = row[field]
    if isinstance(value, str):  # CSV cells: a JSON list, or choices separated by '|'
        try:
            value = json.loads(value)
        except ValueError:
            value = value.split("|")
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(c, str) and c.strip() for c in value):
        raise ValueError(f"field {field!r} should be a list of at least two non-empty strings")
    return tuple(value)


def row_to_example(row: Row, spec: DatasetSpec, index: int) -> Example:
    """Map one row through the spec's field names; raise ValueError saying what is wrong."""
    if not isinstance(row, dict):
        raise ValueError(f"row should be an object, got {type(row).__name__}")
    meta: dict[str, Any] = {"row": index}
    if spec.premise_field and spec.hypothesis_field:
        premise, hypothesis = _text(row, spec.premise_field), _text(row, spec.hypothesis_field)
        text = f"Premise: {premise}\nHypothesis: {hypothesis}"
        meta.update(premise=premise, hypothesis=hypothesis)
    else:
        text = _text(row, spec.question_field)
    gold = _gold(row, spec.answer_field) if spec.answer_field else None
    choices = _choices(row, spec.choices_field) if spec.choices_field else None
    if spec.id_field:
        if spec.id_field not in row or not isinstance(row[spec.id_field], str | int) or row[spec.id_field] == "":
            raise ValueError(f"field {spec.id_field!r} should be a non-empty string or integer id")
        example_id = str(row[spec.id_field])
    else:
        example_id = content_id(row)
    return Example(id=example_id, input=text, gold=gold, choices=choices, meta=meta)


def read_examples(spec: DatasetSpec) -> Iterator[Example | RowReject]:
    """Yield an Example or a RowReject for every row, in file order."""
    path = Path(spec.path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    reader = _READERS[detect_format(path, spec.format)]
    seen: dict[str, int] = {}
    count = 0
    for index, row, problem, _size in reader(path, spec.max_row_bytes):
        if spec.limit is not None and count >= spec.limit:
            return
        count += 1
        if problem is None:
            try:
                example = row_to_example(row, spec, index)
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            rid = None
            if isinstance(row, dict) and spec.id_field and isinstance(row.get(spec.id_field), str | int):
                rid = str(row[spec.id_field])
            yield RowReject(id=rid or f"row-{index}", reason=f"row {index}: {problem}")
            continue
        first = seen.setdefault(example.id, index)
        if first != index:
            if spec.id_field:
                yield RowReject(id=f"row-{index}", reason=f"row {index}: duplicate id {example.id!r} (first at row {first})")
                continue
            # identical content without an id column: a stable, distinct id per occurrence
            n = 2
            while f"{example.id}~{n}" in seen:
                n += 1
            example = Example(f"{example.id}~{n}", example.input, example.gold, example.choices, example.meta)
            seen[example.id] = index
        yield example
