"""Liveness: no auth, no corpus access."""

from __future__ import annotations

from fastapi import APIRouter

from stepwise.api.deps import StrictQuery
from stepwise.api.schemas import Health

router = APIRouter(tags=["health"], dependencies=[StrictQuery])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process answers."""
    return Health()
