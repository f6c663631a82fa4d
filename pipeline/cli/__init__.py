"""`stepwise` command line: run | cancel | import | query | export | train | demo | serve | sim.

Exit codes: 0 done; 1 the job or command failed (message on stderr; a job whose teacher requests failed after
their retries also ends here: run it again to retry exactly those); 2 bad usage, an invalid job file, a file it
names that is missing, a dataset mapping no row fits, or an invalid `train` flag (the message names the field,
and nothing is written); 3 the job's cost budget stopped it, 4 it was cancelled (both resumable by running it
again).

Each module of this package adds its commands (`add_parsers`); the parser is built from all of them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from stepwise.pipeline.cli import data, demo, jobs, serve, train
from stepwise.pipeline.cli.console import err
from stepwise.pipeline.errors import JobSpecError, StepwiseError, TrainConfigError

COMMANDS = (jobs, data, train, demo, serve)  # in the order `stepwise --help` lists them


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `command` (one of a module's NAMES), only that module's commands: a module's flags
    may import what they list (export formats, trainer settings), which `stepwise run` need not pay for."""
    p = argparse.ArgumentParser(prog="stepwise", description="Rationale corpora for distilling LLMs into small models.")
    sub = p.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        if command is None or command in module.NAMES:
            module.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and any(argv[0] in module.NAMES for module in COMMANDS) else None
    args = build_parser(command).parse_args(argv)
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


def run() -> None:
    """The `stepwise` program: `main`, then a fast exit. When a command returns, what it did is on disk (part
    files synced, the request cache committed, the registry row written), so the interpreter's teardown (a
    quarter of a second of freeing every object and joining idle threads after a big job) buys nothing: output
    and logs are flushed, Ray is shut down when this process started it, and the process ends. An exception
    leaves the normal way, with its traceback."""
    code = main()
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
