"""Read-only SQL over the corpus views, through the sandbox of `storage.catalog`: as JSON rows, or streamed into
a Parquet file for results too large for JSON. Both stop at a row cap and a byte cap and say which one cut the
result."""

from __future__ import annotations

import shutil
import tempfile
from functools import partial
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from stepwise.api.deps import Authorized, Corpus, StrictQuery, in_query_slot
from stepwise.api.encode import json_safe
from stepwise.api.errors import errors
from stepwise.api.schemas import PARQUET, QueryDownload, QueryRequest, QueryResult
from stepwise.api.strict_json import StrictJSONRoute
from stepwise.storage.catalog import query as run_query
from stepwise.storage.catalog import query_to_parquet

router = APIRouter(prefix="/v1", tags=["query"], dependencies=[Authorized, StrictQuery], route_class=StrictJSONRoute)


@router.post("/query", response_model=QueryResult, responses=errors(400))
async def query(body: QueryRequest, corpus: Corpus, request: Request) -> QueryResult:
    """One SELECT over `records` and `jobs`; files, writes, ATTACH, INSTALL, SET and PRAGMA are refused (400)."""
    result = await in_query_slot(request, partial(run_query, corpus, body.sql, max_rows=body.max_rows,
                                                  max_bytes=body.max_bytes, timeout_s=body.timeout_s))
    return QueryResult(columns=result.table.column_names, rows=json_safe(result.table.to_pylist()),
                       truncated=result.truncated, truncated_by=result.reason)


@router.post("/query/parquet", response_class=FileResponse, responses={
    **errors(400), 200: {"description": "the result as one Parquet file; `X-Stepwise-Rows` says how many rows it "
                                        "holds, `X-Stepwise-Truncated: true` that more matched than it holds and "
                                        "`X-Stepwise-Truncated-By` which cap cut it (`rows` or `bytes`)",
                         "content": {PARQUET: {}}}})
async def query_parquet(body: QueryDownload, corpus: Corpus, request: Request) -> FileResponse:
    """The same sandboxed SELECT, its result streamed into a Parquet file (up to 100 million rows)."""
    folder = tempfile.mkdtemp(prefix="stepwise-query-")
    try:
        path = Path(folder) / "query.parquet"
        written = await in_query_slot(request, partial(query_to_parquet, corpus, body.sql, path,
                                                       max_rows=body.max_rows, max_bytes=body.max_bytes,
                                                       timeout_s=body.timeout_s))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    headers = {"X-Stepwise-Rows": str(written.rows), "X-Stepwise-Truncated": str(written.truncated).lower()}
    if written.reason is not None:
        headers["X-Stepwise-Truncated-By"] = written.reason
    return FileResponse(path, media_type=PARQUET, filename=path.name, headers=headers,
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))
