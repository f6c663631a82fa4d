"""Shared helpers for benchmarks: locate ../shared/data and build real (Example, completion) pairs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DSBS = Path(os.environ.get("STEPWISE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "distilling-step-by-step"

# (dataset, split, task kind) — the splits the corpus-core issue measures
SPLITS = [("cqa", "train", "multiple_choice"), ("svamp", "train", "arithmetic"), ("esnli", "valid", "nli")]


def require_data() -> Path:
    if not DSBS.is_dir():
        sys.exit(f"benchmark data not found at {DSBS}: it ships beside the repo as ../shared/data")
    return DSBS


def real_pairs(name: str, split: str, kind: str):
    """(task, [(example, gold_label, completion_text)]) for one release split, read through our own readers."""
    from stepwise.pipeline.datasets import read_examples
    from stepwise.pipeline.importers import dsbs_spec, load_completions
    from stepwise.pipeline.tasks import build_task
    from stepwise.pipeline.types import Example

    spec = dsbs_spec(DSBS / name, split, kind, f"bench-{name}", "palm-540b")
    task = build_task(spec.task)
    texts = load_completions(DSBS / name, split)
    out = []
    for item in read_examples(spec.dataset):
        if isinstance(item, Example):
            ex = task.prepare(item)
            out.append((ex, task.normalize_gold(ex.gold, ex), texts[ex.meta["row"]]))
    return task, out


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2))
