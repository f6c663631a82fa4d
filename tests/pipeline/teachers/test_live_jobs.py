"""Live jobs end to end: the real CLI in a subprocess against the real simulator, as a user runs them.

The simulator gets the same problems file (`--dataset`), so its answers are task-aware: it reasons to each
problem's gold answer. Counts come from the corpus (DuckDB views) and from the simulator's /stats.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from stepwise.pipeline.spec import load_job
from stepwise.storage.catalog import query
from tests.conftest import sigkill_when, write_jsonl

ROOT = Path(__file__).resolve().parents[3]
FAST = ("--latency", "0.05", "--wrong-rate", "0")
WRONG_KEY = "sk-wrong-SECRET-123"


def problems(n: int) -> list[dict]:
    """n distinct two-step word problems of our own, with their answers."""
    rows = []
    for i in range(n):
        a, b, c = 10 + i, 3 + (7 * i) % 40, 1 + i % 9
        rows.append({"id": f"p{i:03d}", "answer": str(a + b - c),
                     "question": f"Sam has {a} apples, buys {b} more and eats {c}. How many apples are left?"})
    return rows


def make_job(folder: Path, n: int, *, job_id: str | None = "live", **fields) -> Path:
    """A live job over n problems (a copy also feeds the simulator); the base_url comes from --set."""
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "problems.jsonl", problems(n))
    job = {
        "job_id": job_id,
        "dataset": {"path": "problems.jsonl", "id_field": "id", "question_field": "question",
                    "answer_field": "answer"},
        "task": "arithmetic",
        "prompt": "few_shot_cot",
        "teacher": {"backend": "openai", "model": "stepwise-sim", "base_url": "http://127.0.0.1:9/v1",
                    "api_key_env": None, "max_concurrency": 8, "timeout_s": 10,
                    "request_id_headers": True},
        "sampling": {"n": 1, "temperature": 0.7, "max_tokens": 128},
        "shard_size": 10,
    }
    if job_id is None:
        del job["job_id"]
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(job.get(key), dict):
            job[key] = {**job[key], **value}
        else:
            job[key] = value
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False), encoding="utf-8")
    return path


def cli_args(job: Path, corpus: Path, sim, *sets: str) -> list[str]:
    args = [sys.executable, "-m", "stepwise", "run", str(job), "--corpus", str(corpus), "--quiet",
            "--set", f"teacher.base_url={sim.base_url}"]
    for item in sets:
        args += ["--set", item]
    return args


def run_job(job: Path, corpus: Path, sim, *sets: str, env: dict | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cli_args(job, corpus, sim, *sets), check=False, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "300", **(env or {})})


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr}"
    return proc


def rows(corpus: Path, sql: str) -> list[dict]:
    return query(corpus, sql).table.to_pylist()


def flat(text: str) -> str:
    return " ".join(text.split())


def sim_for(start_sim, folder: Path, *flags: str, env: dict | None = None):
    return start_sim("--dataset", str(folder / "problems.jsonl"), *flags, env=env)


# ── (a) a job completes, then resumes as a no-op ────────────────────────────────────────────────────────────────


def test_a_live_job_completes_with_tokens_and_cost_and_a_rerun_sends_nothing(start_sim, tmp_path):
    price = {"input_per_mtok": 0.5, "output_per_mtok": 1.5}
    job = make_job(tmp_path / "job", 40, sampling={"n": 2}, cost=price)
    sim = sim_for(start_sim, tmp_path / "job", *FAST)
    corpus = tmp_path / "corpus"
    ok(run_job(job, corpus, sim))

    stats = sim.stats()
    assert stats["statuses"] == {"200": 40}  # both samples of an example in one request (n=2)
    assert stats["received"] == 80 and stats["completed_more_than_once"] == 0
    records = rows(corpus, "SELECT * FROM records ORDER BY example_id, sample_idx")
    assert len(records) == 80
    assert {(r["example_id"], r["sample_idx"]) for r in records} == {(f"p{i:03d}", k) for i in range(40)
                                                                      for k in range(2)}
    golds = {p["id"]: p["answer"] for p in problems(40)}
    for r in records:
        assert r["teacher_backend"] == "openai" and r["teacher_model"] == "stepwise-sim"
        assert r["tokens_in"] > 0 and r["tokens_out"] > 0 and r["finish_reason"] == "stop"
        assert r["cost_usd"] == pytest.approx((r["tokens_in"] * 0.5 + r["tokens_out"] * 1.5) / 1e6)
        assert r["label"] == golds[r["example_id"]] and r["correct"] is True
        assert r["accepted"] or r["reject_reason"] == "duplicate"  # two samples may reason alike
        assert r["request_key"] and len(r["request_key"]) == 64
    assert sum(r["accepted"] for r in records) >= 40
    job_row = rows(corpus, "SELECT * FROM jobs")
    assert len(job_row) == 1
    assert (job_row[0]["status"], job_row[0]["n_records"], job_row[0]["shards_done"]) == ("completed", 80, 4)
    assert job_row[0]["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in records))

    parts = sorted((corpus / "records" / "live").glob("*.parquet"))
    mtimes = [p.stat().st_mtime_ns for p in parts]
    ok(run_job(job, corpus, sim))
    assert sim.stats()["received"] == 80  # every shard skipped: nothing sent
    assert [p.stat().st_mtime_ns for p in parts] == mtimes
    assert rows(corpus, "SELECT count(*) AS n FROM records")[0]["n"] == 80
    assert rows(corpus, "SELECT status FROM jobs")[0]["status"] == "completed"


# ── (b) kill -9 half way, then resume ───────────────────────────────────────────────────────────────────────────


def test_a_job_killed_half_way_resumes_without_duplicates_or_repaying(start_sim, tmp_path):
    n, concurrency = 240, 8
    job = make_job(tmp_path / "job", n, shard_size=20, teacher={"max_concurrency": concurrency})
    sim = sim_for(start_sim, tmp_path / "job", "--latency", "0.3", "--wrong-rate", "0")
    corpus = tmp_path / "corpus"
    proc = subprocess.Popen(cli_args(job, corpus, sim), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    sigkill_when(proc, lambda: sim.stats()["completed"] >= n // 2, what="the job made no progress")
    at_kill = sim.stats()
    assert n // 2 <= at_kill["completed"] < n

    ok(run_job(job, corpus, sim))
    records = rows(corpus, "SELECT example_id, sample_idx, accepted, label FROM records")
    assert len(records) == n
    assert len({(r["example_id"], r["sample_idx"]) for r in records}) == n
    assert sum(r["accepted"] for r in records) == n  # one sample each, all right
    stats = sim.stats()
    assert stats["distinct_completed"] == n
    assert stats["received"] - stats["distinct_received"] <= concurrency  # only what was in flight went again
    assert stats["completed_more_than_once"] <= concurrency
    assert rows(corpus, "SELECT status, n_records FROM jobs") == [{"status": "completed", "n_records": n}]


# ── (c) a refused key ───────────────────────────────────────────────────────────────────────────────────────────


def test_a_refused_key_fails_fast_names_the_variable_and_never_writes_the_key(start_sim, tmp_path):
    job = make_job(tmp_path / "job", 30)
    sim = sim_for(start_sim, tmp_path / "job", *FAST, "--api-key-env", "SIM_KEY", env={"SIM_KEY": "sk-sim-right"})
    corpus = tmp_path / "corpus"
    started = time.monotonic()
    proc = run_job(job, corpus, sim, "teacher.api_key_env=STEPWISE_LIVE_KEY", env={"STEPWISE_LIVE_KEY": WRONG_KEY})
    assert time.monotonic() - started < 10
    assert proc.returncode == 1, proc.stderr
    stderr = flat(proc.stderr)
    assert "refused the credentials" in stderr and "STEPWISE_LIVE_KEY" in stderr
    assert WRONG_KEY not in proc.stderr and WRONG_KEY not in proc.stdout
    files = [p for p in corpus.rglob("*") if p.is_file()]
    assert files  # the registry row and the cache exist...
    for path in files:
        assert WRONG_KEY.encode() not in path.read_bytes(), path  # ...and hold no key
    stats = sim.stats()
    assert set(stats["statuses"]) == {"401"} and stats["statuses"]["401"] <= 8  # stopped at once
    job_row = rows(corpus, "SELECT status, error FROM jobs")[0]
    assert job_row["status"] == "failed" and "TeacherAuthError" in job_row["error"]


def test_a_missing_key_variable_fails_with_its_name(start_sim, tmp_path):
    job = make_job(tmp_path / "job", 5)
    sim = sim_for(start_sim, tmp_path / "job", *FAST)
    env = {k: v for k, v in os.environ.items() if k != "STEPWISE_UNSET_KEY"}
    proc = subprocess.run(cli_args(job, tmp_path / "corpus", sim, "teacher.api_key_env=STEPWISE_UNSET_KEY"),
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**env, "COLUMNS": "300"})
    assert proc.returncode == 1, proc.stderr
    assert "STEPWISE_UNSET_KEY" in flat(proc.stderr) and "not set" in flat(proc.stderr)
    assert sim.stats()["received"] == 0


# ── (d) the cost cap ────────────────────────────────────────────────────────────────────────────────────────────


def test_the_budget_stops_the_job_with_exit_3_and_a_higher_cap_finishes_it(start_sim, tmp_path):
    n = 30
    # $1 a thousand tokens: a few-shot request reserves well over $0.10 at its worst case
    job = make_job(tmp_path / "job", n, cost={"input_per_mtok": 1000, "output_per_mtok": 1000, "budget_usd": 0.5})
    sim = sim_for(start_sim, tmp_path / "job", *FAST)
    corpus = tmp_path / "corpus"
    proc = run_job(job, corpus, sim)
    assert proc.returncode == 3, proc.stderr
    assert "budget" in flat(proc.stderr) and "cost.budget_usd" in flat(proc.stderr)
    first = sim.stats()
    assert 0 < first["completed"] < n  # some were paid for before the cap
    job_row = rows(corpus, "SELECT status, cost_usd FROM jobs")[0]
    assert job_row["status"] == "budget_exhausted"
    assert job_row["cost_usd"] <= 0.5

    ok(run_job(job, corpus, sim, "cost.budget_usd=100"))
    stats = sim.stats()
    assert stats["completed"] == n and stats["completed_more_than_once"] == 0  # none paid twice
    assert stats["received"] == first["received"] + (n - first["completed"])
    records = rows(corpus, "SELECT example_id, sample_idx, cost_usd FROM records")
    assert len(records) == n and len({(r["example_id"], r["sample_idx"]) for r in records}) == n
    assert all(r["cost_usd"] > 0 for r in records)
    assert rows(corpus, "SELECT status FROM jobs")[0]["status"] == "completed"


# ── (e) the cache is content-addressed ──────────────────────────────────────────────────────────────────────────


def test_renaming_a_job_or_changing_its_filters_sends_nothing(start_sim, tmp_path):
    job = make_job(tmp_path / "job", 20, job_id=None)  # the job id is the file stem plus a spec hash
    sim = sim_for(start_sim, tmp_path / "job", *FAST)
    corpus = tmp_path / "corpus"
    ok(run_job(job, corpus, sim))
    sent = sim.stats()["received"]
    assert sent == 20

    ok(run_job(job, corpus, sim, "filters.min_rationale_chars=5", "filters.require_correct=false"))
    ok(run_job(job, corpus, sim, "job_id=renamed"))
    assert sim.stats()["received"] == sent  # all three jobs were answered from the request cache
    jobs = rows(corpus, "SELECT job_id, status, n_records FROM jobs ORDER BY job_id")
    assert len(jobs) == 3 and {j["status"] for j in jobs} == {"completed"} and {j["n_records"] for j in jobs} == {20}
    assert "renamed" in {j["job_id"] for j in jobs}
    per_job = rows(corpus, "SELECT job_id, count(DISTINCT request_key) AS keys, count(*) AS n FROM records "
                           "GROUP BY job_id")
    assert {(r["keys"], r["n"]) for r in per_job} == {(20, 20)}
    assert len(rows(corpus, "SELECT DISTINCT request_key FROM records")) == 20  # the same twenty completions


# ── the fault run of the issue: 10 % 5xx, 5 % stalls, 5 % malformed, 5 % truncated ─────────────────────────────


def test_a_fault_run_finishes_with_every_example_accounted_for_and_nothing_paid_twice(start_sim, tmp_path):
    n = 100
    job = make_job(tmp_path / "job", n, sampling={"n": 2},
                   teacher={"timeout_s": 0.6, "max_attempts": 10, "max_concurrency": 16})
    sim = sim_for(start_sim, tmp_path / "job", "--latency", "0.05", "--wrong-rate", "0.1", "--stall", "3",
                  "--faults", "error_500=0.05,error_503=0.05,stall=0.05,malformed=0.05,truncated=0.05")
    ok(run_job(job, tmp_path / "corpus", sim, timeout=120))
    per_example = rows(tmp_path / "corpus", """
        SELECT example_id, count(*) AS records, sum(accepted::int) AS accepted,
               count(*) FILTER (WHERE NOT accepted AND reject_reason IS NULL) AS rejected_without_reason
        FROM records GROUP BY 1""")
    assert len(per_example) == n and all(r["records"] == 2 for r in per_example)
    assert all(r["rejected_without_reason"] == 0 for r in per_example)
    reasons = {r["reject_reason"] for r in rows(tmp_path / "corpus", "SELECT DISTINCT reject_reason FROM records")}
    assert "truncated" in reasons  # truncated completions are stored as rejects, not retried or dropped
    stats = sim.stats()
    assert stats["completed_more_than_once"] == 0
    assert stats["distinct_completed"] == 2 * n  # every sample was completed, each exactly once
    assert {"500", "503", "malformed"} <= set(stats["statuses"])  # the faults really happened


def test_a_shard_goes_out_in_pieces_of_whole_examples_judged_in_order(start_sim, tmp_path):
    """To a live server a shard's requests go as PIECES batches of whole examples (every sample of one example in
    one piece), each waited for, then judged, in order; the part file holds every sample of every example in
    order."""
    from stepwise.pipeline.datasets import read_examples
    from stepwise.pipeline.run.context import first_items, prepare_context
    from stepwise.pipeline.run.shard import PIECES, start_shard
    from stepwise.storage import layout
    from stepwise.storage.location import CorpusLocation

    sim = start_sim("--latency", "0.02")
    spec = load_job(make_job(tmp_path, 10, sampling={"n": 3}), overrides=[f"teacher.base_url={sim.base_url}"])
    sample = first_items(spec)
    ctx = prepare_context(spec, sample, corpus=tmp_path / "corpus")
    sample.close()
    waited: list[list[tuple[str, int]]] = []

    def wait(answers):
        got = answers.result()
        waited.append([(c.example_id, c.sample_idx) for c in got])
        return got

    try:
        started = start_shard(ctx, CorpusLocation.of(tmp_path / "corpus"), 0, list(read_examples(spec.dataset)))
        assert len(started.answers) == PIECES == 4
        result = started.finish(wait)
    finally:
        ctx.backend.close()
    expected = [(f"p{i:03d}", k) for i in range(10) for k in range(3)]
    assert [len(piece) for piece in waited] == [9, 9, 9, 3]  # 3, 3, 3 and 1 examples of 3 samples
    assert [key for piece in waited for key in piece] == expected
    assert result.records == 30
    table = pq.read_table(tmp_path / "corpus" / Path(*layout.part("live", 0)))
    assert list(zip(table["example_id"].to_pylist(), table["sample_idx"].to_pylist())) == expected
