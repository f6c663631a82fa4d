"""Pages of one job's records (filtered, sorted, texts cut short on request) and the records of one example, for
the REST service and the viewer. Every query runs in the read-only sandbox (`catalog.query`) with its values
bound as parameters; only column names from the fixed tables below ever become SQL text.

A page takes two queries, because pyarrow decodes every column a query reads for every row of each row group it
opens, filtered or not: `SELECT * ... ORDER BY ... LIMIT 50 OFFSET n` decodes all the job's text (about 2 s for a
million records on two cores). So the page is found first over narrow columns (its keys, their `created_at` and
the count), and then only its rows are read, with `created_at IN (...)` besides the keys: the runner judges a shard
at once, so a part file holds one or two `created_at` values and pyarrow's statistics skip every file that holds
none of the page. The cost of a page is then about the part files it touches, not the size of the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stepwise.storage.catalog import query
from stepwise.storage.location import CorpusLocation

# sort name -> the SQL expression it orders by (the keys of this table are the API's enum)
SORTS: dict[str, str] = {
    "example_id": "example_id", "sample_idx": "sample_idx", "label": "label", "gold_label": "gold_label",
    "agreement": "agreement", "reject_reason": "reject_reason", "tokens_in": "tokens_in", "tokens_out": "tokens_out",
    "cost_usd": "cost_usd", "latency_s": "latency_s", "created_at": "created_at",
    "rationale_chars": "length(rationale)", "reasoning_chars": "length(reasoning)",
}
LONG_TEXTS = ("input", "rationale", "completion", "reasoning", "gold_rationale")  # cut by `brief`
BRIEF_CHARS = 280
COUNTED = ("rationale", "reasoning", "completion")  # `brief` adds <name>_chars for these
MAX_SEARCH_CHARS = 200
_ELLIPSIS = "\u2026"
Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class RecordFilter:
    """Which records of a job a page holds; None leaves a criterion out."""

    accepted: bool | None = None
    reason: str | None = None           # reject_reason, exactly
    correct: bool | None = None
    label: str | None = None            # exactly
    gold_label: str | None = None       # exactly
    min_agreement: float | None = None  # inclusive
    max_agreement: float | None = None  # inclusive
    q: str | None = None                # a case-insensitive substring of input, rationale, reasoning or completion

    def where(self, job_id: str) -> tuple[str, list[Any]]:
        """The WHERE clause, with `?` for every value, and the values in order."""
        clauses, params = ["job_id = ?"], [job_id]
        for column in ("accepted", "reason", "correct", "label", "gold_label"):
            value = getattr(self, column)
            if value is not None:
                clauses.append(f"{'reject_reason' if column == 'reason' else column} = ?")
                params.append(value)
        # compared as FLOAT, the column's type: agreement 0.1 is stored as the float nearest 0.1
        if self.min_agreement is not None:
            clauses.append("agreement >= CAST(? AS FLOAT)")
            params.append(self.min_agreement)
        if self.max_agreement is not None:
            clauses.append("agreement <= CAST(? AS FLOAT)")
            params.append(self.max_agreement)
        if self.q:
            pattern = f"%{like_literal(self.q)}%"
            clauses.append("(" + " OR ".join(f"{c} ILIKE ? ESCAPE '\\'" for c in
                                             ("input", "rationale", "reasoning", "completion")) + ")")
            params += [pattern] * 4
        return " AND ".join(clauses), params


def like_literal(text: str) -> str:
    """`text` as a LIKE pattern that matches exactly it: the wildcards `%`, `_` and the escape `\\` escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class RecordPage:
    rows: list[dict[str, Any]]
    total: int  # records matching the filter, before paging


def record_page(corpus: str | Path | CorpusLocation, job_id: str, where: RecordFilter = RecordFilter(), *,
                sort: str = "example_id", order: Order = "asc", limit: int = 50, offset: int = 0,
                brief: bool = False) -> RecordPage:
    """One page of a job's records in a deterministic order: `sort` (nulls last), then example_id and sample_idx.
    With `brief`, long texts are cut to their first BRIEF_CHARS characters and an ellipsis, and their lengths
    are added as `<name>_chars`."""
    clause, params = where.where(job_id)
    direction = "DESC" if order == "desc" else "ASC"
    keys = query(corpus, f"SELECT example_id, sample_idx, created_at, count(*) OVER () AS total FROM records "
                         f"WHERE {clause} ORDER BY {SORTS[sort]} {direction} NULLS LAST, example_id, sample_idx "
                         f"LIMIT ? OFFSET ?", params=[*params, limit, offset], max_rows=limit).table.to_pylist()
    if not keys:
        total = 0 if offset == 0 else _count(corpus, clause, params)
        return RecordPage([], total)
    rows = _rows_of(corpus, job_id, keys, brief)
    return RecordPage(rows, keys[0]["total"])


def example_records(corpus: str | Path | CorpusLocation, job_id: str, example_id: str) -> list[dict[str, Any]]:
    """Every record of one example, in sample order, texts whole; [] when the job has no such example."""
    times = query(corpus, "SELECT DISTINCT created_at FROM records WHERE job_id = ? AND example_id = ?",
                  params=[job_id, example_id]).table.column("created_at").to_pylist()
    if not times:
        return []
    sql = (f"SELECT * FROM records WHERE job_id = ? AND created_at IN ({_marks(times)}) AND example_id = ? "
           f"ORDER BY sample_idx")
    return query(corpus, sql, params=[job_id, *times, example_id]).table.to_pylist()


def _count(corpus: str | Path | CorpusLocation, clause: str, params: list[Any]) -> int:
    counted = query(corpus, f"SELECT count(*) AS n FROM records WHERE {clause}", params=params)
    return counted.table.column("n")[0].as_py()


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))


def _columns(brief: bool) -> str:
    """The select list of a page's rows: every column, long texts cut and counted with `brief`."""
    if not brief:
        return "*"
    cut = ", ".join(f"CASE WHEN length({c}) > {BRIEF_CHARS} THEN left({c}, {BRIEF_CHARS}) || '{_ELLIPSIS}' "
                    f"ELSE {c} END AS {c}" for c in LONG_TEXTS)
    counts = ", ".join(f"length({c}) AS {c}_chars" for c in COUNTED)
    return f"* REPLACE ({cut}), {counts}"


def _rows_of(corpus: str | Path | CorpusLocation, job_id: str, keys: list[dict[str, Any]],
             brief: bool) -> list[dict[str, Any]]:
    """The rows of a page's keys, in the keys' order. `created_at IN (...)` only lets pyarrow skip part files;
    the keys pick the rows (other samples of the page's examples come along and are dropped here)."""
    times = sorted({k["created_at"] for k in keys})
    ids = sorted({k["example_id"] for k in keys})
    samples = sorted({k["sample_idx"] for k in keys})
    found = query(corpus, f"SELECT {_columns(brief)} FROM records WHERE job_id = ? AND created_at IN ({_marks(times)})"
                          f" AND example_id IN ({_marks(ids)}) AND sample_idx IN ({_marks(samples)})",
                  params=[job_id, *times, *ids, *samples]).table.to_pylist()
    by_key = {(r["example_id"], r["sample_idx"]): r for r in found}
    return [by_key[(k["example_id"], k["sample_idx"])] for k in keys if (k["example_id"], k["sample_idx"]) in by_key]
