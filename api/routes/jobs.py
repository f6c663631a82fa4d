"""Jobs: submit, list, watch, cancel, resume, page through records, look at one example, export. Jobs run in
their own processes (`pipeline.service.JobService`); no handler runs one."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from stepwise.api.deps import Authorized, Corpus, JobId, Service, StrictQuery, in_query_slot
from stepwise.api.encode import json_safe
from stepwise.api.errors import errors
from stepwise.api.examples import example_view
from stepwise.api.schemas import (
    PARQUET,
    ErrorBody,
    ExampleView,
    JobAccepted,
    JobCreated,
    JobList,
    JobView,
    RecordPage,
    RecordSort,
)
from stepwise.pipeline.types import JobStatus, RejectReason
from stepwise.api.strict_json import StrictJSONRoute
from stepwise.pipeline.exports import FORMATS, FormatName, export_job
from stepwise.pipeline.spec import JobSpec
from stepwise.storage.pages import MAX_SEARCH_CHARS, RecordFilter, example_records, record_page

ZIP = "application/zip"
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Authorized, StrictQuery],
                   route_class=StrictJSONRoute)



@router.post("", status_code=202, response_model=JobCreated, responses=errors(409))
def submit_job(spec: JobSpec, service: Service) -> JobCreated:
    """Start a job (the schema of a job file, its files inside the data roots, its teacher a profile); it runs in
    its own process and outlives this server."""
    return JobCreated(job_id=service.submit(spec))


@router.get("", response_model=JobList, responses=errors())
def list_jobs(service: Service, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
              offset: Annotated[int, Query(ge=0)] = 0, status: JobStatus | None = None) -> JobList:
    """Jobs, newest first, optionally of one status."""
    views = [v for v in service.list() if status is None or v.state.status == status]
    return JobList(items=[JobView.of(v) for v in views[offset:offset + limit]], total=len(views), limit=limit,
                   offset=offset)


@router.get("/{job_id}", response_model=JobView, responses=errors(404))
def get_job(job_id: JobId, service: Service) -> JobView:
    """Status, progress and counters of one job (live while it runs)."""
    return JobView.of(service.get(job_id))


@router.post("/{job_id}/cancel", status_code=202, response_model=JobAccepted, responses=errors(404, 409))
def cancel_job(job_id: JobId, service: Service) -> JobAccepted:
    """Ask a running job to stop; finished shards are kept and it can be resumed."""
    service.cancel(job_id)
    return JobAccepted(job_id=job_id, action="cancel")


@router.post("/{job_id}/resume", status_code=202, response_model=JobAccepted, responses=errors(404, 409))
def resume_job(job_id: JobId, service: Service) -> JobAccepted:
    """Start a cancelled, failed, interrupted or budget-stopped job again; finished shards are skipped."""
    service.resume(job_id)
    return JobAccepted(job_id=job_id, action="resume")


async def record_filter(
        accepted: bool | None = None,
        reason: Annotated[RejectReason | None, Query(description="the reject reason, exactly")] = None,
        correct: Annotated[bool | None, Query(description="whether the label matches the gold label")] = None,
        label: Annotated[str | None, Query(max_length=1000, description="the label, exactly")] = None,
        gold_label: Annotated[str | None, Query(max_length=1000, description="the gold label, exactly")] = None,
        min_agreement: Annotated[float | None, Query(ge=0, le=1, description="agreement at least this")] = None,
        max_agreement: Annotated[float | None, Query(ge=0, le=1, description="agreement at most this")] = None,
        q: Annotated[str | None, Query(min_length=1, max_length=MAX_SEARCH_CHARS, description=(
            "a case-insensitive substring of input, rationale, reasoning or completion, taken literally (`%`, `_` "
            "are no wildcards); it reads every text of the job, so it takes seconds on a large one"))] = None,
) -> RecordFilter:
    """The filters of a records page, from its query parameters."""
    if min_agreement is not None and max_agreement is not None and min_agreement > max_agreement:
        raise RequestValidationError([{"loc": ("query", "min_agreement"), "type": "value_error",
                                       "msg": "min_agreement is larger than max_agreement"}])
    return RecordFilter(accepted, reason.value if reason else None, correct, label, gold_label, min_agreement,
                        max_agreement, q)


Filters = Annotated[RecordFilter, Depends(record_filter)]


@router.get("/{job_id}/records", response_model=RecordPage, responses=errors(404))
async def list_records(job_id: JobId, service: Service, corpus: Corpus, request: Request, where: Filters,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                       offset: Annotated[int, Query(ge=0, le=100_000_000)] = 0,
                       sort: RecordSort = RecordSort.POSITION, order: Literal["asc", "desc"] = "asc",
                       brief: Annotated[bool, Query(description="long texts cut to 280 characters, their lengths "
                                                                "added as *_chars")] = False) -> RecordPage:
    """A job's records, filtered, sorted (by default in stored order; ties by example_id, sample_idx) and paged;
    `total` counts the matches."""
    def page() -> RecordPage:
        service.get(job_id)  # 404 for an unknown job
        found = record_page(corpus, job_id, where, sort=sort.value, order=order, limit=limit, offset=offset,
                            brief=brief)
        return RecordPage(items=json_safe(found.rows), total=found.total, limit=limit, offset=offset)

    return await in_query_slot(request, page)


@router.get("/{job_id}/examples/{example_id:path}", response_model=ExampleView, responses={
    **errors(404), 404: {"model": ErrorBody, "description": "no such job, or no such example in it"}})
async def get_example(job_id: JobId, example_id: Annotated[str, PathParam(min_length=1, max_length=1000)],
                      service: Service, corpus: Corpus, request: Request) -> ExampleView:
    """One example: input, gold, consensus, the rendered prompt and every sample with its answer's span."""
    def view() -> ExampleView:
        spec_json = service.get(job_id).state.spec_json  # 404 for an unknown job
        records = example_records(corpus, job_id, example_id)
        if not records:
            raise HTTPException(404, f"job {job_id!r} has no example {example_id!r}")
        return example_view(spec_json, records, service.admission)

    return await in_query_slot(request, view)


@router.get("/{job_id}/export", response_class=FileResponse, responses={
    **errors(404), 200: {"description": "the export file", "content": {PARQUET: {}, "application/x-ndjson": {},
                                                                        ZIP: {}}}})
async def export(job_id: JobId, service: Service, corpus: Corpus, request: Request,
                 format: FormatName = "parquet") -> FileResponse:
    """A job's accepted records as a student-training file, streamed (parquet, JSONL for the chat and CoT formats;
    a folder format, `hf`, as a zip of its folder)."""
    form = FORMATS.get(format)
    folder = tempfile.mkdtemp(prefix="stepwise-export-")
    name = f"{job_id}.{format}"
    path = Path(folder) / (f"{name}.zip" if form.folder else f"{name}.{form.suffix}")

    def write() -> None:
        service.get(job_id)  # 404 for an unknown job
        if form.folder is None:
            export_job(corpus.address, job_id, format, path)
            return
        export_job(corpus.address, job_id, format, Path(folder) / name)
        shutil.make_archive(str(path.with_suffix("")), "zip", root_dir=Path(folder) / name)

    try:
        await in_query_slot(request, write)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(path, media_type=ZIP if form.folder else form.media_type, filename=path.name,
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))
