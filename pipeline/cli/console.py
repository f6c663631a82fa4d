"""What the command line shows: the end-of-run summary and result tables (the live progress bar is
`cli/progress.py`, imported only when it is shown). Everything goes to stderr but a query's rows (stdout), so the
output of `stepwise query` can be piped. Rich's tables are imported when one is printed: a command pays for what
it shows, not at start-up."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from stepwise.pipeline.types import JobStatus

if TYPE_CHECKING:
    from rich.console import Console

    from stepwise.pipeline.cli.progress import Bar
    from stepwise.pipeline.run.summary import JobSummary


class LazyConsole:
    """A rich Console, made (and rich imported, ~25 ms) on first use: `stepwise run` reaches its first request
    without it. Attributes are the console's."""

    def __init__(self, **options):
        self._options = options
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str):
        return getattr(self.console, name)


err = LazyConsole(stderr=True)
out = LazyConsole()


class Display:
    """What a running job shows, made once the job reports its start (its first shard out): rich's live progress
    bar, or with --quiet no bar, the summary's tables loaded then instead. Either costs ~30 ms of imports that the
    first request does not wait for, and the summary none after the last answer. Completions reported before the
    bar exists (from the teacher's thread) are handed to it when it comes."""

    def __init__(self, label: str, quiet: bool):
        self.label, self.quiet = label, quiet
        self.bar: Bar | None = None
        self._early: list[tuple[object, bool]] = []
        self._lock = threading.Lock()

    def start(self, total_requests: int, total_shards: int, live: bool) -> None:
        if self.quiet:
            _summary_kit()
            return
        if self.bar is None:
            from stepwise.pipeline.cli.progress import Bar

            bar = Bar(self.label, err.console).__enter__()
            bar.start(total_requests, total_shards, live)
            with self._lock:
                self.bar, early = bar, self._early
                self._early = []
            for completion, cached in early:
                bar.completion(completion, cached)
        else:
            self.bar.start(total_requests, total_shards, live)

    def completion(self, completion, cached: bool) -> None:
        if self.quiet:
            return
        if self.bar is None:
            with self._lock:
                if self.bar is None:
                    self._early.append((completion, cached))
                    return
        self.bar.completion(completion, cached)

    def shard_done(self, result) -> None:
        if self.bar is not None:
            self.bar.shard_done(result)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@contextmanager
def live_progress(label: str, quiet: bool) -> Iterator[Display]:
    """What a job shows while it runs (`Display`): the live progress bar, or with --quiet none."""
    display = Display(label, quiet)
    try:
        yield display
    finally:
        display.close()


@functools.cache
def _summary_kit():
    """rich's Table and Text, and the console a summary prints to (loaded once)."""
    from rich.table import Table
    from rich.text import Text

    return Table, Text, err.console


def print_summary(summary: JobSummary, root: str) -> None:
    Table, Text, console = _summary_kit()
    t = Table(title=f"job {summary.job_id}: {summary.status}", show_header=False)
    if summary.status == JobStatus.FAILED and summary.message:  # the cause leads, before any counter
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
    if summary.samples_saved is not None:
        t.add_row("saved by stop_after_accepted", f"{summary.samples_saved:,} samples, ~{summary.tokens_saved:,} "
                                                  f"output tokens")
    t.add_row("shards run / skipped", f"{summary.shards_run} / {summary.shards_skipped}")
    for reason, n in summary.reject_reasons.items():
        t.add_row(f"  rejected: {reason}", f"{n:,}")
    t.add_row("corpus", root)
    console.print(t)


def print_table(table) -> None:
    from rich.table import Table

    t = Table(*table.column_names)
    for row in table.to_pylist():
        t.add_row(*("" if v is None else str(v) for v in row.values()))
    out.print(t)
