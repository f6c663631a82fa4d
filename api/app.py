"""The FastAPI application: `create_app(corpus, token)`. OpenAPI at /openapi.json, docs at /docs."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
from fastapi import FastAPI

from api import errors
from api.auth import TokenGate
from api.metrics import MetricsMiddleware, ServiceMetrics
from api.routes import health, jobs, metrics, query
from pipeline.service import JobService
from storage.location import CorpusLocation


def create_app(corpus: str | Path | CorpusLocation, token: str | None,
               state_dir: str | Path | None = None) -> FastAPI:
    """The service over one corpus. `token` None or empty: no auth (serve it on loopback only)."""
    app = FastAPI(title="stepwise", version="0.1.0",
                  description="Submit rationale-generation jobs, watch, cancel and resume them, query the corpus "
                              "read-only and download exports. Every endpoint but /healthz needs "
                              "`Authorization: Bearer <STEPWISE_API_TOKEN>`.")
    app.state.service = JobService(corpus, state_dir)
    app.state.token = token or None
    app.state.metrics = ServiceMetrics(app.state.service)
    # corpus reads run one per core at a time (api.deps.in_query_slot)
    app.state.query_slots = anyio.CapacityLimiter(os.cpu_count() or 1)
    app.add_middleware(TokenGate, token=app.state.token)  # the last added runs first: metrics count the 401s
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    errors.install(app)
    for router in (health.router, jobs.router, query.router, metrics.router):
        app.include_router(router)
    return app
