"""Pages of one job's records (filtered, sorted, texts cut short on request) and the records of one example, for
the REST service and the viewer. Values are always bound as parameters; only column names from the fixed tables
below ever become SQL text.

A page takes three small queries, because reading a row's texts is the expensive part (a part file's text
columns are decompressed whole, ~10 ms per part file of 10,000 records): the page's keys are found over narrow
columns (top-N, no window over the whole job), the matches are counted, and then only the page's rows are read.

On a local corpus the queries run on DuckDB's own Parquet reader over the job's part files, which is several times
faster than the Arrow views for this (it reads the narrow columns alone, and keeps each file's metadata between
queries). A page's keys there are (part file, row number in it), so its rows are read from the files that hold
them and nowhere else; and the default order, `position`, is the order records are stored in: shard by shard in
dataset order (a shard's bad rows first, then its examples in dataset order). That connection is locked down as the query sandbox is (external access off,
configuration locked), with one allowed directory: the job's own records folder, resolved; part files that
resolve anywhere else are refused. No caller's SQL ever reaches it (values are bound parameters), and what it runs
must still be one SELECT, as DuckDB's parser classifies it. On an object store the same pages run through the sandboxed views
(`catalog.query`), where `position` is example id order.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa

from stepwise.pipeline.errors import QueryError, StorageError
from stepwise.storage import layout
from stepwise.storage.catalog import DUCK_TYPES, SETTINGS, check_read_only, job_parts, query, sandboxed
from stepwise.storage.jobs import check_job_id
from stepwise.storage.location import CorpusLocation
from stepwise.storage.schema import RECORDS_SCHEMA

# sort name -> the SQL expression it orders by (the keys of this table are the API's enum); `position` is the
# stored order (see the module docstring)
SORTS: dict[str, str] = {
    "position": "position", "example_id": "example_id", "sample_idx": "sample_idx", "label": "label",
    "gold_label": "gold_label", "agreement": "agreement", "reject_reason": "reject_reason",
    "tokens_in": "tokens_in", "tokens_out": "tokens_out", "cost_usd": "cost_usd", "latency_s": "latency_s",
    "created_at": "created_at", "rationale_chars": "length(rationale)", "reasoning_chars": "length(reasoning)",
}
LONG_TEXTS = ("input", "rationale", "completion", "reasoning", "gold_rationale")  # cut by `brief`
BRIEF_CHARS = 280
COUNTED = ("rationale", "reasoning", "completion")  # `brief` adds <name>_chars for these
MAX_SEARCH_CHARS = 200
TIMEOUT_S = 30.0
_ELLIPSIS = "\u2026"
_FILE, _ROW = "filename", "file_row_number"  # DuckDB's virtual columns of a row's place
Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class RecordFilter:
    """Which records of a job a page holds; None leaves a criterion out."""

    accepted: bool | None = None
    reason: str | None = None           # reject_reason, exactly
    correct: bool | None = None
    label: str | None = None            # exactly
    gold_label: str | None = None       # exactly
    min_agreement: float | None = None  # inclusive
    max_agreement: float | None = None  # inclusive
    q: str | None = None                # a case-insensitive substring of input, rationale, reasoning or completion

    def where(self, job_id: str) -> tuple[str, list[Any]]:
        """The WHERE clause, with `?` for every value, and the values in order."""
        clauses, params = ["job_id = ?"], [job_id]
        for column in ("accepted", "reason", "correct", "label", "gold_label"):
            value = getattr(self, column)
            if value is not None:
                clauses.append(f"{'reject_reason' if column == 'reason' else column} = ?")
                params.append(value)
        # compared as FLOAT, the column's type: agreement 0.1 is stored as the float nearest 0.1
        if self.min_agreement is not None:
            clauses.append("agreement >= CAST(? AS FLOAT)")
            params.append(self.min_agreement)
        if self.max_agreement is not None:
            clauses.append("agreement <= CAST(? AS FLOAT)")
            params.append(self.max_agreement)
        if self.q:
            pattern = f"%{like_literal(self.q)}%"
            clauses.append("(" + " OR ".join(f"{c} ILIKE ? ESCAPE '\\'" for c in
                                             ("input", "rationale", "reasoning", "completion")) + ")")
            params += [pattern] * 4
        return " AND ".join(clauses), params


def like_literal(text: str) -> str:
    """`text` as a LIKE pattern that matches exactly it: the wildcards `%`, `_` and the escape `\\` escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class RecordPage:
    rows: list[dict[str, Any]]
    total: int  # records matching the filter, before paging


def record_page(corpus: str | Path | CorpusLocation, job_id: str, where: RecordFilter = RecordFilter(), *,
                sort: str = "position", order: Order = "asc", limit: int = 50, offset: int = 0,
                brief: bool = False) -> RecordPage:
    """One page of a job's records in a deterministic order: `sort` (nulls last), then example_id and sample_idx
    (`position`: the stored order). With `brief`, long texts are cut to their first BRIEF_CHARS characters and an
    ellipsis, and their lengths are added as `<name>_chars`."""
    location = CorpusLocation.of(corpus)
    clause, params = where.where(job_id)
    if location.local is None:
        return _store_page(location, job_id, clause, params, sort, order, limit, offset, brief)
    files = _JobFiles.of(location.local, job_id)
    if files is None:
        return RecordPage([], 0)
    direction = "DESC" if order == "desc" else "ASC"
    by = (f"{_FILE} {direction}, {_ROW} {direction}" if sort == "position" else
          f"{SORTS[sort]} {direction} NULLS LAST, example_id, sample_idx")
    source, source_params = files.source(files.paths)
    keys = files.run(f"SELECT {_FILE}, {_ROW} FROM {source} WHERE {clause} ORDER BY {by} LIMIT ? OFFSET ?",
                     [*source_params, *params, limit, offset]).to_pylist()
    if offset == 0 and len(keys) < limit:
        total = len(keys)
    else:
        total = files.run(f"SELECT count(*) AS n FROM {source} WHERE {clause}",
                          [*source_params, *params]).column("n")[0].as_py()
    return RecordPage(files.rows_at(keys, brief), total)


def example_records(corpus: str | Path | CorpusLocation, job_id: str, example_id: str) -> list[dict[str, Any]]:
    """Every record of one example, in sample order, texts whole; [] when the job has no such example."""
    location = CorpusLocation.of(corpus)
    if location.local is None:
        return _store_example(location, job_id, example_id)
    files = _JobFiles.of(location.local, job_id)
    if files is None:
        return []
    source, source_params = files.source(files.paths)
    keys = files.run(f"SELECT {_FILE}, {_ROW} FROM {source} WHERE job_id = ? AND example_id = ? "
                     f"ORDER BY sample_idx, {_FILE}, {_ROW}", [*source_params, job_id, example_id]).to_pylist()
    return files.rows_at(keys, brief=False)


def _columns(brief: bool) -> str:
    """The select list of a page's rows: every column, long texts cut and counted with `brief`."""
    if not brief:
        return "*"
    cut = ", ".join(f"CASE WHEN length({c}) > {BRIEF_CHARS} THEN left({c}, {BRIEF_CHARS}) || '{_ELLIPSIS}' "
                    f"ELSE {c} END AS {c}" for c in LONG_TEXTS)
    counts = ", ".join(f"length({c}) AS {c}_chars" for c in COUNTED)
    return f"* REPLACE ({cut}), {counts}"


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))


# ── a local job: DuckDB's Parquet reader over its part files ─────────────────────────────────────────────────────
class _JobFiles:
    """A job's part files and a DuckDB connection that may read them and nothing else. One per job and set of
    files, kept while the files stay the same (`of`); queries run on cursors of it, each with the timeout."""

    _cache: dict[str, tuple[tuple, _JobFiles]] = {}
    _lock = threading.Lock()
    _MAX = 16

    def __init__(self, folder: str, parts: tuple):
        self.folder = folder
        self.paths = [part[0] for part in parts]
        outside = [p for p in self.paths if os.path.dirname(os.path.realpath(p)) != folder]
        if outside:
            raise StorageError(f"part file {outside[0]} resolves outside its job folder {folder}; refused")
        self.con = duckdb.connect(":memory:", config=SETTINGS)
        self.con.execute("SET allowed_directories = ?", [[folder + os.sep]])
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET parquet_metadata_cache = true")  # each file's footer is read once
        self.con.execute("SET lock_configuration = true")
        found = dict(self.con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', "
            "'lock_configuration', 'allowed_directories', 'allowed_paths', 'temp_directory')").fetchall())
        expected = {"enable_external_access": "false", "lock_configuration": "true",
                    "allowed_directories": f"[{folder + os.sep}]", "allowed_paths": "[]", "temp_directory": ""}
        if found != expected:
            self.con.close()
            raise QueryError(f"the records reader could not be locked down: DuckDB reports {found}")
        # the columns of each file (an older part lacks newer columns: they read as NULL)
        self.columns: dict[str, set[str]] = {}
        schema = self.run("SELECT file_name, name FROM parquet_schema(?)", [self.paths]).to_pydict()
        for path, name in zip(schema["file_name"], schema["name"], strict=True):
            self.columns.setdefault(path, set()).add(name)

    @classmethod
    def of(cls, root: Path, job_id: str) -> _JobFiles | None:
        """The job's files now (None when it has none), reusing the last connection while they are unchanged."""
        folder = os.path.realpath(os.path.join(root, layout.RECORDS, check_job_id(job_id)))
        parts = job_parts(folder)
        if not parts:
            return None
        with cls._lock:
            cached = cls._cache.get(folder)
            if cached is None or cached[0] != parts:
                cls._cache[folder] = cached = (parts, cls(folder, parts))
                while len(cls._cache) > cls._MAX:
                    cls._cache.pop(next(iter(cls._cache)))
            return cached[1]

    def source(self, paths: Sequence[str]) -> tuple[str, list[Any]]:
        """A FROM item over `paths` with every records column (NULL where none of them has it), the file and row
        of each row; and its parameters."""
        present = set().union(*(self.columns.get(p, ()) for p in paths))
        cols = ", ".join(f.name if f.name in present else f"CAST(NULL AS {DUCK_TYPES[f.type]}) AS {f.name}"
                         for f in RECORDS_SCHEMA)
        return (f"(SELECT {cols}, {_FILE}, {_ROW} FROM read_parquet(?, union_by_name = true, filename = true, "
                f"file_row_number = true))", [list(paths)])

    def rows_at(self, keys: list[dict[str, Any]], brief: bool) -> list[dict[str, Any]]:
        """The rows at `keys` ((file, row number) pairs), in the keys' order, each file read for its own rows
        alone (one branch per file, so that DuckDB reads only the row groups that hold them)."""
        if not keys:
            return []
        rows_of: dict[str, list[int]] = {}
        for key in keys:
            rows_of.setdefault(key[_FILE], []).append(key[_ROW])
        branches, params = [], []
        for path, rows in rows_of.items():
            source, source_params = self.source([path])
            branches.append(f"SELECT * FROM {source} WHERE {_ROW} IN ({_marks(rows)})")
            params += [*source_params, *rows]
        found = self.run(f"SELECT {_columns(brief)} FROM ({' UNION ALL '.join(branches)})", params).to_pylist()
        at = {(row.pop(_FILE), row.pop(_ROW)): row for row in found}
        return [at[(k[_FILE], k[_ROW])] for k in keys if (k[_FILE], k[_ROW]) in at]

    def run(self, sql: str, params: list[Any]) -> pa.Table:
        """One SELECT of ours (refused otherwise: the folder is writable to this connection), with the timeout."""
        check_read_only(sql)
        cursor = self.con.cursor()
        with sandboxed(cursor, TIMEOUT_S):
            return cursor.sql(sql, params=params).to_arrow_table()


# ── an object store: the sandboxed views ─────────────────────────────────────────────────────────────────────────
# pyarrow, under the views, decodes every column a query reads for every row group it opens, so the page's keys
# come with their `created_at`: the runner judges a shard at once, so a part file holds one or two `created_at`
# values and `created_at IN (...)` lets pyarrow's statistics skip every file that holds none of the page.
def _store_page(corpus: CorpusLocation, job_id: str, clause: str, params: list[Any], sort: str, order: Order,
                limit: int, offset: int, brief: bool) -> RecordPage:
    direction = "DESC" if order == "desc" else "ASC"
    by = SORTS["example_id" if sort == "position" else sort]
    keys = query(corpus, f"SELECT example_id, sample_idx, created_at FROM records WHERE {clause} "
                         f"ORDER BY {by} {direction} NULLS LAST, example_id, sample_idx LIMIT ? OFFSET ?",
                 params=[*params, limit, offset], max_rows=limit).table.to_pylist()
    if offset == 0 and len(keys) < limit:
        total = len(keys)
    else:
        total = query(corpus, f"SELECT count(*) AS n FROM records WHERE {clause}",
                      params=params).table.column("n")[0].as_py()
    if not keys:
        return RecordPage([], total)
    times = sorted({k["created_at"] for k in keys})
    ids = sorted({k["example_id"] for k in keys})
    samples = sorted({k["sample_idx"] for k in keys})
    found = query(corpus, f"SELECT {_columns(brief)} FROM records WHERE job_id = ? AND created_at IN "
                          f"({_marks(times)}) AND example_id IN ({_marks(ids)}) AND sample_idx IN ({_marks(samples)})",
                  params=[job_id, *times, *ids, *samples]).table.to_pylist()
    by_key = {(r["example_id"], r["sample_idx"]): r for r in found}
    return RecordPage([by_key[(k["example_id"], k["sample_idx"])] for k in keys
                       if (k["example_id"], k["sample_idx"]) in by_key], total)


def _store_example(corpus: CorpusLocation, job_id: str, example_id: str) -> list[dict[str, Any]]:
    times = query(corpus, "SELECT DISTINCT created_at FROM records WHERE job_id = ? AND example_id = ?",
                  params=[job_id, example_id]).table.column("created_at").to_pylist()
    if not times:
        return []
    sql = (f"SELECT * FROM records WHERE job_id = ? AND created_at IN ({_marks(times)}) AND example_id = ? "
           f"ORDER BY sample_idx")
    return query(corpus, sql, params=[job_id, *times, example_id]).table.to_pylist()
