"""`stepwise import dsbs`: bring the Distilling step-by-step release into the corpus.

Layout of one dataset folder (e.g. `cqa/`): `<name>_<split>.json` holds the gold data as JSON lines, and
`llm/<split>_CoT_<k>.json` holds JSON arrays of raw teacher completions, chunk k holding rows in order.
Rows and completions are matched by position; the records go through the same parsing and filters as any
job, with the replay backend serving the recorded text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from stepwise.pipeline.datasets import read_examples
from stepwise.pipeline.errors import DatasetError
from stepwise.pipeline.run.job import run_job
from stepwise.pipeline.run.summary import JobSummary
from stepwise.pipeline.spec import JobSpec, parse_job
from stepwise.pipeline.teachers.replay import ReplayBackend
from stepwise.pipeline.types import Example
from stepwise.prompts import PromptTemplate

_CHUNK = re.compile(r"_CoT_(\d+)\.json$")


def _fields(first_row: dict) -> dict:
    """Field mapping from the release's row shape (cqa, svamp, esnli and look-alikes)."""
    if "premise" in first_row and "hypothesis" in first_row:
        fields = {"premise_field": "premise", "hypothesis_field": "hypothesis"}
    elif "question" in first_row:
        fields = {"question_field": "question"}
    elif "input" in first_row:
        fields = {"question_field": "input"}
    else:
        raise DatasetError(f"cannot tell the question field from keys {sorted(first_row)}")
    answer = next((k for k in ("answer", "label") if k in first_row), None)
    if answer is None:
        raise DatasetError(f"cannot tell the gold answer field from keys {sorted(first_row)}")
    fields["answer_field"] = answer
    if "choices" in first_row:
        fields["choices_field"] = "choices"
    if "id" in first_row:
        fields["id_field"] = "id"
    return fields


def load_completions(src: Path, split: str) -> list[str | None]:
    """The release's completions for a split, chunks concatenated in numeric order."""
    chunks = sorted(((int(m.group(1)), p) for p in (src / "llm").glob(f"{split}_CoT_*.json")
                     if (m := _CHUNK.search(p.name))), key=lambda kp: kp[0])
    if not chunks:
        raise DatasetError(f"no completion chunks {src}/llm/{split}_CoT_<k>.json")
    expected = list(range(len(chunks)))
    if [k for k, _ in chunks] != expected:
        raise DatasetError(f"completion chunks for {split!r} are not numbered 0..{len(chunks) - 1}: "
                           f"{[k for k, _ in chunks]}")
    texts: list[str | None] = []
    for _, path in chunks:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise DatasetError(f"{path}: expected a JSON array of strings")
        texts.extend(t if isinstance(t, str) else None for t in data)
    return texts


def dsbs_spec(src: Path, split: str, task: str, job_id: str, teacher_model: str) -> JobSpec:
    gold = src / f"{src.name}_{split}.json"
    if not gold.is_file():
        raise DatasetError(f"gold file not found: {gold}")
    with gold.open("rb") as fh:
        try:
            first = json.loads(fh.readline())
        except (ValueError, RecursionError):
            raise DatasetError(f"{gold}: the first line is not a JSON object of the release's layout") from None
    return parse_job({
        "job_id": job_id,
        "dataset": {"path": str(gold), "format": "jsonl", **_fields(first)},
        "task": task,
        "prompt": {"id": "external:dsbs"},
        "teacher": {"backend": "replay", "path": str(src / "llm"), "model": teacher_model},
        # the release keeps every rationale; correctness is recorded, acceptance left to the student recipe
        "filters": {"require_correct": False},
        "shard_size": 5000,
    }, source="dsbs import")


def import_dsbs(src: str | Path, split: str, task: str, corpus: str | Path, job_id: str, *,
                teacher_model: str = "palm-540b", overwrite: bool = False, progress=None) -> tuple[JobSummary, int]:
    """Import one split; returns the job summary and how many completions had no matching row."""
    src = Path(src)
    spec = dsbs_spec(src, split, task, job_id, teacher_model)
    items = list(read_examples(spec.dataset))
    texts = load_completions(src, split)
    recorded = {}
    for item in items:
        if isinstance(item, Example):
            row = item.meta["row"]
            if row < len(texts):
                recorded[(item.id, 0)] = (texts[row], None, None, None)
    backend = ReplayBackend(recorded, teacher_model)
    prompt = PromptTemplate(id="external:dsbs", hash=None, output="cot", user="{input}")
    summary = run_job(spec, corpus, items=items, backend=backend, prompt=prompt, overwrite=overwrite,
                      progress=progress)
    return summary, max(0, len(texts) - len(items))
