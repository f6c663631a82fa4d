"""DuckDB over the Parquet corpus: the `records` and `jobs` views, and a read-only query sandbox.

The sandbox holds by construction, not by screening SQL: a query runs on an in-memory DuckDB database that can
open no file at all (external access disabled with no allowed directory, no spill folder, no extension loading
or installing, configuration locked), so `read_csv('/etc/passwd')`, `COPY ... TO` (also inside a CTE),
`ATTACH`, `glob` or `duckdb_secrets()` fail with a permission error wherever they appear. The views read the
corpus through pyarrow instead: its part files are listed from Python and registered as pyarrow datasets with the
explicit schemas (`RECORDS_SCHEMA`, `JOBS_SCHEMA`, never inferred), the same way for a local folder and an object
store (`s3://...`), so no path is ever named in SQL. On top of that a query must be exactly one statement that
DuckDB's own parser classifies as SELECT (DESCRIBE, SUMMARIZE and SHOW included). Each query has a timeout, and
its result is streamed and cut at a row cap and a byte cap (Arrow bytes), saying which one cut it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from stepwise.pipeline.errors import QueryError, QueryRefusedError, StorageError
from stepwise.storage import layout
from stepwise.storage.location import CorpusLocation
from stepwise.storage.schema import JOBS_SCHEMA, RECORDS_SCHEMA

# DuckDB's working memory for all queries on one corpus together (hash tables, sorts, vectors in flight). With no
# spill folder a query that needs more fails with a QueryError instead of taking the server's memory (DuckDB's
# default is 80 % of RAM, shared with the job processes). 1 GB is ample for what the service asks: an aggregate keeps
# one row per group, a records page the offset + limit rows of one job, a streamed result a few vectors; the rows
# handed back are bounded separately, by the byte cap.
MEMORY_LIMIT = "1GB"
MAX_BYTES = 1 << 30     # default byte cap of `query` (Arrow bytes); the CLI and REST endpoints pass their own
BATCH_ROWS = 2048       # rows per streamed batch: one DuckDB vector, so a wide row costs at most one vector more
PARQUET_GROUP_ROWS = 65_536  # `query_to_parquet` writes row groups of this many rows, not one per batch
SETTINGS = {  # enable_external_access is turned off after the views are built (see `_build`)
    "temp_directory": "",              # no spill folder (DuckDB would otherwise allow its own ./.tmp)
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "memory_limit": MEMORY_LIMIT,
}
# What a finished sandbox must read back; `_build` checks it, so a DuckDB that behaves otherwise is refused.
_LOCKED = {"enable_external_access": "false", "lock_configuration": "true", "allowed_directories": "[]",
           "allowed_paths": "[]", "temp_directory": "", "autoload_known_extensions": "false",
           "autoinstall_known_extensions": "false"}
DUCK_TYPES = {
    pa.string(): "VARCHAR", pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.bool_(): "BOOLEAN",
    pa.float32(): "FLOAT", pa.float64(): "DOUBLE", pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}
Reason = Literal["rows", "bytes"]
T = TypeVar("T")


@dataclass(frozen=True)
class QueryResult:
    """A query's rows, and whether (and by which cap) they were cut short."""

    table: pa.Table
    truncated: bool = False
    reason: Reason | None = None  # "rows": more rows matched than max_rows; "bytes": the next row passed max_bytes


@dataclass(frozen=True)
class QueryWritten:
    """What `query_to_parquet` wrote: rows, their Arrow bytes, and whether (and why) it stopped early."""

    rows: int
    nbytes: int
    truncated: bool = False
    reason: Reason | None = None


# ── the part files the views read ────────────────────────────────────────────────────────────────────────────────
# A part is (path, size, mtime_ns, inode): a file added, removed or replaced (a rename gives a new inode) changes
# the tuple of parts, and with it the shared database below.
Part = tuple[str, int, int, int]
_LISTINGS: dict[str, tuple[int, int, tuple]] = {}  # folder -> (its mtime_ns, when listed, what it held)
_LISTINGS_MAX = 100_000
# A folder's mtime is trusted to say "nothing changed" only once it is older than this when listed: file times
# have the granularity of the kernel's clock tick, so a change within the same tick would leave it equal.
_RACY_NS = 1_000_000_000


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _subfolder(entry: os.DirEntry) -> str | None:
    return entry.name if not _hidden(entry.name) and entry.is_dir() else None


def _part_file(entry: os.DirEntry) -> Part | None:
    if _hidden(entry.name) or not entry.name.endswith(layout.PART_SUFFIX):
        return None  # temp files, markers such as shard-000003.retry
    try:
        if not entry.is_file():
            return None
        st = entry.stat()
    except FileNotFoundError:  # removed since the folder was read; its folder's mtime changed, so seen next time
        return None
    return (entry.path, st.st_size, st.st_mtime_ns, entry.inode())


def _listing(folder: str, keep: Callable[[os.DirEntry], T | None]) -> tuple[T, ...]:
    """What `keep` makes of a local folder's entries, sorted. Listed again only when the folder changed (adding,
    removing or renaming a file into it changes its mtime) or changed too recently to trust that; otherwise one
    stat. A missing folder holds nothing."""
    now = time.time_ns()
    try:
        mtime = os.stat(folder).st_mtime_ns
    except (FileNotFoundError, NotADirectoryError):
        return ()
    except OSError as exc:
        raise StorageError(f"cannot read {folder}: {exc}") from None
    cached = _LISTINGS.get(folder)
    if cached is not None and cached[0] == mtime and cached[1] - mtime > _RACY_NS:
        return cached[2]
    try:
        with os.scandir(folder) as entries:
            found = tuple(sorted(item for item in map(keep, entries) if item is not None))
    except (FileNotFoundError, NotADirectoryError):
        return ()
    except OSError as exc:
        raise StorageError(f"cannot list {folder}: {exc}") from None
    if len(_LISTINGS) >= _LISTINGS_MAX:
        _LISTINGS.clear()
    _LISTINGS[folder] = (mtime, now, found)
    return found


def _local_parts(root: Path) -> tuple[tuple[Part, ...], tuple[Part, ...]]:
    records = os.path.join(root, layout.RECORDS)
    record_parts = tuple(part for job in _listing(records, _subfolder)
                         for part in _listing(os.path.join(records, job), _part_file))
    return record_parts, _listing(os.path.join(root, layout.JOBS), _part_file)


def job_parts(folder: str) -> tuple[Part, ...]:
    """The part files of one local job folder (records/<job_id>), as the views would read them."""
    return _listing(folder, _part_file)


def _store_parts(corpus: CorpusLocation, folder: str, depth: int) -> tuple[Part, ...]:
    """Part files `depth` levels below `folder` on an object store, with size and mtime from one listing."""
    return tuple((info.path, info.size or 0, info.mtime_ns or 0, 0)
                 for info in corpus.store_infos(folder, depth=depth))


def _parts(corpus: CorpusLocation) -> tuple[tuple[Part, ...], tuple[Part, ...]]:
    """The part files of `records` (records/<job>/*.parquet) and of `jobs` (jobs/*.parquet)."""
    if corpus.local is not None:
        return _local_parts(corpus.local.resolve())
    return _store_parts(corpus, layout.RECORDS, 2), _store_parts(corpus, layout.JOBS, 1)


# ── the sandboxed database ───────────────────────────────────────────────────────────────────────────────────────
def _empty_select(schema: pa.Schema) -> str:
    cols = ", ".join(f"CAST(NULL AS {DUCK_TYPES[f.type]}) AS {f.name}" for f in schema)
    return f"SELECT {cols} WHERE false"


def _dataset(corpus: CorpusLocation, paths: list[str], schema: pa.Schema, *, by_job: bool) -> ds.Dataset:
    """A pyarrow dataset of Parquet files with the explicit `schema` (never inferred: an older part file without
    a newer column reads it as null). With `by_job`, each file is known to hold only the job its folder names
    (records/<job_id>/..., as every writer puts them), so a filter on `job_id` skips other jobs' files unopened."""
    if corpus.fs is None:  # a local folder: read ahead buffering only pays on high-latency stores
        fs = pafs.LocalFileSystem()
        fmt = ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False))
    else:
        fs, fmt = corpus.fs, ds.ParquetFileFormat()
    jobs = [pc.field("job_id") == path.replace(os.sep, "/").rsplit("/", 2)[-2] for path in paths] if by_job else None
    return ds.FileSystemDataset.from_paths(paths, schema=schema, format=fmt, filesystem=fs, partitions=jobs)


def _build(corpus: CorpusLocation, parts: tuple) -> tuple[duckdb.DuckDBPyConnection, dict[str, ds.Dataset]]:
    """An in-memory database that can open no file, with the `records` and `jobs` views over pyarrow datasets of
    `parts`; returns it and the datasets, which every cursor of it must register for itself."""
    con = duckdb.connect(":memory:", config=SETTINGS)
    datasets: dict[str, ds.Dataset] = {}
    for name, files, schema in (("records", parts[0], RECORDS_SCHEMA), ("jobs", parts[1], JOBS_SCHEMA)):
        select = _empty_select(schema)  # DuckDB cannot scan a dataset of no files
        if files:
            raw = f"_{name}_parts"
            datasets[raw] = _dataset(corpus, [f[0] for f in files], schema, by_job=name == "records")
            con.register(raw, datasets[raw])
            select = f"SELECT {', '.join(schema.names)} FROM {raw}"
        con.execute(f"CREATE VIEW {name} AS {select}")
    # Off with SET, not in the connect config: opened with it off, DuckDB (2.0) allows the database's own
    # "file" and WAL, `<working directory>/:memory:*`, which a COPY could then write.
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    found = dict(con.execute("SELECT name, value FROM duckdb_settings() WHERE list_contains(?, name)",
                             [list(_LOCKED)]).fetchall())
    if found != _LOCKED:
        con.close()
        raise QueryError(f"the query sandbox could not be set up: DuckDB reports {found}, expected {_LOCKED}")
    return con, datasets


def connect(root: str | Path | CorpusLocation) -> duckdb.DuckDBPyConnection:
    """A new sandboxed in-memory DuckDB connection with the `records` and `jobs` views."""
    corpus = CorpusLocation.of(root)
    return _build(corpus, _parts(corpus))[0]


# One database per corpus for `query` (built once: a new database and its views cost ~30 ms a query), rebuilt
# when the part files change; each query runs on its own cursor, which shares the catalog and the locked
# sandbox settings and can be interrupted alone.
_SHARED: dict[str, tuple[tuple, duckdb.DuckDBPyConnection, dict[str, ds.Dataset]]] = {}
_SHARED_LOCK = threading.Lock()
_SHARED_MAX = 8


def _cursor(corpus: CorpusLocation) -> tuple[duckdb.DuckDBPyConnection, tuple]:
    """A cursor of the corpus's shared database, current with its part files; and those parts."""
    parts = _parts(corpus)
    with _SHARED_LOCK:
        entry = _SHARED.get(corpus.address)
        if entry is None or entry[0] != parts:
            # the old database is dropped, not closed: queries still running on its cursors finish
            entry = _SHARED[corpus.address] = (parts, *_build(corpus, parts))
            while len(_SHARED) > _SHARED_MAX:  # a process reading many corpora keeps the latest few
                _SHARED.pop(next(iter(_SHARED)))
        _, con, datasets = entry
        cursor = con.cursor()
    for name, dataset in datasets.items():
        cursor.register(name, dataset)
    return cursor, parts


# ── queries ──────────────────────────────────────────────────────────────────────────────────────────────────────
def check_read_only(sql: str) -> str:
    """Refuse anything but a single SELECT statement, as DuckDB's own parser classifies it."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"cannot parse query: {exc}") from None
    if len(statements) != 1:
        raise QueryRefusedError(f"exactly one statement is allowed, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise QueryRefusedError(f"only SELECT queries are allowed, got {kind.name}")
    return statements[0].query.strip().rstrip(";")


class _Cap:
    """Takes batches until `max_rows` rows or `max_bytes` Arrow bytes; `reason` says which cap cut the result.
    The reader must hold one row more than `max_rows` when more matched."""

    def __init__(self, max_rows: int, max_bytes: int):
        self.max_rows, self.max_bytes = max_rows, max_bytes
        self.rows = self.nbytes = 0
        self.reason: Reason | None = None

    def take(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        for batch in reader:
            fit = self._fit(batch)
            if fit:  # the cut batch is copied: a slice would keep all of its rows' memory alive
                part = batch if fit == batch.num_rows else batch.take(pa.array(range(fit), pa.int32()))
                self.rows += fit
                self.nbytes += part.nbytes
                yield part
            if self.reason is not None:
                return

    def _fit(self, batch: pa.RecordBatch) -> int:
        """How many of the batch's first rows fit under both caps (sets `reason` when not all do)."""
        n = min(batch.num_rows, self.max_rows - self.rows)
        if n < batch.num_rows:
            self.reason = "rows"
        room = self.max_bytes - self.nbytes
        if batch.slice(0, n).nbytes <= room:
            return n
        lo, hi = 0, n  # the longest prefix that fits: lo fits, hi does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if batch.slice(0, mid).nbytes <= room else (lo, mid)
        self.reason = "bytes"
        return lo


def query(root: str | Path | CorpusLocation, sql: str, *, max_rows: int = 100_000, max_bytes: int = MAX_BYTES,
          timeout_s: float = 30.0, params: Sequence[object] | Mapping[str, object] | None = None) -> QueryResult:
    """Run one read-only query over the corpus views. The result is streamed and stops at `max_rows` rows or
    `max_bytes` Arrow bytes, whichever comes first; `truncated` and `reason` say so. `params` are bound to the
    query's placeholders (`?`, `$1` or `$name`) by DuckDB, so a caller's values never become SQL text."""
    def collect(reader: pa.RecordBatchReader) -> QueryResult:
        cap = _Cap(max_rows, max_bytes)
        table = pa.Table.from_batches(list(cap.take(reader)), schema=reader.schema)
        return QueryResult(table, cap.reason is not None, cap.reason)

    return _run(CorpusLocation.of(root), sql, max_rows, timeout_s, collect, params)


def query_to_parquet(root: str | Path | CorpusLocation, sql: str, path: str | Path, *, max_rows: int = 10_000_000,
                     max_bytes: int = 4 << 30, timeout_s: float = 300.0) -> QueryWritten:
    """Stream one read-only query's result into a Parquet file (zstd), batch by batch, so a large result is never
    held in memory whole; it stops at `max_rows` rows or `max_bytes` Arrow bytes, whichever comes first."""
    def write(reader: pa.RecordBatchReader) -> QueryWritten:
        cap = _Cap(max_rows, max_bytes)
        pending: list[pa.RecordBatch] = []
        with pq.ParquetWriter(path, reader.schema, compression="zstd") as writer:
            for batch in cap.take(reader):
                pending.append(batch)
                if len(pending) * BATCH_ROWS >= PARQUET_GROUP_ROWS:
                    writer.write_table(pa.Table.from_batches(pending), row_group_size=PARQUET_GROUP_ROWS)
                    pending = []
            if pending:
                writer.write_table(pa.Table.from_batches(pending), row_group_size=PARQUET_GROUP_ROWS)
        return QueryWritten(cap.rows, cap.nbytes, cap.reason is not None, cap.reason)

    return _run(CorpusLocation.of(root), sql, max_rows, timeout_s, write)


def _run(corpus: CorpusLocation, sql: str, max_rows: int, timeout_s: float,
         consume: Callable[[pa.RecordBatchReader], T],
         params: Sequence[object] | Mapping[str, object] | None = None) -> T:
    """Check `sql`, run it (with `params` bound) on a sandboxed cursor and hand `consume` a reader of at most
    `max_rows` + 1 rows (the extra one tells that more matched). A part file removed or replaced while the query
    read it can make it fail: then it runs once more, on a database rebuilt over the current files."""
    statement = check_read_only(sql)
    for last in (False, True):
        cursor, parts = _cursor(corpus)
        try:
            with sandboxed(cursor, timeout_s) as expired:
                relation = cursor.sql(statement, params=params)
                return consume(relation.limit(max_rows + 1).to_arrow_reader(BATCH_ROWS))
        except QueryError as exc:
            if last or expired.is_set() or type(exc) is not QueryError or _parts(corpus) == parts:
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


@contextmanager
def sandboxed(cursor: duckdb.DuckDBPyConnection, timeout_s: float) -> Iterator[threading.Event]:
    """Interrupt the cursor's work after `timeout_s` (the event yielded is then set); DuckDB errors become
    QueryErrors, a permission error (the query tried to open a file) a QueryRefusedError. The cursor is closed
    at the end."""
    expired = threading.Event()

    def stop() -> None:
        expired.set()
        try:
            cursor.interrupt()
        except duckdb.Error:  # closed meanwhile: nothing left to stop
            pass

    timer = threading.Timer(timeout_s, stop)
    timer.daemon = True
    timer.start()
    timeout = QueryError(f"query took longer than {timeout_s:g} s and was stopped")
    try:
        yield expired
        if expired.is_set():  # past its time is a timeout, however the interrupt surfaced (or did not)
            raise timeout
    except duckdb.InterruptException:
        raise timeout from None
    except duckdb.PermissionException as exc:
        raise QueryRefusedError(f"query refused: {exc}") from None
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None
    except (OSError, pa.ArrowException) as exc:  # an error while streaming reaches us through Arrow's C stream
        raise (timeout if expired.is_set() else QueryError(str(exc))) from None
    finally:
        timer.cancel()
        cursor.close()
