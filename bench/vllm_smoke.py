"""The vllm backend on a real GPU: a Fine-tune-CoT style zero-shot job over a local model.

Run on a machine with a CUDA GPU and `pip install -e '.[vllm,ray]'`:

    python bench/vllm_smoke.py --model /path/to/local/instruct-model [--dataset svamp] [--examples 500]

It runs the job twice, on the local executor and on Ray (one worker actor holding the GPU), and prints
completions/s, generated tokens/s, the teacher's accuracy and the reject reasons. Nothing is downloaded: the
model must be a local path, and the data comes from ../shared/data/reasoning-teacher.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("STEPWISE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "reasoning-teacher" / "dataset"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a local model folder (nothing is downloaded)")
    ap.add_argument("--dataset", default="svamp")
    ap.add_argument("--examples", type=int, default=500)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--tp", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from stepwise.pipeline.run.job import run_job
    from stepwise.pipeline.spec import parse_job

    results = []
    for executor in ("local", "ray"):
        with tempfile.TemporaryDirectory() as tmp:
            spec = parse_job({
                "job_id": f"vllm-{executor}",
                "dataset": {"path": str(DATA / f"{args.dataset}.json"), "format": "json", "answer_field": "answer",
                            "limit": args.examples},
                "task": "auto", "prompt": "zero_shot_cot",
                "teacher": {"backend": "vllm", "model": args.model, "tensor_parallel_size": args.tp},
                "sampling": {"n": args.samples, "temperature": 0.7, "max_tokens": 256},
                "executor": {"kind": executor, "workers": 1}, "shard_size": 250,
            })
            started = time.perf_counter()
            s = run_job(spec, Path(tmp) / "corpus")
            elapsed = time.perf_counter() - started
            results.append({"executor": executor, "records": s.n_records, "seconds": round(elapsed, 1),
                            "completions_per_s": round(s.n_records / elapsed, 1),
                            "generated_tokens_per_s": round(s.tokens_out / elapsed),
                            "teacher_accuracy": round(s.n_correct / max(1, s.n_with_gold), 4),
                            "reject_reasons": s.reject_reasons})
    print(json.dumps({"benchmark": "vllm backend on a GPU", "model": args.model, "results": results}, indent=2))


if __name__ == "__main__":
    main()
