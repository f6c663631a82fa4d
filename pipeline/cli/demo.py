"""`stepwise demo`: the main job end to end on embedded defaults, with nothing to set up by hand.

Starts the teacher simulator on a free loopback port (answering the demo problems task-aware, with some wrong
answers and a few injected faults), runs the live job `pipeline/samples/demo/live.yaml` against it over the
OpenAI protocol, stops the simulator, prints a DuckDB summary, writes two exports and trains a tiny student on
the corpus (when the `train` extra is installed). It calls the library, as a notebook would, and prints what the
commands print.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stepwise.pipeline.cli.console import err, print_table
from stepwise.pipeline.cli.data import say_exported
from stepwise.pipeline.cli.jobs import run_and_report
from stepwise.pipeline.cli.train import say_trained

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "demo"
JOB_ID = "demo-live"


NAMES = ("demo",)  # the commands this module adds


def main(corpus: str, out: str, quiet: bool = False) -> int:
    from stepwise.pipeline.exports import export_job
    from stepwise.pipeline.sim import running_simulator
    from stepwise.pipeline.spec import load_job
    from stepwise.storage.catalog import query

    with running_simulator("--dataset", str(SAMPLES / "problems.jsonl"), "--latency", "0.3", "--jitter", "0.2",
                           "--wrong-rate", "0.15", "--faults", "error_503=0.05,truncated=0.03", "--seed", "7") as url:
        err.print(f"teacher simulator listening on {url}")
        code = run_and_report(load_job(SAMPLES / "live.yaml", overrides=[f"teacher.base_url={url}"]), corpus,
                              quiet=quiet)
        if code != 0:
            return code
    table = query(corpus, "SELECT coalesce(reject_reason, 'accepted') AS outcome, count(*) AS records, "
                          "round(sum(cost_usd), 6) AS cost_usd FROM records WHERE job_id = 'demo-live' "
                          "GROUP BY 1 ORDER BY records DESC").table
    print_table(table)
    say_exported(export_job(corpus, JOB_ID, "finetune_cot", f"{out}/demo-finetune-cot.jsonl"), JOB_ID)
    say_exported(export_job(corpus, JOB_ID, "dsbs", f"{out}/demo-dsbs", split=(0.8, 0.1, 0.1)), JOB_ID)
    # the loop closed: a tiny student (offline, seconds on a CPU) trains on the corpus in Fine-tune-CoT's format
    # and is scored with the task's own comparator; it shows the plumbing, not accuracy
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        err.print("student: skipped (pip install 'stepwise-distill[train]' for the trainer)")
    else:
        from stepwise.pipeline.trainer import TrainConfig
        from stepwise.pipeline.trainer import main as train

        student = f"{out}/demo-student"
        say_trained(train(TrainConfig(out=student, corpus=corpus, job=JOB_ID, mode="cot", model="tiny", steps=30,
                                       threads=2, quiet=True)), student)
        err.print("student: the tiny offline T5 checks the loop, it is not a real student; train one with "
                  "`stepwise train --model <a T5 folder>` on a GPU")
    err.print(f"demo done: corpus in {corpus}, exports and the student in {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return main(args.corpus, args.out, quiet=args.quiet)


def add_parsers(sub) -> None:
    demo = sub.add_parser("demo", help="start the simulator, run the live demo job, query and export it")
    demo.add_argument("--corpus", default="corpus")
    demo.add_argument("--out", default="exports")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=cmd_demo)
