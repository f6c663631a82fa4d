"""Real outputs of reasoning models (../shared/data/reasoning/) replayed through the job contract of issue 12.

Teacher accuracy is `avg(coalesce(correct, false)::int)` over all records, an unfinished trace counting as wrong.
The floors are independent references (each set's SOURCE.md): R1-Distill-Qwen-1.5B GSM8K, the last box after
`</think>` compared numerically, 390/500 = 78.0 %; R1-Distill-Qwen-14B MATH-500, math-verify over the content after
`</think>`, 161/332 = 48.5 % (48.49 %); DeepSeek-R1 hyperbaton, the last "best answer is (X)" after `</think>`,
595/600 = 99.2 %. Run with `-s` to see the figures.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from stepwise.pipeline.run.job import run_job
from stepwise.pipeline.spec import parse_job
from stepwise.storage.catalog import query
from tests.conftest import SHARED_DATA, _need, stepwise

REASONING = SHARED_DATA / "reasoning"


@dataclass(frozen=True)
class Shared:
    """One shared set and the job that replays it."""

    folder: str
    task: str
    style: str
    n: int
    floor: int  # records the reference gets right
    rows: int   # records in all


SETS = {
    "gsm8k": Shared("tli-r1q1.5b-gsm8k", "arithmetic", "prefilled", 1, 390, 500),
    "math500": Shared("tli-r1q14b-math500", "math", "prefilled", 1, 161, 332),
    # choices inline in the question ("Answer choices: (A) ... (B) ..."); gold is the letter
    "hyperbaton": Shared("xannadoo-r1-hyperbaton", "multiple_choice", "inline", 2, 595, 600),
}


def job(name: str) -> dict:
    """The issue's replay contract for one shared set."""
    s = SETS[name]
    folder = _need(REASONING / s.folder)
    return {
        "job_id": f"reasoning-{name}",
        "task": s.task,
        "prompt": "zero_shot_cot",
        "dataset": {"path": str(folder / "data.jsonl"), "id_field": "id", "question_field": "question",
                    "answer_field": "answer"},
        "teacher": {"backend": "replay", "path": str(folder / "completions.jsonl"), "reasoning": s.style},
        "sampling": {"n": s.n, "max_tokens": 32768},
        "filters": {"require_correct": False, "dedupe": False, "max_rationale_chars": 1_000_000},
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Every shared set replayed once into one corpus."""
    _need(REASONING)
    root = tmp_path_factory.mktemp("reasoning-corpus")
    for name in SETS:
        summary = run_job(parse_job(job(name)), root)
        assert summary.status == "completed", summary
    return root


def rows(corpus: Path, name: str, columns: str = "*") -> list[dict]:
    return query(corpus, f"SELECT {columns} FROM records WHERE job_id = 'reasoning-{name}' "
                         f"ORDER BY example_id, sample_idx").table.to_pylist()


@cache
def recorded(name: str) -> dict[tuple[str, int], str]:
    """(example id, sample) -> the raw text, as the replay file holds it."""
    path = REASONING / SETS[name].folder / "completions.jsonl"
    return {(r["example_id"], r.get("sample_idx", 0)): r["text"] for r in map(json.loads, path.open())}


@pytest.mark.parametrize("name", sorted(SETS))
def test_teacher_accuracy_reaches_the_reference(corpus, name):
    s = SETS[name]
    (got,) = query(corpus, f"SELECT count(*) AS n, sum(coalesce(correct, false)::int) AS right, "
                           f"avg(coalesce(correct, false)::int) AS accuracy FROM records "
                           f"WHERE job_id = 'reasoning-{name}'").table.to_pylist()
    print(f"\n{name}: teacher accuracy {got['accuracy']:.4f} ({got['right']}/{got['n']}); reference "
          f"{s.floor / s.rows:.4f} ({s.floor}/{s.rows})")
    assert got["n"] == s.rows
    assert got["right"] >= s.floor, f"{name}: {got['right']}/{got['n']} < reference {s.floor}/{s.rows}"


@pytest.mark.parametrize("name", sorted(SETS))
def test_every_text_without_a_closing_tag_is_truncated_and_never_mined(corpus, name):
    texts = recorded(name)
    unfinished = {key for key, text in texts.items() if "</think>" not in text}
    got = {(r["example_id"], r["sample_idx"]): r for r in rows(corpus, name)}
    truncated = {key for key, r in got.items() if r["reject_reason"] == "truncated"}
    assert truncated == unfinished
    for key in unfinished:
        r = got[key]
        assert (r["label"], r["correct"], r["rationale"], r["trace_label"]) == (None, None, None, None)
        assert r["reject_detail"] == "the thinking never ended (no </think>)"
        assert r["reasoning"] and r["reasoning"] in texts[key]


@pytest.mark.parametrize("name", sorted(SETS))
def test_records_keep_the_trace_apart_from_the_content(corpus, name):
    texts = recorded(name)
    finished = [r for r in rows(corpus, name) if r["reject_reason"] != "truncated"]
    assert finished
    for r in finished:
        raw = texts[(r["example_id"], r["sample_idx"])]
        trace, _, content = raw.partition("</think>")
        assert r["reasoning"] == trace.replace("<think>", "", 1).strip()
        assert r["completion"] == content.strip()
        if r["rationale"] is not None:  # rationale: auto is the trace, without its tags
            assert r["rationale"] == r["reasoning"] and "<think>" not in r["rationale"]


def test_gsm8k_gold_is_its_final_number_and_its_solution_is_kept(corpus):
    data = {d["id"]: d for d in map(json.loads, (REASONING / SETS["gsm8k"].folder / "data.jsonl").open())}
    got = rows(corpus, "gsm8k", "example_id, gold_label, gold_rationale, reject_reason")
    assert all(r["reject_reason"] != "bad_row" for r in got)
    for r in got:
        solution, _, final = data[r["example_id"]]["answer"].rpartition("####")
        assert r["gold_label"] == final.strip().replace(",", "")
        assert r["gold_rationale"] == re.sub(r"<<[^<>]*>>", "", solution).strip()  # calculator notes removed


def test_the_contract_through_the_cli(tmp_path):
    """The job file as the issue writes it, run and queried with the real CLI."""
    import yaml

    path = tmp_path / "gsm8k.yaml"
    spec = job("gsm8k")
    del spec["job_id"]
    path.write_text(yaml.safe_dump(spec))
    stepwise("run", str(path), "--corpus", str(tmp_path / "corpus"), "--quiet", check=True)
    out = stepwise("query", "--corpus", str(tmp_path / "corpus"), "--format", "json",
                   "SELECT count(*) AS n, sum(coalesce(correct, false)::int) AS right, "
                   "count(*) FILTER (WHERE reject_reason = 'truncated') AS truncated FROM records", check=True)
    (got,) = json.loads(out.stdout)
    assert (got["n"], got["truncated"]) == (500, 31)
    assert int(got["right"]) >= SETS["gsm8k"].floor
