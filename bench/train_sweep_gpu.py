"""The student trainer's data-efficiency sweep on a GPU, with a real T5 checkpoint from a local folder.

Run on a machine with a CUDA GPU and `pip install -e '.[train]'` (torch with CUDA):

    python bench/train_sweep_gpu.py --model /path/to/t5-base [--dataset svamp|cqa] [--fractions 0.125,0.25,0.5,1.0]

It imports the Distilling step-by-step release's train and test splits of one dataset (../shared/data) into a
temporary corpus with `stepwise import dsbs`, exports both as Parquet into one folder (train.parquet,
test.parquet: the student is scored on the release's own test split), trains every mode at every fraction
(`stepwise train` in-process, bf16 on the GPU) and prints the accuracy table; sweep.csv, sweep.md and sweep.png
are written to --out. Nothing is downloaded: --model must be a local folder (or `tiny`, the offline test
configuration, e.g. `--device cpu --model tiny` for a smoke run of the script itself).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DSBS = Path(os.environ.get("STEPWISE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "distilling-step-by-step"
KINDS = {"svamp": "arithmetic", "cqa": "multiple_choice"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a local T5-family folder (e.g. t5-base), or `tiny`")
    ap.add_argument("--dataset", choices=sorted(KINDS), default="svamp")
    ap.add_argument("--modes", default="standard,multitask,cot")
    ap.add_argument("--label-sources", default="teacher", help="teacher, gold, or both: gold,teacher")
    ap.add_argument("--fractions", default="0.125,0.25,0.5,1.0")
    ap.add_argument("--steps", type=int, default=2000, help="optimizer steps per run (the same for every fraction)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, help="default: the trainer's (5e-5 for a pretrained model)")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--max-source-len", type=int, default=512)
    ap.add_argument("--max-target-len", type=int, default=256)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu only for a smoke run")
    ap.add_argument("--out", help="results folder (default: a temporary folder, printed)")
    ap.add_argument("--keep-checkpoints", action="store_true", help="write each run's checkpoint/ (large)")
    return ap.parse_args(argv)


def fail_fast(args: argparse.Namespace) -> None:
    """Stop before any work when the data, the model folder or the GPU is missing."""
    if not DSBS.is_dir():
        sys.exit(f"data not found at {DSBS}: it ships beside the repo as ../shared/data")
    if args.model != "tiny" and not Path(args.model).expanduser().is_dir():
        sys.exit(f"--model {args.model}: no such folder (give a local T5 checkpoint; nothing is downloaded)")
    if args.device == "cuda":
        try:
            import torch
        except ImportError:
            sys.exit("torch is not installed: pip install -e '.[train]' (with a CUDA build of torch)")
        if not torch.cuda.is_available():
            sys.exit("no CUDA GPU visible to torch: this benchmark is for a GPU machine (--device cpu for a smoke run)")


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "stepwise", *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    fail_fast(args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder never needs the hub; make sure nothing asks
    from stepwise.pipeline.trainer import SweepConfig, TrainConfig, sweep
    from stepwise.pipeline.trainer.config import parse_fractions, parse_list
    from stepwise.pipeline.trainer.sweep import pivot

    out = Path(args.out or tempfile.mkdtemp(prefix="stepwise-sweep-"))
    with tempfile.TemporaryDirectory() as tmp:
        corpus, export = Path(tmp) / "corpus", out / "export"
        src = DSBS / args.dataset
        for split in ("train", "test"):  # the release's own splits: trained on train, scored on test
            cli("import", "dsbs", "--src", str(src), "--split", split, "--task", KINDS[args.dataset],
                "--corpus", str(corpus), "--job-id", f"{args.dataset}-{split}", "--quiet")
            cli("export", "--corpus", str(corpus), "--job", f"{args.dataset}-{split}", "--format", "parquet",
                "--out", str(export / f"{split}.parquet"))
    base = TrainConfig(out=str(out), export=str(export), mode="standard", model=args.model, steps=args.steps,
                       batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, lr=args.lr,
                       alpha=args.alpha, max_source_len=args.max_source_len, max_target_len=args.max_target_len,
                       device=args.device, log_every=100, save_checkpoint=args.keep_checkpoints)
    started = time.perf_counter()
    rows = sweep(SweepConfig(base, parse_list(args.modes, "modes"), parse_list(args.label_sources, "label_sources"),
                             parse_fractions(args.fractions)))
    print(json.dumps({"benchmark": "student trainer sweep", "dataset": args.dataset, "model": args.model,
                      "device": args.device, "steps": args.steps, "seconds": round(time.perf_counter() - started, 1),
                      "out": str(out)}, indent=2))
    print(pivot(rows))


if __name__ == "__main__":
    main()
