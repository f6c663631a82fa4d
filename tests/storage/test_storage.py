"""Storage: the one Arrow schema, atomic part files (proved with a SIGKILL), the job registry, the views
(the query sandbox: test_query_sandbox.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepwise.pipeline.errors import QueryError, StorageError
from stepwise.pipeline.types import RationaleRecord
from stepwise.storage.catalog import connect, query
from stepwise.storage.jobs import JobRegistry, JobState
from stepwise.storage.parquet import records_to_table, remove_stale_temp_files, write_records, write_table_atomic
from stepwise.storage.schema import JOBS_SCHEMA, RECORDS_SCHEMA, SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[2]
WHEN = datetime(2024, 5, 17, 9, 30, 0, 123456, tzinfo=UTC)


def record(example_id: str, sample_idx: int = 0, *, job_id: str = "job-a", accepted: bool = True,
           **kw) -> RationaleRecord:
    base = dict(
        job_id=job_id, example_id=example_id, sample_idx=sample_idx, task="arithmetic",
        input=f"Question {example_id}: how many pebbles are in two piles of three?", gold_label="6", label="6",
        rationale="Two piles of three pebbles make 2 * 3 = 6 pebbles.", correct=True, accepted=accepted,
        reject_reason=None if accepted else "incorrect", reject_detail=None, consensus_label="6", agreement=1.0,
        prompt_id="few_shot_cot", prompt_hash="0123456789abcdef", teacher_backend="replay", teacher_model="replay",
        request_key="k" * 64, finish_reason="stop", tokens_in=120, tokens_out=30, cost_usd=None, latency_s=0.25,
        completion="Two piles of three pebbles make 2 * 3 = 6 pebbles. So the answer is 6.", created_at=WHEN,
    )
    base.update(kw)
    return RationaleRecord(**base)


# ── the one schema ───────────────────────────────────────────────────────────────────────────────────────────────
def test_records_to_table_uses_exactly_the_records_schema():
    table = records_to_table([record("e1"), record("e2", 1, accepted=False, correct=None, tokens_in=None)])
    assert table.schema.equals(RECORDS_SCHEMA, check_metadata=True)
    assert table.schema.metadata == {b"stepwise.schema_version": SCHEMA_VERSION.encode()}
    assert table.num_rows == 2
    assert table.column("sample_idx").type == pa.int32()
    assert table.column("agreement").type == pa.float32()
    assert table.column("created_at").type == pa.timestamp("us", tz="UTC")
    assert table.column("correct").to_pylist() == [True, None]
    assert table.column("tokens_in").to_pylist() == [120, None]
    assert table.column("reject_reason").to_pylist() == [None, "incorrect"]


def test_an_empty_batch_still_has_the_schema():
    table = records_to_table([])
    assert table.num_rows == 0 and table.schema.equals(RECORDS_SCHEMA, check_metadata=True)


def test_a_record_of_the_wrong_type_is_refused_not_inferred():
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        records_to_table([record("e1", sample_idx="zero")])  # type: ignore[arg-type]


def test_write_records_roundtrip_keeps_schema_and_values(tmp_path):
    path = tmp_path / "records" / "job-a" / "shard-000000.parquet"
    records = [record("e1"), record("e2", 3, label="7", correct=False, accepted=False)]
    write_records(records, path)
    back = pq.read_table(path)
    assert back.schema.equals(RECORDS_SCHEMA, check_metadata=False)
    assert back.schema.metadata[b"stepwise.schema_version"] == SCHEMA_VERSION.encode()
    assert [RationaleRecord(**row) for row in back.to_pylist()] == records
    assert [p.name for p in path.parent.iterdir()] == ["shard-000000.parquet"]  # no temp file left behind


# ── atomic writes: a writer killed mid-file leaves no part file ──────────────────────────────────────────────────
_SLOW_WRITER = r"""
import os, sys
from datetime import UTC, datetime
from pathlib import Path
import pyarrow as pa
from stepwise.storage.parquet import write_table_atomic
from stepwise.storage.schema import DICTIONARY_COLUMNS, RECORDS_SCHEMA

n = int(sys.argv[2])
blob = os.urandom(n * 150).hex()  # incompressible text, so writing takes a while
offsets = pa.array(range(0, n * 300 + 1, 300), pa.int32())
columns = []
for f in RECORDS_SCHEMA:
    if f.name == "completion":
        columns.append(pa.StringArray.from_buffers(n, offsets.buffers()[1], pa.py_buffer(blob.encode())))
    elif f.name == "example_id":
        columns.append(pa.array([f"e{i}" for i in range(n)], f.type))
    elif f.name == "created_at":
        columns.append(pa.repeat(pa.scalar(datetime(2024, 1, 1, tzinfo=UTC), f.type), n))
    elif f.type == pa.string():
        columns.append(pa.repeat(pa.scalar("big-job"), n))
    elif f.type == pa.bool_():
        columns.append(pa.repeat(pa.scalar(True), n))
    else:
        columns.append(pa.repeat(pa.scalar(1, f.type), n))
table = pa.Table.from_arrays(columns, schema=RECORDS_SCHEMA)
print("ready", flush=True)
write_table_atomic(table, Path(sys.argv[1]), dictionary=DICTIONARY_COLUMNS)
print("done", flush=True)
"""


def test_a_writer_killed_mid_write_leaves_no_part_file(tmp_path):
    root = tmp_path / "corpus"
    folder = root / "records" / "big-job"
    write_records([record("e1", job_id="big-job"), record("e2", job_id="big-job")], folder / "shard-000000.parquet")
    final = folder / "shard-000001.parquet"

    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(final), "600000"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        temps: list[Path] = []
        while time.monotonic() < deadline and proc.poll() is None:
            temps = [p for p in folder.glob(".*.tmp") if p.stat().st_size > 0]
            if temps:
                break
            time.sleep(0.001)
        assert temps, f"the writer never started a temp file: {proc.communicate()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = proc.stdout.read().decode()
    assert proc.returncode == -signal.SIGKILL
    assert "done" not in out, "the write finished before the kill: make the table bigger"

    assert not final.exists()
    (tmp,) = folder.glob(".*.tmp")
    assert tmp.name.startswith(".shard-000001.parquet.") and tmp.stat().st_size > 0
    # the views read only whole part files: the half-written temp file is invisible
    counts = query(root, "SELECT job_id, count(*) AS n FROM records GROUP BY job_id").table
    assert counts.to_pylist() == [{"job_id": "big-job", "n": 2}]
    assert query(root, "SELECT example_id FROM records ORDER BY 1").table.column(0).to_pylist() == ["e1", "e2"]

    assert remove_stale_temp_files(folder) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["shard-000000.parquet"]
    assert remove_stale_temp_files(folder) == 0
    assert remove_stale_temp_files(tmp_path / "no-such-folder") == 0


def test_a_failed_write_removes_its_temp_file_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "part.parquet"
    write_table_atomic(pa.table({"x": [1, 2]}), path)
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "part.parquet").mkdir()  # os.replace onto a folder fails
    with pytest.raises(StorageError, match="cannot write"):
        write_table_atomic(pa.table({"x": [3]}), blocked / "part.parquet")
    assert [p.name for p in blocked.iterdir()] == ["part.parquet"]
    assert pq.read_table(path).column("x").to_pylist() == [1, 2]


def test_remove_stale_temp_files_leaves_other_files(tmp_path):
    (tmp_path / ".shard-000000.parquet.1a2b3c4d.tmp").write_bytes(b"half")
    (tmp_path / ".shard-000001.parquet.ffffffff.tmp").write_bytes(b"")
    (tmp_path / "shard-000000.parquet").write_bytes(b"whole")
    (tmp_path / "notes.tmp").write_bytes(b"not hidden, not ours")
    assert remove_stale_temp_files(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.tmp", "shard-000000.parquet"]


# ── job registry ─────────────────────────────────────────────────────────────────────────────────────────────────
def test_job_registry_roundtrip(tmp_path):
    registry = JobRegistry(tmp_path)
    assert registry.get("nightly-1") is None
    state = JobState(job_id="nightly-1", status="running", fingerprint="f" * 64, spec_json='{"shard_size": 2}',
                     task="arithmetic", prompt_id="few_shot_cot", prompt_hash="abc", teacher_backend="replay",
                     teacher_model="replay", n_shards=3, n_examples=5, created_at=WHEN, updated_at=WHEN)
    saved = registry.save(state)
    assert saved.updated_at > WHEN and saved == replace(state, updated_at=saved.updated_at)
    assert registry.get("nightly-1") == saved
    assert (tmp_path / "jobs" / "nightly-1.parquet").is_file()
    assert not list((tmp_path / "jobs").glob(".*.tmp"))

    done = registry.save(replace(saved, status="completed", shards_done=3, n_records=10, error=None))
    got = registry.get("nightly-1")
    assert got == done and got.status == "completed" and got.shards_done == 3 and got.created_at == WHEN
    rows = query(tmp_path, "SELECT job_id, status, n_records, created_at FROM jobs").table.to_pylist()
    assert rows == [{"job_id": "nightly-1", "status": "completed", "n_records": 10, "created_at": WHEN}]


@pytest.mark.parametrize("job_id", ["", "../escape", "a/b", "-x", "a b", "x" * 129])
def test_job_registry_refuses_unsafe_ids(tmp_path, job_id):
    with pytest.raises(StorageError, match="must be 1-128"):
        JobRegistry(tmp_path).get(job_id)


def test_a_corrupt_registry_row_is_a_storage_error(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(StorageError, match="cannot read job registry row"):
        JobRegistry(tmp_path).get("bad")


# ── views ────────────────────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("layout", ["missing_root", "empty_root", "empty_folders"])
def test_views_exist_on_an_empty_corpus(tmp_path, layout):
    root = tmp_path / "corpus"
    if layout != "missing_root":
        root.mkdir()
    if layout == "empty_folders":
        (root / "records" / "some-job").mkdir(parents=True)
        (root / "jobs").mkdir()
    con = connect(root)
    try:
        for view, schema in (("records", RECORDS_SCHEMA), ("jobs", JOBS_SCHEMA)):
            described = con.execute(f"DESCRIBE {view}").fetchall()
            assert [row[0] for row in described] == schema.names
            assert con.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)
    finally:
        con.close()
    table = query(root, "SELECT * FROM records").table
    assert table.column_names == RECORDS_SCHEMA.names and table.num_rows == 0
    table = query(root, "SELECT * FROM jobs").table
    assert table.column_names == JOBS_SCHEMA.names and table.num_rows == 0
    assert not (layout == "missing_root" and root.exists())  # reading never creates the corpus


def test_queries_see_parts_and_jobs_written_after_the_first_query(tmp_path):
    """`query` keeps one database per corpus: it must still see what is written after it was built."""
    count = "SELECT (SELECT count(*) FROM records) AS records, (SELECT count(*) FROM jobs) AS jobs"
    assert query(tmp_path, count).table.to_pylist() == [{"records": 0, "jobs": 0}]  # built with empty views
    write_records([record("e1")], tmp_path / "records" / "job-a" / "shard-000000.parquet")
    assert query(tmp_path, count).table.to_pylist() == [{"records": 1, "jobs": 0}]
    JobRegistry(tmp_path).save(JobState(job_id="job-a", status="running", fingerprint="f", spec_json="{}",
                                        created_at=WHEN, updated_at=WHEN))
    write_records([record("e2"), record("e3")], tmp_path / "records" / "job-a" / "shard-000001.parquet")
    assert query(tmp_path, count).table.to_pylist() == [{"records": 3, "jobs": 1}]
    # a part file replaced (an --overwrite) is read anew, not from a cache
    write_records([record("z1", rationale="replaced")], tmp_path / "records" / "job-a" / "shard-000000.parquet")
    assert query(tmp_path, "SELECT example_id FROM records ORDER BY 1").table.column("example_id").to_pylist() == \
        ["e2", "e3", "z1"]


def test_concurrent_queries_each_get_their_answer_and_a_timeout_stops_only_its_own(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    write_records([record(f"e{i}") for i in range(50)], tmp_path / "records" / "job-a" / "shard-000000.parquet")

    def one(i: int):
        if i % 8 == 0:  # a query far too slow for its timeout, among quick ones
            with pytest.raises(QueryError, match="longer than"):
                query(tmp_path, "SELECT count(*) FROM range(100000000000) a", timeout_s=0.2)
            return None
        return query(tmp_path, f"SELECT count(*) AS n FROM records WHERE example_id <> 'e{i % 50}'").table.column("n")[0]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(40)))
    assert [a.as_py() for a in answers if a is not None] == [49] * 35


def test_the_registry_reads_a_row_again_only_when_it_was_rewritten(tmp_path):
    registry = JobRegistry(tmp_path)
    state = registry.save(JobState(job_id="j", status="running", fingerprint="f", spec_json="{}",
                                   created_at=WHEN, updated_at=WHEN))
    assert registry.get("j") == state and registry.get("j") is registry.get("j")  # the second read is cached
    other = JobRegistry(tmp_path)  # another process, in effect
    for status in ("cancelled", "running", "completed"):
        saved = other.save(replace(state, status=status))
        assert registry.get("j") == saved
    (tmp_path / "jobs" / "j.parquet").unlink()
    assert registry.get("j") is None


def test_records_view_types_and_rows(tmp_path):
    write_records([record("e1"), record("e2", 1, correct=False, accepted=False)],
                  tmp_path / "records" / "job-a" / "shard-000000.parquet")
    write_records([record("x9", job_id="job-b")], tmp_path / "records" / "job-b" / "shard-000000.parquet")
    table = query(tmp_path, "SELECT * FROM records ORDER BY job_id, example_id").table
    assert table.column_names == RECORDS_SCHEMA.names
    assert [(r["job_id"], r["example_id"], r["accepted"]) for r in table.to_pylist()] == [
        ("job-a", "e1", True), ("job-a", "e2", False), ("job-b", "x9", True)]
    created = table.schema.field("created_at").type
    assert (created.unit, created.tz) == ("us", "Etc/UTC")  # DuckDB names UTC by its zone id
    assert table.column("created_at").to_pylist()[0] == WHEN


# The query sandbox (refusals, caps, timeouts, a corpus left byte-identical): tests/storage/test_query_sandbox.py


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("tz", [None, "UTC", "Europe/Paris", "+05:30"])
def test_read_rows_converts_timestamps_as_pyarrow_does(tmp_path, unit, tz):
    """`read_rows` converts timestamps itself (pyarrow's conversion imports pandas); it must agree with pyarrow."""
    from stepwise.storage.location import CorpusLocation

    moments = [0, 1_700_000_000, -86_400 * 400, None, 1_234_567_890]
    scale = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
    values = [None if m is None else m * scale + (scale // 1000) * 7 for m in moments]
    schema = pa.schema([("at", pa.timestamp(unit, tz=tz)), ("n", pa.int64()), ("missing", pa.string())])
    table = pa.table({"at": pa.array(values, pa.timestamp(unit, tz=tz)), "n": list(range(5))})
    pq.write_table(table, tmp_path / "t.parquet")
    got = CorpusLocation(tmp_path).read_rows("t.parquet", schema=schema)
    assert [r["at"] for r in got] == table.column("at").to_pylist()
    assert [r["n"] for r in got] == list(range(5)) and all(r["missing"] is None for r in got)


def test_the_record_and_registry_dataclasses_list_their_schemas_columns():
    """RationaleRecord and JobState are written column by column against RECORDS_SCHEMA and JOBS_SCHEMA (checked
    here rather than at import, so that importing the storage layer does not import pyarrow)."""
    from dataclasses import fields

    from stepwise.storage.parquet import _RECORD_FIELDS

    assert _RECORD_FIELDS == [f.name for f in fields(RationaleRecord)] == RECORDS_SCHEMA.names
    assert [f.name for f in fields(JobState)] == JOBS_SCHEMA.names
