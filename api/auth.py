"""Bearer-token auth. Checked twice on purpose: `TokenGate` (ASGI middleware) refuses a request before FastAPI
reads its body or its parameters, so a caller without the token learns nothing about what it sent (a malformed
body is a 401, not a 422); the `require_token` dependency declares the scheme in OpenAPI and checks again."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from stepwise.pipeline.errors import AuthError

# paths open without the token: liveness, and the schema and docs (they hold no data; Swagger UI cannot send one)
OPEN_PATHS = frozenset({"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


def check_bearer(token: str | None, authorization: str | None) -> None:
    """Raise AuthError unless `authorization` is `Bearer <token>`; no configured token lets everyone in."""
    if not token:
        return
    scheme, _, given = (authorization or "").partition(" ")
    given = given.strip() if scheme.lower() == "bearer" else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise AuthError("missing or wrong bearer token" if given else "this endpoint needs a bearer token")


class TokenGate:
    """Refuses every request but those to OPEN_PATHS without the right token, before routing."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.token and scope["path"] not in OPEN_PATHS:
            request = Request(scope, receive)
            try:
                check_bearer(self.token, request.headers.get("authorization"))
            except AuthError as exc:
                from stepwise.api.errors import error_response

                return await error_response(request, exc)(scope, receive, send)
        return await self.app(scope, receive, send)
