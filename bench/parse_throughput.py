"""Parse + validate throughput per core on real PaLM-540B completions (cqa, svamp, esnli).

Prints completions per second on one core (this process, one thread) and the ratio to the target of
20,000 completions/s per core. Not a timed test: run it with `make bench` or `python bench/parse_throughput.py`.
"""

from __future__ import annotations

import time

from _data import SPLITS, print_json, real_pairs, require_data

TARGET = 20_000


def main(repeats: int = 3) -> None:
    require_data()
    from stepwise.pipeline.parsing import parse_completion
    from stepwise.pipeline.spec import FilterSpec
    from stepwise.pipeline.types import Completion
    from stepwise.pipeline.validate import judge_example

    filters = FilterSpec()
    results = {}
    total_n = total_t = 0.0
    for name, split, kind in SPLITS:
        task, pairs = real_pairs(name, split, kind)
        comps = [Completion("k", ex.id, 0, text, "stop") for ex, _, text in pairs]
        best = float("inf")
        for _ in range(repeats):
            t0 = time.process_time()  # CPU time of this process: one core
            for (ex, gold, _), comp in zip(pairs, comps, strict=True):
                judge_example([parse_completion(comp, ex, task)], gold, task, filters)
            best = min(best, time.process_time() - t0)
        rate = len(pairs) / best
        results[f"{name}/{split}"] = {"completions": len(pairs), "per_core_per_s": round(rate),
                                      "ratio_to_target": round(rate / TARGET, 2)}
        total_n += len(pairs)
        total_t += best
    overall = total_n / total_t
    print_json({"benchmark": "parse + validate, one core", "target_per_core_per_s": TARGET, "splits": results,
                "overall_per_core_per_s": round(overall), "overall_ratio_to_target": round(overall / TARGET, 2)})


if __name__ == "__main__":
    main()
