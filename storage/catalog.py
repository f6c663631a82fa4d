"""DuckDB over the Parquet corpus: the `records` and `jobs` views, and a read-only query sandbox.

A query may be one SELECT statement (WITH ... SELECT included). The connection can read only the corpus
folder (`allowed_directories` with external access disabled, configuration locked), so `read_csv('/etc/passwd')`,
`COPY ... TO`, `ATTACH`, `INSTALL`/`LOAD` and `SET`/`PRAGMA` are refused. Each query has a timeout and a row cap.
"""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pyarrow as pa

from pipeline.errors import QueryError, QueryRefusedError
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


def connect(root: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with `records` and `jobs` views, sandboxed to the corpus folder."""
    root = Path(root).resolve()
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    con.execute(_view_sql("records", root / "records" / "*" / "*.parquet", RECORDS_SCHEMA))
    con.execute(_view_sql("jobs", root / "jobs" / "*.parquet", JOBS_SCHEMA))
    # DuckDB adds its spill folder (./.tmp by default) to the allowed directories: turn spilling off
    con.execute("SET temp_directory = ''")
    con.execute(f"SET allowed_directories = [{_sql_str(str(root) + '/')}]")
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
