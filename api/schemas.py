"""Response models of the REST service. Requests use the pipeline's own models (`JobSpec`), so a job posted over
HTTP and a job file are checked by the same rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

JobStatus = Literal["starting", "running", "completed", "failed", "cancelled", "budget_exhausted", "interrupted"]


class ErrorDetail(BaseModel):
    type: str = Field(description="the error class, e.g. JobSpecError, QueryRefusedError, validation_error")
    message: str
    field: str | None = Field(None, description="the offending field as a dotted path, when one is to blame")


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer has this body."""

    error: ErrorDetail


class JobCreated(BaseModel):
    job_id: str
    status: JobStatus = "starting"


class JobAccepted(BaseModel):
    """An action (cancel, resume) was accepted; the job changes state shortly."""

    job_id: str
    action: Literal["cancel", "resume"]


class JobView(BaseModel):
    job_id: str
    status: JobStatus = Field(description="`interrupted`: the registry says running but its process is gone "
                                          "(resume it); `starting`: submitted, not yet running")
    progress: float = Field(description="finished shards / shards, 0..1")
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
    created_at: datetime
    updated_at: datetime


class JobList(BaseModel):
    items: list[JobView]
    total: int = Field(description="jobs matching the filter, before paging")
    limit: int
    offset: int


class RecordPage(BaseModel):
    items: list[dict[str, Any]] = Field(description="rows of the `records` view")
    total: int
    limit: int
    offset: int


class QueryRequest(BaseModel):
    sql: str = Field(min_length=1, max_length=100_000, description="one read-only SELECT over `records` / `jobs`")
    max_rows: int = Field(1000, ge=1, le=100_000)
    timeout_s: float = Field(30.0, gt=0, le=300)


class QueryResult(BaseModel):
    columns: list[str]
    rows: list[dict[str, Any]]
    truncated: bool = Field(description="more rows matched than max_rows")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
