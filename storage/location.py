"""Where a corpus lives: a local folder, or a prefix on an object store named by a URI.

- A plain path (`corpus`, `/data/corpus`) stays on the local code path: part files are written to a temp file,
  fsynced and renamed (`storage/parquet.py`); queries read them through pyarrow datasets (`storage/catalog.py`).
- A URI with a scheme (`s3://bucket/prefix?endpoint_override=host:9000&scheme=http`, `gs://...`,
  `file:///...`) is resolved by `pyarrow.fs.FileSystem.from_uri` to a filesystem and a path inside it, so
  workers on other nodes write where the driver and DuckDB read. Credentials come from where that filesystem
  looks for them (for S3: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_DEFAULT_REGION`, `~/.aws`, an
  instance role); the URI never holds a secret.

pyarrow is imported where a method needs it: a local run sends its first request before paying for it.

On an object store (s3, gcs, abfs) a part file is serialised in memory and uploaded in one request (a PUT, or a
multipart upload that becomes visible only when completed): readers see the whole object or none, so it is
written directly under its final key, with no temp key and no copy. On any other filesystem (`file://`, hdfs) it
is written to a hidden temp name and moved into place.
"""

from __future__ import annotations

import os
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING
from pathlib import Path
from zoneinfo import ZoneInfo

from stepwise.pipeline.errors import StorageError
from stepwise.storage.parquet import TMP_SUFFIX, ROW_GROUP_SIZE, remove_stale_temp_files, write_table_atomic

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")  # two letters at least, so `C:\corpus` stays a path
OBJECT_STORES = frozenset({"s3", "gcs", "abfs"})    # pyarrow type names whose uploads are atomic


def is_uri(root: str | Path) -> bool:
    return isinstance(root, str) and bool(_URI.match(root))


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OFFSET = re.compile(r"(?P<sign>[+-])(?P<h>\d{2}):(?P<m>\d{2})")
_TO_MICROSECONDS = {"s": (1_000_000, 1), "ms": (1000, 1), "us": (1, 1), "ns": (1, 1000)}  # (times, floor-divided by)


def _zone(tz: str) -> tzinfo:
    """A timestamp type's zone: UTC, a fixed offset (`+05:30`) or a zone name (`Europe/Paris`)."""
    if tz in ("UTC", "Z"):
        return UTC
    offset = _OFFSET.fullmatch(tz)
    if offset:
        sign = -1 if offset["sign"] == "-" else 1
        return timezone(sign * timedelta(hours=int(offset["h"]), minutes=int(offset["m"])))
    return ZoneInfo(tz)


def _python_values(column: pa.ChunkedArray) -> list:
    """A column as Python values. Timestamps are converted here: pyarrow's own conversion of a zoned timestamp
    imports pandas when it is installed, which costs a job's start a quarter of a second."""
    import pyarrow as pa

    if not pa.types.is_timestamp(column.type):
        return column.to_pylist()
    times, per = _TO_MICROSECONDS[column.type.unit]
    tz = column.type.tz
    zone = None if tz is None else _zone(tz)
    out = []
    for value in column.cast(pa.int64()).to_pylist():
        if value is None:
            out.append(None)
            continue
        moment = _EPOCH + timedelta(microseconds=value * times // per)
        out.append(moment.astimezone(zone) if zone is not None else moment.replace(tzinfo=None))
    return out


class CorpusLocation:
    """A corpus root: `local` (a Path) for a plain path, else `fs` and `base` (the path inside `fs`).

    Every read and write of corpus bytes outside DuckDB goes through one of these; paths are given as parts
    relative to the root, e.g. `loc.exists("records", job_id, "shard-000000.parquet")`.
    """

    def __init__(self, root: str | Path):
        self.root = str(root)  # as the user wrote it (for messages)
        self.local: Path | None = None
        self.fs: pafs.FileSystem | None = None
        self.base = ""
        if is_uri(root):
            import pyarrow as pa
            import pyarrow.fs as pafs

            try:
                self.fs, base = pafs.FileSystem.from_uri(str(root))
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise StorageError(f"cannot open the corpus {root}: {exc}") from None
            self.base = base.rstrip("/")
        else:
            self.local = Path(root)

    @classmethod
    def of(cls, root: str | Path | CorpusLocation) -> CorpusLocation:
        return root if isinstance(root, CorpusLocation) else cls(root)

    @property
    def is_local(self) -> bool:
        return self.local is not None

    @property
    def address(self) -> str:
        """The root as another process should be given it: the URI, or the absolute local path."""
        return str(self.local.absolute()) if self.local is not None else self.root

    def __str__(self) -> str:
        return self.root

    def __repr__(self) -> str:
        return f"CorpusLocation({self.root!r})"

    def path(self, *parts: str) -> str:
        """The full path of `parts`: a local path, or a path inside `fs`."""
        if self.local is not None:
            return str(self.local.joinpath(*parts))
        return "/".join((self.base, *parts))

    # ── reads ──────────────────────────────────────────────────────────────────────────────────────────────

    def exists(self, *parts: str) -> bool:
        if self.local is not None:
            return self.local.joinpath(*parts).exists()
        import pyarrow.fs as pafs

        try:
            return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound
        except OSError as exc:
            raise StorageError(f"cannot reach {self.path(*parts)} in {self.root}: {exc}") from None

    def list_files(self, *folder: str, suffix: str = ".parquet", depth: int = 1) -> list[str]:
        """Full paths of the files ending in `suffix` exactly `depth` levels below `folder`, sorted; hidden
        names (`.` and `_`, e.g. temp files) are left out, and a missing folder has none."""
        if self.local is not None:
            top = self.local.joinpath(*folder)
            if not top.is_dir():
                return []
            if depth == 1:  # one directory read, no stat per file (a job of 10,000 shards: 10 ms, not 110)
                with os.scandir(top) as entries:
                    return sorted(e.path for e in entries
                                  if e.name.endswith(suffix) and not _hidden(e.name) and e.is_file())
            pattern = "/".join(["*"] * (depth - 1) + [f"*{suffix}"])
            return sorted(str(p) for p in top.glob(pattern)
                          if not any(_hidden(part) for part in p.relative_to(top).parts) and p.is_file())
        return [info.path for info in self.store_infos(*folder, suffix=suffix, depth=depth)]

    def store_infos(self, *folder: str, suffix: str = ".parquet", depth: int = 1) -> list[pafs.FileInfo]:
        """On an object store: the FileInfo (path, size, mtime) of the files `list_files` names, by path, from
        one listing."""
        import pyarrow.fs as pafs

        top = self.path(*folder)
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(top, recursive=depth > 1, allow_not_found=True))
        except OSError as exc:
            raise StorageError(f"cannot list {top} in {self.root}: {exc}") from None
        found = []
        for info in infos:
            rel = info.path[len(top):].strip("/").split("/")
            if (info.type == pafs.FileType.File and len(rel) == depth and rel[-1].endswith(suffix)
                    and not any(_hidden(part) for part in rel)):
                found.append(info)
        return sorted(found, key=lambda info: info.path)

    def read_bytes(self, *parts: str) -> bytes | None:
        """A small file's bytes, or None when it does not exist."""
        if self.local is not None:
            try:
                return self.local.joinpath(*parts).read_bytes()
            except FileNotFoundError:
                return None
        try:
            with self.fs.open_input_stream(self.path(*parts)) as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {self.path(*parts)} in {self.root}: {exc}") from None

    def read_rows(self, *parts: str, schema: pa.Schema) -> list[dict]:
        """A small Parquet file's rows as dicts with every field of `schema` (None where an older file lacks one).
        Read as one file, without the dataset layer `read_table` goes through (whose import, with pandas',
        would cost a job's start-up a quarter of a second)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = self.read_bytes(*parts)
        if data is None:
            raise FileNotFoundError(self.path(*parts))
        table = pq.ParquetFile(pa.BufferReader(data)).read()
        columns = {name: _python_values(table.column(name)) for name in table.column_names}
        return [{f.name: columns[f.name][i] if f.name in columns else None for f in schema}
                for i in range(table.num_rows)]

    def read_table(self, *parts: str, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
        import pyarrow.parquet as pq

        return pq.read_table(self.path(*parts), schema=schema, columns=columns, filesystem=self.fs)

    # ── writes ─────────────────────────────────────────────────────────────────────────────────────────────

    def write_table(self, table: pa.Table, *parts: str, dictionary: list[str] | bool = True) -> None:
        """Write a Parquet file so that readers see either no file or the whole file."""
        if self.local is not None:
            write_table_atomic(table, self.local.joinpath(*parts), dictionary=dictionary)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer, compression="zstd", use_dictionary=dictionary, row_group_size=ROW_GROUP_SIZE)
        self._put(buffer.getvalue(), *parts)

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a small file so that readers see either the old or the new whole file."""
        if self.local is not None:
            path = self.local.joinpath(*parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)  # gone after the rename; left only by a failed write
            return
        self._put(data, *parts)

    def touch(self, *parts: str) -> None:
        if self.local is not None:
            path = self.local.joinpath(*parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            return
        self._put(b"", *parts)

    def _put(self, data: bytes | pa.Buffer, *parts: str) -> None:
        path = self.path(*parts)
        try:
            if self.fs.type_name in OBJECT_STORES:
                # One write of the whole file, then close: the object appears only when the upload completes
                # (a failed part aborts it), so readers never see part of a file.
                with self.fs.open_output_stream(path) as out:
                    out.write(data)
                return
            parent, name = path.rsplit("/", 1)
            self.fs.create_dir(parent, recursive=True)
            tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)
            self.fs.move(tmp, path)
        except OSError as exc:
            raise StorageError(f"cannot write {path} in {self.root}: {exc}") from None

    def remove(self, *parts: str) -> None:
        """Delete one file; a missing one is fine."""
        if self.local is not None:
            self.local.joinpath(*parts).unlink(missing_ok=True)
            return
        try:
            self.fs.delete_file(self.path(*parts))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete {self.path(*parts)} in {self.root}: {exc}") from None

    def remove_folder(self, *parts: str) -> None:
        """Delete a folder and everything under it; a missing one is fine."""
        if self.local is not None:
            import shutil

            shutil.rmtree(self.local.joinpath(*parts), ignore_errors=True)
            return
        try:
            self.fs.delete_dir_contents(self.path(*parts), missing_dir_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {self.path(*parts)} in {self.root}: {exc}") from None

    def remove_stale_temp_files(self, *folder: str) -> int:
        """Delete temp files a killed writer left behind; returns how many. Object stores have none."""
        if self.local is not None:
            return remove_stale_temp_files(self.local.joinpath(*folder))
        if self.fs.type_name in OBJECT_STORES:
            return 0
        import pyarrow.fs as pafs

        top = self.path(*folder)
        infos = self.fs.get_file_info(pafs.FileSelector(top, allow_not_found=True))
        stale = [i.path for i in infos if i.base_name.startswith(".") and i.base_name.endswith(TMP_SUFFIX)]
        for path in stale:
            self.fs.delete_file(path)
        return len(stale)
