"""`stepwise run` and `stepwise cancel`: a job file to the end, and a running job stopped."""

from __future__ import annotations

import argparse
import sys

from stepwise.pipeline.cli.console import err, live_progress, print_summary
from stepwise.pipeline.errors import StepwiseError
from stepwise.pipeline.spec import EXECUTORS
from stepwise.pipeline.types import JobStatus

CORPUS_HELP = ("corpus root: a folder (default ./corpus) or an object-store URI, "
               "e.g. s3://bucket/corpus?endpoint_override=host:9000&scheme=http")
# how a run ends, as an exit code (and whether to say why below the summary)
EXIT = {JobStatus.COMPLETED: 0, JobStatus.FAILED: 1, JobStatus.BUDGET_EXHAUSTED: 3, JobStatus.CANCELLED: 4}


NAMES = ("run", "cancel")  # the commands this module adds


def cmd_run(args: argparse.Namespace) -> int:
    from stepwise.pipeline.spec import load_job

    refuse_pandas()

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
    return run_and_report(spec, args.corpus, overwrite=args.overwrite, quiet=args.quiet)


class _NoPandas:
    """An import finder that refuses pandas."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas":
            raise ImportError("a `stepwise run` process does not import pandas")
        return None


def refuse_pandas() -> None:
    """In a `stepwise run` process pandas cannot be imported: pyarrow would import it (0.3-0.5 s of CPU here) on
    its first conversion of a Python list, only to ask whether the list is a pandas object, and a run never holds
    one. pyarrow takes the ImportError as "pandas is not installed"."""
    if "pandas" not in sys.modules and not any(isinstance(f, _NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoPandas())


def run_and_report(spec, corpus: str, *, overwrite: bool = False, quiet: bool = False) -> int:
    """Run a job with the progress bar, print its summary; the exit code of its status."""
    from stepwise.pipeline.run.job import run_job

    with live_progress(f"{spec.job_id}", quiet) as bar:
        summary = run_job(spec, corpus, overwrite=overwrite, progress=bar)
    print_summary(summary, corpus)  # a failed job's summary leads with why
    if summary.status in (JobStatus.BUDGET_EXHAUSTED, JobStatus.CANCELLED):
        err.print(f"stopped: {summary.message}", markup=False, highlight=False)
    return EXIT[summary.status]


def cmd_cancel(args: argparse.Namespace) -> int:
    from stepwise.storage.jobs import JobRegistry

    registry = JobRegistry(args.corpus)  # a folder or an object-store URI: never through Path
    state = registry.get(args.job)
    if state is None:
        raise StepwiseError(f"no job {args.job!r} in {args.corpus}")
    if state.status != JobStatus.RUNNING:
        err.print(f"job {args.job} is {state.status}; nothing to cancel")
        return 0
    registry.request_cancel(args.job)
    err.print(f"asked job {args.job} to stop; its workers stop within a second or so, finished shards are kept "
              f"(run the job again to resume)")
    return 0


def add_parsers(sub) -> None:
    run = sub.add_parser("run", help="run (or resume) a job file to the end")
    run.add_argument("job", help="job file (YAML)")
    run.add_argument("--corpus", default="corpus", help=CORPUS_HELP)
    run.add_argument("--overwrite", action="store_true", help="replace the records of a job with the same id")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--executor", choices=tuple(EXECUTORS), help="where shards run (default: the job file's)")
    run.add_argument("--workers", type=int, help="Ray worker actors")
    run.add_argument("--ray-address", help="join this Ray cluster (also $RAY_ADDRESS); implies --executor ray")
    run.add_argument("--data-dir", action="append", default=[], metavar="DIR",
                     help="refuse files outside these folders (the REST service passes its data roots)")
    run.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                     help="override a job-file field, e.g. --set teacher.base_url=http://127.0.0.1:8000/v1 "
                          "(repeatable; VALUE is read as YAML)")
    run.set_defaults(func=cmd_run)

    cancel = sub.add_parser("cancel", help="stop a running job (finished shards are kept; run it again to resume)")
    cancel.add_argument("job")
    cancel.add_argument("--corpus", default="corpus", help=CORPUS_HELP)
    cancel.set_defaults(func=cmd_cancel)
