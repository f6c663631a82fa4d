"""Parse + validate throughput per core on real reasoning-model outputs (../shared/data/reasoning/).

Three sets: R1-Distill-Qwen-1.5B on GSM8K (prefilled traces, `\\boxed{}` answers), R1-Distill-Qwen-14B on MATH-500
(LaTeX answers compared by math-verify), DeepSeek-R1 on BBH hyperbaton (inline `<think>` traces). Traces run to
thousands of tokens. Prints completions per second on one core (this process, one thread; best of three passes,
the task's answer caches emptied before each, so every comparison is made again) and the ratio to the target of
2,000 completions/s per core, with each set's teacher accuracy beside it. Not a timed test: run it with
`python bench/reasoning_parse.py`.
"""

from __future__ import annotations

import json
import os
import time

from _data import ROOT, print_json

TARGET = 2_000
REASONING = ROOT.parent / "shared" / "data" / "reasoning"
if "STEPWISE_SHARED_DATA" in os.environ:
    from pathlib import Path

    REASONING = Path(os.environ["STEPWISE_SHARED_DATA"]) / "reasoning"

# (folder, task kind, teacher.reasoning)
SETS = [("tli-r1q1.5b-gsm8k", "arithmetic", "prefilled"), ("tli-r1q14b-math500", "math", "prefilled"),
        ("xannadoo-r1-hyperbaton", "multiple_choice", "inline")]


def load(folder: str, kind: str):
    """(task, [(example, gold label, [completions])]) for one set, read through our own readers."""
    from stepwise.pipeline.datasets import read_examples
    from stepwise.pipeline.spec import DatasetSpec, TaskSpec
    from stepwise.pipeline.tasks import build_task
    from stepwise.pipeline.types import Completion, Example

    task = build_task(TaskSpec(kind=kind))
    spec = DatasetSpec(path=str(REASONING / folder / "data.jsonl"), id_field="id", answer_field="answer")
    by_example: dict[str, list[Completion]] = {}
    for row in map(json.loads, (REASONING / folder / "completions.jsonl").open()):
        c = Completion("k", row["example_id"], row.get("sample_idx", 0), row["text"], row.get("finish_reason"))
        by_example.setdefault(c.example_id, []).append(c)
    out = []
    for item in read_examples(spec):
        if isinstance(item, Example):
            ex = task.prepare(item)
            out.append((ex, task.normalize_gold(ex.gold, ex), sorted(by_example[ex.id], key=lambda c: c.sample_idx)))
    return task, out


def clear_answer_caches() -> None:
    """Empty stepwise's answer caches and math-verify's own (small) ones: each pass compares everything anew."""
    from math_verify import parser

    from stepwise.pipeline.tasks import math as math_kind

    math_kind.equivalent.cache_clear()
    math_kind._parsed.cache_clear()
    for name in ("parse_latex_cached", "parse_expr_cached", "extract_latex"):
        getattr(getattr(parser, name, None), "cache_clear", lambda: None)()


def main(repeats: int = 3) -> None:
    if not REASONING.is_dir():
        raise SystemExit(f"benchmark data not found at {REASONING}: it ships beside the repo as ../shared/data")
    from stepwise.pipeline.parsing import ParseOptions, parse_completion
    from stepwise.pipeline.spec import FilterSpec
    from stepwise.pipeline.validate import judge_example

    filters = FilterSpec(require_correct=False, dedupe=False, max_rationale_chars=1_000_000)
    results = {}
    total_n = total_t = 0.0
    for folder, kind, style in SETS:
        task, examples = load(folder, kind)
        options = ParseOptions(reasoning=style)
        n = sum(len(comps) for _, _, comps in examples)
        chars = sum(len(c.text) for _, _, comps in examples for c in comps)
        best, right = float("inf"), 0
        for _ in range(repeats):
            clear_answer_caches()
            right = 0
            t0 = time.process_time()  # CPU time of this process: one core
            for ex, gold, comps in examples:
                verdicts = judge_example([parse_completion(c, ex, task, options=options) for c in comps], gold,
                                         task, filters)
                right += sum(bool(v.correct) for v in verdicts)
            best = min(best, time.process_time() - t0)
        rate = n / best
        results[folder] = {"task": kind, "reasoning": style, "completions": n, "mean_chars": round(chars / n),
                           "per_core_per_s": round(rate), "ratio_to_target": round(rate / TARGET, 2),
                           "teacher_accuracy": round(right / n, 4)}
        total_n += n
        total_t += best
    overall = total_n / total_t
    print_json({"benchmark": "reasoning outputs: split trace, parse + validate, one core",
                "target_per_core_per_s": TARGET, "sets": results, "overall_per_core_per_s": round(overall),
                "overall_ratio_to_target": round(overall / TARGET, 2)})


if __name__ == "__main__":
    main()
