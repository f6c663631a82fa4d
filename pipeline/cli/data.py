"""`stepwise import`, `stepwise query` and `stepwise export`: recorded teacher output in, SQL over the corpus,
student-training files out."""

from __future__ import annotations

import argparse
import json
import sys

from stepwise.pipeline.cli.console import err, live_progress, print_summary, print_table
from stepwise.pipeline.cli.jobs import CORPUS_HELP
from stepwise.pipeline.errors import StepwiseError


NAMES = ("import", "query", "export")  # the commands this module adds


def cmd_import(args: argparse.Namespace) -> int:
    from stepwise.pipeline.importers import import_dsbs

    with live_progress(f"import {args.job_id}", args.quiet) as bar:
        summary, extra = import_dsbs(args.src, args.split, args.task, args.corpus, args.job_id,
                                     teacher_model=args.teacher_model, overwrite=args.overwrite, progress=bar)
    if extra:
        err.print(f"[yellow]warning:[/] {extra} completions had no matching gold row and were not imported")
    print_summary(summary, args.corpus)
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from stepwise.storage.catalog import query

    if args.max_rows < 1 or args.max_bytes < 1:
        raise StepwiseError("--max-rows and --max-bytes must be at least 1")
    result = query(args.corpus, args.sql, max_rows=args.max_rows, max_bytes=args.max_bytes, timeout_s=args.timeout)
    rows = result.table.to_pylist()
    if args.format == "json":
        sys.stdout.write(json.dumps(rows, default=str, ensure_ascii=False) + "\n")
    elif args.format == "jsonl":
        for row in rows:
            sys.stdout.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")
    else:
        print_table(result.table)
    if result.truncated:
        cap = f"--max-rows {args.max_rows:,}" if result.reason == "rows" else f"--max-bytes {args.max_bytes:,}"
        err.print(f"[yellow]warning:[/] the result is truncated at {cap}: {len(rows):,} rows shown, more matched")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from stepwise.pipeline.exports import export_job, parse_split

    split = parse_split(args.split)
    if args.push_to_hub:  # checked before anything is written: a refused push should not leave a half-done export
        from stepwise.pipeline.exports.hf import import_hub

        if args.format != "hf":
            raise StepwiseError(f"--push-to-hub uploads a dataset folder: use it with --format hf, not "
                                f"--format {args.format}")
        import_hub()
    summary = export_job(args.corpus, args.job, args.format, args.out, label_source=args.label_source,
                         split=split, seed=args.seed)
    say_exported(summary, args.job)
    if args.push_to_hub:
        from stepwise.pipeline.exports.hf import push_to_hub

        err.print(f"pushed to the Hub dataset {args.push_to_hub}: {push_to_hub(args.out, args.push_to_hub, args.job)}")
    return 0


def say_exported(summary, job_id: str) -> None:
    """The export's one-line account, then in yellow what a reader should not miss: skipped records, splits
    that got no file, splits too small for their consumer."""
    parts = ", ".join(f"{k}: {v:,}" for k, v in summary.rows.items())
    err.print(f"exported {summary.records:,} accepted records of job {job_id} as {summary.format} "
              f"to {summary.path} ({parts} rows)")
    if summary.skipped_no_gold:
        err.print(f"[yellow]skipped {summary.skipped_no_gold:,} records without a gold label[/]")
    if summary.empty_splits:
        err.print(f"[yellow]empty splits, no file written: {', '.join(summary.empty_splits)}[/]")
    for warning in summary.warnings:
        err.print(f"warning: {warning}", style="yellow", markup=False, highlight=False)


def add_parsers(sub) -> None:
    from stepwise.pipeline.exports import FORMATS
    from stepwise.pipeline.tasks import TASKS

    imp = sub.add_parser("import", help="import recorded teacher output from a public release")
    imp_sub = imp.add_subparsers(dest="source", required=True)
    dsbs = imp_sub.add_parser("dsbs", help="the Distilling step-by-step release layout")
    dsbs.add_argument("--src", required=True, help="one dataset folder, e.g. .../distilling-step-by-step/cqa")
    dsbs.add_argument("--split", required=True, help="train, valid or test")
    dsbs.add_argument("--task", required=True, choices=(*TASKS.names(), "auto"))
    dsbs.add_argument("--corpus", default="corpus", help=CORPUS_HELP)
    dsbs.add_argument("--job-id", required=True)
    dsbs.add_argument("--teacher-model", default="palm-540b")
    dsbs.add_argument("--overwrite", action="store_true")
    dsbs.add_argument("--quiet", action="store_true")
    dsbs.set_defaults(func=cmd_import)

    q = sub.add_parser("query", help="read-only SQL over the `records` and `jobs` views")
    q.add_argument("sql")
    q.add_argument("--corpus", default="corpus", help=CORPUS_HELP)
    q.add_argument("--format", choices=("json", "jsonl", "table"), default="table")
    q.add_argument("--max-rows", type=int, default=100_000)
    q.add_argument("--max-bytes", type=int, default=256 << 20,
                   help="the most bytes of rows (Arrow) to return, 256 MiB by default; a warning says when cut")
    q.add_argument("--timeout", type=float, default=60.0, help="seconds")
    q.set_defaults(func=cmd_query)

    ex = sub.add_parser("export", help="write a job's accepted records for student training")
    ex.add_argument("--corpus", default="corpus", help=CORPUS_HELP)
    ex.add_argument("--job", required=True)
    ex.add_argument("--format", required=True, choices=FORMATS.names())
    ex.add_argument("--out", required=True, help="output file, or folder when --split is given (always a folder "
                                                 "for --format hf)")
    ex.add_argument("--label-source", choices=("teacher", "gold"), default="teacher")
    ex.add_argument("--split", help="train,valid,test fractions, e.g. 0.8,0.1,0.1")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--push-to-hub", metavar="REPO",
                    help="with --format hf: upload the folder to this Hugging Face dataset repo (created private if "
                         "new), with the token huggingface_hub finds (HF_TOKEN); needs the hub extra")
    ex.set_defaults(func=cmd_export)
