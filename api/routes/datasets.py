"""Datasets: upload a file into the server's uploads folder (a data root jobs may read), list the uploads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from stepwise.api.deps import Authorized, StrictQuery, Uploads
from stepwise.api.errors import errors
from stepwise.api.schemas import DatasetList, UploadedDataset
from stepwise.api.strict_json import StrictJSONRoute

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], dependencies=[Authorized, StrictQuery],
                   route_class=StrictJSONRoute)


@router.post("", status_code=201, response_model=UploadedDataset, responses={
    **errors(409, 413), 201: {"description": "the file was stored; name it as `dataset.path` in a job"}},
    openapi_extra={"requestBody": {"required": True, "description": "the file's bytes, as they are",
                                   "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                       "format": "binary"}}}}})
async def upload_dataset(request: Request, uploads: Uploads,
                         name: Annotated[str, Query(min_length=1, max_length=128,
                                                    description="file name, e.g. problems.jsonl")]) -> UploadedDataset:
    """Store the request body as a dataset file (JSONL, JSON, CSV, TSV, Parquet or a YAML prompt template)."""
    declared = request.headers.get("content-length")
    info = await uploads.save(name, request.stream(), int(declared) if declared and declared.isdigit() else None)
    return UploadedDataset.of(info)


@router.get("", response_model=DatasetList, responses=errors())
def list_datasets(uploads: Uploads) -> DatasetList:
    """The uploaded files, by name."""
    return DatasetList(items=[UploadedDataset.of(info) for info in uploads.list()])
