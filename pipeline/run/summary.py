"""A job's counters, read back from its part files (the durable truth), and what a run reports at its end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from stepwise.storage import layout
from stepwise.storage.location import CorpusLocation


@dataclass
class JobSummary:
    """What a finished (or stopped) run reports."""

    job_id: str
    status: str
    n_examples: int = 0
    n_records: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    n_correct: int = 0
    n_with_gold: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    shards_run: int = 0
    shards_skipped: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    teacher: dict[str, float] = field(default_factory=dict)  # live engines: sent, cache hits, retries, 429s
    message: str | None = None
    samples_saved: int | None = None       # with stop_after_accepted: samples never asked for, against a fixed n
    tokens_saved: int | None = None        # their output tokens, estimated at the job's mean per sample

    def count_saved(self, n: int) -> None:
        """What stopping at a quota of accepted samples saved against asking every example for `n` (bad rows,
        one record each and no request, are left out)."""
        bad = self.reject_reasons.get("bad_row", 0)
        sampled = self.n_records - bad
        self.samples_saved = max(0, n * (self.n_examples - bad) - sampled)
        self.tokens_saved = round(self.samples_saved * self.tokens_out / sampled) if sampled else 0


def summarize(root: str | Path | CorpusLocation, job_id: str) -> JobSummary:
    """Counters for a job, read back from its part files (the durable truth)."""
    corpus = CorpusLocation.of(root)
    return summarize_files(corpus, job_id, corpus.list_files(layout.RECORDS, job_id))


def summarize_files(corpus: CorpusLocation, job_id: str, files: Sequence[str]) -> JobSummary:
    """Counters of some of a job's part files. Shards hold whole examples, so the summaries of disjoint sets of
    part files add up (`merge_summaries`): a reader that saw most files before reads only the new ones."""
    summary = JobSummary(job_id=job_id, status="")
    if not files:
        return summary
    cols = ["example_id", "accepted", "reject_reason", "correct", "gold_label", "tokens_in", "tokens_out",
            "cost_usd"]
    table = pq.ParquetDataset(list(files), filesystem=corpus.fs).read(columns=cols)
    summary.n_records = table.num_rows
    summary.n_examples = len(pc.unique(table["example_id"]))
    summary.n_accepted = int(pc.sum(table["accepted"]).as_py() or 0)
    summary.n_rejected = summary.n_records - summary.n_accepted
    summary.n_correct = int(pc.sum(pc.fill_null(table["correct"], False)).as_py() or 0)
    summary.n_with_gold = int(pc.sum(pc.is_valid(table["gold_label"])).as_py() or 0)
    summary.tokens_in = int(pc.sum(table["tokens_in"]).as_py() or 0)
    summary.tokens_out = int(pc.sum(table["tokens_out"]).as_py() or 0)
    summary.cost_usd = float(pc.sum(table["cost_usd"]).as_py() or 0.0)
    reasons = Counter(table["reject_reason"].drop_null().to_pylist())
    summary.reject_reasons = dict(reasons.most_common())
    return summary


_ADDITIVE = ("n_examples", "n_records", "n_accepted", "n_rejected", "n_correct", "n_with_gold", "tokens_in",
             "tokens_out", "cost_usd")


def merge_summaries(job_id: str, parts: Iterable[JobSummary]) -> JobSummary:
    """The summary of the union of disjoint sets of part files."""
    total = JobSummary(job_id=job_id, status="")
    reasons: Counter[str] = Counter()
    for part in parts:
        for name in _ADDITIVE:
            setattr(total, name, getattr(total, name) + getattr(part, name))
        reasons.update(part.reject_reasons)
    total.reject_reasons = dict(reasons.most_common())
    return total
