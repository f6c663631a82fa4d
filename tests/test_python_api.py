"""The Python API (`import stepwise`), as a notebook uses it: run a job (from a dict, a file or a JobSpec; also
inside a running event loop, and awaited), query, export, train and the simulator."""

from __future__ import annotations

import asyncio
import json

import pytest

import stepwise
from tests.conftest import write_jsonl
from tests.pipeline.teachers.test_live_jobs import problems


def replay_job(folder, job_id: str, n: int = 6) -> dict:
    rows = problems(n)
    write_jsonl(folder / "problems.jsonl", rows)
    write_jsonl(folder / "answers.jsonl", [{"example_id": r["id"], "text": f"Counting up. So the answer is "
                                                                              f"{r['answer']}."} for r in rows])
    return {"job_id": job_id, "task": "arithmetic", "prompt": "few_shot_cot",
            "dataset": {"path": str(folder / "problems.jsonl"), "id_field": "id", "answer_field": "answer"},
            "teacher": {"backend": "replay", "path": str(folder / "answers.jsonl")}, "shard_size": 4}


def test_a_job_runs_from_a_dict_and_is_queried_and_exported(tmp_path):
    summary = stepwise.run(replay_job(tmp_path, "api-dict"), corpus=tmp_path / "corpus")
    assert (summary.status, summary.n_records, summary.n_accepted) == ("completed", 6, 6)
    result = stepwise.query("SELECT count(*) AS n FROM records WHERE correct", corpus=tmp_path / "corpus")
    assert result.table.to_pylist() == [{"n": 6}] and not result.truncated
    written = stepwise.export("api-dict", "chat", tmp_path / "chat.jsonl", corpus=tmp_path / "corpus")
    assert written.records == 6
    assert len((tmp_path / "chat.jsonl").read_text().splitlines()) == 6


def test_a_job_file_runs_and_a_bad_one_names_its_field(tmp_path):
    job = tmp_path / "job.json"
    job.write_text(json.dumps(replay_job(tmp_path, "api-file")))
    assert stepwise.run(job, corpus=tmp_path / "corpus").status == "completed"
    bad = {**replay_job(tmp_path, "api-bad"), "sampling": {"n": 0}}
    with pytest.raises(stepwise.JobSpecError, match="sampling.n"):
        stepwise.run(bad, corpus=tmp_path / "corpus")


def test_a_live_job_runs_inside_a_running_event_loop_and_awaited(tmp_path):
    write_jsonl(tmp_path / "sim.jsonl", problems(8))
    job = {**replay_job(tmp_path, "in-loop", 8), "teacher": {"backend": "openai", "model": "stepwise-sim",
                                                              "api_key_env": None}}

    async def notebook_cell(base_url: str):
        teacher = {**job["teacher"], "base_url": base_url}
        blocking = stepwise.run({**job, "teacher": teacher}, corpus=tmp_path / "corpus")  # the loop runs here
        awaited = await stepwise.arun({**job, "job_id": "awaited", "teacher": teacher}, tmp_path / "corpus")
        return blocking, awaited

    with stepwise.simulator("--dataset", str(tmp_path / "sim.jsonl"), "--latency", "0.02", "--wrong-rate", "0") as url:
        blocking, awaited = asyncio.run(notebook_cell(url))
    assert (blocking.status, blocking.n_accepted) == ("completed", 8)
    assert (awaited.status, awaited.n_accepted, awaited.teacher["cache_hits"]) == ("completed", 8, 8)


def test_a_student_trains_on_a_job(tmp_path):
    pytest.importorskip("torch", reason="the trainer needs the train extra")
    stepwise.run(replay_job(tmp_path, "api-train", 12), corpus=tmp_path / "corpus")
    metrics = stepwise.train(out=str(tmp_path / "student"), corpus=str(tmp_path / "corpus"), job="api-train",
                             mode="cot", model="tiny", steps=2, threads=1, save_checkpoint=False, quiet=True)
    assert metrics["mode"] == "cot" and metrics["n"] >= 0 and (tmp_path / "student" / "metrics.json").is_file()
