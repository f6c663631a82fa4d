"""Judge the parsed samples of one example: correctness, self-consistency, length bounds, duplicates.

Every sample gets a verdict; a rejected one keeps its reason. Checks run in a fixed order and the first
failing check names the reason, so counts by reason are stable and meaningful.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from stepwise.pipeline.spec import FilterSpec
from stepwise.pipeline.tasks import Task
from stepwise.pipeline.types import Parsed, RejectReason


@dataclass(frozen=True, slots=True)
class Verdict:
    correct: bool | None
    accepted: bool
    reason: RejectReason | None
    detail: str | None
    consensus_label: str | None
    agreement: float | None


def judge_example(parsed: list[Parsed], gold_label: str | None, task: Task, filters: FilterSpec) -> list[Verdict]:
    """One verdict per parsed sample, in order."""
    votes = Counter(p.label for p in parsed if p.label is not None and p.reject is None)
    consensus, agreement = None, None
    if votes:
        consensus, top = votes.most_common(1)[0]
        agreement = top / sum(votes.values())
    seen_rationales: set[str] = set()
    verdicts = []
    for p in parsed:
        correct = task.compare(p.label, gold_label) if p.label is not None and gold_label is not None else None
        reason, detail = p.reject, p.detail
        if reason is None:
            reason, detail = _filter(p, correct, consensus, agreement, filters, seen_rationales)
        if reason is None and filters.dedupe:
            seen_rationales.add(" ".join(p.rationale.split()))
        verdicts.append(Verdict(correct, reason is None, reason, detail, consensus, agreement))
    return verdicts


def _filter(p: Parsed, correct: bool | None, consensus: str | None, agreement: float | None,
            f: FilterSpec, seen: set[str]) -> tuple[RejectReason | None, str | None]:
    n = len(p.rationale)
    if n < f.min_rationale_chars:
        return RejectReason.TOO_SHORT, f"rationale has {n} characters, fewer than {f.min_rationale_chars}"
    if n > f.max_rationale_chars:
        return RejectReason.TOO_LONG, f"rationale has {n} characters, more than {f.max_rationale_chars}"
    if f.require_correct and correct is False:
        return RejectReason.INCORRECT, f"label {p.label!r} disagrees with gold"
    if f.self_consistency and p.label != consensus:
        return RejectReason.MINORITY, f"label {p.label!r} disagrees with the majority {consensus!r}"
    if agreement is not None and agreement < f.min_agreement:
        return RejectReason.MINORITY, f"agreement {agreement:.2f} is below min_agreement {f.min_agreement:.2f}"
    if f.dedupe and " ".join(p.rationale.split()) in seen:
        return RejectReason.DUPLICATE, "same rationale as an earlier sample of this example"
    return None, None
