"""A corpus on an object store: a REAL S3-compatible server (moto) on loopback, read and written through
pyarrow's S3 filesystem. The same job, queries and exports give the same results as on a local folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepwise.storage.layout import request_cache as cache_path
from stepwise.pipeline.errors import JobConflictError, StorageError
from stepwise.pipeline.exports import FORMATS, export_job
from stepwise.pipeline.run.heartbeat import read_heartbeat
from stepwise.pipeline.run.job import run_job
from stepwise.pipeline.spec import load_job
from stepwise.storage.catalog import query
from stepwise.storage.jobs import JobRegistry
from stepwise.storage.location import CorpusLocation
from tests.conftest import stepwise
from tests.pipeline.test_runner import make_job

COLUMNS = "example_id, sample_idx, label, rationale, accepted, reject_reason, completion, tokens_in, created_at"


def records(root, job_id: str = "kill-test") -> list[dict]:
    return query(root, f"SELECT {COLUMNS} FROM records WHERE job_id = '{job_id}' "
                       f"ORDER BY example_id, sample_idx").table.to_pylist()


def without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "created_at"} for r in rows]


def shards(n: int, job_id: str = "kill-test") -> list[str]:
    return [f"corpus/records/{job_id}/shard-{i:06d}.parquet" for i in range(n)]


def test_a_job_on_s3_gives_the_records_of_a_local_run_and_a_rerun_skips_every_shard(s3, tmp_path):
    job = make_job(tmp_path, 250, samples=2, shard_size=100)
    local = run_job(load_job(job), tmp_path / "local")
    assert query(s3.uri(), "SELECT count(*) AS n FROM records").table.to_pylist() == [{"n": 0}]  # before: empty views
    remote = run_job(load_job(job), s3.uri())
    assert (remote.status, remote.shards_run, remote.n_records) == ("completed", 3, 500)
    assert (remote.n_accepted, remote.tokens_in, remote.reject_reasons) == \
        (local.n_accepted, local.tokens_in, local.reject_reasons)
    assert without_time(records(s3.uri())) == without_time(records(tmp_path / "local"))
    # part files under their final keys (no temp keys), the registry row and the heartbeat, and no request cache
    assert s3.keys() == ["corpus/jobs/kill-test.parquet", "corpus/jobs/kill-test.progress.json", *shards(3)]
    beat = read_heartbeat(CorpusLocation.of(s3.uri()), "kill-test")
    assert beat.finished and (beat.shards_done, beat.records) == (3, 500)
    state = JobRegistry(s3.uri()).get("kill-test")
    assert (state.status, state.shards_done, state.n_records) == ("completed", 3, 500)

    first = records(s3.uri())
    again = run_job(load_job(job), s3.uri())
    assert (again.status, again.shards_run, again.shards_skipped, again.n_records) == ("completed", 0, 3, 500)
    assert records(s3.uri()) == first  # nothing rewritten: created_at is still the first run's
    assert query(s3.uri(), "SELECT status, n_records FROM jobs").table.to_pylist() == \
        [{"status": "completed", "n_records": 500}]


def test_overwrite_replaces_the_records_on_s3_and_a_changed_spec_conflicts_without_it(s3, tmp_path):
    run_job(load_job(make_job(tmp_path, 250, shard_size=100)), s3.uri())
    changed = load_job(make_job(tmp_path, 250, shard_size=50))
    with pytest.raises(JobConflictError, match="different spec"):
        run_job(changed, s3.uri())
    summary = run_job(changed, s3.uri(), overwrite=True)
    assert (summary.shards_run, summary.n_records) == (5, 250)
    assert s3.keys("corpus/records") == shards(5)
    assert query(s3.uri(), "SELECT count(*) AS n FROM records").table.to_pylist() == [{"n": 250}]


def test_the_cli_runs_and_queries_an_s3_corpus_and_the_sandbox_still_refuses_files(s3, tmp_path):
    job = make_job(tmp_path, 120, shard_size=50)
    uri = s3.uri()
    stepwise("run", str(job), "--corpus", uri, "--quiet", cwd=tmp_path, check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["completions.jsonl", "data.jsonl", "job.yaml"], \
        "nothing local: the URI was never turned into a path"
    out = stepwise("query", "--corpus", uri, "--format", "json",
                   "SELECT count(*) AS n, count(DISTINCT example_id) AS examples FROM records", check=True)
    assert json.loads(out.stdout) == [{"n": 120, "examples": 120}]
    out = stepwise("query", "--corpus", uri, "--format", "json", "SELECT job_id, status FROM jobs", check=True)
    assert json.loads(out.stdout) == [{"job_id": "kill-test", "status": "completed"}]

    refused = {
        "SELECT * FROM read_csv('/etc/passwd')": "query refused",
        f"SELECT * FROM read_parquet('s3://{s3.bucket}/corpus/records/*/*.parquet')": "query refused",
        "COPY (SELECT * FROM records) TO 'leak.csv'": "only SELECT queries are allowed",
        "INSTALL httpfs": "only SELECT queries are allowed",
    }
    for sql, message in refused.items():
        proc = stepwise("query", "--corpus", uri, sql, cwd=tmp_path)
        assert proc.returncode == 1 and message in proc.stderr, (sql, proc.stderr)
    assert not (tmp_path / "leak.csv").exists()

    cancel = stepwise("cancel", "kill-test", "--corpus", uri, check=True)
    assert "completed; nothing to cancel" in cancel.stderr


def test_cancel_markers_live_beside_the_registry_rows_and_do_not_disturb_the_jobs_view(s3, tmp_path):
    run_job(load_job(make_job(tmp_path, 10)), s3.uri())
    registry = JobRegistry(s3.uri())
    assert not registry.cancel_requested("kill-test")
    registry.request_cancel("kill-test")
    assert registry.cancel_requested("kill-test")
    assert "corpus/jobs/kill-test.cancel" in s3.keys()
    assert query(s3.uri(), "SELECT count(*) AS n FROM jobs").table.to_pylist() == [{"n": 1}]
    registry.clear_cancel("kill-test")
    registry.clear_cancel("kill-test")  # twice is fine
    assert not registry.cancel_requested("kill-test")


def test_every_export_format_of_an_s3_corpus_matches_the_local_one_byte_for_byte(s3, tmp_path):
    job = make_job(tmp_path, 200, samples=2, shard_size=64)
    run_job(load_job(job), tmp_path / "local")
    run_job(load_job(job), s3.uri())
    for fmt in FORMATS.names():
        name = fmt if FORMATS.get(fmt).folder else f"{fmt}.{'parquet' if fmt == 'parquet' else 'jsonl'}"
        a = export_job(tmp_path / "local", "kill-test", fmt, tmp_path / "a" / name)
        b = export_job(s3.uri(), "kill-test", fmt, tmp_path / "b" / name)
        assert a.rows == b.rows and a.records > 0
        assert _contents(tmp_path / "a" / name) == _contents(tmp_path / "b" / name), fmt
    stepwise("export", "--corpus", s3.uri(), "--job", "kill-test", "--format", "dsbs", "--out",
             str(tmp_path / "split"), "--split", "0.8,0.1,0.1", check=True)
    split = export_job(tmp_path / "local", "kill-test", "dsbs", tmp_path / "split-local", split=(0.8, 0.1, 0.1))
    assert split.rows["train"] > split.rows["valid"] > 0
    for name in ("train", "valid", "test"):
        assert (tmp_path / "split" / f"{name}.jsonl").read_bytes() == \
            (tmp_path / "split-local" / f"{name}.jsonl").read_bytes()
    with pytest.raises(StorageError, match="no records"):
        export_job(s3.uri(), "no-such-job", "chat", tmp_path / "none.jsonl")


def _contents(path) -> dict[str, bytes]:
    """A file's bytes, or every file of a folder export by its relative path."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def test_a_file_uri_goes_through_the_filesystem_path_with_temp_names_moved_into_place(tmp_path):
    job = make_job(tmp_path, 150, shard_size=50)
    uri = f"file://{tmp_path}/fcorpus"
    run_job(load_job(job), tmp_path / "local")
    run_job(load_job(job), uri)
    assert without_time(records(uri)) == without_time(records(tmp_path / "local"))
    parts = tmp_path / "fcorpus" / "records" / "kill-test"
    assert sorted(p.name for p in parts.iterdir()) == [f"shard-{i:06d}.parquet" for i in range(3)]
    (parts / ".shard-000003.parquet.0badf00d.tmp").write_bytes(b"half a file")  # left by a killed writer
    assert CorpusLocation(uri).remove_stale_temp_files("records", "kill-test") == 1
    assert run_job(load_job(job), uri).shards_skipped == 3


def test_a_remote_corpus_keeps_its_request_cache_in_a_local_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("STEPWISE_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    uri = "s3://bucket/corpus?scheme=http&endpoint_override=127.0.0.1:9000"
    path = cache_path(uri)
    assert path.parent.parent == tmp_path / "home" / ".cache" / "stepwise" and path.name == "requests.sqlite"
    assert len(path.parent.name) == 16
    # the same corpus written another way has the same cache; another corpus has another one
    assert cache_path("s3://bucket/corpus/?endpoint_override=127.0.0.1:9000&scheme=http") == path
    assert cache_path("s3://bucket/other?endpoint_override=127.0.0.1:9000&scheme=http") != path
    monkeypatch.setenv("STEPWISE_CACHE_DIR", str(tmp_path / "shared-cache"))
    assert cache_path(uri) == tmp_path / "shared-cache" / "requests.sqlite"
    # a local corpus keeps its cache inside, as before, whatever the variable says
    assert cache_path(tmp_path / "corpus") == tmp_path / "corpus" / "cache" / "requests.sqlite"
    assert cache_path("relative/corpus") == Path("relative/corpus/cache/requests.sqlite")


def test_a_plain_path_stays_local_and_a_bad_uri_is_a_storage_error(tmp_path):
    assert CorpusLocation(tmp_path).local == tmp_path
    assert CorpusLocation("corpus").is_local and CorpusLocation("C:\\corpus").is_local
    assert CorpusLocation("corpus").address == str(Path("corpus").absolute())
    remote = CorpusLocation("s3://bucket/some/prefix/?region=us-east-1")
    assert (remote.is_local, remote.fs.type_name, remote.base) == (False, "s3", "bucket/some/prefix")
    assert remote.address == "s3://bucket/some/prefix/?region=us-east-1"
    assert remote.path("records", "j", "shard-000000.parquet") == "bucket/some/prefix/records/j/shard-000000.parquet"
    with pytest.raises(StorageError, match="cannot open the corpus nosuch://x"):
        CorpusLocation("nosuch://x")
    proc = stepwise("query", "--corpus", "nosuch://x", "SELECT 1")
    assert proc.returncode == 1 and "cannot open the corpus" in proc.stderr
