"""Read-only SQL over the corpus views, through the sandbox of `storage.catalog`: as JSON rows, or streamed into
a Parquet file for results too large for JSON."""

from __future__ import annotations

import shutil
import tempfile
from functools import partial
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from api.deps import Authorized, Corpus, StrictQuery, in_query_slot
from api.encode import json_safe
from api.errors import errors
from api.schemas import PARQUET, QueryDownload, QueryRequest, QueryResult
from storage.catalog import query as run_query
from storage.catalog import query_to_parquet

router = APIRouter(prefix="/v1", tags=["query"], dependencies=[Authorized, StrictQuery])


@router.post("/query", response_model=QueryResult, responses=errors(400))
async def query(body: QueryRequest, corpus: Corpus, request: Request) -> QueryResult:
    """One SELECT over `records` and `jobs`; files, writes, ATTACH, INSTALL, SET and PRAGMA are refused (400)."""
    table = await in_query_slot(request, partial(run_query, corpus, body.sql, max_rows=body.max_rows + 1,
                                                 timeout_s=body.timeout_s))
    rows = table.slice(0, body.max_rows).to_pylist()
    return QueryResult(columns=table.column_names, rows=json_safe(rows),
                       truncated=table.num_rows > body.max_rows)


@router.post("/query/parquet", response_class=FileResponse, responses={
    **errors(400), 200: {"description": "the result as one Parquet file; `X-Stepwise-Rows` says how many rows it "
                                        "holds and `X-Stepwise-Truncated: true` that more matched than max_rows",
                         "content": {PARQUET: {}}}})
async def query_parquet(body: QueryDownload, corpus: Corpus, request: Request) -> FileResponse:
    """The same sandboxed SELECT, its result streamed into a Parquet file (up to 100 million rows)."""
    folder = tempfile.mkdtemp(prefix="stepwise-query-")
    try:
        path = Path(folder) / "query.parquet"
        rows, truncated = await in_query_slot(request, partial(query_to_parquet, corpus, body.sql, path,
                                                               max_rows=body.max_rows, timeout_s=body.timeout_s))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(path, media_type=PARQUET, filename=path.name,
                        headers={"X-Stepwise-Rows": str(rows), "X-Stepwise-Truncated": str(truncated).lower()},
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))

