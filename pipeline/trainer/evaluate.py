"""Score the student on the test split with the task's own code, the same methods the pipeline uses for
`records.correct`: `Task.extract` turns answer text into a label, `Task.compare` compares it with gold.

The student's answer text is all it wrote (standard, multitask's `predict:` task) or, in cot mode, what follows
the last `-->`; a cot output without an arrow has no answer and is wrong.
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from stepwise.pipeline.exports import ARROW
from stepwise.pipeline.tasks import Task
from stepwise.pipeline.trainer.data import EvalExample, source_text
from stepwise.pipeline.types import Example
from stepwise.storage.parquet import write_table_atomic

PREDICTIONS_SCHEMA = pa.schema([
    ("example_id", pa.string()), ("input", pa.string()), ("gold_label", pa.string()), ("prediction", pa.string()),
    ("answer", pa.string()), ("predicted_label", pa.string()), ("correct", pa.bool_()),
])


@dataclass(frozen=True, slots=True)
class Scored:
    answer: str | None           # the part of the output read as the answer
    label: str | None            # in the task's label space, or None when it is not an answer
    correct: bool


def answer_text(prediction: str, mode: str) -> str | None:
    """The answer part of a student output: all of it, or in cot mode the text after the last arrow."""
    if mode != "cot":
        return prediction
    _, arrow, answer = prediction.rpartition(ARROW)
    return answer if arrow else None


def score(task: Task, example: Example, gold_label: str, prediction: str, mode: str) -> Scored:
    """Turn a student output into a label and compare it with gold, with the task's own extract and compare."""
    answer = answer_text(prediction, mode)
    label = task.extract(answer, example) if answer is not None and answer.strip() else None
    return Scored(answer, label, label is not None and task.compare(label, gold_label))


def generate(model, tokenizer, sources: list[str], *, device: str, precision: str, batch_size: int,
             max_source_len: int, max_new_tokens: int) -> list[str]:
    """Greedy outputs, in order."""
    import torch

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    outputs: list[str] = []
    model.eval()
    with torch.no_grad(), autocast:
        for start in range(0, len(sources), batch_size):
            batch = tokenizer(sources[start:start + batch_size], max_length=max_source_len, truncation=True,
                              padding=True, return_tensors="pt").to(device)
            ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
            outputs.extend(tokenizer.batch_decode(ids, skip_special_tokens=True))
    return outputs


def evaluate(model, tokenizer, test: list[EvalExample], task: Task, mode: str, *, device: str, precision: str,
             batch_size: int, max_source_len: int, max_new_tokens: int) -> list[dict]:
    """One prediction row per test example (the columns of predictions.parquet)."""
    texts = generate(model, tokenizer, [source_text(mode, t.input) for t in test], device=device,
                     precision=precision, batch_size=batch_size, max_source_len=max_source_len,
                     max_new_tokens=max_new_tokens)
    rows = []
    for t, text in zip(test, texts, strict=True):
        s = score(task, t.example, t.gold_label, text, mode)
        rows.append({"example_id": t.example_id, "input": t.input, "gold_label": t.gold_label, "prediction": text,
                     "answer": s.answer, "predicted_label": s.label, "correct": s.correct})
    return rows


def write_predictions(rows: list[dict], path: Path) -> None:
    write_table_atomic(pa.Table.from_pylist(rows, schema=PREDICTIONS_SCHEMA), path)


def write_json(obj: dict, path: Path) -> None:
    """A JSON file, written whole or not at all."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
