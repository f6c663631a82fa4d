"""`sampling.stop_after_accepted`: samples are asked for in rounds and an example stops once it has its quota of
accepted ones. Never short of the quota while samples remain, never more than asked, the same records after a
SIGKILL and a rerun, the same on Ray, and the saving reported against a fixed `n`."""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest

from tests.conftest import sigkill_when, write_jsonl
from tests.pipeline.teachers.test_live_jobs import ROOT, cli_args, flat, make_job, ok, problems, rows, run_job, sim_for

N, QUOTA = 8, 2
ROUNDS = {"sampling": {"n": N, "stop_after_accepted": QUOTA, "temperature": 0.7},
          "filters": {"require_correct": True, "dedupe": False}}


def per_example(corpus) -> dict[str, tuple[int, int]]:
    """example id -> (samples asked for, samples accepted)."""
    found = rows(corpus, "SELECT example_id, count(*) AS asked, sum(accepted::int) AS accepted FROM records "
                         "GROUP BY 1")
    return {r["example_id"]: (r["asked"], r["accepted"]) for r in found}


def test_no_example_stops_short_of_its_quota_and_none_is_asked_for_more(start_sim, tmp_path):
    n_examples = 40
    job = make_job(tmp_path / "job", n_examples, **ROUNDS)
    sim = sim_for(start_sim, tmp_path / "job", "--latency", "0.02", "--wrong-rate", "0.45", "--seed", "11")
    proc = ok(run_job(job, tmp_path / "corpus", sim))
    seen = per_example(tmp_path / "corpus")
    assert len(seen) == n_examples
    for example_id, (asked, accepted) in seen.items():
        assert accepted == QUOTA or asked == N, (example_id, asked, accepted)  # never short while samples remain
        assert accepted <= QUOTA, (example_id, asked, accepted)               # never asked past the quota
    asked_total = sum(asked for asked, _ in seen.values())
    assert sim.stats()["completed"] == asked_total < N * n_examples  # the simulator saw exactly those
    saved = N * n_examples - asked_total
    assert f"{saved:,} samples" in flat(proc.stderr)  # the summary reports the saving against a fixed n
    rounds = Counter(asked for asked, _ in seen.values())
    assert rounds[QUOTA] > 0 and max(rounds) > QUOTA  # most stop after one round, some needed more


def test_a_rerun_after_sigkill_ends_with_the_records_of_an_undisturbed_run(start_sim, tmp_path):
    n_examples = 60
    job = make_job(tmp_path / "job", n_examples, shard_size=10, teacher={"max_concurrency": 4}, **ROUNDS)
    sim = sim_for(start_sim, tmp_path / "job", "--latency", "0.15", "--wrong-rate", "0.4", "--seed", "5")
    corpus = tmp_path / "corpus"
    proc = subprocess.Popen(cli_args(job, corpus, sim), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    sigkill_when(proc, lambda: sim.stats()["completed"] >= 40, what="the job made no progress")
    ok(run_job(job, corpus, sim))
    assert sim.stats()["completed_more_than_once"] <= 4 * 2  # only what was in flight at the kill went again
    undisturbed = tmp_path / "undisturbed"  # its own cache: every request again, in one go
    ok(run_job(job, undisturbed, sim))
    columns = "example_id, sample_idx, label, correct, accepted, reject_reason, completion"
    query = f"SELECT {columns} FROM records ORDER BY example_id, sample_idx"
    assert rows(corpus, query) == rows(undisturbed, query)


def test_rounds_give_the_same_records_on_ray_and_from_a_replay(tmp_path):
    data = problems(12)
    write_jsonl(tmp_path / "problems.jsonl", data)
    answers = []
    for i, row in enumerate(data):  # sample k of example i is right unless (i + k) % 3 == 0
        for k in range(N):
            label = row["answer"] if (i + k) % 3 else "0"
            answers.append({"example_id": row["id"], "sample_idx": k, "text": f"Step {k} of {i}. So the answer "
                                                                                 f"is {label}."})
    write_jsonl(tmp_path / "answers.jsonl", answers)
    job = tmp_path / "job.yaml"
    job.write_text(f"dataset: {{path: problems.jsonl, id_field: id, answer_field: answer}}\ntask: arithmetic\n"
                   f"prompt: few_shot_cot\nteacher: {{backend: replay, path: answers.jsonl}}\n"
                   f"sampling: {{n: {N}, stop_after_accepted: {QUOTA}}}\nfilters: {{dedupe: false}}\nshard_size: 5\n")
    from tests.conftest import stepwise

    for corpus, extra in (("local", []), ("ray", ["--executor", "ray", "--workers", "2"])):
        proc = stepwise("run", str(job), "--corpus", str(tmp_path / corpus), "--quiet", *extra)
        assert proc.returncode == 0, proc.stderr
    query = "SELECT example_id, sample_idx, accepted FROM records ORDER BY example_id, sample_idx"
    local, on_ray = rows(tmp_path / "local", query), rows(tmp_path / "ray", query)
    assert local == on_ray
    for i, row in enumerate(data):
        mine = [r for r in local if r["example_id"] == row["id"]]
        right = {k for k in range(N) if (i + k) % 3}
        asked = QUOTA  # the rounds by hand: the first asks for the quota, each next one for what is missing
        while (accepted := len(right & set(range(asked)))) < QUOTA and asked < N:
            asked += min(QUOTA - accepted, N - asked)
        assert [r["sample_idx"] for r in mine] == list(range(asked))
        assert [r["sample_idx"] for r in mine if r["accepted"]] == sorted(right)[:QUOTA]


@pytest.mark.parametrize("sampling,message", [
    ({"n": 2, "stop_after_accepted": 3}, "more than n"),
    ({"n": 2, "stop_after_accepted": 0}, "greater than or equal to 1"),
])
def test_a_quota_above_n_is_a_job_file_error(tmp_path, sampling, message):
    from stepwise.pipeline.errors import JobSpecError
    from stepwise.pipeline.spec import parse_job

    with pytest.raises(JobSpecError, match=message):
        parse_job({"dataset": {"path": "d.jsonl"}, "task": "arithmetic", "prompt": "few_shot_cot",
                   "teacher": {"backend": "replay", "path": "c.jsonl"}, "sampling": sampling})
