"""`run_job`: run (or resume) a job to the end. Read the examples, cut them into deterministic shards, let the
executor run the shards not done yet (`run/shard.py`), then write the job's status and counters.

A job's status is decided here and only here: `completed`; `budget_exhausted` when the cost cap stopped it;
`cancelled` on request; `failed` when its teacher kept failing past `max_error_rate`, or when requests failed after
their retries and a rerun must retry them, or on any other error (re-raised).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from stepwise.pipeline.errors import BudgetExhaustedError, JobCancelledError, JobConflictError, TeacherFailingError
from stepwise.pipeline.run.context import Item, load_items, prepare_context
from stepwise.pipeline.run.executors import get_executor
from stepwise.pipeline.run.heartbeat import HeartbeatWriter
from stepwise.pipeline.run.shard import Progress, ShardResult, done_shards
from stepwise.pipeline.run.summary import JobSummary, summarize
from stepwise.pipeline.spec import JobSpec, check_files
from stepwise.pipeline.teachers import TeacherBackend
from stepwise.pipeline.types import Example, JobStatus, RejectReason
from stepwise.prompts import PromptTemplate
from stepwise.storage import layout
from stepwise.storage.jobs import JobRegistry, JobState
from stepwise.storage.location import CorpusLocation

# how a run that stopped early ends: the status it gets (its message is the exception's)
STOPPED = ((BudgetExhaustedError, JobStatus.BUDGET_EXHAUSTED), (TeacherFailingError, JobStatus.FAILED),
           (JobCancelledError, JobStatus.CANCELLED))


def run_job(spec: JobSpec, root: str | Path | CorpusLocation, *, items: Sequence[Item] | None = None,
            backend: TeacherBackend | None = None, prompt: PromptTemplate | None = None,
            overwrite: bool = False, progress: Progress | None = None) -> JobSummary:
    """Run (or resume) a job to the end and return its summary (see the module docstring for its status)."""
    from stepwise.pipeline.admission import resolve_profile

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
    status, message = JobStatus.COMPLETED, None
    try:
        if overwrite:
            corpus.remove_folder(layout.RECORDS, job_id)
            previous = None
        shards = [items[i:i + spec.shard_size] for i in range(0, len(items), spec.shard_size)] or [[]]
        now = datetime.now(UTC)
        state = registry.save(JobState(
            job_id=job_id, status=JobStatus.RUNNING, fingerprint=fingerprint, spec_json=spec.model_dump_json(),
            task=ctx.task.kind, prompt_id=ctx.prompt.id, prompt_hash=ctx.prompt.hash,
            teacher_backend=ctx.backend.backend, teacher_model=ctx.backend.model, n_shards=len(shards),
            n_examples=len(items), created_at=previous.created_at if previous else now, updated_at=now,
        ))
        registry.clear_cancel(job_id)
        corpus.remove_stale_temp_files(layout.RECORDS, job_id)
        finished = done_shards(corpus, job_id)
        todo = [i for i in range(len(shards)) if i not in finished]
        # the heartbeat file (live rate, ETA, last errors for the REST service) sees every event first
        with HeartbeatWriter(corpus, job_id, inner=progress) as beat:
            per_example = spec.sampling.stop_after_accepted or spec.sampling.n  # the fewest asked for
            n_requests = sum(1 for i in todo for it in shards[i] if isinstance(it, Example)) * per_example
            per_request = ctx.backend.backend != "replay" and spec.executor.kind == "local"
            beat.start(n_requests, len(shards), per_request)
            for i in sorted(finished & set(range(len(shards)))):
                beat.shard_done(ShardResult(i, skipped=True))
            if per_request:
                ctx.backend.events = beat.completion
            try:
                executor.run(ctx, shards, todo, corpus, beat, lambda: registry.cancel_requested(job_id))
            except tuple(kind for kind, _ in STOPPED) as exc:
                status = next(s for kind, s in STOPPED if isinstance(exc, kind))
                message = str(exc)
            except BaseException as exc:
                status = JobStatus.CANCELLED if isinstance(exc, KeyboardInterrupt) else JobStatus.FAILED
                registry.save(replace(state, status=status, error=f"{type(exc).__name__}: {exc}"[:2000]))
                raise
    finally:
        if owns_backend:
            ctx.backend.close()
    registry.clear_cancel(job_id)
    summary = summarize(corpus, job_id)
    unavailable = summary.reject_reasons.get(RejectReason.TEACHER_UNAVAILABLE, 0)
    if status == JobStatus.COMPLETED and unavailable:  # the work failed in part: never `completed`, exit 0
        where = getattr(spec.teacher, "base_url", None) or f"the {spec.teacher.backend} backend"
        status, message = JobStatus.FAILED, (f"{unavailable:,} requests to the teacher at {where} failed after "
                                             f"their retries (teacher_unavailable records); run the job again to "
                                             f"retry exactly those")
    summary.status, summary.message, summary.teacher = status, message, executor.counters
    if spec.sampling.stop_after_accepted:
        summary.count_saved(spec.sampling.n)
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
