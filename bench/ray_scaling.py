"""Throughput with 1, 2 and 4 Ray workers against a simulator whose limit is above what one worker drives.

Each worker runs its own engine with `max_concurrency` requests in flight, so one worker can drive at most
max_concurrency / latency requests/s; the simulator's limit (capacity / latency) is set far above that. On a
machine with enough cores throughput grows with the workers until the teacher's limit; on this 2-core
machine the CPU (the workers, the driver and the simulator share two cores) is the ceiling, which the printed
curve shows. Not a timed test: it prints requests/s and the speed-up over one worker.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from teacher_throughput import sim_stats, start_sim  # noqa: E402


def run(url: str, workers: int, n: int, concurrency: int) -> dict:
    from stepwise.pipeline.run.job import run_job
    from stepwise.pipeline.spec import parse_job

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.jsonl"
        data.write_text("".join(json.dumps({"id": f"w{workers}-{i}", "question": f"What is {i} plus 2?",
                                            "answer": str(i + 2)}) + "\n" for i in range(n)))
        spec = parse_job({
            "job_id": f"scale-{workers}",
            "dataset": {"path": str(data), "id_field": "id", "answer_field": "answer"},
            "task": "arithmetic", "prompt": "few_shot_cot",
            "teacher": {"backend": "openai", "model": "stepwise-sim", "base_url": f"{url}/v1", "api_key_env": None,
                        "max_concurrency": concurrency},
            "sampling": {"max_tokens": 64}, "shard_size": 100,
            "executor": {"kind": "ray", "workers": workers},
        })
        before = sim_stats(url)["completed"]
        started = time.perf_counter()
        summary = run_job(spec, Path(tmp) / "corpus")
        elapsed = time.perf_counter() - started
        done = sim_stats(url)["completed"] - before
    return {"workers": workers, "requests": done, "records": summary.n_records, "seconds": round(elapsed, 2),
            "requests_per_s": round(done / elapsed, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--concurrency", type=int, default=32, help="max_concurrency of each worker's engine")
    ap.add_argument("--workers", default="1,2,4")
    args = ap.parse_args()
    import ray

    from stepwise.pipeline.run.ray_executor import ensure_ray
    from stepwise.pipeline.spec import ExecutorSpec

    proc, url = start_sim("--latency", str(args.latency), "--capacity", "2048")
    try:
        ensure_ray(ExecutorSpec(kind="ray", workers=max(int(w) for w in args.workers.split(","))))
        run(url, 1, 200, args.concurrency)  # warm-up: Ray worker processes and imports
        curve = [run(url, int(w), args.requests, args.concurrency) for w in args.workers.split(",")]
    finally:
        proc.terminate()
        ray.shutdown()
    base = curve[0]["requests_per_s"]
    for point in curve:
        point["one_worker_limit_per_s"] = round(args.concurrency / args.latency, 1)
        point["speedup_over_1"] = round(point["requests_per_s"] / base, 2)
    print(json.dumps({"benchmark": "Ray workers vs throughput", "teacher_limit_per_s": round(2048 / args.latency),
                      "latency_s": args.latency, "cores": __import__("os").cpu_count(), "curve": curve}, indent=2))


if __name__ == "__main__":
    main()
