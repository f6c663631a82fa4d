"""Records pages on a local corpus: DuckDB's own Parquet reader over one job's part files, locked to that job's
folder; older part files without the newer columns; the page cache following the files."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from stepwise.pipeline.errors import QueryError, StorageError
from stepwise.storage.catalog import query
from stepwise.storage.pages import RecordFilter, _JobFiles, example_records, record_page
from stepwise.storage.parquet import records_to_table, write_records
from tests.storage.test_storage import record

NEW_COLUMNS = ["reasoning", "reasoning_tokens", "trace_label", "gold_rationale"]  # added by schema 3


def shard(root: Path, job: str, index: int, records) -> Path:
    path = root / "records" / job / f"shard-{index:06d}.parquet"
    write_records(records, path)
    return path


def old_shard(root: Path, job: str, index: int, records) -> Path:
    """A part file as an older stepwise wrote it: without the reasoning columns."""
    path = root / "records" / job / f"shard-{index:06d}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(records_to_table(records).drop_columns(NEW_COLUMNS), path)
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    root = tmp_path / "corpus"
    old_shard(root, "job-a", 0, [record(f"e{i}", k) for i in range(3) for k in range(2)])
    shard(root, "job-a", 1, [record(f"e{i}", k, reasoning="Hmm. " * (i + 1), reasoning_tokens=5 * i,
                                    accepted=i != 4) for i in range(3, 6) for k in range(2)])
    shard(root, "job-b", 0, [record("secret", job_id="job-b", rationale="not job a's")])
    return root


def keys(rows) -> list[tuple[str, int]]:
    return [(r["example_id"], r["sample_idx"]) for r in rows]


def test_old_and_new_part_files_read_together_the_old_columns_null(corpus):
    page = record_page(corpus, "job-a", limit=100)
    assert page.total == 12 and keys(page.rows) == [(f"e{i}", k) for i in range(6) for k in range(2)]
    assert all(r[c] is None for r in page.rows[:6] for c in NEW_COLUMNS)
    assert [r["reasoning_tokens"] for r in page.rows[6:]] == [15, 15, 20, 20, 25, 25]
    by_trace = record_page(corpus, "job-a", sort="reasoning_chars", order="desc", limit=4, brief=True)
    assert keys(by_trace.rows) == [("e5", 0), ("e5", 1), ("e4", 0), ("e4", 1)]
    assert by_trace.rows[0]["reasoning_chars"] == len("Hmm. " * 6)
    # the same rows as the sandboxed views give
    views = query(corpus, "SELECT * FROM records WHERE job_id = 'job-a' ORDER BY example_id, sample_idx")
    assert record_page(corpus, "job-a", sort="example_id", limit=100).rows == views.table.to_pylist()


def test_a_job_whose_files_all_lack_a_column_still_pages_and_filters(tmp_path):
    root = tmp_path / "corpus"
    old_shard(root, "old", 0, [record("e1", job_id="old"), record("e2", job_id="old", accepted=False)])
    page = record_page(root, "old", RecordFilter(accepted=False, q="pebbles"), sort="reasoning_chars", brief=True)
    assert keys(page.rows) == [("e2", 0)] and page.rows[0]["reasoning"] is None and page.total == 1
    assert [r["sample_idx"] for r in example_records(root, "old", "e1")] == [0]


def test_pages_see_a_new_part_file_and_a_replaced_one(corpus):
    assert record_page(corpus, "job-a").total == 12
    shard(corpus, "job-a", 2, [record("e9")])
    assert record_page(corpus, "job-a").total == 13
    shard(corpus, "job-a", 2, [record("e9"), record("e9", 1)])  # rewritten (a rerun's shard)
    assert keys(record_page(corpus, "job-a", offset=12).rows) == [("e9", 0), ("e9", 1)]
    assert record_page(corpus, "nobody").rows == [] and example_records(corpus, "nobody", "e1") == []


def test_an_example_reads_its_records_across_part_files(corpus):
    shard(corpus, "job-a", 2, [record("e1", 2, rationale="a third sample, later")])
    found = example_records(corpus, "job-a", "e1")
    assert [r["sample_idx"] for r in found] == [0, 1, 2] and found[2]["rationale"] == "a third sample, later"
    assert example_records(corpus, "job-a", "secret") == []  # another job's example is not this job's


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_parquet('{other}')",
    "SELECT * FROM read_parquet('{folder}/../job-b/shard-000000.parquet')",
    "SELECT * FROM glob('/*')",
    "COPY (SELECT 1) TO '{folder}/shard-000009.parquet'",
    "COPY (SELECT 1) TO '/tmp/stepwise-pages-leak.csv'",
    "ATTACH '{folder}/x.duckdb' AS x",
    "SET enable_external_access = true",
    "SET allowed_directories = ['/']",
    "RESET lock_configuration",
    "INSTALL httpfs",
    "LOAD httpfs",
])
def test_the_reader_can_open_nothing_but_its_own_job_folder_and_runs_only_a_select(corpus, sql):
    """The reader never runs a caller's SQL (values are bound parameters); still, what it runs must be one SELECT,
    and DuckDB itself refuses any file outside the job's folder and any change to its settings."""
    files = _JobFiles.of(corpus, "job-a")
    folder = os.path.realpath(corpus / "records" / "job-a")
    other = os.path.realpath(corpus / "records" / "job-b" / "shard-000000.parquet")
    before = sorted(os.listdir(folder))
    with pytest.raises(QueryError):
        files.run(sql.format(folder=folder, other=other), [])
    if not sql.startswith(("COPY", "ATTACH", "SET", "RESET", "INSTALL", "LOAD")):  # the engine's own refusal too
        with pytest.raises(duckdb.PermissionException):
            files.con.cursor().execute(sql.format(folder=folder, other=other)).fetchall()
    assert sorted(os.listdir(folder)) == before and not Path("/tmp/stepwise-pages-leak.csv").exists()
    assert record_page(corpus, "job-a").total == 12  # still locked and working


def test_a_part_file_that_resolves_outside_its_job_folder_is_refused(corpus, tmp_path):
    outside = tmp_path / "elsewhere.parquet"
    write_records([record("planted")], outside)
    (corpus / "records" / "job-a" / "shard-000007.parquet").symlink_to(outside)
    with pytest.raises(StorageError, match="resolves outside its job folder"):
        record_page(corpus, "job-a")


@pytest.mark.parametrize("job_id", ["..", "../records", "job-a/../job-b", "/etc", ""])
def test_a_job_id_that_is_no_job_id_never_becomes_a_folder(corpus, job_id):
    with pytest.raises(StorageError, match="job id"):
        record_page(corpus, job_id)
