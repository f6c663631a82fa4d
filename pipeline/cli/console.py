"""What the command line shows: the live progress bar, the end-of-run summary, result tables. Everything goes to
stderr but a query's rows (stdout), so the output of `stepwise query` can be piped."""

from __future__ import annotations

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

from stepwise.pipeline.run.summary import JobSummary
from stepwise.pipeline.types import JobStatus

err = Console(stderr=True)
out = Console()


class _Rate(ProgressColumn):
    """Units per second, as rich measures them."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:,.1f}/s" if task.speed else "", style="cyan")


class Bar:
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
    t = Table(*table.column_names)
    for row in table.to_pylist():
        t.add_row(*("" if v is None else str(v) for v in row.values()))
    out.print(t)
