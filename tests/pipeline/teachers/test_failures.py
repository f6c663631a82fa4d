"""A job whose teacher fails says so, and a rerun heals exactly what failed.

Everything here is real: the CLI in a subprocess, the simulator (or a plain listener) on loopback, the corpus on
disk. Requests that fail for an infrastructure reason become `teacher_unavailable` records (not final: their
shard is marked for retry); past the job's `max_error_rate` the job stops early. Either way it ends `failed`,
exit 1, naming the teacher's URL, and the next run sends exactly the requests that failed.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from stepwise.pipeline.spec import OpenAITeacherSpec
from stepwise.pipeline.teachers.base import ErrorBudget
from stepwise.pipeline.teachers.openai_compat import OpenAIBackend
from stepwise.pipeline.types import Sampling, TeacherRequest
from tests.pipeline.teachers.test_live_jobs import FAST, cli_args, flat, make_job, ok, rows, run_job, sim_for

ROOT = Path(__file__).resolve().parents[3]
CONTENT = ["example_id", "sample_idx", "input", "gold_label", "label", "rationale", "correct", "accepted",
           "reject_reason", "completion", "tokens_in", "tokens_out", "request_key"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cached_keys(corpus: Path) -> set[str]:
    """Request keys (as the simulator counts them: the first 16 hex digits) in the corpus's request cache."""
    with sqlite3.connect(corpus / "cache" / "requests.sqlite") as db:
        return {row[0][:16] for row in db.execute("SELECT key FROM completions")}


def received_keys(sim) -> dict[str, int]:
    return {k: v["received"] for k, v in sim.stats(keys=True)["per_key"].items()}


def content(corpus: Path) -> list[dict]:
    return rows(corpus, f"SELECT {', '.join(CONTENT)} FROM records ORDER BY example_id, sample_idx")


# ── the error budget's rule ─────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(("ok_", "failed", "max_rate", "stops"), [
    (0, 9, 0.1, False),      # fewer than MIN_FAILED failures never stop a job
    (0, 10, 0.1, True),      # ten of ten
    (90, 10, 0.1, False),    # exactly the allowed share is allowed
    (89, 11, 0.1, True),     # one more is not
    (1000, 50, 0.1, False),  # a few failures in a long job
    (0, 100, 1.0, False),    # max_error_rate 1.0: run to the end whatever fails
])
def test_the_error_budget_stops_past_its_share_once_enough_requests_failed(ok_, failed, max_rate, stops):
    budget = ErrorBudget(max_rate, "http://teacher.invalid/v1")
    stop = budget.record(ok=ok_, failed=failed, error="connection failed")
    assert (stop is not None) == stops
    if stop:
        assert "http://teacher.invalid/v1" in str(stop) and "connection failed" in str(stop)


# ── an unreachable teacher fails the job, fast, naming the URL ──────────────────────────────────────────────────


def test_an_unreachable_teacher_fails_the_job_with_exit_1_naming_the_url(tmp_path):
    job = make_job(tmp_path / "job", 60, teacher={"max_attempts": 2})
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    started = time.monotonic()
    proc = subprocess.run(cli_args(job, tmp_path / "corpus", SimpleNamespace(base_url=dead)), cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"})
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - started < 30
    stderr = flat(proc.stderr)
    assert "failed" in stderr and dead in stderr and "max_error_rate" in stderr
    job_row = rows(tmp_path / "corpus", "SELECT status, error FROM jobs")[0]
    assert job_row["status"] == "failed" and dead in job_row["error"]


def test_a_job_whose_requests_are_all_refused_stops_early(start_sim, tmp_path):
    # a server without `n`: every request of a two-sample job is refused (a final 400, not retried)
    job = make_job(tmp_path / "job", 40, sampling={"n": 2})
    sim = sim_for(start_sim, tmp_path / "job", *FAST, "--no-n")
    proc = run_job(job, tmp_path / "corpus", sim)
    assert proc.returncode == 1, proc.stderr
    assert "n > 1 is not supported" in flat(proc.stderr) and sim.base_url in flat(proc.stderr)
    assert sim.stats()["received"] < 40 * 2  # stopped before sending everything
    assert rows(tmp_path / "corpus", "SELECT status FROM jobs")[0]["status"] == "failed"


# ── failures below the budget: the job runs to the end, fails, and the rerun retries exactly those ───────────────


def test_requests_that_failed_are_retried_by_the_rerun_and_nothing_else_is_sent(start_sim, tmp_path):
    n, port = 60, free_port()
    job = make_job(tmp_path / "job", n, shard_size=5, max_error_rate=1.0, teacher={"max_attempts": 1})
    flaky = sim_for(start_sim, tmp_path / "job", *FAST, "--port", str(port), "--faults", "error_503=0.1")
    corpus = tmp_path / "corpus"
    first = run_job(job, corpus, flaky)
    assert first.returncode == 1, first.stderr
    failed = {r["request_key"] for r in rows(corpus, "SELECT request_key FROM records "
                                                     "WHERE reject_reason = 'teacher_unavailable'")}
    assert 0 < len(failed) < n
    assert f"{len(failed)} requests to the teacher at {flaky.base_url} failed" in flat(first.stderr)
    assert rows(corpus, "SELECT status FROM jobs")[0]["status"] == "failed"
    marked = {p.stem for p in (corpus / "records" / "live").glob("*.retry")}
    assert marked and marked < {p.stem for p in (corpus / "records" / "live").glob("*.parquet")}
    clean = {p.name: p.stat().st_mtime_ns for p in (corpus / "records" / "live").glob("*.parquet")
             if p.stem not in marked}

    flaky.proc.kill()
    flaky.proc.wait(timeout=10)
    healthy = sim_for(start_sim, tmp_path / "job", *FAST, "--port", str(port))
    ok(run_job(job, corpus, healthy))
    assert received_keys(healthy) == {key[:16]: 1 for key in failed}  # exactly the failed ones, once each
    assert not list((corpus / "records" / "live").glob("*.retry"))
    assert {name: (corpus / "records" / "live" / name).stat().st_mtime_ns for name in clean} == clean
    records = rows(corpus, "SELECT example_id, reject_reason FROM records")
    assert len(records) == n and len({r["example_id"] for r in records}) == n
    assert not any(r["reject_reason"] == "teacher_unavailable" for r in records)
    assert rows(corpus, "SELECT status FROM jobs")[0]["status"] == "completed"


# ── the teacher dies mid-job and comes back ─────────────────────────────────────────────────────────────────────


def test_a_teacher_killed_mid_job_fails_it_and_the_rerun_ends_as_an_undisturbed_run(start_sim, tmp_path):
    n, port = 150, free_port()
    job = make_job(tmp_path / "job", n, shard_size=15,
                   teacher={"max_attempts": 2, "max_concurrency": 8, "timeout_s": 5})
    sim = sim_for(start_sim, tmp_path / "job", "--port", str(port), "--latency", "0.1", "--wrong-rate", "0.2")
    corpus = tmp_path / "corpus"
    proc = subprocess.Popen(cli_args(job, corpus, sim), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "300"})
    deadline = time.monotonic() + 30
    while sim.stats()["completed"] < n // 3:
        assert proc.poll() is None and time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.05)
    sim.proc.kill()  # the teacher goes away with requests in flight
    sim.proc.wait(timeout=10)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stderr
    assert sim.base_url in flat(stderr) and "max_error_rate" in flat(stderr)
    job_row = rows(corpus, "SELECT status, error FROM jobs")[0]
    assert job_row["status"] == "failed" and sim.base_url in job_row["error"]
    paid = cached_keys(corpus)
    assert 0 < len(paid) < n

    back = sim_for(start_sim, tmp_path / "job", "--port", str(port), "--latency", "0.05", "--wrong-rate", "0.2")
    ok(run_job(job, corpus, back))
    sent_again = received_keys(back)
    assert all(count == 1 for count in sent_again.values())
    assert not set(sent_again) & paid  # nothing answered in the first run was sent again...
    assert set(sent_again) | paid == cached_keys(corpus)  # ...and together they are every request
    assert len(cached_keys(corpus)) == n

    undisturbed = tmp_path / "undisturbed"
    ok(run_job(job, undisturbed, back))
    assert content(corpus) == content(undisturbed)
    assert rows(corpus, "SELECT status, n_records FROM jobs") == [{"status": "completed", "n_records": n}]


# ── the cache key names the server ──────────────────────────────────────────────────────────────────────────────


def test_the_cache_never_serves_one_servers_answers_to_another_unless_told(start_sim, tmp_path):
    job = make_job(tmp_path / "job", 10)
    first = sim_for(start_sim, tmp_path / "job", *FAST)
    second = sim_for(start_sim, tmp_path / "job", *FAST)
    corpus = tmp_path / "corpus"
    ok(run_job(job, corpus, first, "job_id=on-first"))
    ok(run_job(job, corpus, second, "job_id=on-second"))  # the same model name at another URL
    assert (first.stats()["received"], second.stats()["received"]) == (10, 10)

    # endpoints declared to serve the same weights share their completions
    ok(run_job(job, corpus, first, "job_id=shared-a", "teacher.cache_namespace=sim-weights"))
    ok(run_job(job, corpus, second, "job_id=shared-b", "teacher.cache_namespace=sim-weights"))
    assert (first.stats()["received"], second.stats()["received"]) == (20, 10)


# ── bookkeeping headers never reach a provider by default ───────────────────────────────────────────────────────


@pytest.mark.parametrize("asked", [False, True])
def test_stepwise_headers_go_out_only_when_the_job_asks(listener, asked):
    spec = OpenAITeacherSpec(backend="openai", model="m", base_url=listener.base_url, api_key_env=None,
                             request_id_headers=asked)
    backend = OpenAIBackend(spec)
    try:
        requests = [TeacherRequest(f"secret-example-{i}", 0, ({"role": "user", "content": f"q{i}"},), Sampling(),
                                   "p", None, "openai", "m", endpoint=listener.base_url) for i in range(3)]
        assert all(c.text for c in backend.complete(requests))
    finally:
        backend.close()
    assert len(listener.seen) == 3
    ours = [{k for k in h if k.lower().startswith("x-stepwise")} for h in listener.seen]
    if asked:
        assert all(ours) and listener.carried("secret-example") == 3
    else:
        assert ours == [set(), set(), set()] and listener.carried("secret-example") == 0
