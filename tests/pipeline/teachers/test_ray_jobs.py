"""The Ray executor, end to end through the CLI: local and Ray agree, killed workers and drivers lose and
repeat nothing, and one RPM budget is shared by all workers. Each job starts its own local Ray instance."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pipeline.teachers.test_live_jobs import ROOT, cli_args, make_job, ok, rows, run_job, sim_for
from tests.pipeline.test_runner import make_job as make_replay_job

pytest.importorskip("ray")
RECORD_COLUMNS = "example_id, sample_idx, label, rationale, accepted, reject_reason, completion"


def records(corpus: Path, job_id: str) -> list[dict]:
    return rows(corpus, f"SELECT {RECORD_COLUMNS} FROM records WHERE job_id = '{job_id}' "
                        f"ORDER BY example_id, sample_idx")


def shard_files(corpus: Path, job_id: str) -> int:
    folder = corpus / "records" / job_id
    return len(list(folder.glob("*.parquet"))) if folder.is_dir() else 0


def ray_workers() -> list[int]:
    """PIDs of our worker actors (Ray titles actor processes ray::ShardWorker...)."""
    out = subprocess.run(["pgrep", "-f", "ray::ShardWorker"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_local_and_ray_give_the_same_records_for_a_recorded_and_a_live_teacher(start_sim, tmp_path):
    (tmp_path / "replay").mkdir()
    replay = make_replay_job(tmp_path / "replay", 300, samples=2, shard_size=40)
    corpus = tmp_path / "corpus"
    local = subprocess.run([sys.executable, "-m", "stepwise", "run", str(replay), "--corpus", str(corpus / "a"),
                            "--quiet"], cwd=ROOT, capture_output=True, text=True)
    on_ray = subprocess.run([sys.executable, "-m", "stepwise", "run", str(replay), "--corpus", str(corpus / "b"),
                             "--quiet", "--executor", "ray", "--workers", "3"], cwd=ROOT, capture_output=True,
                            text=True)
    ok(local), ok(on_ray)
    assert len(records(corpus / "a", "kill-test")) == 600
    assert records(corpus / "a", "kill-test") == records(corpus / "b", "kill-test")

    job = make_job(tmp_path / "live", 60, sampling={"n": 2}, shard_size=8)
    sim = sim_for(start_sim, tmp_path / "live", "--latency", "0.05", "--wrong-rate", "0.2")
    ok(run_job(job, corpus / "c", sim, "executor.kind=local"))
    ok(run_job(job, corpus / "d", sim, "executor.kind=ray", "executor.workers=3"))
    assert len(records(corpus / "c", "live")) == 120
    assert records(corpus / "c", "live") == records(corpus / "d", "live")


def test_a_killed_ray_worker_is_replaced_and_the_job_finishes_complete_and_duplicate_free(start_sim, tmp_path):
    n, concurrency, workers = 200, 4, 2
    job = make_job(tmp_path / "job", n, shard_size=10, teacher={"max_concurrency": concurrency})
    sim = sim_for(start_sim, tmp_path / "job", "--latency", "0.2", "--wrong-rate", "0")
    corpus = tmp_path / "corpus"
    proc = subprocess.Popen(cli_args(job, corpus, sim, "executor.kind=ray", f"executor.workers={workers}"),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline:
        pids = ray_workers()
        if pids and shard_files(corpus, "live") >= 3:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.05)
    assert killed is not None, "no worker to kill before the job ended"
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    got = rows(corpus, "SELECT example_id, sample_idx FROM records")
    assert len(got) == n and len({(r["example_id"], r["sample_idx"]) for r in got}) == n
    stats = sim.stats()
    assert stats["distinct_completed"] == n
    # what the dead worker had in flight (two shards of `concurrency` requests each) may go again, no more
    assert stats["completed_more_than_once"] <= 2 * concurrency
    assert rows(corpus, "SELECT status, n_records FROM jobs") == [{"status": "completed", "n_records": n}]


def test_a_killed_driver_resumes_without_resending_completed_requests(start_sim, tmp_path):
    n, concurrency, workers = 240, 4, 2
    job = make_job(tmp_path / "job", n, shard_size=12, teacher={"max_concurrency": concurrency})
    sim = sim_for(start_sim, tmp_path / "job", "--latency", "0.2", "--wrong-rate", "0")
    corpus = tmp_path / "corpus"
    proc = subprocess.Popen(cli_args(job, corpus, sim, "executor.kind=ray", f"executor.workers={workers}"),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while sim.stats()["completed"] < n // 3:
        assert proc.poll() is None, f"the job ended before it was killed (exit {proc.returncode})"
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(1.0)  # Ray's reaper takes the orphaned local instance down
    at_kill = sim.stats()["completed"]

    ok(run_job(job, corpus, sim, "executor.kind=ray", f"executor.workers={workers}", timeout=120))
    got = rows(corpus, "SELECT example_id, sample_idx FROM records")
    assert len(got) == n and len({(r["example_id"], r["sample_idx"]) for r in got}) == n
    stats = sim.stats()
    assert stats["distinct_completed"] == n
    # requests completed before the kill were served from the cache; only those in flight could go again
    assert stats["completed_more_than_once"] <= workers * 2 * concurrency
    assert stats["completed"] - n <= workers * 2 * concurrency
    assert at_kill >= n // 3


def test_one_rpm_budget_is_shared_by_four_workers(start_sim, tmp_path):
    """RPM 600 for the job, 4 workers: the teacher never sees more than 600 requests in any minute."""
    n = 660  # a little over one minute of traffic at the limit
    job = make_job(tmp_path / "job", n, shard_size=15, teacher={"max_concurrency": 16, "rpm": 600})
    sim = sim_for(start_sim, tmp_path / "job", "--latency", "0.05", "--wrong-rate", "0")
    started = time.monotonic()
    ok(run_job(job, tmp_path / "corpus", sim, "executor.kind=ray", "executor.workers=4", timeout=240))
    elapsed = time.monotonic() - started
    stats = sim.stats()
    assert stats["completed"] == n and stats["statuses"].get("429", 0) == 0
    assert stats["max_accepted_in_any_60s"] <= 600
    assert stats["max_accepted_in_any_60s"] >= 560  # and the budget is used, not wasted
    assert elapsed >= 60  # 660 requests at 600 a minute cannot finish sooner


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_cancel_stops_the_job_within_seconds_and_a_rerun_finishes_it(start_sim, tmp_path, executor):
    n = 300
    job = make_job(tmp_path / "job", n, shard_size=10, teacher={"max_concurrency": 4})
    sim = sim_for(start_sim, tmp_path / "job", "--latency", "0.2", "--wrong-rate", "0")
    corpus = tmp_path / "corpus"
    proc = subprocess.Popen(cli_args(job, corpus, sim, f"executor.kind={executor}", "executor.workers=2"),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while shard_files(corpus, "live") < 2:
        assert proc.poll() is None, f"the job ended before it was cancelled: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.05)
    asked = time.monotonic()
    cancel = subprocess.run([sys.executable, "-m", "stepwise", "cancel", "live", "--corpus", str(corpus)],
                            cwd=ROOT, capture_output=True, text=True)
    assert cancel.returncode == 0, cancel.stderr
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 4, stderr
    assert time.monotonic() - asked < 10  # stopped within seconds (the poll is every half second)
    assert rows(corpus, "SELECT status FROM jobs") == [{"status": "cancelled"}]
    done = shard_files(corpus, "live")
    assert 2 <= done < n // 10
    assert not list((corpus / "records" / "live").glob(".*.tmp"))
    assert rows(corpus, "SELECT count(*) AS n FROM records") == [{"n": done * 10}]  # whole shards only
    time.sleep(1.0)
    sent_after_stop = sim.stats()["received"]
    time.sleep(1.0)
    assert sim.stats()["received"] == sent_after_stop  # nothing is still sending

    ok(run_job(job, corpus, sim, f"executor.kind={executor}", "executor.workers=2", timeout=120))
    got = rows(corpus, "SELECT example_id, sample_idx FROM records")
    assert len(got) == n and len({(r["example_id"], r["sample_idx"]) for r in got}) == n
    assert rows(corpus, "SELECT status FROM jobs") == [{"status": "completed"}]
