"""Run a job: read examples, cut them into deterministic shards, run each shard, write it atomically.

`run_shard` is the one unit of work (the Ray executor of a later issue schedules the same function). A shard
is done when its part file exists: part files are written atomically, so a killed run resumes at the first
shard without one and never writes a record twice. The corpus root is a folder or an object-store URI
(`storage/location.py`); every part file, registry row and listing goes through its `CorpusLocation`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pyarrow.compute as pc
import pyarrow.parquet as pq

from stepwise.pipeline.datasets import check_fields, check_gold, read_examples
from stepwise.pipeline.errors import JobConflictError, StepwiseError
from stepwise.pipeline.heartbeat import HeartbeatWriter
from stepwise.pipeline.parsing import parse_completion
from stepwise.pipeline.spec import JobSpec, check_files
from stepwise.pipeline.tasks import Task, build_task
from stepwise.pipeline.teachers import TeacherBackend, build_backend
from stepwise.pipeline.types import Completion, Example, RationaleRecord, RejectReason, RowReject, Sampling, TeacherRequest
from stepwise.pipeline.validate import judge_example
from stepwise.prompts import PromptTemplate, answer_schema, load_prompt
from stepwise.storage.jobs import JobRegistry, JobState
from stepwise.storage.location import CorpusLocation
from stepwise.storage.parquet import records_to_table
from stepwise.storage.schema import DICTIONARY_COLUMNS

Item = Example | RowReject


@dataclass(frozen=True)
class JobContext:
    """Everything a shard needs, built once per job."""

    job_id: str
    spec: JobSpec
    task: Task
    prompt: PromptTemplate
    backend: TeacherBackend

    @property
    def sampling(self) -> Sampling:
        s = self.spec.sampling
        return Sampling(s.temperature, s.top_p, s.max_tokens, s.seed, tuple(s.stop))

    def cost_of(self, c: Completion | None) -> float | None:
        if c is None:
            return None
        if c.cost_usd is not None:
            return c.cost_usd
        return self.spec.cost.cost(c.tokens_in, c.tokens_out) if self.spec.cost else None


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


@dataclass(frozen=True)
class ShardResult:
    """What a finished shard reports back (counts only: records stay where they were written)."""

    index: int
    records: int = 0
    accepted: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    skipped: bool = False

    @classmethod
    def of(cls, index: int, records: Sequence[RationaleRecord]) -> ShardResult:
        return cls(index, len(records), sum(1 for r in records if r.accepted),
                   sum((r.tokens_in or 0) + (r.tokens_out or 0) for r in records),
                   sum(r.cost_usd or 0.0 for r in records))


class Progress(Protocol):
    """What a progress display is told. Live local backends report each completion; every run each shard."""

    def start(self, total_requests: int, total_shards: int, live: bool) -> None: ...
    def completion(self, completion: Completion, cached: bool) -> None: ...
    def shard_done(self, result: ShardResult) -> None: ...


def shard_name(shard: int) -> str:
    return f"shard-{shard:06d}.parquet"


def retry_name(shard: int) -> str:
    """The marker of a shard whose part file holds `teacher_unavailable` records: written before that part file,
    removed after a clean one replaces it, so a shard is done only when it has a part file and no marker."""
    return f"shard-{shard:06d}.retry"


def _shard_index(path: str) -> int:
    return int(path.rsplit("/", 1)[-1].split(".")[0].removeprefix("shard-"))


def shard_done(corpus: CorpusLocation, job_id: str, shard: int) -> bool:
    return corpus.exists("records", job_id, shard_name(shard)) and not corpus.exists("records", job_id,
                                                                                     retry_name(shard))


def done_shards(corpus: CorpusLocation, job_id: str) -> set[int]:
    """The finished shards of a job: a part file and no retry marker. Two listings (two requests on an object
    store, not one per shard)."""
    parts = {_shard_index(p) for p in corpus.list_files("records", job_id)}
    return parts - {_shard_index(p) for p in corpus.list_files("records", job_id, suffix=".retry")}


def write_part(corpus: CorpusLocation, job_id: str, shard: int, records: Sequence[RationaleRecord]) -> ShardResult:
    """A shard's part file, atomically. A shard with requests that failed for an infrastructure reason is marked
    for retry first (a rerun sends exactly those again and replaces the part file); a clean one clears its mark
    after, so a crash in between leaves the shard to be done again, never marked done by mistake."""
    retry = any(r.reject_reason == RejectReason.TEACHER_UNAVAILABLE for r in records)
    if retry:
        corpus.touch("records", job_id, retry_name(shard))
    if records:
        corpus.write_table(records_to_table(records), "records", job_id, shard_name(shard),
                           dictionary=DICTIONARY_COLUMNS)
    if not retry:
        corpus.remove("records", job_id, retry_name(shard))
    return ShardResult.of(shard, records)


def _record(ctx: JobContext, created: datetime, example_id: str, sample_idx: int, **kw) -> RationaleRecord:
    base = dict(
        job_id=ctx.job_id, example_id=example_id, sample_idx=sample_idx, task=ctx.task.kind, input=None,
        gold_label=None, label=None, rationale=None, correct=None, accepted=False, reject_reason=None,
        reject_detail=None, consensus_label=None, agreement=None, prompt_id=ctx.prompt.id,
        prompt_hash=ctx.prompt.hash, teacher_backend=ctx.backend.backend, teacher_model=ctx.backend.model,
        request_key=None, finish_reason=None, tokens_in=None, tokens_out=None, cost_usd=None, latency_s=None,
        completion=None, created_at=created,
    )
    base.update(kw)
    return RationaleRecord(**base)


@dataclass
class ShardPlan:
    """A shard between its two halves: requests to send, and what is needed to judge the answers."""

    records: list[RationaleRecord]                 # bad rows, already final
    ready: list[tuple[Example, str | None, str]]   # example, gold label, student input
    requests: list[TeacherRequest]


def plan_shard(ctx: JobContext, items: Sequence[Item]) -> ShardPlan:
    """First half of a shard: bad rows become records, examples become requests."""
    created = datetime.now(UTC)
    n = ctx.spec.sampling.n
    sampling = ctx.sampling
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
        for k in range(n):
            plan.requests.append(TeacherRequest(item.id, k, messages, sampling, ctx.prompt.id, ctx.prompt.hash,
                                                ctx.backend.backend, ctx.backend.model, followup, schema,
                                                ctx.backend.endpoint))
    return plan


def finish_shard(ctx: JobContext, plan: ShardPlan, completions: Sequence[Completion]) -> list[RationaleRecord]:
    """Second half of a shard: parse, judge and turn every sample into a record."""
    created = datetime.now(UTC)
    n = ctx.spec.sampling.n
    by_key = {(c.example_id, c.sample_idx): c for c in completions}
    records = list(plan.records)
    for example, gold, student_input in plan.ready:
        comps = [by_key.get((example.id, k)) for k in range(n)]
        parsed = [parse_completion(c, example, ctx.task, ctx.prompt.output) for c in comps]
        verdicts = judge_example(parsed, gold, ctx.task, ctx.spec.filters)
        for k, (c, p, v) in enumerate(zip(comps, parsed, verdicts, strict=True)):
            records.append(_record(
                ctx, created, example.id, k, input=student_input, gold_label=gold, label=p.label,
                rationale=p.rationale, correct=v.correct, accepted=v.accepted,
                reject_reason=v.reason.value if v.reason else None, reject_detail=v.detail,
                consensus_label=v.consensus_label, agreement=v.agreement,
                request_key=c.request_key if c else None, finish_reason=c.finish_reason if c else None,
                tokens_in=c.tokens_in if c else None, tokens_out=c.tokens_out if c else None,
                cost_usd=ctx.cost_of(c), latency_s=c.latency_s if c else None, completion=c.text if c else None,
            ))
    return records


def run_shard(ctx: JobContext, items: Sequence[Item]) -> list[RationaleRecord]:
    """Turn one shard of examples into records (the unit executors schedule)."""
    plan = plan_shard(ctx, items)
    return finish_shard(ctx, plan, ctx.backend.submit(plan.requests).result())


def load_items(spec: JobSpec) -> list[Item]:
    """Every row of the dataset as an Example or a RowReject, after `check_fields` made sure the field
    mapping fits the data (a field that no row has is a JobSpecError, not a corpus of bad rows)."""
    check_fields(spec.dataset)
    return list(read_examples(spec.dataset))


def prepare_context(spec: JobSpec, items: Sequence[Item], *, backend: TeacherBackend | None = None,
                    prompt: PromptTemplate | None = None,
                    corpus: str | Path | None = None) -> tuple[JobContext, list[Item]]:
    """Build the task (inferring `auto` from the data), prompt and backend; complete the examples."""
    examples = [i for i in items if isinstance(i, Example)]
    task = build_task(spec.task, examples[:500])
    check_gold(task, examples)  # before any request: gold that never fits the task is a job-file mistake
    prompt = prompt or load_prompt(spec.prompt, task.kind)
    backend = backend or build_backend(spec.teacher, corpus=corpus, cost=spec.cost,
                                       max_error_rate=spec.max_error_rate)
    prepared = [task.prepare(i) if isinstance(i, Example) else i for i in items]
    return JobContext(spec.job_id, spec, task, prompt, backend), prepared


def summarize(root: str | Path | CorpusLocation, job_id: str) -> JobSummary:
    """Counters for a job, read back from its part files (the durable truth)."""
    corpus = CorpusLocation.of(root)
    return summarize_files(corpus, job_id, corpus.list_files("records", job_id))


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


def write_shard(ctx: JobContext, root: str | Path | CorpusLocation, index: int, items: Sequence[Item]) -> ShardResult:
    """Run one shard and write its part file atomically; what Ray workers call. A shard whose part file
    exists already is skipped, so a retried or duplicated task never writes a record twice."""
    corpus = CorpusLocation.of(root)
    if shard_done(corpus, ctx.job_id, index):
        return ShardResult(index, skipped=True)
    return write_part(corpus, ctx.job_id, index, run_shard(ctx, items))


def run_job(spec: JobSpec, root: str | Path, *, items: Sequence[Item] | None = None,
            backend: TeacherBackend | None = None, prompt: PromptTemplate | None = None,
            overwrite: bool = False, progress: Progress | None = None) -> JobSummary:
    """Run (or resume) a job to the end and return its summary.

    Status at the end: `completed`; `budget_exhausted` when the cost cap stopped it (finished shards and
    every paid completion are kept: run again with a higher cap); `cancelled` when `stepwise cancel` asked;
    `failed` when requests failed for an infrastructure reason (more than `max_error_rate` stops it early):
    a rerun retries exactly those. Any other failure is `failed` and re-raises the error.
    """
    from stepwise.pipeline.admission import resolve_profile
    from stepwise.pipeline.executors import get_executor

    spec = resolve_profile(spec)  # teacher.profile: the fields of the profile STEPWISE_TEACHERS declares
    # the files the job names, then its field mapping (load_items, prepare_context): job-file errors, raised
    # before anything is written or removed
    check_files(spec, dataset=items is None, prompt=prompt is None, teacher=backend is None)
    corpus = CorpusLocation.of(root)
    job_id = spec.job_id
    assert job_id, "parse_job gives every spec a job id"
    registry = JobRegistry(corpus)
    previous = registry.get(job_id)
    fingerprint = spec.fingerprint()
    if previous is not None and previous.fingerprint != fingerprint and not overwrite:
        raise JobConflictError(f"job {job_id!r} already exists in {corpus} with a different spec; "
                               f"use another job_id, or --overwrite to replace its records")
    items = load_items(spec) if items is None else items
    executor = get_executor(spec.executor)
    owns_backend = backend is None
    ctx, items = prepare_context(spec, items, backend=backend, prompt=prompt, corpus=corpus.address)
    try:
        if overwrite:
            corpus.remove_folder("records", job_id)
            previous = None
        shards = [items[i:i + spec.shard_size] for i in range(0, len(items), spec.shard_size)] or [[]]
        now = datetime.now(UTC)
        state = registry.save(JobState(
            job_id=job_id, status="running", fingerprint=fingerprint, spec_json=spec.model_dump_json(),
            task=ctx.task.kind, prompt_id=ctx.prompt.id, prompt_hash=ctx.prompt.hash,
            teacher_backend=ctx.backend.backend, teacher_model=ctx.backend.model, n_shards=len(shards),
            n_examples=len(items), created_at=previous.created_at if previous else now, updated_at=now,
        ))
        registry.clear_cancel(job_id)
        corpus.remove_stale_temp_files("records", job_id)
        finished = done_shards(corpus, job_id)
        todo = [i for i in range(len(shards)) if i not in finished]
        # the heartbeat file (live rate, ETA, last errors for the REST service) sees every event first
        with HeartbeatWriter(corpus, job_id, inner=progress) as beat:
            n_requests = sum(1 for i in todo for it in shards[i] if isinstance(it, Example)) * spec.sampling.n
            per_request = ctx.backend.backend != "replay" and spec.executor.kind == "local"
            beat.start(n_requests, len(shards), per_request)
            for i in sorted(set(range(len(shards))) - set(todo)):
                beat.shard_done(ShardResult(i, skipped=True))
            if per_request:
                ctx.backend.events = beat.completion
            try:
                status, message, teacher = executor.run(ctx, shards, todo, corpus, beat,
                                                        lambda: registry.cancel_requested(job_id))
            except BaseException as exc:
                status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
                registry.save(replace(state, status=status, error=f"{type(exc).__name__}: {exc}"[:2000]))
                raise
    finally:
        if owns_backend:
            ctx.backend.close()
    registry.clear_cancel(job_id)
    summary = summarize(corpus, job_id)
    unavailable = summary.reject_reasons.get(RejectReason.TEACHER_UNAVAILABLE, 0)
    if status == "completed" and unavailable:  # the work failed in part: never `completed`, exit 0
        where = getattr(spec.teacher, "base_url", None) or f"the {spec.teacher.backend} backend"
        status, message = "failed", (f"{unavailable:,} requests to the teacher at {where} failed after their "
                                     f"retries (teacher_unavailable records); run the job again to retry "
                                     f"exactly those")
    summary.status, summary.message, summary.teacher = status, message, teacher
    finished = done_shards(corpus, job_id)
    summary.shards_run = sum(1 for i in todo if i in finished)
    summary.shards_skipped = len(shards) - len(todo)
    done = sum(1 for i in range(len(shards)) if i in finished)
    registry.save(replace(
        state, status=status, shards_done=done, n_records=summary.n_records, n_accepted=summary.n_accepted,
        n_rejected=summary.n_rejected, tokens_in=summary.tokens_in, tokens_out=summary.tokens_out,
        cost_usd=summary.cost_usd, error=message,
    ))
    return summary
