"""DuckDB over the Parquet corpus: the `records` and `jobs` views, and a read-only query sandbox.

A query may be one SELECT statement (WITH ... SELECT included). The connection can read only the corpus
folder (`allowed_directories` with external access disabled, configuration locked), so `read_csv('/etc/passwd')`,
`COPY ... TO`, `ATTACH`, `INSTALL`/`LOAD` and `SET`/`PRAGMA` are refused. Each query has a timeout and a row cap.

A corpus on an object store (`s3://...`) is read through pyarrow, not through DuckDB's httpfs extension: its part
files are listed once per connection and registered as pyarrow datasets with the explicit schemas, and the views
select from those. DuckDB itself may then read no file at all (no allowed directories), so the sandbox is the
same, and nothing is downloaded or installed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.errors import QueryError, QueryRefusedError
from storage.location import CorpusLocation
from storage.schema import JOBS_SCHEMA, RECORDS_SCHEMA

_DUCK_TYPES = {
    pa.string(): "VARCHAR", pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.bool_(): "BOOLEAN",
    pa.float32(): "FLOAT", pa.float64(): "DOUBLE", pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _empty_select(schema: pa.Schema) -> str:
    cols = ", ".join(f"CAST(NULL AS {_DUCK_TYPES[f.type]}) AS {f.name}" for f in schema)
    return f"SELECT {cols} WHERE false"


def _has_files(pattern: Path) -> bool:
    folder = pattern.parent.parent if "*" in pattern.parent.name else pattern.parent
    return any(folder.glob(str(pattern.relative_to(folder))))


def _view_sql(name: str, pattern: Path, schema: pa.Schema, has_files: bool) -> str:
    if not has_files:
        return f"CREATE VIEW {name} AS {_empty_select(schema)}"
    cols = ", ".join(f.name for f in schema)
    return (f"CREATE VIEW {name} AS SELECT {cols} FROM read_parquet({_sql_str(str(pattern))}, "
            f"union_by_name = true)")


def _state(corpus: CorpusLocation) -> tuple:
    """What a database's views are built from. In a folder the views glob the part files at each query, so only
    whether there are any matters (DuckDB cannot glob nothing); on an object store the views are over fixed file
    lists, so the lists themselves."""
    if corpus.local is not None:
        local = corpus.local.resolve()
        return (_has_files(local / "records" / "*" / "*.parquet"), _has_files(local / "jobs" / "*.parquet"))
    return (tuple(corpus.list_files("records", depth=2)), tuple(corpus.list_files("jobs")))


def _build(corpus: CorpusLocation, state: tuple) -> tuple[duckdb.DuckDBPyConnection, dict[str, ds.Dataset]]:
    """An in-memory database with the `records` and `jobs` views and the sandbox settings, and (object stores)
    the pyarrow datasets the views read, which every connection to the database must register for itself."""
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    datasets: dict[str, ds.Dataset] = {}
    if corpus.local is not None:
        local = corpus.local.resolve()
        con.execute(_view_sql("records", local / "records" / "*" / "*.parquet", RECORDS_SCHEMA, state[0]))
        con.execute(_view_sql("jobs", local / "jobs" / "*.parquet", JOBS_SCHEMA, state[1]))
        allowed = [local]
    else:
        for name, files, schema in (("records", state[0], RECORDS_SCHEMA), ("jobs", state[1], JOBS_SCHEMA)):
            if not files:
                con.execute(f"CREATE VIEW {name} AS {_empty_select(schema)}")
                continue
            # the explicit schema, never inferred: older part files without a newer column read it as null
            datasets[f"_{name}_parts"] = ds.dataset(list(files), schema=schema, format="parquet",
                                                    filesystem=corpus.fs)
            con.register(f"_{name}_parts", datasets[f"_{name}_parts"])
            con.execute(f"CREATE VIEW {name} AS SELECT {', '.join(schema.names)} FROM _{name}_parts")
        allowed = []  # the views read through pyarrow; DuckDB itself opens no file
    # DuckDB adds its spill folder (./.tmp by default) to the allowed directories: turn spilling off
    con.execute("SET temp_directory = ''")
    con.execute(f"SET allowed_directories = [{', '.join(_sql_str(str(p) + '/') for p in allowed)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con, datasets


def connect(root: str | Path | CorpusLocation) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with `records` and `jobs` views, sandboxed to the corpus folder."""
    corpus = CorpusLocation.of(root)
    return _build(corpus, _state(corpus))[0]


# One database per corpus for `query` (built once: a new database and its views cost ~30 ms a query), rebuilt
# when its views' inputs change; each query runs on its own cursor, which shares the catalog and the locked
# sandbox settings and can be interrupted alone.
_SHARED: dict[str, tuple[tuple, duckdb.DuckDBPyConnection, dict[str, ds.Dataset]]] = {}
_SHARED_LOCK = threading.Lock()
_SHARED_MAX = 8


def _cursor(root: str | Path | CorpusLocation) -> duckdb.DuckDBPyConnection:
    corpus = CorpusLocation.of(root)
    state = _state(corpus)
    with _SHARED_LOCK:
        entry = _SHARED.get(corpus.address)
        if entry is None or entry[0] != state:
            # the old database is dropped, not closed: queries still running on its cursors finish
            entry = _SHARED[corpus.address] = (state, *_build(corpus, state))
            while len(_SHARED) > _SHARED_MAX:  # a process reading many corpora keeps the latest few
                _SHARED.pop(next(iter(_SHARED)))
        _, con, datasets = entry
        cursor = con.cursor()
    for name, dataset in datasets.items():
        cursor.register(name, dataset)
    return cursor


def check_read_only(sql: str) -> str:
    """Refuse anything but a single SELECT statement."""
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


def query(root: str | Path, sql: str, *, max_rows: int = 100_000, timeout_s: float = 30.0) -> pa.Table:
    """Run one read-only query over the corpus views; at most `max_rows` rows come back."""
    with _sandboxed(root, timeout_s) as con:
        return con.sql(check_read_only(sql)).limit(max_rows).to_arrow_table()


def query_to_parquet(root: str | Path, sql: str, path: str | Path, *, max_rows: int = 10_000_000,
                     timeout_s: float = 300.0, batch_rows: int = 65_536) -> tuple[int, bool]:
    """Stream one read-only query's result into a Parquet file (zstd), batch by batch, so a large result is never
    held in memory whole. Returns (rows written, whether more rows matched than `max_rows`)."""
    written, truncated = 0, False
    with _sandboxed(root, timeout_s) as con:
        rel = con.sql(check_read_only(sql)).limit(max_rows + 1)
        reader = rel.to_arrow_reader(batch_rows) if hasattr(rel, "to_arrow_reader") else \
            rel.fetch_arrow_reader(batch_rows)
        with pq.ParquetWriter(path, reader.schema, compression="zstd") as writer:
            for batch in reader:
                take = min(batch.num_rows, max_rows - written)
                if take < batch.num_rows:
                    truncated = True
                if take:
                    writer.write_batch(batch.slice(0, take))
                    written += take
    return written, truncated


@contextmanager
def _sandboxed(root: str | Path, timeout_s: float) -> Iterator[duckdb.DuckDBPyConnection]:
    """A sandboxed connection whose work is interrupted after `timeout_s`; DuckDB errors become QueryErrors."""
    con = _cursor(root)
    timer = threading.Timer(timeout_s, con.interrupt)
    timer.start()
    try:
        yield con
    except duckdb.InterruptException:
        raise QueryError(f"query took longer than {timeout_s:g} s and was stopped") from None
    except duckdb.PermissionException as exc:
        raise QueryRefusedError(f"query refused: {exc}") from None
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None
    finally:
        timer.cancel()
        con.close()
