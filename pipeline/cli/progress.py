"""The live progress bar of `stepwise run` and `stepwise import` (rich's, imported only when a bar is shown)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.console import Console
from rich.text import Text


class _Rate(ProgressColumn):
    """Units per second, as rich measures them."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:,.1f}/s" if task.speed else "", style="cyan")


class Bar:
    """Live progress with rate, ETA, accepted / rejected, tokens and cost: requests for live teachers,
    shards for recorded ones. Fed from the teacher's thread; rich's Progress is thread-safe."""

    def __init__(self, label: str, console: Console):
        self.accepted = self.rejected = self.tokens = 0
        self.cost = 0.0
        self.live = False
        self.progress = Progress(
            TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
            _Rate(), TextColumn("[green]{task.fields[accepted]} ok[/] [red]{task.fields[rejected]} rejected[/] "
                                "{task.fields[tokens]} tok {task.fields[cost]}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
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
        total = total_requests if live else total_shards
        # 0: the dataset's size is not known before the end (CSV, JSON arrays): counted, with no bar to fill
        self.progress.update(self.task, total=total or None, unit="requests" if live else "shards")

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
