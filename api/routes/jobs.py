"""Jobs: submit, list, watch, cancel, resume, page through records, export. Jobs run in their own processes
(`pipeline.service.JobService`); no handler runs one."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from stepwise.api.deps import Authorized, Corpus, JobId, Service, StrictQuery, in_query_slot
from stepwise.api.encode import json_safe
from stepwise.api.errors import errors
from stepwise.api.schemas import PARQUET, JobAccepted, JobCreated, JobList, JobView, RecordPage
from stepwise.pipeline.types import JobStatus
from stepwise.api.strict_json import StrictJSONRoute
from stepwise.pipeline.exports import FORMATS, FormatName, export_job
from stepwise.pipeline.spec import JobSpec
from stepwise.storage.catalog import query as run_query

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


@router.get("/{job_id}/records", response_model=RecordPage, responses=errors(404))
async def list_records(job_id: JobId, service: Service, corpus: Corpus, request: Request,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                       offset: Annotated[int, Query(ge=0, le=100_000_000)] = 0,
                       accepted: bool | None = None) -> RecordPage:
    """A job's records in (example_id, sample_idx) order, optionally only accepted or only rejected ones."""
    def page() -> RecordPage:
        service.get(job_id)  # 404 for an unknown job
        where = f"job_id = '{job_id}'"  # JobId allows only letters, digits, '.', '_' and '-'
        if accepted is not None:
            where += f" AND accepted = {'true' if accepted else 'false'}"
        total = run_query(corpus, f"SELECT count(*) AS n FROM records WHERE {where}").table.column("n")[0].as_py()
        rows = run_query(corpus, f"SELECT * FROM records WHERE {where} ORDER BY example_id, sample_idx "
                                 f"LIMIT {limit} OFFSET {offset}", max_rows=limit).table.to_pylist()
        return RecordPage(items=json_safe(rows), total=total, limit=limit, offset=offset)

    return await in_query_slot(request, page)


@router.get("/{job_id}/export", response_class=FileResponse, responses={
    **errors(404), 200: {"description": "the export file", "content": {PARQUET: {},
                                                                        "application/x-ndjson": {}}}})
async def export(job_id: JobId, service: Service, corpus: Corpus, request: Request,
                 format: FormatName = "parquet") -> FileResponse:
    """A job's accepted records as a student-training file, streamed (parquet, or JSONL for the others)."""
    form = FORMATS.get(format)
    folder = tempfile.mkdtemp(prefix="stepwise-export-")
    path = Path(folder) / f"{job_id}.{format}.{form.suffix}"

    def write() -> None:
        service.get(job_id)  # 404 for an unknown job
        export_job(corpus.address, job_id, format, path)

    try:
        await in_query_slot(request, write)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(path, media_type=form.media_type, filename=path.name,
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))
