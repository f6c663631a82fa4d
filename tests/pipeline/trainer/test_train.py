"""Tiny CPU runs of every mode on a small svamp export: the loss goes down, multitask logs both losses, and
the checkpoint, predictions and metrics exist and agree with each other."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stepwise.pipeline.trainer import TrainConfig, main
from stepwise.pipeline.trainer.data import load_data
from stepwise.pipeline.trainer.evaluate import PREDICTIONS_SCHEMA, evaluate
from stepwise.pipeline.trainer.model import load_model
from tests.conftest import stepwise
from tests.pipeline.trainer.conftest import SVAMP_JOB

pytest.importorskip("torch", reason="the trainer tests need the train extra: pip install -e '.[train]'")
pytest.importorskip("transformers", reason="the trainer tests need the train extra: pip install -e '.[train]'")


STEPS = 40


def tiny(export: Path, out: Path, **overrides) -> TrainConfig:
    """A small fixed training set (10 % of the train split: 16 questions) seen for a few epochs, on one thread."""
    settings = {"out": str(out), "export": str(export), "fraction": 0.1, "steps": STEPS, "batch_size": 8,
                "lr": 2e-3, "max_source_len": 128, "max_target_len": 192, "threads": 1, "quiet": True}
    return TrainConfig(**(settings | overrides))


def log_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


@pytest.mark.parametrize(("mode", "label_source", "target_len"), [
    ("standard", "gold", 16), ("standard", "teacher", 16), ("multitask", "teacher", 192), ("cot", "teacher", 192),
])
def test_a_tiny_run_learns_and_writes_consistent_outputs(svamp_export: Path, tmp_path: Path, mode: str,
                                                         label_source: str, target_len: int):
    out = tmp_path / mode
    config = tiny(svamp_export, out, mode=mode, label_source=label_source, max_target_len=target_len)
    metrics = main(config)

    rows = log_rows(out)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    first, last = mean(r["loss"] for r in rows[:5]), mean(r["loss"] for r in rows[-5:])
    assert last < 0.8 * first, (first, last)
    if mode == "multitask":  # both tasks every step, and the total is their alpha-weighted sum
        for r in rows:
            assert math.isclose(r["loss"], 0.5 * r["label_loss"] + 0.5 * r["rationale_loss"], rel_tol=1e-4)
        for key in ("label_loss", "rationale_loss"):
            assert mean(r[key] for r in rows[-5:]) < 0.8 * mean(r[key] for r in rows[:5]), key
        assert metrics["final_label_loss"] is not None and metrics["final_rationale_loss"] is not None
    else:
        assert "label_loss" not in rows[0] and metrics["final_rationale_loss"] is None

    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics
    predictions = pq.read_table(out / "predictions.parquet")
    assert predictions.schema.equals(PREDICTIONS_SCHEMA)
    preds = predictions.to_pylist()
    data = load_data(config)
    assert [p["example_id"] for p in preds] == [t.example_id for t in data.test]
    assert not {p["example_id"] for p in preds} & {r.example_id for r in data.train}
    assert metrics["n"] == len(preds) > 10
    assert metrics["correct"] == sum(p["correct"] for p in preds)
    assert metrics["accuracy"] == pytest.approx(mean(p["correct"] for p in preds))
    assert all(p["predicted_label"] is not None for p in preds if p["correct"])
    if mode == "cot":
        assert all(p["answer"] is None for p in preds if "-->" not in p["prediction"])
    assert metrics["train_examples"] == 16 and metrics["steps"] == STEPS
    assert (metrics["mode"], metrics["label_source"], metrics["device"]) == (mode, label_source, "cpu")
    assert metrics["final_loss"] == pytest.approx(mean(r["loss"] for r in rows[-10:]))

    # the checkpoint loads again from its folder (offline) and reproduces the predictions
    model, tokenizer = load_model(str(out / "checkpoint"))
    again = evaluate(model, tokenizer, data.test, data.task, mode, device="cpu", precision="fp32", batch_size=32,
                     max_source_len=config.max_source_len, max_new_tokens=config.max_target_len)
    assert [r["prediction"] for r in again] == [p["prediction"] for p in preds]


def test_same_seed_same_run(svamp_export: Path, tmp_path: Path):
    runs = [main(tiny(svamp_export, tmp_path / str(i), steps=6, max_target_len=8, save_checkpoint=False,
                      seed=seed)) for i, seed in enumerate((1, 1, 2))]
    losses = [[r["loss"] for r in log_rows(tmp_path / str(i))] for i in range(3)]
    assert losses[0] == losses[1] and losses[0] != losses[2]
    assert not (tmp_path / "0" / "checkpoint").exists() and runs[0]["checkpoint"] is None


def test_the_cli_trains_from_a_corpus_job(release_corpus: Path, tmp_path: Path):
    out = tmp_path / "cli"
    proc = stepwise("train", "--corpus", str(release_corpus), "--job", SVAMP_JOB, "--mode", "multitask",
                    "--out", str(out), "--steps", "12", "--batch-size", "4", "--max-source-len", "96",
                    "--max-target-len", "32", "--threads", "1", "--log-every", "4", check=True)
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"accuracy {metrics['accuracy']:.2%}" in proc.stdout and str(out) in proc.stdout
    assert metrics["source"] == f"corpus {release_corpus} job {SVAMP_JOB}" and metrics["task"] == "arithmetic"
    progress = [line for line in proc.stderr.splitlines() if line.startswith("step ")]
    assert len(progress) == 3 and all(" label " in line and " rationale " in line for line in progress)
    assert (out / "checkpoint" / "model.safetensors").is_file()
