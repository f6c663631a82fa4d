"""Jobs writing to a corpus on a REAL S3-compatible server (moto) on loopback, through the CLI as a user runs them:
a live job keeps its request cache in `STEPWISE_CACHE_DIR`, and Ray workers write the same records as a local run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stepwise.storage.cache import RequestCache
from tests.pipeline.teachers.test_live_jobs import FAST, ROOT, make_job, ok, rows, run_job, sim_for
from tests.pipeline.test_runner import make_job as make_replay_job

RECORD_COLUMNS = "example_id, sample_idx, label, rationale, accepted, reject_reason, completion"


def records(corpus, job_id: str) -> list[dict]:
    return rows(corpus, f"SELECT {RECORD_COLUMNS} FROM records WHERE job_id = '{job_id}' "
                        f"ORDER BY example_id, sample_idx")


def test_a_live_job_on_s3_caches_in_STEPWISE_CACHE_DIR_and_a_second_job_is_served_from_it(start_sim, s3, tmp_path):
    job = make_job(tmp_path / "live", 30, sampling={"n": 2}, shard_size=10)
    sim = sim_for(start_sim, tmp_path / "live", *FAST)
    cache = tmp_path / "cache"
    ok(run_job(job, s3.uri(), sim, env={"STEPWISE_CACHE_DIR": str(cache)}))
    assert len(records(s3.uri(), "live")) == 60
    assert RequestCache(cache / "requests.sqlite").count() == 60
    assert not [k for k in s3.keys() if "cache" in k or "sqlite" in k], "SQLite never goes to the object store"
    sent = sim.stats()["received"]

    # another job id, the same requests: every completion comes from the local cache, nothing is sent
    ok(run_job(job, s3.uri(), sim, "job_id=live-again", env={"STEPWISE_CACHE_DIR": str(cache)}))
    assert sim.stats()["received"] == sent
    assert records(s3.uri(), "live-again") == records(s3.uri(), "live")


def test_ray_workers_write_to_s3_the_records_of_a_local_run(s3, tmp_path):
    pytest.importorskip("ray")
    job = make_replay_job(tmp_path, 200, samples=2, shard_size=40)
    local = subprocess.run([sys.executable, "-m", "stepwise", "run", str(job), "--corpus",
                            str(tmp_path / "local"), "--quiet"], cwd=ROOT, capture_output=True, text=True)
    on_ray = subprocess.run([sys.executable, "-m", "stepwise", "run", str(job), "--corpus", s3.uri(),
                             "--quiet", "--executor", "ray", "--workers", "2"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=240)
    ok(local), ok(on_ray)
    assert not (tmp_path / "s3:").exists(), "a worker turned the URI into a local path"
    assert len(records(tmp_path / "local", "kill-test")) == 400
    assert records(s3.uri(), "kill-test") == records(tmp_path / "local", "kill-test")
    assert s3.keys("corpus/records") == [f"corpus/records/kill-test/shard-{i:06d}.parquet" for i in range(5)]
