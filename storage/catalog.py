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
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

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


def _view_sql(name: str, pattern: Path, schema: pa.Schema) -> str:
    folder = pattern.parent.parent if "*" in pattern.parent.name else pattern.parent
    has_files = any(folder.glob(str(pattern.relative_to(folder))))
    if not has_files:
        return f"CREATE VIEW {name} AS {_empty_select(schema)}"
    cols = ", ".join(f.name for f in schema)
    return (f"CREATE VIEW {name} AS SELECT {cols} FROM read_parquet({_sql_str(str(pattern))}, "
            f"union_by_name = true)")


def _register_remote(con: duckdb.DuckDBPyConnection, name: str, corpus: CorpusLocation, folder: str, depth: int,
                     schema: pa.Schema) -> None:
    files = corpus.list_files(folder, depth=depth)
    if not files:
        con.execute(f"CREATE VIEW {name} AS {_empty_select(schema)}")
        return
    # the explicit schema, never inferred: older part files without a newer column read it as null
    con.register(f"_{name}_parts", ds.dataset(files, schema=schema, format="parquet", filesystem=corpus.fs))
    cols = ", ".join(f.name for f in schema)
    con.execute(f"CREATE VIEW {name} AS SELECT {cols} FROM _{name}_parts")


def connect(root: str | Path | CorpusLocation) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with `records` and `jobs` views, sandboxed to the corpus folder."""
    corpus = CorpusLocation.of(root)
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    if corpus.local is not None:
        local = corpus.local.resolve()
        con.execute(_view_sql("records", local / "records" / "*" / "*.parquet", RECORDS_SCHEMA))
        con.execute(_view_sql("jobs", local / "jobs" / "*.parquet", JOBS_SCHEMA))
        allowed = [local]
    else:
        _register_remote(con, "records", corpus, "records", 2, RECORDS_SCHEMA)
        _register_remote(con, "jobs", corpus, "jobs", 1, JOBS_SCHEMA)
        allowed = []  # the views read through pyarrow; DuckDB itself opens no file
    # DuckDB adds its spill folder (./.tmp by default) to the allowed directories: turn spilling off
    con.execute("SET temp_directory = ''")
    con.execute(f"SET allowed_directories = [{', '.join(_sql_str(str(p) + '/') for p in allowed)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


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
    statement = check_read_only(sql)
    con = connect(root)
    timer = threading.Timer(timeout_s, con.interrupt)
    timer.start()
    try:
        return con.sql(statement).limit(max_rows).to_arrow_table()
    except duckdb.InterruptException:
        raise QueryError(f"query took longer than {timeout_s:g} s and was stopped") from None
    except duckdb.PermissionException as exc:
        raise QueryRefusedError(f"query refused: {exc}") from None
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None
    finally:
        timer.cancel()
        con.close()
