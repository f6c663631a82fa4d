"""Atomic Parquet writes: a temp file in the same folder, fsync, then rename. A killed run leaves no half file.

pyarrow is imported by the functions that use it, so that importing the constants costs nothing. These are the
local-folder writes; `storage/location.py` picks them for a plain path and uploads to an object store
otherwise.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from stepwise.pipeline.errors import StorageError
from stepwise.pipeline.types import RationaleRecord

if TYPE_CHECKING:
    import pyarrow as pa

TMP_SUFFIX = ".tmp"
ROW_GROUP_SIZE = 128 * 1024
_RECORD_FIELDS = [f.name for f in fields(RationaleRecord)]  # RECORDS_SCHEMA's names (tests/storage check it)


def records_to_table(records: Sequence[RationaleRecord]) -> pa.Table:
    """Column-wise conversion against the explicit schema (no per-batch type inference)."""
    import pyarrow as pa

    from stepwise.storage.schema import RECORDS_SCHEMA

    columns = [pa.array([getattr(r, name) for r in records], type=RECORDS_SCHEMA.field(name).type)
               for name in _RECORD_FIELDS]
    return pa.Table.from_arrays(columns, schema=RECORDS_SCHEMA)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_table_atomic(table: pa.Table, path: Path, *, dictionary: list[str] | bool = True) -> None:
    """Write `table` to `path` so that readers see either no file or the whole file."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
    try:
        with tmp.open("wb") as fh:
            pq.write_table(table, fh, compression="zstd", use_dictionary=dictionary, row_group_size=ROW_GROUP_SIZE)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {exc}") from None


def write_records(records: Sequence[RationaleRecord], path: Path) -> None:
    """One part file of records, atomically."""
    from stepwise.storage.schema import DICTIONARY_COLUMNS

    write_table_atomic(records_to_table(records), path, dictionary=DICTIONARY_COLUMNS)


def remove_stale_temp_files(folder: Path) -> int:
    """Delete temp files a killed writer left behind; returns how many."""
    n = 0
    if folder.is_dir():
        for tmp in folder.glob(f".*{TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
            n += 1
    return n
