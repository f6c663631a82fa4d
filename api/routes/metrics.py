"""Prometheus scrape endpoint (token required, like every endpoint but /healthz: set `authorization` in the
scrape config)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from stepwise.api.deps import Authorized, StrictQuery
from stepwise.api.errors import errors
from stepwise.api.metrics import CONTENT_TYPE

router = APIRouter(tags=["metrics"], dependencies=[Authorized, StrictQuery])


@router.get("/metrics", response_class=Response, responses={
    **errors(), 200: {"description": "Prometheus text format", "content": {CONTENT_TYPE: {}}}})
def metrics(request: Request) -> Response:
    """HTTP traffic of this process, and every job's status, progress, records, rejects, tokens, cost and rate."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
