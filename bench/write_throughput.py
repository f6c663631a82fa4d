"""Corpus write throughput: 1,000,000 records to Parquet (zstd, explicit schema, atomic part files).

Records are built from real parsed PaLM-540B completions (cqa train), replicated with distinct example ids,
and written the way the runner writes them: one atomic part file per shard of `--shard-records` records.
Prints records per second and the ratio to the target of 100,000 records/s.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from _data import print_json, real_pairs, require_data

TARGET = 100_000


def build_records(n: int):
    from stepwise.pipeline.parsing import parse_completion
    from stepwise.pipeline.types import Completion, RationaleRecord

    task, pairs = real_pairs("cqa", "train", "multiple_choice")
    now = datetime.now(UTC)
    base = []
    for ex, gold, text in pairs:
        p = parse_completion(Completion("k", ex.id, 0, text, "stop"), ex, task)
        base.append(RationaleRecord(
            job_id="bench-write", example_id=ex.id, sample_idx=0, task=task.kind, input=task.student_input(ex),
            gold_label=gold, label=p.label, rationale=p.rationale,
            correct=task.compare(p.label, gold) if p.label else None, accepted=p.reject is None,
            reject_reason=p.reject.value if p.reject else None, reject_detail=p.detail, consensus_label=p.label,
            agreement=1.0, prompt_id="few_shot_cot", prompt_hash="0123456789abcdef", teacher_backend="replay",
            teacher_model="palm-540b", request_key="f" * 64, finish_reason="stop", tokens_in=420, tokens_out=96,
            cost_usd=None, latency_s=0.8, completion=text, created_at=now))
    return [replace(base[i % len(base)], example_id=f"{base[i % len(base)].example_id}-{i}") for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--shard-records", type=int, default=100_000)
    args = ap.parse_args()
    require_data()
    from stepwise.storage.parquet import write_records

    records = build_records(args.records)
    folder = Path(tempfile.mkdtemp(prefix="stepwise-bench-write-"))
    try:
        t0 = time.perf_counter()
        for i in range(0, len(records), args.shard_records):
            write_records(records[i:i + args.shard_records], folder / f"shard-{i // args.shard_records:06d}.parquet")
        elapsed = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in folder.glob("*.parquet"))
        raw = sum(len(r.completion or "") + len(r.input or "") + len(r.rationale or "") for r in records)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rate = len(records) / elapsed
    print_json({"benchmark": "corpus write (records -> Arrow -> Parquet zstd, atomic parts)",
                "records": len(records), "seconds": round(elapsed, 2), "records_per_s": round(rate),
                "target_per_s": TARGET, "ratio_to_target": round(rate / TARGET, 2),
                "parquet_mb": round(size / 1e6, 1), "raw_text_mb": round(raw / 1e6, 1)})


if __name__ == "__main__":
    main()
