"""`stepwise demo` (what `make demo` runs): simulator up, live job, DuckDB summary, exports, simulator down."""

from __future__ import annotations

import json

from stepwise.storage.catalog import query
from tests.conftest import stepwise


def test_demo_runs_end_to_end_and_a_second_run_pays_nothing(tmp_path):
    corpus, out = tmp_path / "corpus", tmp_path / "exports"
    first = stepwise("demo", "--corpus", str(corpus), "--out", str(out), "--quiet")
    assert first.returncode == 0, first.stderr
    assert "demo done" in first.stderr
    rows = query(corpus, "SELECT count(*) AS n, count(DISTINCT example_id) AS examples, sum(accepted::int) AS ok, "
                         "sum(cost_usd) > 0 AS costed, count(tokens_out) AS with_tokens FROM records").table.to_pylist()[0]
    # 20 problems x 4 samples, plus the one malformed row kept as a bad_row reject
    assert (rows["n"], rows["examples"], rows["costed"], rows["with_tokens"]) == (81, 21, True, 80)
    lines = (out / "demo-finetune-cot.jsonl").read_text().splitlines()
    assert len(lines) == rows["ok"] > 0
    assert all(json.loads(line)["completion"].endswith(" END") for line in lines)
    assert sorted(p.name for p in (out / "demo-dsbs").iterdir()) == ["test.jsonl", "train.jsonl", "valid.jsonl"]
    metrics = json.loads((out / "demo-student" / "metrics.json").read_text())  # the tiny student trained on it
    assert metrics["mode"] == "cot" and metrics["steps"] == 30 and metrics["n"] >= 1
    assert metrics["final_loss"] < metrics["first_loss"]

    again = stepwise("demo", "--corpus", str(corpus), "--out", str(out), "--quiet")
    assert again.returncode == 0, again.stderr
    joined = " ".join(again.stderr.split())
    assert "shards run / skipped │ 0 / 3" in joined
    assert query(corpus, "SELECT count(*) AS n FROM records").table.to_pylist() == [{"n": 81}]
