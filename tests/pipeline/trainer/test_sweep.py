"""The data-efficiency sweep on the tiny configuration: a run per mode x fraction, the table and the plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from stepwise.pipeline.trainer import MODES, SweepConfig, TrainConfig, sweep
from stepwise.pipeline.trainer.sweep import pivot
from tests.conftest import stepwise

pytest.importorskip("torch", reason="the trainer tests need the train extra: pip install -e '.[train]'")
pytest.importorskip("matplotlib", reason="the sweep plot needs the train extra: pip install -e '.[train]'")


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FRACTIONS = (0.25, 1.0)


def test_sweep_writes_a_row_per_mode_and_fraction_and_a_plot(svamp_export: Path, tmp_path: Path):
    base = TrainConfig(out=str(tmp_path), export=str(svamp_export), steps=4, batch_size=4, max_source_len=64,
                       max_target_len=12, threads=1, quiet=True, save_checkpoint=False)
    rows = sweep(SweepConfig(base, MODES, ("teacher",), FRACTIONS))

    assert [(r["mode"], r["fraction"]) for r in rows] == [(m, f) for m in MODES for f in FRACTIONS]
    with (tmp_path / "sweep.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(MODES) * len(FRACTIONS)
    for r, written in zip(rows, table, strict=True):
        metrics = json.loads((Path(r["out"]) / "metrics.json").read_text())
        assert float(written["accuracy"]) == pytest.approx(metrics["accuracy"]) == pytest.approx(r["accuracy"])
        assert float(written["fraction"]) == metrics["fraction"] == r["fraction"]
    # a quarter of the training examples is a quarter, whatever the mode
    small, full = rows[0]["train_examples"], rows[1]["train_examples"]
    assert small == round(0.25 * full)

    md = (tmp_path / "sweep.md").read_text()
    runs = [line for line in md.split("## Runs")[1].splitlines() if line.startswith("| ") and "variant" not in line]
    assert len(runs) == len(MODES) * len(FRACTIONS)
    for mode in MODES:
        assert f"| {mode}-teacher | " in pivot(rows) and f"| {mode}-teacher | " in md
    png = (tmp_path / "sweep.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5_000


def test_several_modes_or_fractions_on_the_cli_make_a_sweep(svamp_export: Path, tmp_path: Path):
    proc = stepwise("train", "--export", str(svamp_export), "--out", str(tmp_path), "--mode", "standard",
                    "--label-source", "gold,teacher", "--fractions", "0.5", "--steps", "2", "--batch-size", "4",
                    "--max-source-len", "32", "--max-target-len", "8", "--threads", "1", "--no-checkpoint",
                    "--quiet", check=True)
    assert "| standard-gold |" in proc.stdout and "| standard-teacher |" in proc.stdout
    assert (tmp_path / "sweep.png").is_file() and (tmp_path / "standard-gold" / "f0.5" / "metrics.json").is_file()
