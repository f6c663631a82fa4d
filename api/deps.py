"""Dependencies of the routes, as `Annotated` aliases: the corpus, the job runner, the bearer-token check and the
refusal of undeclared query parameters. They do no I/O, so they are `async`: a sync dependency costs a trip
through the thread pool on every request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import anyio

from fastapi import Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from stepwise.api.auth import ADMITTED, check_bearer
from stepwise.pipeline.service import JobService
from stepwise.pipeline.types import JOB_ID_PATTERN
from stepwise.storage.location import CorpusLocation
from stepwise.storage.uploads import UploadStore

T = TypeVar("T")
_bearer = HTTPBearer(auto_error=False, description="the value of STEPWISE_API_TOKEN")


async def get_service(request: Request) -> JobService:
    return request.app.state.service


async def get_corpus(request: Request) -> CorpusLocation:
    return request.app.state.service.corpus


async def get_uploads(request: Request) -> UploadStore:
    return request.app.state.uploads


async def require_token(request: Request,
                        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Every endpoint but /healthz: `Authorization: Bearer <STEPWISE_API_TOKEN>` (`api.auth`). Without a
    configured token the server listens on loopback only (see `stepwise serve`) and lets local callers in."""
    del credentials  # declared for OpenAPI's security scheme; the header is read as TokenGate reads it
    if getattr(request.state, ADMITTED, False):  # TokenGate let it in: a bearer header, or a session
        return
    check_bearer(request.app.state.token, request.headers.get("authorization"))


async def known_query_only(request: Request) -> None:
    """Strict input: a query parameter the route does not declare is a 422 naming it, so that a typo such as
    `?acepted=true` never silently returns everything."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _QUERY_NAMES.get(id(route))
    if known is None:
        known = _QUERY_NAMES[id(route)] = _query_names(dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise RequestValidationError([{"loc": ("query", name), "type": "extra_forbidden",
                                       "msg": f"unknown query parameter (this endpoint takes "
                                              f"{', '.join(sorted(known)) or 'none'})"} for name in unknown])


_QUERY_NAMES: dict[int, frozenset[str]] = {}  # id(route) -> names; routes live as long as the app


def _query_names(dependant) -> frozenset[str]:
    """The query parameters a route declares, its dependencies' included."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return frozenset(names)

async def in_query_slot(request: Request, fn: Callable[[], T]) -> T:
    """Run corpus-reading work (a query, a page of records, an export) in a worker thread, at most one per core
    at a time: more would only slow each other down, and work waiting for a slot holds no thread, so job views
    and the rest stay quick."""
    return await anyio.to_thread.run_sync(fn, limiter=request.app.state.query_slots)


Service = Annotated[JobService, Depends(get_service)]
Corpus = Annotated[CorpusLocation, Depends(get_corpus)]
Uploads = Annotated[UploadStore, Depends(get_uploads)]
Authorized = Depends(require_token)
StrictQuery = Depends(known_query_only)
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="the job's id")]
