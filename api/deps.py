"""Dependencies of the routes, as `Annotated` aliases: the corpus, the job runner, and the bearer-token check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipeline.errors import AuthError
from pipeline.service import JobService
from storage.location import CorpusLocation

_bearer = HTTPBearer(auto_error=False, description="the value of STEPWISE_API_TOKEN")


def get_service(request: Request) -> JobService:
    return request.app.state.service


def get_corpus(request: Request) -> CorpusLocation:
    return request.app.state.service.corpus


def require_token(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Every endpoint but /healthz: `Authorization: Bearer <STEPWISE_API_TOKEN>`. Without a configured token the
    server listens on loopback only (see `stepwise serve`) and lets local callers in."""
    token: str | None = request.app.state.token
    if not token:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise AuthError("missing or wrong bearer token" if given else "this endpoint needs a bearer token")


Service = Annotated[JobService, Depends(get_service)]
Corpus = Annotated[CorpusLocation, Depends(get_corpus)]
Authorized = Depends(require_token)
JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="the job's id")]
