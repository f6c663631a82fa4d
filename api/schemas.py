"""Response models of the REST service. Requests use the pipeline's own models (`JobSpec`), so a job posted over
HTTP and a job file are checked by the same rules."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from stepwise.pipeline import service
from stepwise.pipeline.types import JobStatus

PARQUET = "application/vnd.apache.parquet"  # the media type of every Parquet download



class ErrorDetail(BaseModel):
    type: str = Field(description="the error class, e.g. JobSpecError, QueryRefusedError, validation_error")
    message: str
    field: str | None = Field(None, description="the offending field as a dotted path, when one is to blame")


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer has this body."""

    error: ErrorDetail


class JobCreated(BaseModel):
    job_id: str
    status: JobStatus = JobStatus.STARTING


class JobAccepted(BaseModel):
    """An action (cancel, resume) was accepted; the job changes state shortly."""

    job_id: str
    action: Literal["cancel", "resume"]


class RunProgress(BaseModel):
    """The current (or last) run of a job, from the heartbeat its process writes every second."""

    started_at: datetime = Field(description="when this run started (a resume starts a new run)")
    updated_at: datetime = Field(description="the heartbeat's time: old while running means the process hangs")
    finished: bool
    live: bool = Field(description="counted per teacher request (a live teacher on the local executor) rather "
                                   "than per shard")
    requests_total: int = Field(description="requests this run has to make (shards finished earlier excluded)")
    requests_done: int
    cached: int = Field(description="requests answered from the request cache (not paid again)")
    shards_total: int
    shards_skipped: int = Field(description="shards finished by an earlier run")
    shards_done: int = Field(description="shards this run finished")
    requests_per_s: float | None = Field(description="over the last 30 s; the run's average once finished")
    shards_per_s: float | None


class TeacherError(BaseModel):
    at: datetime
    example_id: str | None
    sample_idx: int | None
    message: str


class JobView(BaseModel):
    job_id: str
    status: JobStatus = Field(description="`interrupted`: the registry says running but its process is gone "
                                          "(resume it); `starting`: submitted, not yet running")
    progress: float = Field(description="share of the job done, 0..1: finished shards, plus requests done inside "
                                        "unfinished shards while a live teacher runs")
    n_shards: int
    shards_done: int
    n_examples: int
    n_records: int
    n_accepted: int
    n_rejected: int
    tokens_in: int
    tokens_out: int
    cost_usd: float
    task: str | None = None
    prompt_id: str | None = None
    teacher_backend: str | None = None
    teacher_model: str | None = None
    error: str | None = Field(None, description="why it stopped, or the tail of its log when it never started")
    teacher_accuracy: float | None = Field(None, description="share of records with a gold label whose label "
                                                             "is correct")
    reject_reasons: dict[str, int] = Field({}, description="rejected records by reason")
    eta_s: float | None = Field(None, description="seconds left at the current rate, while running")
    run: RunProgress | None = Field(None, description="throughput of the current or last run; None for a job "
                                                      "that has not started")
    last_errors: list[TeacherError] = Field([], description="the last requests the teacher refused, newest last")

    @classmethod
    def of(cls, view: service.JobView) -> JobView:
        """The service's view of a job as the API reports it."""
        s, beat = view.state, view.heartbeat
        progress = (s.shards_done / s.n_shards) if s.n_shards else 0.0
        running = s.status == JobStatus.RUNNING and beat is not None and not beat.finished
        if running:
            progress = max(progress, beat.fraction)
        return cls(
            job_id=s.job_id, status=s.status, progress=progress, n_shards=s.n_shards, shards_done=s.shards_done,
            n_examples=s.n_examples, n_records=s.n_records, n_accepted=s.n_accepted, n_rejected=s.n_rejected,
            tokens_in=s.tokens_in, tokens_out=s.tokens_out, cost_usd=s.cost_usd, task=s.task,
            prompt_id=s.prompt_id, teacher_backend=s.teacher_backend, teacher_model=s.teacher_model, error=s.error,
            created_at=s.created_at, updated_at=s.updated_at, teacher_accuracy=view.teacher_accuracy,
            reject_reasons=view.reject_reasons, eta_s=beat.eta_s if running else None,
            run=RunProgress.model_validate(beat.model_dump()) if beat is not None else None,
            last_errors=[TeacherError.model_validate(e.model_dump()) for e in beat.last_errors] if beat else [])
    created_at: datetime
    updated_at: datetime


class JobList(BaseModel):
    items: list[JobView]
    total: int = Field(description="jobs matching the filter, before paging")
    limit: int
    offset: int


class RecordSort(StrEnum):
    """What a records page can be sorted by (`*_chars`: the length of that text; `position`: the order the records
    are stored in on a local corpus: shard by shard in dataset order, a shard's bad rows first, then its examples in
    dataset order; example id order on an object store)."""

    POSITION = "position"
    EXAMPLE_ID = "example_id"
    SAMPLE_IDX = "sample_idx"
    LABEL = "label"
    GOLD_LABEL = "gold_label"
    AGREEMENT = "agreement"
    REJECT_REASON = "reject_reason"
    TOKENS_IN = "tokens_in"
    TOKENS_OUT = "tokens_out"
    COST_USD = "cost_usd"
    LATENCY_S = "latency_s"
    CREATED_AT = "created_at"
    RATIONALE_CHARS = "rationale_chars"
    REASONING_CHARS = "reasoning_chars"


class RecordPage(BaseModel):
    items: list[dict[str, Any]] = Field(description="rows of the `records` view; with `brief`, `input`, `rationale`, "
                                                    "`completion`, `reasoning` and `gold_rationale` cut to their "
                                                    "first 280 characters and an ellipsis, and `rationale_chars`, "
                                                    "`reasoning_chars` and `completion_chars` added (their lengths)")
    total: int = Field(description="records matching the filters, before paging")
    limit: int
    offset: int


class ChatMessage(BaseModel):
    role: str
    content: str


class ExampleSample(BaseModel):
    """One sample of an example: its record, texts whole."""

    sample_idx: int
    label: str | None
    correct: bool | None
    accepted: bool
    reject_reason: str | None
    reject_detail: str | None
    rationale: str | None
    reasoning: str | None = Field(description="the teacher's thinking trace, when it had one")
    completion: str | None = Field(description="the raw completion (after the thinking trace, when there is one)")
    answer_span: tuple[int, int] | None = Field(
        description="[start, end) of the extracted answer inside `completion`, in characters (code points), as the "
                    "parser reads it; null when there is none or its text is not in the completion verbatim")
    trace_label: str | None = Field(description="the answer the thinking trace itself concluded with")
    finish_reason: str | None
    tokens_in: int | None
    tokens_out: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    latency_s: float | None
    teacher_model: str
    request_key: str | None
    created_at: datetime


class ExampleView(BaseModel):
    """One example of a job: its input and gold, the prompt, and every sample side by side."""

    job_id: str
    example_id: str
    task: str
    input: str | None = Field(description="the student-facing input, as the record stores it")
    gold_label: str | None
    gold_rationale: str | None
    consensus_label: str | None = Field(description="the majority label across the samples")
    agreement: float | None = Field(description="share of the samples that gave the consensus label")
    prompt_id: str
    prompt_hash: str | None
    prompt: list[ChatMessage] | None = Field(
        description="the chat messages the job's prompt template renders for this example, rendered again from the "
                    "record (its input and gold label): a template that uses other fields of the dataset row (e.g. "
                    "premise, hypothesis) may differ from what was sent; null when it cannot be rendered (the "
                    "template is gone or changed since the job ran)")
    samples: list[ExampleSample] = Field(description="every record of the example, in sample order")


class QueryRequest(BaseModel):
    sql: str = Field(min_length=1, max_length=100_000, description="one read-only SELECT over `records` / `jobs`")
    max_rows: int = Field(1000, ge=1, le=100_000)
    max_bytes: int = Field(32 << 20, ge=1, le=256 << 20,  # 32 MiB, at most 256 MiB
                           description="the most Arrow bytes of rows to return; rows past it are left out")
    timeout_s: float = Field(30.0, gt=0, le=300)


class QueryDownload(BaseModel):
    sql: str = Field(min_length=1, max_length=100_000, description="one read-only SELECT over `records` / `jobs`")
    max_rows: int = Field(10_000_000, ge=1, le=100_000_000)
    max_bytes: int = Field(2 << 30, ge=1, le=8 << 30,  # 2 GiB, at most 8 GiB
                           description="the most Arrow bytes of rows to write (before compression)")
    timeout_s: float = Field(300.0, gt=0, le=3600)


class QueryResult(BaseModel):
    columns: list[str]
    rows: list[dict[str, Any]]
    truncated: bool = Field(description="more rows matched than came back")
    truncated_by: Literal["rows", "bytes"] | None = Field(
        None, description="which cap cut the result: max_rows, or max_bytes (null when it is whole)")


class UploadedDataset(BaseModel):
    """A file in the uploads folder: a job names it as `dataset.path` (or `prompt.path`, `teacher.path`)."""

    name: str
    path: str = Field(description="where the server keeps it; a job may give this or just the name")
    bytes: int
    uploaded_at: datetime
    sha256: str | None = Field(None, description="of the bytes received (in the answer to the upload)")

    @classmethod
    def of(cls, info) -> UploadedDataset:
        return cls(name=info.name, path=info.path, bytes=info.bytes, uploaded_at=info.uploaded_at,
                   sha256=info.sha256)


class DatasetList(BaseModel):
    items: list[UploadedDataset]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
