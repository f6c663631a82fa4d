"""One function, `error_response`, turns any exception into an HTTP status and an `ErrorBody`.

    JobSpecError, DatasetError, PromptError, TaskError, a bad request   422  (the field named when known)
    QueryError (QueryRefusedError included)                              400
    AuthError                                                            401
    CsrfError (a signed-in browser's state change, unchecked)            403
    UploadError (a bad name)                                             422
    JobNotFoundError, an unknown route                                   404
    JobConflictError, JobStateError, UploadExistsError                   409
    UploadTooLargeError                                                  413
    other StorageError, StepwiseError, anything else                     500  (an unexpected one says nothing more)
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from stepwise.api.schemas import ErrorBody, ErrorDetail
from stepwise.pipeline.errors import (
    AuthError,
    CsrfError,
    DatasetError,
    JobConflictError,
    JobNotFoundError,
    JobSpecError,
    JobStateError,
    PromptError,
    QueryError,
    StepwiseError,
    TaskError,
    UploadError,
    UploadExistsError,
    UploadTooLargeError,
)
from stepwise.pipeline.spec import field_problems

log = logging.getLogger("stepwise.api")

_STATUS: list[tuple[type[Exception], int]] = [  # first match wins: subclasses before their bases
    (JobSpecError, 422), (DatasetError, 422), (PromptError, 422), (TaskError, 422),
    (QueryError, 400), (AuthError, 401), (CsrfError, 403), (JobNotFoundError, 404), (JobConflictError, 409),
    (JobStateError, 409), (UploadExistsError, 409), (UploadTooLargeError, 413), (UploadError, 422),
]

# the error models every route may answer with; routes add theirs to these
COMMON_ERRORS = {401: {"model": ErrorBody, "description": "missing or wrong bearer token"},
                 422: {"model": ErrorBody, "description": "invalid request; `field` names the field"},
                 500: {"model": ErrorBody, "description": "a server-side failure"}}


def errors(*statuses: int) -> dict[int, dict]:
    """`responses=` for a route: the common errors plus these statuses, each with the ErrorBody model."""
    described = {400: "query refused or failed", 404: "no such job", 409: "conflicts with the job's state or id",
                 413: "the upload is larger than the server takes"}
    return {**COMMON_ERRORS, **{s: {"model": ErrorBody, "description": described.get(s, "")} for s in statuses}}


def _validation_field(loc: tuple) -> tuple[str | None, list]:
    parts = list(loc)
    if parts[:1] == ["body"]:
        return None, parts[1:]
    return ".".join(str(p) for p in parts), parts


def error_response(request: Request, exc: Exception) -> JSONResponse:
    """The one place an exception becomes an HTTP answer."""
    headers = None
    field = None
    if isinstance(exc, RequestValidationError):
        status, kind = 422, "validation_error"
        problems = []
        for err in exc.errors():
            dotted, body_loc = _validation_field(tuple(err.get("loc", ())))
            if dotted is None:  # a body field: name it as the job file would (teacher.model, not teacher.openai.model)
                problems += field_problems([{**err, "loc": body_loc}])
            else:
                problems.append((dotted, str(err.get("msg", ""))))
        field = problems[0][0] if problems else None
        message = "; ".join(f"{f}: {m}" for f, m in problems) or "invalid request"
    elif isinstance(exc, StarletteHTTPException):
        status, kind, message = exc.status_code, "http_error", str(exc.detail)
        headers = getattr(exc, "headers", None)
        if status == 400:  # Starlette's "error parsing the body" (e.g. not UTF-8): like any undecodable JSON
            status, kind, message = 422, "validation_error", f"the request body cannot be read as JSON: {message}"
        if status == 405:  # Starlette names only the first route's methods; a path may have a route per method
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    elif isinstance(exc, StepwiseError):
        status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
        kind, message, field = type(exc).__name__, str(exc), getattr(exc, "field", None)
        if isinstance(exc, QueryError):
            field = field or "sql"  # the query endpoints' one field a query error can blame
        if isinstance(exc, AuthError):
            headers = {"WWW-Authenticate": "Bearer"}
        if status == 500:
            log.error("%s %s failed: %s", request.method, request.url.path, message)
    else:
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        status, kind, message = 500, "internal_error", "internal server error"
    body = ErrorBody(error=ErrorDetail(type=kind, message=message, field=field))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    def leaves(routes):  # included routers hold their routes under `original_router`
        for route in routes:
            inner = getattr(route, "original_router", None)
            yield from leaves(inner.routes) if inner is not None else (route,)

    methods: set[str] = set()
    for route in leaves(request.app.router.routes):
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install(app: FastAPI) -> None:
    for exc_type in (RequestValidationError, StarletteHTTPException, StepwiseError, Exception):
        app.add_exception_handler(exc_type, error_response)
