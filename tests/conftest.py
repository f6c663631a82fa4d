"""Shared fixtures. Real data comes from ../shared/data at run time; tests that need it skip without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("STEPWISE_SHARED_DATA", ROOT.parent / "shared" / "data"))
DSBS = SHARED_DATA / "distilling-step-by-step"
REASONING_TEACHER = SHARED_DATA / "reasoning-teacher"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (it ships beside the repo in CI; set STEPWISE_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def dsbs_dir() -> Path:
    """The Distilling step-by-step release folder (cqa, svamp, esnli)."""
    return _need(DSBS)


@pytest.fixture(scope="session")
def reasoning_teacher_dir() -> Path:
    """The Fine-tune-CoT datasets folder."""
    return _need(REASONING_TEACHER)


def load_dsbs_pairs(dsbs: Path, name: str, split: str, limit: int | None = None) -> list[tuple[dict, str]]:
    """(gold row, raw completion) pairs of one release split, in order."""
    from pipeline.importers import load_completions

    rows = [json.loads(line) for line in (dsbs / name / f"{name}_{split}.json").open()]
    texts = load_completions(dsbs / name, split)
    pairs = list(zip(rows, texts, strict=False))
    return pairs[:limit] if limit else pairs


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def stepwise(*args: str, cwd: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"stepwise {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc
