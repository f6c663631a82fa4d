"""What the command line shows: the end-of-run summary and result tables (the live progress bar is
`cli/progress.py`, imported only when it is shown). Everything goes to stderr but a query's rows (stdout), so the
output of `stepwise query` can be piped. Rich's tables are imported when one is printed: a command pays for what
it shows, not at start-up."""

from __future__ import annotations

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


@contextmanager
def live_progress(label: str, quiet: bool) -> Iterator[Bar | None]:
    """The live progress bar while a job runs; None with --quiet (rich's progress is then not even imported)."""
    if quiet:
        yield None
        return
    from stepwise.pipeline.cli.progress import Bar

    with Bar(label, err.console) as bar:
        yield bar


def print_summary(summary: JobSummary, root: str) -> None:
    from rich.table import Table
    from rich.text import Text

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
    err.print(t)


def print_table(table) -> None:
    from rich.table import Table

    t = Table(*table.column_names)
    for row in table.to_pylist():
        t.add_row(*("" if v is None else str(v) for v in row.values()))
    out.print(t)
