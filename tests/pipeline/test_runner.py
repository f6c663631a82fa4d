"""The runner: shards, resume after SIGKILL, job registry, self-consistency over samples."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stepwise.pipeline.run.job import run_job
from stepwise.pipeline.spec import load_job
from stepwise.storage.catalog import query
from stepwise.storage.jobs import JobRegistry
from tests.conftest import ROOT, write_jsonl


def make_job(tmp: Path, n_examples: int, *, samples: int = 1, shard_size: int = 100, **extra) -> Path:
    rows, comps = [], []
    for i in range(n_examples):
        a, b = i % 97, i % 13 + 1
        rows.append({"id": f"q{i}", "question": f"Kim has {a} cards and gets {b} more. How many now?",
                     "answer": a + b})
        for k in range(samples):
            answer = a + b if (i + k) % 4 else a + b + 1  # every fourth sample is wrong
            comps.append({"example_id": f"q{i}", "sample_idx": k,
                          "text": f"Kim starts with {a} and adds {b}: {a} + {b} = {answer}. So the answer is {answer}.",
                          "usage": {"prompt_tokens": 50, "completion_tokens": 20}})
    write_jsonl(tmp / "data.jsonl", rows)
    write_jsonl(tmp / "completions.jsonl", comps)
    job = {"job_id": "kill-test", "dataset": {"path": "data.jsonl", "id_field": "id", "answer_field": "answer"},
           "task": "arithmetic", "prompt": "few_shot_cot",
           "teacher": {"backend": "replay", "path": "completions.jsonl"},
           "sampling": {"n": samples}, "shard_size": shard_size, **extra}
    path = tmp / "job.yaml"
    path.write_text(json.dumps(job))  # JSON is YAML
    return path


def test_sigkill_mid_run_then_resume_gives_exactly_the_expected_rows(tmp_path):
    n, shard = 40_000, 100
    job = make_job(tmp_path, n, shard_size=shard)
    corpus = tmp_path / "corpus"
    parts = corpus / "records" / "kill-test"
    cmd = [sys.executable, "-m", "stepwise", "run", str(job), "--corpus", str(corpus), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.glob("*.parquet"))) >= 40:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed; make it longer"
    done_at_kill = len(list(parts.glob("*.parquet")))
    assert 40 <= done_at_kill < n // shard
    assert JobRegistry(corpus).get("kill-test").status == "running"  # killed: nobody could say otherwise

    resumed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert not list(parts.glob(".*.tmp")), "stale temp files are cleaned on resume"
    table = query(corpus, "SELECT count(*) AS n, count(DISTINCT example_id || '/' || sample_idx) AS distinct_keys "
                          "FROM records WHERE job_id = 'kill-test'").table
    assert table.to_pylist() == [{"n": n, "distinct_keys": n}]
    state = JobRegistry(corpus).get("kill-test")
    assert (state.status, state.shards_done, state.n_records) == ("completed", n // shard, n)


def test_rerun_skips_finished_shards_and_changed_spec_conflicts(tmp_path):
    job = make_job(tmp_path, 250, shard_size=100)
    corpus = tmp_path / "c"
    first = run_job(load_job(job), corpus)
    assert (first.shards_run, first.shards_skipped, first.n_records) == (3, 0, 250)
    again = run_job(load_job(job), corpus)
    assert (again.shards_run, again.shards_skipped, again.n_records) == (0, 3, 250)
    assert sorted(p.name for p in (corpus / "records" / "kill-test").iterdir()) == [
        "shard-000000.parquet", "shard-000001.parquet", "shard-000002.parquet"]
    assert pq.read_table(corpus / "records" / "kill-test" / "shard-000002.parquet").num_rows == 50


def test_self_consistency_over_samples(tmp_path):
    job = make_job(tmp_path, 8, samples=4, filters={"self_consistency": True, "require_correct": False})
    corpus = tmp_path / "c"
    summary = run_job(load_job(job), corpus)
    assert summary.n_records == 32
    rows = query(corpus, "SELECT example_id, sample_idx, label, consensus_label, agreement, accepted, reject_reason "
                         "FROM records WHERE example_id = 'q1' ORDER BY sample_idx").table.to_pylist()
    # q1: gold 1 + 2 = 3; sample k is wrong when (1 + k) % 4 == 0, i.e. k = 3
    assert [r["label"] for r in rows] == ["3", "3", "3", "4"]
    assert {r["consensus_label"] for r in rows} == {"3"}
    assert rows[0]["agreement"] == pytest.approx(0.75)
    assert [r["reject_reason"] for r in rows] == [None, "duplicate", "duplicate", "minority"]


def test_auto_task_kind_and_unlabeled_data(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"question": "Is fire hot?"}, {"question": "Is snow hot?"}])
    write_jsonl(tmp_path / "c.jsonl", [])
    job = tmp_path / "job.yaml"
    job.write_text("dataset: {path: d.jsonl}\ntask: yes_no\nprompt: zero_shot_cot\n"
                   "teacher: {backend: replay, path: c.jsonl}\n")
    spec = load_job(job)
    assert spec.job_id.startswith("job-") and len(spec.job_id) == len("job-") + 8
    summary = run_job(spec, tmp_path / "corpus")
    assert summary.reject_reasons == {"missing_completion": 2}
    rows = query(tmp_path / "corpus", "SELECT gold_label, correct, prompt_id FROM records").table.to_pylist()
    assert rows == [{"gold_label": None, "correct": None, "prompt_id": "zero_shot_cot"}] * 2


def test_the_end_summary_keeps_what_the_run_wrote_and_reads_the_footers_of_the_rest(tmp_path, monkeypatch):
    """A run's summary adds the counters it kept of the shards it wrote to the footers of the shards it skipped:
    it equals the summary read back from every part file, and reads no footer of a shard it wrote itself."""
    from stepwise.pipeline.run import summary as summaries

    job = make_job(tmp_path, 250, samples=2, shard_size=100)
    corpus = tmp_path / "c"
    first = run_job(load_job(job), corpus)
    (corpus / "records" / "kill-test" / "shard-000001.parquet").unlink()  # lost: the rerun does it again
    read: list[str] = []
    real = summaries._file_summary
    monkeypatch.setattr(summaries, "_file_summary", lambda c, j, path: read.append(Path(path).name) or real(c, j, path))
    again = run_job(load_job(job), corpus)
    assert (again.shards_run, again.shards_skipped) == (1, 2)
    assert sorted(read) == ["shard-000000.parquet", "shard-000002.parquet"]  # shard 1's counters were kept
    fields = ("n_examples", "n_records", "n_accepted", "n_rejected", "n_correct", "tokens_in", "tokens_out",
              "reject_reasons")
    assert [getattr(again, f) for f in fields] == [getattr(first, f) for f in fields]
    read.clear()
    from_files = summaries.summarize(corpus, "kill-test")
    assert len(read) == 3 and [getattr(from_files, f) for f in fields] == [getattr(first, f) for f in fields]
    assert first.n_records == 500 and 0 < first.n_accepted < 500



def test_a_replayed_shard_goes_out_as_one_batch(tmp_path):
    """A backend that answers a batch whole (a replay, an offline engine, a batch API) gets a shard in one batch;
    pieces are for live servers (test_live_jobs.py)."""
    from stepwise.pipeline.datasets import read_examples
    from stepwise.pipeline.run.context import first_items, prepare_context
    from stepwise.pipeline.run.shard import start_shard
    from stepwise.storage.location import CorpusLocation

    spec = load_job(make_job(tmp_path, 10, samples=3, shard_size=10))
    sample = first_items(spec)
    ctx = prepare_context(spec, sample)
    sample.close()
    try:
        started = start_shard(ctx, CorpusLocation.of(tmp_path / "corpus"), 0, list(read_examples(spec.dataset)))
        assert len(started.answers) == 1
        assert started.finish().records == 30
    finally:
        ctx.backend.close()
