"""A job's counters, read back from its part files (the durable truth), and what a run reports at its end."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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


def summarize(root: str | Path | CorpusLocation, job_id: str, known: Mapping[int, dict] | None = None) -> JobSummary:
    """Counters for a job, from its part files (the durable truth): the footers of its part files, but for the
    shards in `known` (shard index -> the counters its part file's footer holds, kept by the run that just wrote
    it), whose footers need not be read again."""
    corpus = CorpusLocation.of(root)
    known = known or {}
    files = corpus.list_files(layout.RECORDS, job_id)
    shards = [layout.shard_of(f) for f in files]
    kept = _summary(job_id, _sum_counts(known[i] for i in shards if i in known))
    unread = [f for f, i in zip(files, shards, strict=True) if i not in known]
    return merge_summaries(job_id, (kept, summarize_files(corpus, job_id, unread)))


def _sum_counts(counts: Iterable[dict]) -> dict:
    """The counters of several part files (as footers keep them) added up."""
    names = [name for name in _COUNTERS if name != "reject_reasons"]
    total: dict = dict.fromkeys(names, 0)
    reasons: Counter[str] = Counter()
    for each in counts:
        for name in names:
            total[name] += each[name]
        reasons.update(each["reject_reasons"])
    total["reject_reasons"] = dict(reasons)
    return total


SUMMARY_KEY = b"stepwise.summary"  # a part file's counters, in its Parquet footer (key-value metadata)
_COUNTERS = ("n_examples", "n_records", "n_accepted", "n_correct", "n_with_gold", "tokens_in", "tokens_out",
             "cost_usd", "reject_reasons")


def summary_of_records(records: Sequence) -> dict:
    """The counters of one shard's records, as its part file's footer keeps them (plain JSON)."""
    reasons = Counter(r.reject_reason for r in records if r.reject_reason)
    return {"n_examples": len({r.example_id for r in records}), "n_records": len(records),
            "n_accepted": sum(1 for r in records if r.accepted), "n_correct": sum(1 for r in records if r.correct),
            "n_with_gold": sum(1 for r in records if r.gold_label is not None),
            "tokens_in": sum(r.tokens_in or 0 for r in records), "tokens_out": sum(r.tokens_out or 0 for r in records),
            "cost_usd": sum(r.cost_usd or 0.0 for r in records), "reject_reasons": dict(reasons)}


def summarize_files(corpus: CorpusLocation, job_id: str, files: Sequence[str]) -> JobSummary:
    """Counters of some of a job's part files, from their footers: each file keeps its own (`SUMMARY_KEY`), so a
    summary of any number of records reads a few kilobytes a file and never their columns (older files without
    one are read column by column, one at a time). Shards hold whole examples, so the summaries of disjoint sets of
    part files add up (`merge_summaries`)."""
    return merge_summaries(job_id, (_file_summary(corpus, job_id, path) for path in files))


def _file_summary(corpus: CorpusLocation, job_id: str, path: str) -> JobSummary:
    import pyarrow.parquet as pq

    if corpus.fs is None:
        meta = pq.read_metadata(path)
    else:
        with corpus.fs.open_input_file(path) as fh:
            meta = pq.read_metadata(fh)
    kept = (meta.metadata or {}).get(SUMMARY_KEY)
    return _summary(job_id, json.loads(kept) if kept is not None else _counted(corpus, path))


def _summary(job_id: str, counts: dict) -> JobSummary:
    summary = JobSummary(job_id=job_id, status="", **{k: counts[k] for k in _COUNTERS})
    summary.n_rejected = summary.n_records - summary.n_accepted
    return summary


def _counted(corpus: CorpusLocation, path: str) -> dict:
    """The counters of a part file written before footers kept them, from its columns."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    cols = ["example_id", "accepted", "reject_reason", "correct", "gold_label", "tokens_in", "tokens_out",
            "cost_usd"]
    table = pq.read_table(path, columns=cols, filesystem=corpus.fs)
    reasons = Counter(table["reject_reason"].drop_null().to_pylist())
    return {"n_examples": len(pc.unique(table["example_id"])), "n_records": table.num_rows,
            "n_accepted": int(pc.sum(table["accepted"]).as_py() or 0),
            "n_correct": int(pc.sum(pc.fill_null(table["correct"], False)).as_py() or 0),
            "n_with_gold": int(pc.sum(pc.is_valid(table["gold_label"])).as_py() or 0),
            "tokens_in": int(pc.sum(table["tokens_in"]).as_py() or 0),
            "tokens_out": int(pc.sum(table["tokens_out"]).as_py() or 0),
            "cost_usd": float(pc.sum(table["cost_usd"]).as_py() or 0.0), "reject_reasons": dict(reasons)}


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
