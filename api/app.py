"""The FastAPI application: `create_app(settings)`. OpenAPI at /openapi.json, docs at /docs and /redoc (their
scripts and styles served from /docs/static by fastapi-offline, so they render with no network), the viewer at
/ui (static pages under /ui/static that call the API)."""

from __future__ import annotations

import os

import anyio
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse
from fastapi_offline import FastAPIOffline
from starlette.staticfiles import StaticFiles

from stepwise.api import errors
from stepwise.api.auth import TokenGate
from stepwise.api.metrics import MetricsMiddleware, ServiceMetrics
from stepwise.api.routes import datasets, health, jobs, metrics, query, ui
from stepwise.api.settings import ServiceSettings
from stepwise.pipeline.service import JobService
from stepwise.storage.uploads import UploadStore

DOCS_STATIC = "/docs/static"  # Swagger UI's and ReDoc's files (auth.OPEN_PREFIXES: open, like /docs itself)
# ReDoc's page stays on this server: its sidebar loads a logo from ReDoc's CDN, which this stops before any request
# leaves; ReDoc styles itself with inline <style> and searches in a worker it makes from a blob
REDOC_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
             "font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
             "base-uri 'none'; frame-ancestors 'none'")


def create_app(settings: ServiceSettings) -> FastAPI:
    """The service over one corpus. No token: no auth (serve it on loopback only)."""
    app = FastAPIOffline(title="stepwise", version="0.1.0", static_url=DOCS_STATIC, redoc_url=None,
                         description="Submit rationale-generation jobs, watch, cancel and resume them, query the "
                                     "corpus read-only, upload datasets and download exports. Every endpoint but "
                                     "/healthz needs `Authorization: Bearer <STEPWISE_API_TOKEN>`; the viewer at /ui "
                                     "signs in with the token once and holds a session cookie instead.")
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
    for router in (health.router, jobs.router, datasets.router, query.router, metrics.router, ui.router):
        app.include_router(router)
    app.mount(ui.STATIC_URL, StaticFiles(directory=ui.STATIC_DIR), name="ui-static")  # behind TokenGate
    app.add_api_route("/redoc", redoc, include_in_schema=False)
    return app


async def redoc(request: Request) -> HTMLResponse:
    """ReDoc over this server's schema, from the copy fastapi-offline bundles, kept offline by REDOC_CSP."""
    root = request.scope.get("root_path", "")
    page = get_redoc_html(openapi_url=f"{root}{request.app.openapi_url}", title="stepwise - ReDoc",
                          redoc_js_url=f"{root}{DOCS_STATIC}/redoc.standalone.js", with_google_fonts=False,
                          redoc_favicon_url=f"{root}{DOCS_STATIC}/favicon.png")
    page.headers["Content-Security-Policy"] = REDOC_CSP
    return page
