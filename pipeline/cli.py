"""`stepwise` command line: run | import | query | export | train | cancel | demo | serve | sim.

Exit codes: 0 done; 1 the job or command failed (message on stderr; a job whose teacher requests failed after
their retries also ends here: run it again to retry exactly those); 2 bad usage, an invalid job file, a file it
names that is missing, a dataset mapping no row fits, or an invalid `train` flag (the message names the field,
and nothing is written); 3 the job's cost budget stopped it, 4 it was cancelled (both resumable by running it
again).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from stepwise.pipeline.errors import JobSpecError, StepwiseError, TrainConfigError
from stepwise.pipeline.runner import JobSummary

CORPUS_HELP = ("corpus root: a folder (default ./corpus) or an object-store URI, "
               "e.g. s3://bucket/corpus?endpoint_override=host:9000&scheme=http")
err = Console(stderr=True)
out = Console()


class _Rate(ProgressColumn):
    """Units per second, as rich measures them."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:,.1f}/s" if task.speed else "", style="cyan")


class _Bar:
    """Live progress with rate, ETA, accepted / rejected, tokens and cost: requests for live teachers,
    shards for recorded ones. Fed from the teacher's thread; rich's Progress is thread-safe."""

    def __init__(self, label: str, quiet: bool):
        self.accepted = self.rejected = self.tokens = 0
        self.cost = 0.0
        self.live = False
        self.progress = Progress(
            TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
            _Rate(), TextColumn("[green]{task.fields[accepted]} ok[/] [red]{task.fields[rejected]} rejected[/] "
                                "{task.fields[tokens]} tok {task.fields[cost]}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err, disable=quiet,
        )
        self.task = self.progress.add_task("run", total=None, unit="", accepted=0, rejected=0, tokens=0, cost="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def _refresh(self, advance: int = 0) -> None:
        self.progress.update(self.task, advance=advance, accepted=f"{self.accepted:,}",
                             rejected=f"{self.rejected:,}", tokens=f"{self.tokens:,}",
                             cost=f"${self.cost:,.4f}" if self.cost else "")

    def start(self, total_requests: int, total_shards: int, live: bool) -> None:
        self.live = live
        self.progress.update(self.task, total=total_requests if live else total_shards,
                             unit="requests" if live else "shards")

    def completion(self, completion, cached: bool) -> None:
        self.tokens += (completion.tokens_in or 0) + (completion.tokens_out or 0)
        self.cost += completion.cost_usd or 0.0
        self._refresh(advance=1)

    def shard_done(self, result) -> None:
        self.accepted += result.accepted
        self.rejected += result.records - result.accepted
        if not self.live:
            self.tokens += result.tokens
            self.cost += result.cost_usd
        self._refresh(advance=0 if self.live else 1)


def print_summary(summary: JobSummary, root: str) -> None:
    t = Table(title=f"job {summary.job_id}: {summary.status}", show_header=False)
    if summary.status == "failed" and summary.message:  # the cause leads, before any counter
        t.add_row(Text("failed", style="bold red"), Text(summary.message, style="red"))
    t.add_row("examples", f"{summary.n_examples:,}")
    t.add_row("records", f"{summary.n_records:,}")
    t.add_row("accepted", f"{summary.n_accepted:,}")
    t.add_row("rejected", f"{summary.n_rejected:,}")
    if summary.n_with_gold:
        t.add_row("teacher accuracy", f"{summary.n_correct / summary.n_with_gold:.2%} "
                                      f"({summary.n_correct:,} / {summary.n_with_gold:,} with gold)")
    if summary.tokens_in or summary.tokens_out:
        t.add_row("tokens in / out", f"{summary.tokens_in:,} / {summary.tokens_out:,}")
    if summary.cost_usd:
        t.add_row("cost", f"${summary.cost_usd:,.4f}")
    if summary.teacher:
        tt = summary.teacher
        t.add_row("teacher requests sent", f"{tt['sent']:,} ({tt['retries']:,} retries, {tt['rate_limited']:,} "
                                           f"rate-limited)")
        t.add_row("samples from cache / new", f"{tt['cache_hits']:,} / {tt['completed']:,}")
    t.add_row("shards run / skipped", f"{summary.shards_run} / {summary.shards_skipped}")
    for reason, n in summary.reject_reasons.items():
        t.add_row(f"  rejected: {reason}", f"{n:,}")
    t.add_row("corpus", root)
    err.print(t)


def cmd_run(args: argparse.Namespace) -> int:
    from stepwise.pipeline.runner import run_job
    from stepwise.pipeline.spec import load_job

    overrides = list(args.set)
    if args.executor:
        overrides.append(f"executor.kind={args.executor}")
    if args.workers:
        overrides.append(f"executor.workers={args.workers}")
    if args.ray_address:
        overrides += ["executor.kind=ray", f"executor.address={args.ray_address}"]
    spec = load_job(args.job, overrides=overrides)  # validated before anything is written
    if args.data_dir:
        from stepwise.pipeline.admission import DataRoots, confine_paths

        spec = confine_paths(spec, DataRoots(args.data_dir))
    with _Bar(f"{spec.job_id}", args.quiet) as bar:
        summary = run_job(spec, args.corpus, overwrite=args.overwrite, progress=bar)
    print_summary(summary, args.corpus)
    if summary.status == "failed":  # the summary's first row says why
        return 1
    if summary.status == "budget_exhausted":
        err.print(f"stopped: {summary.message}", markup=False, highlight=False)
        return 3
    if summary.status == "cancelled":
        err.print(f"stopped: {summary.message}", markup=False, highlight=False)
        return 4
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from stepwise.pipeline.importers import import_dsbs

    with _Bar(f"import {args.job_id}", args.quiet) as bar:
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


def print_table(table) -> None:
    t = Table(*table.column_names)
    for row in table.to_pylist():
        t.add_row(*("" if v is None else str(v) for v in row.values()))
    out.print(t)


def cmd_demo(args: argparse.Namespace) -> int:
    from stepwise.pipeline.demo import main as demo

    return demo(args.corpus, args.out, quiet=args.quiet)


def cmd_cancel(args: argparse.Namespace) -> int:
    from stepwise.storage.jobs import JobRegistry

    registry = JobRegistry(args.corpus)  # a folder or an object-store URI: never through Path
    state = registry.get(args.job)
    if state is None:
        raise StepwiseError(f"no job {args.job!r} in {args.corpus}")
    if state.status != "running":
        err.print(f"job {args.job} is {state.status}; nothing to cancel")
        return 0
    registry.request_cancel(args.job)
    err.print(f"asked job {args.job} to stop; its workers stop within a second or so, finished shards are kept "
              f"(run the job again to resume)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from stepwise.pipeline.exports import export_job, parse_split

    summary = export_job(args.corpus, args.job, args.format, args.out, label_source=args.label_source,
                         split=parse_split(args.split), seed=args.seed)
    parts = ", ".join(f"{k}: {v:,}" for k, v in summary.rows.items())
    err.print(f"exported {summary.records:,} accepted records of job {args.job} as {summary.format} "
              f"to {summary.path} ({parts} rows)")
    if summary.skipped_no_gold:
        err.print(f"[yellow]skipped {summary.skipped_no_gold:,} records without a gold label[/]")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from stepwise.pipeline.trainer import SweepConfig, TrainConfig, main, sweep
    from stepwise.pipeline.trainer.config import parse_fractions, parse_list
    from stepwise.pipeline.trainer.sweep import pivot

    modes, sources = parse_list(args.mode, "mode"), parse_list(args.label_source, "label_source")
    corpus = args.corpus or ("corpus" if args.job else None)
    base = TrainConfig(
        out=args.out, export=args.export, corpus=corpus, job=args.job, task=args.task, mode=modes[0],
        label_source=sources[0], alpha=args.alpha, model=args.model, steps=args.steps, epochs=args.epochs,
        batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, lr=args.lr, weight_decay=args.weight_decay,
        max_source_len=args.max_source_len, max_target_len=args.max_target_len, seed=args.seed, split=args.split,
        split_seed=args.split_seed, device=args.device, threads=args.threads, log_every=args.log_every,
        save_checkpoint=not args.no_checkpoint, quiet=args.quiet)
    if args.fractions is None and len(modes) == 1 and len(sources) == 1:
        m = main(base)
        print(f"{m['mode']} ({m['label_source']} labels): accuracy {m['accuracy']:.2%} ({m['correct']} / {m['n']} "
              f"test examples, scored against gold); final loss {m['final_loss']:.4f}; results in {args.out}")
        return 0
    fractions = parse_fractions(args.fractions) if args.fractions else (1.0,)
    rows = sweep(SweepConfig(base, modes, sources, fractions))
    print(pivot(rows))
    print(f"table {Path(args.out) / 'sweep.md'}, plot {Path(args.out) / 'sweep.png'}")
    return 0


def _train_parser(sub) -> None:
    from stepwise.pipeline.trainer.config import DEVICES, TrainConfig, flag

    tr = sub.add_parser("train", help="train a T5 student on an export or a corpus job and score it (the train "
                                      "extra); several modes, label sources or --fractions make a sweep")

    def opt(name: str, more: str = "", **kw) -> None:  # flag, default and help text come from TrainConfig
        help_text = (TrainConfig.help(name) + more).replace("%", "%%")
        tr.add_argument(flag(name), default=TrainConfig.default(name), help=help_text, **kw)

    opt("export")
    opt("corpus", " (default ./corpus with --job)")
    opt("job")
    opt("task")
    opt("out", "; a sweep adds sweep.csv, sweep.md, sweep.png", required=True)
    opt("mode", "; a comma list makes a sweep")
    opt("label_source", "; a comma list makes a sweep")
    opt("alpha", type=float)
    opt("model")
    opt("steps", type=int)
    opt("epochs", type=float)
    opt("batch_size", type=int)
    opt("eval_batch_size", type=int)
    opt("lr", type=float)
    opt("weight_decay", type=float)
    opt("max_source_len", type=int)
    opt("max_target_len", type=int)
    opt("seed", type=int)
    tr.add_argument("--split", default=",".join(f"{p:g}" for p in TrainConfig.default("split")),
                    help=TrainConfig.help("split"))
    opt("split_seed", type=int)
    tr.add_argument("--fractions", help="data fractions for a sweep, e.g. 0.125,0.25,0.5,1.0 (each mode is trained "
                                        "at each; nested subsets of the training examples)")
    opt("device", choices=DEVICES)
    opt("threads", type=int)
    opt("log_every", type=int)
    tr.add_argument("--no-checkpoint", action="store_true", help="do not write checkpoint/ (sweeps of big models)")
    tr.add_argument("--quiet", action="store_true", help=TrainConfig.help("quiet"))
    tr.set_defaults(func=cmd_train)


def cmd_sim(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from stepwise.pipeline.simulator import SimConfig, parse_faults, serve

    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        raise StepwiseError(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    config = SimConfig(latency_s=args.latency, per_token_s=args.per_token, jitter_s=args.jitter,
                       capacity=args.capacity, rpm=args.rpm, tpm=args.tpm, window_s=args.window,
                       faults=parse_faults(args.faults),
                       stall_s=args.stall, api_key=api_key, supports_n=not args.no_n, answers=args.answers,
                       dataset=args.dataset, wrong_rate=args.wrong_rate, seed=args.seed,
                       batch_delay_s=args.batch_delay, batch_fail_rate=args.batch_fail_rate,
                       batch_expire=args.batch_expire)

    def ready(port: int) -> None:
        if args.port_file:
            tmp = Path(args.port_file + ".tmp")
            tmp.write_text(str(port))
            tmp.replace(args.port_file)
        print(f"stepwise sim listening on http://{args.host}:{port}/v1", flush=True)

    try:
        try:
            import uvloop

            uvloop.run(serve(config, args.host, args.port, ready))
        except ImportError:
            asyncio.run(serve(config, args.host, args.port, ready))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from stepwise.api.app import create_app  # lazily: the other commands never load FastAPI
    from stepwise.api.settings import LOOPBACK, ServiceSettings

    settings = ServiceSettings.load(corpus=args.corpus, host=args.host, port=args.port, state_dir=args.state_dir,
                                    data_dirs=tuple(args.data_dir) if args.data_dir else None,
                                    upload_dir=args.upload_dir, teachers=args.teachers)
    host = settings.host
    if settings.token is None:
        if host != LOOPBACK:
            err.print(f"[yellow]--host {host} ignored:[/] STEPWISE_API_TOKEN is not set")
        host = LOOPBACK
        err.print(f"no STEPWISE_API_TOKEN: requests are not authenticated, so the server listens on {LOOPBACK} only")
    app = create_app(settings)
    roots = ", ".join(str(r) for r in app.state.service.admission.roots.roots)
    err.print(f"stepwise serve: corpus {settings.corpus}, http://{host}:{settings.port} (docs at /docs); jobs may "
              f"read files in {roots}", markup=False)
    uvicorn.run(app, host=host, port=settings.port, log_level=args.log_level)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from stepwise.pipeline.exports import FORMATS

    p = argparse.ArgumentParser(prog="stepwise", description="Rationale corpora for distilling LLMs into small models.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run (or resume) a job file to the end")
    run.add_argument("job", help="job file (YAML)")
    run.add_argument("--corpus", default="corpus", help=CORPUS_HELP)
    run.add_argument("--overwrite", action="store_true", help="replace the records of a job with the same id")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--executor", choices=("local", "ray"), help="where shards run (default: the job file's)")
    run.add_argument("--workers", type=int, help="Ray worker actors")
    run.add_argument("--ray-address", help="join this Ray cluster (also $RAY_ADDRESS); implies --executor ray")
    run.add_argument("--data-dir", action="append", default=[], metavar="DIR",
                     help="refuse files outside these folders (the REST service passes its data roots)")
    run.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                     help="override a job-file field, e.g. --set teacher.base_url=http://127.0.0.1:8000/v1 "
                          "(repeatable; VALUE is read as YAML)")
    run.set_defaults(func=cmd_run)

    imp = sub.add_parser("import", help="import recorded teacher output from a public release")
    imp_sub = imp.add_subparsers(dest="source", required=True)
    dsbs = imp_sub.add_parser("dsbs", help="the Distilling step-by-step release layout")
    dsbs.add_argument("--src", required=True, help="one dataset folder, e.g. .../distilling-step-by-step/cqa")
    dsbs.add_argument("--split", required=True, help="train, valid or test")
    dsbs.add_argument("--task", required=True, help="multiple_choice, nli, arithmetic, yes_no, exact or auto")
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
    ex.add_argument("--format", required=True, choices=FORMATS)
    ex.add_argument("--out", required=True, help="output file, or folder when --split is given")
    ex.add_argument("--label-source", choices=("teacher", "gold"), default="teacher")
    ex.add_argument("--split", help="train,valid,test fractions, e.g. 0.8,0.1,0.1")
    ex.add_argument("--seed", type=int, default=0)
    ex.set_defaults(func=cmd_export)
    _train_parser(sub)

    cancel = sub.add_parser("cancel", help="stop a running job (finished shards are kept; run it again to resume)")
    cancel.add_argument("job")
    cancel.add_argument("--corpus", default="corpus", help=CORPUS_HELP)
    cancel.set_defaults(func=cmd_cancel)

    demo = sub.add_parser("demo", help="start the simulator, run the live demo job, query and export it")
    demo.add_argument("--corpus", default="corpus")
    demo.add_argument("--out", default="exports")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=cmd_demo)

    serve = sub.add_parser("serve", help="the REST job service (FastAPI); auth by $STEPWISE_API_TOKEN; every flag "
                                         "has a STEPWISE_* variable (see the README)")
    serve.add_argument("--corpus", help=CORPUS_HELP + " ($STEPWISE_CORPUS)")
    serve.add_argument("--host", help="address to listen on, default 127.0.0.1 (loopback only without a token)")
    serve.add_argument("--port", type=int, help="default 8000")
    serve.add_argument("--state-dir", help="local folder for job spec, pid and log files (default <corpus>/jobs; "
                                           "required for an object-store corpus)")
    serve.add_argument("--data-dir", action="append", metavar="DIR",
                       help="a folder whose files REST jobs may read (repeatable; $STEPWISE_DATA_DIRS, ':'-separated)")
    serve.add_argument("--upload-dir", help="where uploaded datasets go (default <state dir>/uploads)")
    serve.add_argument("--teachers", help="the teacher profiles file ($STEPWISE_TEACHERS); see the README")
    serve.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    serve.set_defaults(func=cmd_serve)

    sim = sub.add_parser("sim", help="an OpenAI-compatible teacher simulator (a test tool)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=0, help="0 picks a free port")
    sim.add_argument("--port-file", help="write the bound port to this file once listening")
    sim.add_argument("--latency", type=float, default=0.5, help="fixed seconds per request")
    sim.add_argument("--per-token", type=float, default=0.0, help="extra seconds per output token")
    sim.add_argument("--jitter", type=float, default=0.0, help="+/- seconds of uniform jitter")
    sim.add_argument("--capacity", type=int, default=128, help="requests served at once; the rest queue")
    sim.add_argument("--rpm", type=int, help="requests per minute (sliding 60 s window)")
    sim.add_argument("--tpm", type=int, help="tokens per minute (prompt estimate + n * max_tokens)")
    sim.add_argument("--window", type=float, default=60.0, help="rate-limit window in seconds (tests shorten it)")
    sim.add_argument("--faults", help="rates, e.g. error_500=0.05,error_503=0.05,drop=0.02,stall=0.05,"
                                      "malformed=0.05,truncated=0.05,garbage=0.02")
    sim.add_argument("--stall", type=float, default=30.0, help="seconds a stalled request hangs")
    sim.add_argument("--api-key-env", help="require the key held by this environment variable")
    sim.add_argument("--no-n", action="store_true", help="refuse n > 1 like servers without it")
    sim.add_argument("--answers", help="completions file (replay format) to answer from")
    sim.add_argument("--dataset", help="labeled JSONL {id, question, answer} for task-aware answers")
    sim.add_argument("--wrong-rate", type=float, default=0.1, help="share of task-aware answers that are wrong")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--batch-delay", type=float, default=2.0, help="seconds until a batch (/v1/batches) completes")
    sim.add_argument("--batch-fail-rate", type=float, default=0.0, help="share of batch lines that fail")
    sim.add_argument("--batch-expire", action="store_true", help="the first batch expires with no output")
    sim.set_defaults(func=cmd_sim)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (JobSpecError, TrainConfigError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        return 2
    except StepwiseError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted: finished shards are kept; run the same command again to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
