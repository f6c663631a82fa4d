"""The FastAPI application: `create_app(settings)`. OpenAPI at /openapi.json, docs at /docs."""

from __future__ import annotations

import os

import anyio
from fastapi import FastAPI

from stepwise.api import errors
from stepwise.api.auth import TokenGate
from stepwise.api.metrics import MetricsMiddleware, ServiceMetrics
from stepwise.api.routes import datasets, health, jobs, metrics, query
from stepwise.api.settings import ServiceSettings
from stepwise.pipeline.service import JobService
from stepwise.storage.uploads import UploadStore


def create_app(settings: ServiceSettings) -> FastAPI:
    """The service over one corpus. No token: no auth (serve it on loopback only)."""
    app = FastAPI(title="stepwise", version="0.1.0",
                  description="Submit rationale-generation jobs, watch, cancel and resume them, query the corpus "
                              "read-only, upload datasets and download exports. Every endpoint but /healthz needs "
                              "`Authorization: Bearer <STEPWISE_API_TOKEN>`.")
    app.state.settings = settings
    app.state.service = JobService(settings.corpus, settings.state_folder, admission=settings.admission())
    app.state.uploads = UploadStore(settings.uploads, settings.max_upload_bytes)
    app.state.token = settings.token
    app.state.metrics = ServiceMetrics(app.state.service)
    # corpus reads run one per core at a time (api.deps.in_query_slot)
    app.state.query_slots = anyio.CapacityLimiter(os.cpu_count() or 1)
    app.add_middleware(TokenGate, token=app.state.token)  # the last added runs first: metrics count the 401s
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    errors.install(app)
    for router in (health.router, jobs.router, datasets.router, query.router, metrics.router):
        app.include_router(router)
    return app
