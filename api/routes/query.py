"""Read-only SQL over the corpus views, through the sandbox of `storage.catalog.query`."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Authorized, Corpus
from api.encode import json_safe
from api.errors import errors
from api.schemas import QueryRequest, QueryResult
from storage.catalog import query as run_query

router = APIRouter(prefix="/v1", tags=["query"], dependencies=[Authorized])


@router.post("/query", response_model=QueryResult, responses=errors(400))
def query(body: QueryRequest, corpus: Corpus) -> QueryResult:
    """One SELECT over `records` and `jobs`; files, writes, ATTACH, INSTALL, SET and PRAGMA are refused (400)."""
    table = run_query(corpus, body.sql, max_rows=body.max_rows + 1, timeout_s=body.timeout_s)
    rows = table.slice(0, body.max_rows).to_pylist()
    return QueryResult(columns=table.column_names, rows=json_safe(rows),
                       truncated=table.num_rows > body.max_rows)
