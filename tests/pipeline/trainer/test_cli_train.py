"""`stepwise train` flags: a bad value exits 2 naming the flag, before anything is read or written; and the
GPU benchmark script parses its arguments and stops at once without a GPU or a model folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stepwise.pipeline.cli import main
from tests.conftest import ROOT

BENCH = ROOT / "bench" / "train_sweep_gpu.py"


@pytest.fixture
def export(tmp_path: Path) -> Path:
    path = tmp_path / "export.parquet"
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize(("flags", "named"), [
    (["--alpha", "1.5"], "--alpha"),
    (["--mode", "lora"], "--mode"),
    (["--mode", "standard,lora"], "--mode"),
    (["--mode", "standard,,cot"], "--mode"),
    (["--label-source", "gold,human"], "--label-source"),
    (["--fractions", "0,1"], "--fractions"),
    (["--fractions", "half"], "--fractions"),
    (["--steps", "0"], "--steps"),
    (["--steps", "5", "--epochs", "1"], "--steps"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--split", "0.9,0.1"], "--split"),
    (["--model", "./no/such/model"], "--model"),
    (["--task", "sorting"], "--task"),
])
def test_bad_values_exit_2_naming_the_flag(export: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                           flags: list[str], named: str):
    out = tmp_path / "out"
    assert main(["train", "--export", str(export), "--out", str(out), *flags]) == 2
    assert f"({named}): " in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("flags", [["--device", "tpu"], ["--steps", "many"], ["--alpha", "x"]])
def test_argparse_refusals_exit_2_too(export: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                      flags: list[str]):
    with pytest.raises(SystemExit) as info:
        main(["train", "--export", str(export), "--out", str(tmp_path / "out"), *flags])
    assert info.value.code == 2 and flags[0] in capsys.readouterr().err


def test_input_is_an_export_or_a_job(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main(["train", "--out", str(tmp_path / "out")]) == 2
    assert "either --export PATH or --corpus DIR --job ID" in capsys.readouterr().err
    assert main(["train", "--export", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=120, check=False)


def test_the_gpu_bench_script_parses_and_fails_fast(tmp_path: Path, dsbs_dir: Path):
    helped = bench("--help")
    assert helped.returncode == 0 and "--model" in helped.stdout and "--fractions" in helped.stdout
    no_model = bench("--model", str(tmp_path / "no-t5-here"))
    assert no_model.returncode == 1 and "no such folder" in no_model.stderr
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        no_gpu = bench("--model", "tiny")
        assert no_gpu.returncode == 1 and "no CUDA GPU" in no_gpu.stderr
    assert not list(tmp_path.iterdir())


def test_the_gpu_bench_script_runs_end_to_end_on_the_tiny_cpu_setting(tmp_path: Path, dsbs_dir: Path):
    """Its whole path (import both release splits, export them as one split folder, sweep, print) on the
    smallest setting: the GPU run differs only in --model, --device and the sizes."""
    pytest.importorskip("torch")
    proc = bench("--model", "tiny", "--device", "cpu", "--modes", "standard", "--fractions", "1.0", "--steps", "2",
                 "--max-source-len", "16", "--max-target-len", "4", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "| standard-teacher |" in proc.stdout
    assert {p.name for p in (tmp_path / "export").iterdir()} == {"train.parquet", "test.parquet"}
    metrics = json.loads((tmp_path / "standard-teacher" / "f1" / "metrics.json").read_text())
    assert metrics["n"] == 198  # the release's own test split: its 198 accepted records, one per question
    assert metrics["records_by_split"]["valid"] == 0 and metrics["train_examples"] > 700
