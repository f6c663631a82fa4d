"""The one shard path: every executor runs a shard with `start_shard` then `StartedShard.finish`.

    start_shard   skip a shard that is done (a part file and no retry marker), else plan it (bad rows become
                  records, examples become requests) and send its requests to the teacher
    finish        wait for the answers, judge them (parse + validate) and write the part file atomically

A Ray worker runs both halves in a row (`run_shard`); the local executor starts the next shard before it finishes
the last, so the next shard's requests queue while the last answers arrive. A part file is whole or absent, so a
killed run resumes at the first shard without one and never writes a record twice; a shard holding requests that
failed for an infrastructure reason is marked for retry before its part file is written, and is done again (from
the request cache, sending only what failed) by the next run.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from stepwise.pipeline.errors import StepwiseError
from stepwise.pipeline.run.context import Item, JobContext
from stepwise.pipeline.run.summary import SUMMARY_KEY, summary_of_records
from stepwise.pipeline.types import Completion, Example, RationaleRecord, RejectReason, RowReject, TeacherRequest
from stepwise.prompts import answer_schema
from stepwise.storage import layout
from stepwise.storage.location import CorpusLocation

Answers = Callable[[concurrent.futures.Future], Sequence[Completion]]  # waits for a shard's completions


@dataclass(frozen=True)
class ShardResult:
    """What a finished shard reports back (counts only: records stay where they were written)."""

    index: int
    records: int = 0
    accepted: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    skipped: bool = False
    summary: dict | None = None  # the counters its part file's footer holds (None: no part file written)

    @classmethod
    def of(cls, index: int, records: Sequence[RationaleRecord], summary: dict | None = None) -> ShardResult:
        return cls(index, len(records), sum(1 for r in records if r.accepted),
                   sum((r.tokens_in or 0) + (r.tokens_out or 0) for r in records),
                   sum(r.cost_usd or 0.0 for r in records), summary=summary)


class Progress(Protocol):
    """What a progress display is told. Live local backends report each completion; every run each shard."""

    def start(self, total_requests: int, total_shards: int, live: bool) -> None: ...
    def completion(self, completion: Completion, cached: bool) -> None: ...
    def shard_done(self, result: ShardResult) -> None: ...


def shard_done(corpus: CorpusLocation, job_id: str, shard: int) -> bool:
    return corpus.exists(*layout.part(job_id, shard)) and not corpus.exists(*layout.retry_marker(job_id, shard))


def done_shards(corpus: CorpusLocation, job_id: str) -> set[int]:
    """The finished shards of a job: a part file and no retry marker. Two listings (two requests on an object
    store, not one per shard)."""
    folder = (layout.RECORDS, job_id)
    parts = {layout.shard_of(p) for p in corpus.list_files(*folder)}
    return parts - {layout.shard_of(p) for p in corpus.list_files(*folder, suffix=layout.RETRY_SUFFIX)}


def write_part(corpus: CorpusLocation, job_id: str, shard: int, records: Sequence[RationaleRecord]) -> ShardResult:
    """A shard's part file, atomically. A shard with requests that failed for an infrastructure reason is marked
    for retry first (a rerun sends exactly those again and replaces the part file); a clean one clears its mark
    after, so a crash in between leaves the shard to be done again, never marked done by mistake."""
    retry = any(r.reject_reason == RejectReason.TEACHER_UNAVAILABLE for r in records)
    if retry:
        corpus.touch(*layout.retry_marker(job_id, shard))
    summary = None
    if records:
        # pyarrow is imported with the first part file, not before the first request
        from stepwise.storage.parquet import records_to_table
        from stepwise.storage.schema import DICTIONARY_COLUMNS

        summary = summary_of_records(records)
        table = records_to_table(records)
        table = table.replace_schema_metadata({**table.schema.metadata, SUMMARY_KEY: json.dumps(summary).encode()})
        corpus.write_table(table, *layout.part(job_id, shard), dictionary=DICTIONARY_COLUMNS)
    if not retry:
        corpus.remove(*layout.retry_marker(job_id, shard))
    return ShardResult.of(shard, records, summary)


def _record(ctx: JobContext, created: datetime, example_id: str, sample_idx: int, **kw) -> RationaleRecord:
    base = dict(
        job_id=ctx.job_id, example_id=example_id, sample_idx=sample_idx, task=ctx.task.kind, input=None,
        gold_label=None, label=None, rationale=None, correct=None, accepted=False, reject_reason=None,
        reject_detail=None, consensus_label=None, agreement=None, prompt_id=ctx.prompt.id,
        prompt_hash=ctx.prompt.hash, teacher_backend=ctx.backend.backend, teacher_model=ctx.backend.model,
        request_key=None, finish_reason=None, tokens_in=None, tokens_out=None, cost_usd=None, latency_s=None,
        completion=None, reasoning=None, reasoning_tokens=None, trace_label=None, gold_rationale=None,
        created_at=created,
    )
    base.update(kw)
    return RationaleRecord(**base)


@dataclass
class ShardPlan:
    """A shard between its two halves: requests to send, and what is needed to judge the answers.

    With `sampling.stop_after_accepted` an example's samples are asked for in rounds: `asked` counts those asked
    for so far (indices 0..asked-1, so a rerun asks for the same ones and finds them in the request cache), and
    `open` holds the examples that may still need more."""

    records: list[RationaleRecord]                 # bad rows, already final
    ready: list[tuple[Example, str | None, str]]   # example, gold label, student input
    requests: list[TeacherRequest]                 # the first round's
    asked: dict[str, int] = field(default_factory=dict)
    prompts: dict[str, tuple] = field(default_factory=dict)  # example id -> (messages, followup, schema)
    open: set[str] = field(default_factory=set)


def _request(ctx: JobContext, plan: ShardPlan, example_id: str, k: int) -> TeacherRequest:
    messages, followup, schema = plan.prompts[example_id]
    return TeacherRequest(example_id, k, messages, ctx.sampling, ctx.prompt.id, ctx.prompt.hash, ctx.backend.backend,
                          ctx.backend.model, followup, schema, ctx.backend.endpoint)


def plan_shard(ctx: JobContext, items: Sequence[Item]) -> ShardPlan:
    """Bad rows become records, examples become the requests of their first round (every sample, unless the job
    stops after a number of accepted ones: then that number)."""
    created = datetime.now(UTC)
    first = ctx.spec.sampling.stop_after_accepted or ctx.spec.sampling.n
    plan = ShardPlan([], [], [])
    for item in items:
        if isinstance(item, RowReject):
            plan.records.append(_record(ctx, created, item.id, 0, reject_reason=RejectReason.BAD_ROW.value,
                                        reject_detail=item.reason))
            continue
        try:
            gold = ctx.task.normalize_gold(item.gold, item) if item.gold is not None else None
            messages = ctx.prompt.render(item, ctx.task, gold)
            followup = ctx.prompt.render_followup(item, ctx.task, gold)
        except (ValueError, StepwiseError) as exc:
            plan.records.append(_record(ctx, created, item.id, 0, input=item.input,
                                        reject_reason=RejectReason.BAD_ROW.value,
                                        reject_detail=f"row {item.meta.get('row', '?')}: {exc}"))
            continue
        schema = None
        if ctx.prompt.output == "json":
            schema = json.dumps(answer_schema(ctx.task, item), sort_keys=True)
        plan.ready.append((item, gold, ctx.task.student_input(item)))
        plan.prompts[item.id] = (messages, followup, schema)
        plan.asked[item.id] = first
        plan.open.add(item.id)
        plan.requests.extend(_request(ctx, plan, item.id, k) for k in range(first))
    return plan


def _judged(ctx: JobContext, example: Example, gold: str | None, comps: Sequence[Completion | None]):
    """The parsed samples of one example and their verdicts."""
    # imported with the first answers (their patterns take a few ms to compile), not before the first request
    from stepwise.pipeline.parsing import parse_completion
    from stepwise.pipeline.validate import judge_example

    parsed = [parse_completion(c, example, ctx.task, options=ctx.parsing) for c in comps]
    return parsed, judge_example(parsed, gold, ctx.task, ctx.spec.filters, prompt=example.input,
                                 reasoning_tokens=[c.reasoning_tokens if c else None for c in comps])


def next_round(ctx: JobContext, plan: ShardPlan, completions: Sequence[Completion]) -> list[TeacherRequest]:
    """With `stop_after_accepted`: for every example still short of its quota of accepted samples, as many more
    samples as it misses (never past `n`); none once every example has its quota or has used all `n`."""
    quota, n = ctx.spec.sampling.stop_after_accepted, ctx.spec.sampling.n
    if quota is None:
        return []
    by_id = {example.id: (example, gold) for example, gold, _ in plan.ready}
    by_key = {(c.example_id, c.sample_idx): c for c in completions}
    more: list[TeacherRequest] = []
    for example_id in sorted(plan.open):
        example, gold = by_id[example_id]
        asked = plan.asked[example_id]
        comps = [by_key.get((example_id, k)) for k in range(asked)]
        _, verdicts = _judged(ctx, example, gold, comps)
        missing = min(quota - sum(v.accepted for v in verdicts), n - asked)
        if missing <= 0:
            plan.open.discard(example_id)
            continue
        plan.asked[example_id] = asked + missing
        more.extend(_request(ctx, plan, example_id, k) for k in range(asked, asked + missing))
    return more


def judge(ctx: JobContext, plan: ShardPlan, examples: Sequence[tuple[Example, str | None, str]],
          completions: Sequence[Completion]) -> list[RationaleRecord]:
    """Parse, judge and turn every sample asked for of `examples` (some of `plan.ready`) into a record."""
    created = datetime.now(UTC)
    by_key = {(c.example_id, c.sample_idx): c for c in completions}
    records = []
    for example, gold, student_input in examples:
        comps = [by_key.get((example.id, k)) for k in range(plan.asked[example.id])]
        parsed, verdicts = _judged(ctx, example, gold, comps)
        for k, (c, p, v) in enumerate(zip(comps, parsed, verdicts, strict=True)):
            records.append(_record(
                ctx, created, example.id, k, input=student_input, gold_label=gold, label=p.label,
                rationale=p.rationale, correct=v.correct, accepted=v.accepted,
                reject_reason=v.reason.value if v.reason else None, reject_detail=v.detail,
                consensus_label=v.consensus_label, agreement=v.agreement,
                request_key=c.request_key if c else None, finish_reason=c.finish_reason if c else None,
                tokens_in=c.tokens_in if c else None, tokens_out=c.tokens_out if c else None,
                cost_usd=ctx.cost_of(c), latency_s=c.latency_s if c else None,
                completion=p.content if p.content is not None else (c.text if c else None),
                reasoning=p.reasoning, reasoning_tokens=c.reasoning_tokens if c else None,
                trace_label=p.trace_label, gold_rationale=example.gold_rationale,
            ))
    return records


PIECES = 4  # a shard's requests go out as this many batches, each judged as it comes back (streaming backends)


@dataclass
class StartedShard:
    """A shard whose requests are out: in pieces (a run of examples each, with their futures), so that the answers
    of one piece are judged while the next ones are still coming, and after the last answer of a job only its last
    piece is left to judge."""

    ctx: JobContext
    corpus: CorpusLocation
    index: int
    plan: ShardPlan
    pieces: list[tuple[Sequence[tuple[Example, str | None, str]], concurrent.futures.Future]]

    @property
    def answers(self) -> list[concurrent.futures.Future]:
        return [answers for _, answers in self.pieces]

    def finish(self, wait: Answers = concurrent.futures.Future.result) -> ShardResult:
        """Wait for the answers (`wait` may raise to give up, e.g. on a cancel) and judge them piece by piece; with
        `stop_after_accepted`, ask for more rounds while examples miss their quota, then judge everything. Then
        write the part file."""
        records = list(self.plan.records)
        if self.ctx.spec.sampling.stop_after_accepted is None:
            for examples, answers in self.pieces:
                records += judge(self.ctx, self.plan, examples, wait(answers))
        else:
            completions = [c for answers in self.answers for c in wait(answers)]
            while more := next_round(self.ctx, self.plan, completions):
                self.pieces = [((), self.ctx.backend.submit(more))]
                completions.extend(wait(self.pieces[0][1]))
            records += judge(self.ctx, self.plan, self.plan.ready, completions)
        return write_part(self.corpus, self.ctx.job_id, self.index, records)


def start_shard(ctx: JobContext, corpus: CorpusLocation, index: int, items: Sequence[Item]) -> StartedShard | None:
    """Plan a shard and send its requests (to a streaming backend in PIECES batches, by runs of examples); None
    when it is done already, so a retried or duplicated task never writes a record twice."""
    if shard_done(corpus, ctx.job_id, index):
        return None
    plan = plan_shard(ctx, items)
    per_example = ctx.spec.sampling.stop_after_accepted or ctx.spec.sampling.n  # requests each, in plan order
    size = max(1, -(-len(plan.ready) // (PIECES if ctx.backend.streams else 1)))
    pieces = []
    for start in range(0, len(plan.ready), size):
        requests = plan.requests[start * per_example:(start + size) * per_example]
        pieces.append((plan.ready[start:start + size], ctx.backend.submit(requests)))
    return StartedShard(ctx, corpus, index, plan, pieces)  # none when every row was bad: nothing to ask


def run_shard(ctx: JobContext, corpus: CorpusLocation, index: int, items: Sequence[Item]) -> ShardResult:
    """One shard, start to finish (what a Ray worker runs)."""
    started = start_shard(ctx, corpus, index, items)
    return ShardResult(index, skipped=True) if started is None else started.finish()
