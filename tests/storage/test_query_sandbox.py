"""The query sandbox of `storage.catalog`: no query creates, changes or deletes a file, nor reads one outside the
views (the whole tree around a real corpus is snapshotted, content hashes included, before and after every
query, refused or allowed); statements are classified by DuckDB's parser; the shared database follows the part
files (added, removed, atomically replaced); results stop at a row cap and a byte cap; timeouts stop a query."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepwise.pipeline.errors import QueryError, QueryRefusedError
from stepwise.storage import catalog
from stepwise.storage.catalog import check_read_only, connect, query, query_to_parquet
from stepwise.storage.jobs import JobRegistry, JobState
from stepwise.storage.parquet import write_records
from tests.storage.test_storage import WHEN, record

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("hunter2", "root:x:0:0", "do not read")  # contents of files a query must never show


# ── a real corpus, and a snapshot of everything around it ────────────────────────────────────────────────────────
@dataclass
class Site:
    """A corpus inside a folder that also holds files a query must not touch; `cwd` is the working directory
    (a relative path in SQL would resolve there)."""

    top: Path
    corpus: Path
    cwd: Path

    def fill(self, sql: str) -> str:
        part = self.corpus / "records" / "job-a" / "shard-000000.parquet"
        return sql.format(corpus=self.corpus, rec=self.corpus / "records" / "job-a", part=part,
                          outside=self.top / "outside.parquet", secret=self.top / "secret.csv", top=self.top)


def make_site(top: Path) -> Site:
    corpus = top / "corpus"
    write_records([record(f"e{i}") for i in range(3)], corpus / "records" / "job-a" / "shard-000000.parquet")
    write_records([record("x1", job_id="job-b")], corpus / "records" / "job-b" / "shard-000000.parquet")
    (corpus / "records" / "job-a" / "shard-000001.retry").touch()  # a marker, not a part file
    (corpus / "records" / "job-a" / ".shard-000002.parquet.1a2b3c4d.tmp").write_bytes(b"half a file")  # hidden
    JobRegistry(corpus).save(JobState(job_id="job-a", status="completed", fingerprint="f", spec_json="{}",
                                      n_records=3, created_at=WHEN, updated_at=WHEN))
    pq.write_table(pa.table({"secret": ["do not read"]}), top / "outside.parquet")
    (top / "secret.csv").write_text("token\nhunter2\n", encoding="utf-8")
    (top / "corpus-sibling").mkdir()
    pq.write_table(pa.table({"secret": ["do not read"]}), top / "corpus-sibling" / "s.parquet")
    (top / "cwd").mkdir()
    return Site(top, corpus, top / "cwd")


def snapshot(top: Path) -> dict[str, tuple]:
    """Every path under `top` (the folder itself included): kind, size, mtime_ns and, for files, a sha256. A
    file created and removed again still shows, in its folder's mtime."""
    out = {}
    for path in [top, *sorted(top.rglob("*"))]:
        st_ = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else None
        out[str(path.relative_to(top))] = (st_.st_mode, st_.st_size, st_.st_mtime_ns, digest)
    return out


@pytest.fixture()
def site(tmp_path, monkeypatch) -> Site:
    s = make_site(tmp_path)
    monkeypatch.chdir(s.cwd)
    return s


def run_untouched(site: Site, sql: str):
    """Run `sql` through `query`; the tree must be byte-identical afterwards whatever happened. Returns the
    result or the QueryError raised (any other exception fails the test)."""
    before = snapshot(site.top)
    try:
        outcome = query(site.corpus, sql, timeout_s=20)
    except QueryError as exc:
        outcome = exc
        assert not any(s in str(exc) for s in SECRETS), f"a file's content leaked into the error: {exc}"
    assert snapshot(site.top) == before, f"the query changed a file: {sql}"
    return outcome


# ── attacks: every one leaves the tree byte-identical ────────────────────────────────────────────────────────────
REFUSED, ERROR, ALLOWED = "refused", "error", "allowed"
ATTACKS = [
    # COPY ... TO inside a CTE: DuckDB's parser calls the statement a SELECT; the connection can open no file
    ("cte_copy", "WITH x AS (COPY (SELECT * FROM records) TO '{rec}/evil.parquet' (FORMAT parquet)) SELECT 1",
     REFUSED),
    ("cte_copy_lower", "with x as (copy (select * from records) to '{rec}/evil.parquet' (format parquet)) select 1",
     REFUSED),
    ("cte_copy_mixed", "WiTh x As (CoPy (SeLeCt 1) To '{rec}/evil.csv') SeLeCt 1", REFUSED),
    ("cte_copy_overwrite_folder", "WITH x AS (COPY (SELECT * FROM records WHERE false) TO '{rec}' "
                                  "(FORMAT parquet, OVERWRITE)) SELECT 1", REFUSED),
    ("cte_copy_overwrite_part", "WITH x AS (COPY (SELECT * FROM records WHERE false) TO '{part}' "
                                "(FORMAT parquet, OVERWRITE)) SELECT 1", REFUSED),
    ("cte_copy_partition_by", "WITH x AS (COPY records TO '{corpus}/records' (FORMAT parquet, PARTITION_BY (job_id), "
                              "OVERWRITE_OR_IGNORE)) SELECT 1", REFUSED),
    ("cte_copy_fake_job_row", "WITH x AS (COPY (SELECT * FROM jobs) TO '{corpus}/jobs/fake.parquet' "
                              "(FORMAT parquet)) SELECT 1", REFUSED),
    ("cte_copy_outside_absolute", "WITH x AS (COPY (SELECT 1) TO '{top}/escape.csv') SELECT 1", REFUSED),
    ("cte_copy_relative", "WITH x AS (COPY (SELECT 1) TO 'escape.csv') SELECT 1", REFUSED),
    ("cte_copy_second_cte", "WITH a AS (SELECT 1 AS n), x AS (COPY (SELECT 1) TO '{rec}/e.csv') SELECT * FROM a",
     REFUSED),
    ("cte_copy_materialized", "WITH x AS MATERIALIZED (COPY (SELECT 1) TO '{rec}/e.csv') SELECT 1", REFUSED),
    ("cte_copy_in_subquery", "SELECT * FROM (WITH x AS (COPY (SELECT 1) TO '{rec}/e.csv') SELECT 1) t", ERROR),
    ("cte_copy_in_scalar", "SELECT (WITH x AS (COPY (SELECT 1) TO '{rec}/e.csv') SELECT 1) AS n", ERROR),
    ("cte_copy_in_exists", "SELECT 1 WHERE EXISTS (WITH x AS (COPY (SELECT 1) TO '{rec}/e.csv') SELECT 1)",
     ERROR),
    ("cte_copy_from", "WITH x AS (COPY records FROM '/etc/passwd') SELECT 1", ERROR),
    ("cte_insert", "WITH x AS (INSERT INTO records SELECT * FROM records RETURNING 1) SELECT 1", ERROR),
    ("cte_update", "WITH x AS (UPDATE records SET label = 'x' RETURNING 1) SELECT 1", ERROR),
    ("cte_delete", "WITH x AS (DELETE FROM records RETURNING 1) SELECT 1", ERROR),
    ("cte_drop", "WITH x AS (DROP VIEW records) SELECT 1", ERROR),
    # DuckDB (2.0) allows an in-memory database opened without external access its own "files"
    ("copy_memory_wal", "WITH x AS (COPY (SELECT 42 AS a) TO ':memory:.wal' (FORMAT csv, USE_TMP_FILE false)) "
                        "SELECT 1", REFUSED),
    ("copy_memory", "WITH x AS (COPY (SELECT 42 AS a) TO ':memory:' (FORMAT csv)) SELECT 1", REFUSED),
    ("read_memory_wal", "SELECT * FROM read_csv(':memory:.wal.recovery')", REFUSED),
    ("query_fn_copy", "SELECT * FROM query('COPY (SELECT 1) TO ''{rec}/e.csv''')", ERROR),
    ("copy_to", "COPY (SELECT 1) TO '{rec}/evil.csv'", REFUSED),
    ("copy_table_to", "COPY records TO '{corpus}/dump' (FORMAT parquet)", REFUSED),
    ("copy_from", "COPY records FROM '/etc/passwd'", REFUSED),
    ("export_database", "EXPORT DATABASE '{top}/dump'", REFUSED),
    ("import_database", "IMPORT DATABASE '{top}'", REFUSED),
    # reading files by path: none is reachable, inside the corpus or outside it
    ("read_csv", "SELECT * FROM read_csv('/etc/passwd')", REFUSED),
    ("read_csv_auto", "FROM read_csv_auto('/etc/hostname')", REFUSED),
    ("read_csv_secret", "SELECT * FROM read_csv('{secret}')", REFUSED),
    ("read_text", "SELECT * FROM read_text('/etc/passwd')", REFUSED),
    ("read_text_secret", "SELECT content FROM read_text('{secret}')", REFUSED),
    ("read_text_environ", "SELECT * FROM read_text('/proc/self/environ')", REFUSED),
    ("read_blob", "SELECT * FROM read_blob('/etc/passwd')", REFUSED),
    ("read_json", "SELECT * FROM read_json('/etc/passwd')", REFUSED),
    ("read_ndjson_objects", "SELECT * FROM read_ndjson_objects('/etc/hostname')", REFUSED),
    ("glob_root", "SELECT * FROM glob('/*')", REFUSED),
    ("glob_corpus", "SELECT * FROM glob('{corpus}/**')", REFUSED),
    ("sniff_csv", "SELECT * FROM sniff_csv('/etc/passwd')", REFUSED),
    ("read_parquet_part", "SELECT count(*) FROM read_parquet('{part}')", REFUSED),
    ("read_parquet_glob", "SELECT count(*) FROM read_parquet('{corpus}/records/*/*.parquet')", REFUSED),
    ("read_parquet_outside", "SELECT * FROM read_parquet('{outside}')", REFUSED),
    ("read_parquet_dotdot", "SELECT * FROM read_parquet('{corpus}/../outside.parquet')", REFUSED),
    ("read_parquet_deep_dotdot", "SELECT * FROM read_parquet('{rec}/../../../outside.parquet')", REFUSED),
    ("read_parquet_sibling", "SELECT * FROM read_parquet('{corpus}-sibling/s.parquet')", REFUSED),
    ("read_csv_retry_marker", "SELECT * FROM read_csv('{rec}/shard-000001.retry')", REFUSED),
    ("parquet_metadata", "SELECT * FROM parquet_metadata('{part}')", REFUSED),
    ("parquet_schema", "SELECT * FROM parquet_schema('{part}')", REFUSED),
    ("read_duckdb", "SELECT * FROM read_duckdb('{top}/x.duckdb')", REFUSED),
    ("replacement_scan_part", "SELECT * FROM '{part}'", ERROR),
    ("replacement_scan_passwd", "SELECT * FROM '/etc/passwd'", ERROR),
    ("replacement_scan_relative", "FROM 'escape.parquet'", ERROR),
    ("duckdb_secrets", "SELECT * FROM duckdb_secrets()", REFUSED),
    ("which_secret", "SELECT * FROM which_secret('s3://bucket/x', 's3')", REFUSED),
    ("duckdb_extensions", "SELECT * FROM duckdb_extensions()", REFUSED),
    ("getenv", "SELECT getenv('HOME')", ERROR),
    # statements other than SELECT
    ("attach", "ATTACH '{top}/other.duckdb' AS other", REFUSED),
    ("attach_memory", "ATTACH ':memory:' AS m", REFUSED),
    ("detach", "DETACH memory", REFUSED),
    ("install", "INSTALL httpfs", REFUSED),
    ("load", "LOAD httpfs", REFUSED),
    ("load_path", "LOAD '{top}/evil.duckdb_extension'", REFUSED),
    ("set", "SET enable_external_access = true", REFUSED),
    ("set_dirs", "SET allowed_directories = ['/']", REFUSED),
    ("set_variable", "SET VARIABLE x = 1", REFUSED),
    ("reset", "RESET enable_external_access", REFUSED),
    ("pragma", "PRAGMA database_list", REFUSED),
    ("pragma_profiling", "PRAGMA enable_profiling", REFUSED),
    ("call", "CALL pragma_version()", REFUSED),
    ("create_table", "CREATE TABLE t AS SELECT * FROM records", REFUSED),
    ("create_temp_table", "CREATE TEMP TABLE t (a INT)", REFUSED),
    ("create_view", "CREATE VIEW v AS SELECT 1", REFUSED),
    ("replace_view", "CREATE OR REPLACE VIEW records AS SELECT 1 AS n", REFUSED),
    ("create_macro", "CREATE MACRO m(a) AS a", REFUSED),
    ("create_secret", "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')", REFUSED),
    ("create_persistent_secret", "CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')", REFUSED),
    ("insert", "INSERT INTO records SELECT * FROM records", REFUSED),
    ("update", "UPDATE records SET label = 'x'", REFUSED),
    ("delete", "DELETE FROM records", REFUSED),
    ("drop", "DROP VIEW records", REFUSED),
    ("alter", "ALTER VIEW records RENAME TO r", REFUSED),
    ("checkpoint", "CHECKPOINT", REFUSED),
    ("force_checkpoint", "FORCE CHECKPOINT", REFUSED),
    ("vacuum", "VACUUM", REFUSED),
    ("use", "USE memory", REFUSED),
    ("begin", "BEGIN TRANSACTION", REFUSED),
    ("commit", "COMMIT", REFUSED),
    ("prepare", "PREPARE p AS SELECT 1", REFUSED),
    ("execute", "EXECUTE p", REFUSED),
    ("explain", "EXPLAIN SELECT 1", REFUSED),
    ("explain_analyze", "EXPLAIN ANALYZE SELECT * FROM records", REFUSED),
    ("pivot_dynamic", "PIVOT records ON accepted USING count(*)", REFUSED),  # builds an ENUM type first
    ("pragma_external_access", "PRAGMA enable_external_access", REFUSED),
    ("parse_error", "SELEKT nonsense", ERROR),
    ("two_statements", "SELECT 1; SELECT 2", REFUSED),
    ("select_then_copy", "SELECT 1; COPY (SELECT 1) TO '{rec}/x.csv'", REFUSED),
    ("comment_hides_copy", "SELECT 1 -- nothing to see\n; COPY (SELECT 1) TO '{rec}/x.csv'", REFUSED),
    ("block_comment_hides_drop", "SELECT 1 /* ; */ ; DROP VIEW records", REFUSED),
    ("config_function", "SELECT * FROM enable_logging(storage = 'file', storage_path = '{top}/logs')", ERROR),
    # reads that are allowed, harmless
    ("comment_only_text", "/* COPY (SELECT 1) TO 'x' */ SELECT count(*) AS n FROM records", ALLOWED),
    ("current_setting", "SELECT current_setting('enable_external_access') AS v", ALLOWED),
    ("settings_table", "SELECT name, value FROM duckdb_settings() WHERE name LIKE '%directories%'", ALLOWED),
    ("raw_dataset", "SELECT count(*) AS n FROM _records_parts", ALLOWED),
    ("query_function", "FROM query('SELECT count(*) AS n FROM records')", ALLOWED),
    ("checkpoint_function", "SELECT * FROM checkpoint()", ALLOWED),
    ("select", "SELECT count(*) AS n FROM records", ALLOWED),
    ("select_lower_semicolon", "  select count(*) as n from records ;  ", ALLOWED),
    ("with_select", "WITH r AS (SELECT * FROM records) SELECT count(*) AS n FROM r", ALLOWED),
    ("from_first", "FROM records SELECT count(*) AS n", ALLOWED),
    ("aggregate", "SELECT job_id, count(*) AS n, avg(tokens_in) AS t FROM records GROUP BY ALL ORDER BY 1", ALLOWED),
    ("join_jobs", "SELECT j.status, count(*) AS n FROM records r JOIN jobs j USING (job_id) GROUP BY 1", ALLOWED),
    ("describe", "DESCRIBE records", ALLOWED),
    ("summarize", "SUMMARIZE records", ALLOWED),
    ("show_tables", "SHOW TABLES", ALLOWED),
    ("pivot_static", "PIVOT records ON accepted IN (true, false) USING count(*)", ALLOWED),
    ("values", "VALUES (1), (2)", ALLOWED),
]


@pytest.mark.parametrize(("sql", "outcome"), [pytest.param(s, o, id=i) for i, s, o in ATTACKS])
def test_no_query_changes_a_file(site, sql, outcome):
    result = run_untouched(site, site.fill(sql))
    if outcome == ALLOWED:
        assert isinstance(result, catalog.QueryResult), result
    elif outcome == REFUSED:
        assert isinstance(result, QueryRefusedError), result
    else:
        assert isinstance(result, QueryError), result


def test_allowed_reads_see_the_corpus_and_the_locked_settings(site):
    assert query(site.corpus, "SELECT count(*) AS n FROM records").table.to_pylist() == [{"n": 4}]  # no .tmp, .retry
    assert query(site.corpus, "SELECT count(*) AS n FROM _records_parts").table.to_pylist() == [{"n": 4}]
    assert query(site.corpus, "SELECT job_id, n_records FROM jobs").table.to_pylist() == [{"job_id": "job-a",
                                                                                      "n_records": 3}]
    names = {r["column_name"] for r in query(site.corpus, "DESCRIBE records").table.to_pylist()}
    assert {"job_id", "rationale", "created_at"} <= names
    settings_ = {r["name"]: r["value"] for r in query(site.corpus, "SELECT name, value FROM duckdb_settings()")
                 .table.to_pylist()}
    assert settings_["enable_external_access"] == "false" and settings_["lock_configuration"] == "true"
    assert settings_["allowed_directories"] == "[]" and settings_["allowed_paths"] == "[]"
    assert settings_["temp_directory"] == "" and settings_["autoload_known_extensions"] == "false"
    assert settings_["autoinstall_known_extensions"] == "false"


def test_a_connection_for_exports_is_the_same_sandbox(site):
    """`connect` (used by the exports with their own SQL) can open no file either."""
    before = snapshot(site.top)
    con = connect(site.corpus)
    try:
        assert con.execute("SELECT count(*) FROM records").fetchone() == (4,)
        for sql in (f"COPY records TO '{site.corpus}/records/job-a/x.parquet' (FORMAT parquet)",
                    "SELECT * FROM read_csv('/etc/passwd')", "SET enable_external_access = true"):
            with pytest.raises(Exception) as info:
                con.execute(sql)
            assert "root:x" not in str(info.value)
    finally:
        con.close()
    assert snapshot(site.top) == before


def test_refusals_say_why(site):
    with pytest.raises(QueryRefusedError, match="only SELECT queries are allowed, got COPY"):
        query(site.corpus, "COPY (SELECT 1) TO '/tmp/x.csv'")
    with pytest.raises(QueryRefusedError, match="exactly one statement is allowed, got 2"):
        query(site.corpus, "SELECT 1; SELECT 2")
    with pytest.raises(QueryRefusedError, match="Permission"):
        query(site.corpus, "SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(QueryRefusedError, match="Permission") as info:
        query(site.corpus, f"WITH x AS (COPY (SELECT 1) TO '{site.corpus}/records/job-a/e.csv') SELECT 1")
    assert "query refused" in str(info.value)


@pytest.mark.parametrize("relative", [True, False], ids=["relative", "absolute"])
def test_the_sandbox_does_not_read_the_working_directory_tmp_folder(tmp_path, monkeypatch, relative):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".tmp").mkdir()
    secret = tmp_path / ".tmp" / "secret.csv"
    secret.write_text("token\nhunter2\n", encoding="utf-8")
    where = ".tmp/secret.csv" if relative else str(secret)
    with pytest.raises(QueryRefusedError) as info:
        query(tmp_path / "corpus", f"SELECT * FROM read_csv('{where}')")
    assert "hunter2" not in str(info.value)


def test_check_read_only_returns_the_statement():
    assert check_read_only("SELECT 1;  ") == "SELECT 1"
    with pytest.raises(QueryError, match="cannot parse query"):
        check_read_only("SELEC nonsense FROM")


def test_a_broken_query_is_a_query_error_not_a_refusal(site):
    for sql in ("SELECT no_such_column FROM records",
                "SELECT CASE WHEN range > 5000 THEN error('boom') ELSE 1 END FROM range(10000)"):  # while streaming
        with pytest.raises(QueryError) as info:
            query(site.corpus, sql)
        assert type(info.value) is QueryError


# ── the same class, generated: writes wrapped in CTEs, subqueries and statement lists ────────────────────────────
_TARGETS = ["{rec}/h.parquet", "{part}", "{rec}", "{corpus}/jobs/h.parquet", "{corpus}", "{top}/h.csv", "h.csv",
            ":memory:.wal"]
_OPTIONS = ["", " (FORMAT parquet)", " (FORMAT csv, HEADER)", " (FORMAT parquet, OVERWRITE)", " (USE_TMP_FILE false)",
            " (FORMAT parquet, OVERWRITE_OR_IGNORE, PARTITION_BY (job_id))", " (FORMAT json)"]
_SOURCES = ["SELECT * FROM records", "SELECT * FROM jobs", "SELECT 1 AS n", "records", "(FROM records LIMIT 0)"]
_WRITES = [
    "COPY {source} TO '{target}'{options}",
    "INSERT INTO records SELECT * FROM records RETURNING job_id",
    "DELETE FROM records RETURNING job_id",
    "UPDATE jobs SET status = 'x' RETURNING job_id",
    "ATTACH '{target}' AS a",
    "EXPORT DATABASE '{target}'",
    "CREATE TABLE t AS {source}",
]
_WRAPPERS = [
    "{w}",
    "WITH x AS ({w}) SELECT 1",
    "WITH x AS ({w}) SELECT * FROM x",
    "WITH a AS (SELECT 1 AS n), x AS ({w}) SELECT n FROM a",
    "WITH x AS MATERIALIZED ({w}) SELECT 1",
    "WITH RECURSIVE x AS ({w}) SELECT 1",
    "SELECT * FROM (WITH x AS ({w}) SELECT 1) t",
    "SELECT (WITH x AS ({w}) SELECT 1) AS n",
    "SELECT 1 UNION ALL (WITH x AS ({w}) SELECT 2)",
    "SELECT 1 WHERE EXISTS (WITH x AS ({w}) SELECT 1)",
    "SELECT 1; {w}",
    "{w}; SELECT 1",
    "SELECT 1 /* {{ */ ; {w}",
    "SELECT * FROM query('{q}')",
]


def _case(text: str, how: str) -> str:
    """Keywords in another case; `{placeholders}` are left as they are."""
    def one(piece: str) -> str:
        if how == "upper":
            return piece.upper()
        if how == "lower":
            return piece.lower()
        return "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(piece)) if how == "mixed" else piece
    return "".join(p if p.startswith("{") else one(p) for p in re.split(r"(\{[^}]*\})", text))


@pytest.fixture(scope="module")
def shared_site(tmp_path_factory) -> Site:
    return make_site(tmp_path_factory.mktemp("hypothesis-site"))


@settings(max_examples=80, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(write=st.sampled_from(_WRITES), source=st.sampled_from(_SOURCES), target=st.sampled_from(_TARGETS),
       options=st.sampled_from(_OPTIONS), wrapper=st.sampled_from(_WRAPPERS),
       case=st.sampled_from(["as_is", "upper", "lower", "mixed"]))
def test_generated_writes_in_any_position_change_no_file(shared_site, monkeypatch, write, source, target, options,
                                                         wrapper, case):
    monkeypatch.chdir(shared_site.cwd)
    # keywords in any case; paths keep theirs (another path is no test of the sandbox)
    statement = _case(write, case).format(source=_case(source, case), target=target, options=_case(options, case))
    statement = shared_site.fill(statement)
    sql = _case(wrapper, case).format(w=statement, q=statement.replace("'", "''"))
    outcome = run_untouched(shared_site, sql)
    if isinstance(outcome, catalog.QueryResult):  # only a harmless SELECT may succeed
        assert outcome.table.num_rows <= 1, sql
    assert query(shared_site.corpus, "SELECT count(*) AS n FROM records").table.to_pylist() == [{"n": 4}]


# ── the shared database follows the part files ───────────────────────────────────────────────────────────────────
def _ids(corpus: Path) -> list[str]:
    return query(corpus, "SELECT example_id FROM records ORDER BY 1").table.column("example_id").to_pylist()


def test_a_part_file_added_replaced_or_removed_is_seen_by_the_next_query(tmp_path):
    corpus = tmp_path / "corpus"
    first = corpus / "records" / "job-a" / "shard-000000.parquet"
    write_records([record("e1"), record("e2")], first)
    assert _ids(corpus) == ["e1", "e2"]
    write_records([record("e3")], corpus / "records" / "job-a" / "shard-000001.parquet")  # added
    assert _ids(corpus) == ["e1", "e2", "e3"]
    write_records([record("r1"), record("r2")], first)  # atomically replaced at once, same size
    assert _ids(corpus) == ["e3", "r1", "r2"]
    write_records([record("n1")], corpus / "records" / "job-new" / "shard-000000.parquet")  # a new job folder
    assert _ids(corpus) == ["e3", "n1", "r1", "r2"]
    first.unlink()  # removed
    assert _ids(corpus) == ["e3", "n1"]


def test_a_replacement_within_the_same_clock_tick_is_seen(tmp_path, monkeypatch):
    """File times have the kernel clock's granularity: a folder changed twice within one tick keeps its mtime.
    Such a folder is listed again (inode, size, mtime of each file) until its mtime is old enough to trust."""
    monkeypatch.setattr(catalog, "_RACY_NS", 600 * 10**9)  # "recent", however slow this machine is today
    corpus = tmp_path / "corpus"
    part = corpus / "records" / "job-a" / "shard-000000.parquet"
    write_records([record("e1")], part)
    folder = part.parent
    stamp = folder.stat().st_mtime_ns
    assert _ids(corpus) == ["e1"]
    write_records([record("z1")], part)
    os.utime(folder, ns=(stamp, stamp))  # as if within the same tick
    os.utime(part, ns=(stamp, stamp))
    assert _ids(corpus) == ["z1"]


def test_a_part_file_removed_as_a_query_starts_makes_it_run_once_more(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    write_records([record("e1")], corpus / "records" / "job-a" / "shard-000000.parquet")
    doomed = corpus / "records" / "job-a" / "shard-000001.parquet"
    write_records([record("e2")], doomed)
    assert _ids(corpus) == ["e1", "e2"]
    real, calls = catalog._cursor, []

    def cursor_then_remove(where):  # the file goes between the listing and the read
        got = real(where)
        if not calls:
            doomed.unlink()
        calls.append(where)
        return got

    monkeypatch.setattr(catalog, "_cursor", cursor_then_remove)
    assert _ids(corpus) == ["e1"] and len(calls) == 2


def test_nothing_changed_reuses_the_database_and_other_files_do_not_rebuild_it(tmp_path):
    corpus = tmp_path / "corpus"
    write_records([record("e1")], corpus / "records" / "job-a" / "shard-000000.parquet")
    JobRegistry(corpus).save(JobState(job_id="job-a", status="running", fingerprint="f", spec_json="{}",
                                      created_at=WHEN, updated_at=WHEN))
    assert _ids(corpus) == ["e1"]
    database = catalog._SHARED[str(corpus.absolute())][1]
    assert _ids(corpus) == ["e1"]
    assert catalog._SHARED[str(corpus.absolute())][1] is database
    # what a running job writes beside its part files: markers, temp files, heartbeats, logs
    (corpus / "records" / "job-a" / "shard-000001.retry").touch()
    (corpus / "records" / "job-a" / ".shard-000002.parquet.0badf00d.tmp").write_bytes(b"not parquet")
    (corpus / "jobs" / "job-a.heartbeat.json").write_text("{}", encoding="utf-8")
    (corpus / "jobs" / "job-a.log").write_text("log line\n", encoding="utf-8")
    assert _ids(corpus) == ["e1"]
    assert catalog._SHARED[str(corpus.absolute())][1] is database
    write_records([record("e2")], corpus / "records" / "job-a" / "shard-000001.parquet")
    assert _ids(corpus) == ["e1", "e2"]
    assert catalog._SHARED[str(corpus.absolute())][1] is not database


def test_a_filter_on_job_id_reads_only_that_jobs_files(tmp_path):
    """Part files sit in records/<job_id>/: a query for one job opens no other job's file (here another job's
    file is unreadable, and the query still answers)."""
    corpus = tmp_path / "corpus"
    write_records([record("a1"), record("a2")], corpus / "records" / "job-a" / "shard-000000.parquet")
    write_records([record("b1", job_id="job-b")], corpus / "records" / "job-b" / "shard-000000.parquet")
    (corpus / "records" / "job-b" / "shard-000001.parquet").write_bytes(b"not a parquet file")
    sql = "SELECT example_id FROM records WHERE job_id = 'job-a' ORDER BY 1"
    assert query(corpus, sql).table.column(0).to_pylist() == ["a1", "a2"]
    with pytest.raises(QueryError):
        query(corpus, "SELECT count(*) FROM records")


# ── bounded results ──────────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("max_rows", "expected", "truncated"), [(1, 1, True), (7, 7, True), (25, 25, False),
                                                                  (100, 25, False), (100_000, 25, False)])
def test_row_cap(site, max_rows, expected, truncated):
    result = query(site.corpus, "SELECT * FROM range(25) t(i)", max_rows=max_rows)
    assert result.table.column("i").to_pylist() == list(range(expected))
    assert (result.truncated, result.reason) == (truncated, "rows" if truncated else None)


def test_byte_cap_keeps_the_longest_prefix_that_fits(site):
    sql = "SELECT i, repeat('x', 1000) AS s FROM range(5000) t(i)"
    whole = query(site.corpus, sql)
    assert (whole.truncated, whole.reason, whole.table.num_rows) == (False, None, 5000)
    cap = 100_000
    result = query(site.corpus, sql, max_bytes=cap)
    assert (result.truncated, result.reason) == (True, "bytes")
    n = result.table.num_rows
    assert result.table.nbytes <= cap < whole.table.slice(0, n + 1).nbytes
    assert result.table.column("i").to_pylist() == list(range(n))
    exact = query(site.corpus, sql, max_bytes=whole.table.nbytes)  # just enough: whole
    assert (exact.truncated, exact.table.num_rows) == (False, 5000)
    first = query(site.corpus, sql, max_rows=10, max_bytes=cap)  # the row cap comes first
    assert (first.truncated, first.reason, first.table.num_rows) == (True, "rows", 10)
    none = query(site.corpus, sql, max_bytes=10)  # not even one row fits
    assert (none.truncated, none.reason, none.table.num_rows) == (True, "bytes", 0)
    assert none.table.column_names == ["i", "s"]


_WIDE = """
import resource, sys, time
sys.path.insert(0, {root!r})
from stepwise.storage.catalog import query
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.monotonic()
result = query({corpus!r}, "SELECT repeat('x', 100000) AS s FROM range(100000)", max_bytes=32 << 20,
               max_rows=1_000_000)
print(result.truncated, result.reason, result.table.num_rows, result.table.nbytes, time.monotonic() - t0,
      (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start) * 1024)
"""


def test_a_huge_result_stops_at_the_byte_cap_quickly_in_bounded_memory(site):
    """100,000 rows of 100 kB (10 GB whole) stop at 32 MiB; the process grows by a small part of that (a
    streamed batch is one DuckDB vector of 2,048 rows, 200 MB here), in a fresh process so its peak is its own."""
    script = _WIDE.format(root=str(ROOT), corpus=str(site.corpus))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    truncated, reason, rows, nbytes, seconds, grew = proc.stdout.split()
    assert (truncated, reason) == ("True", "bytes")
    assert 0 < int(rows) <= 336 and int(nbytes) <= 32 << 20
    assert float(seconds) < 20
    assert int(grew) < 1 << 30, f"grew by {int(grew) / 2**20:.0f} MiB for a 10 GB result capped at 32 MiB"


def test_query_to_parquet_writes_row_groups_and_stops_at_either_cap(site, tmp_path):
    path = tmp_path / "out.parquet"
    written = query_to_parquet(site.corpus, "SELECT * FROM range(200000) t(i)", path)
    assert (written.rows, written.truncated, written.reason) == (200_000, False, None)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == 200_000 and meta.num_row_groups <= 4  # not one group per streamed batch
    written = query_to_parquet(site.corpus, "SELECT * FROM range(200000) t(i)", path, max_rows=1000)
    assert (written.rows, written.truncated, written.reason) == (1000, True, "rows")
    assert pq.read_table(path).column("i").to_pylist() == list(range(1000))
    written = query_to_parquet(site.corpus, "SELECT repeat('x', 1000) AS s FROM range(100000)", path,
                               max_bytes=1 << 20)
    assert (written.truncated, written.reason) == (True, "bytes") and written.nbytes <= 1 << 20
    assert pq.ParquetFile(path).metadata.num_rows == written.rows > 500


# ── timeouts ─────────────────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM range(1000000000) a, range(1000000000) b WHERE a.range + b.range = -1",  # one answer
    "SELECT range FROM range(100000000000) WHERE hash(range) = 42",  # streamed
])
def test_a_slow_query_times_out(site, sql):
    started = time.monotonic()
    with pytest.raises(QueryError, match=r"longer than 0.5 s") as info:
        query(site.corpus, sql, timeout_s=0.5)
    assert type(info.value) is QueryError
    assert time.monotonic() - started < 15
    assert query(site.corpus, "SELECT count(*) AS n FROM records").table.to_pylist() == [{"n": 4}]  # unaffected


def test_a_slow_download_times_out(site, tmp_path):
    with pytest.raises(QueryError, match=r"longer than 0.5 s"):
        query_to_parquet(site.corpus, "SELECT range FROM range(100000000000) WHERE hash(range) = 42",
                         tmp_path / "out.parquet", timeout_s=0.5)


def test_duckdb_memory_is_limited(site):
    """Without a spill folder, work past `MEMORY_LIMIT` fails instead of taking the server's memory."""
    with pytest.raises(QueryError, match="Out of Memory"):
        query(site.corpus, "SELECT list(range) FROM range(500000000)")
