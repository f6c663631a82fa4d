"""Auth: the bearer token, or a browser session derived from it. Checked twice on purpose: `TokenGate` (ASGI
middleware) refuses a request before FastAPI reads its body or its parameters, so a caller without the token
learns nothing about what it sent (a malformed body is a 401, not a 422); the `require_token` dependency declares
the scheme in OpenAPI and checks again.

The viewer (`/ui`) signs in once with the token (`POST /ui/login`) and then holds two cookies:

    stepwise_session  HttpOnly, SameSite=Strict: `v1.<issued>.<nonce>.<mac>`, the mac an HMAC keyed by the token
                      over the issue time and a nonce. It never holds the token, expires after SESSION_TTL_S, and
                      every session dies when the server's token changes (the key is gone).
    stepwise_csrf     readable by the page's script: an HMAC keyed by the token over the session's nonce. A
                      state-changing request with the session cookie must repeat it in `X-Stepwise-CSRF` (double
                      submit, the cookie bound to the session) and, when the browser says where it came from
                      (`Origin`, `Sec-Fetch-Site`), come from this origin.

A request whose session checks out goes on as if it had sent the bearer header (the gate adds it, so the routes'
own check, `require_token`, sees one credential whichever way the caller signed in).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import quote

from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse

from stepwise.pipeline.errors import AuthError, CsrfError

# paths open without the token: liveness, the schema and docs with their assets (they hold no data; Swagger UI
# cannot send a token), and the viewer's sign-in page with its stylesheet
OPEN_PATHS = frozenset({"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc",
                        "/ui/login", "/ui/static/base.css"})
OPEN_PREFIXES = ("/docs/static/",)
UI_PREFIX = "/ui"
LOGIN_PATH = "/ui/login"

SESSION_COOKIE = "stepwise_session"
CSRF_COOKIE = "stepwise_csrf"
CSRF_HEADER = "x-stepwise-csrf"
SESSION_TTL_S = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CLOCK_SKEW_S = 60  # a session issued this far in the future still counts (clocks of one host agree anyway)


def check_bearer(token: str | None, authorization: str | None) -> None:
    """Raise AuthError unless `authorization` is `Bearer <token>`; no configured token lets everyone in."""
    if not token:
        return
    scheme, _, given = (authorization or "").partition(" ")
    given = given.strip() if scheme.lower() == "bearer" else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise AuthError("missing or wrong bearer token" if given else "this endpoint needs a bearer token")


def token_matches(token: str, given: str) -> bool:
    """Whether a token typed into the sign-in form is the server's, compared in constant time."""
    return hmac.compare_digest(given.encode(), token.encode())


def _mac(token: str, purpose: str, message: str) -> str:
    return hmac.new(token.encode(), f"stepwise.{purpose}.{message}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Session:
    """The two cookie values of one signed-in browser."""

    cookie: str
    csrf: str

    @classmethod
    def issue(cls, token: str, now: float | None = None) -> Session:
        """A fresh session: a new nonce, issued now."""
        issued = int(time.time() if now is None else now)
        nonce = secrets.token_urlsafe(18)
        body = f"v1.{issued}.{nonce}"
        return cls(f"{body}.{_mac(token, 'session', body)}", _mac(token, "csrf", nonce))


def verify_session(token: str, cookie: str | None, now: float | None = None) -> str | None:
    """The session's CSRF value when `cookie` is a session this token issued and it has not expired; else None."""
    if not cookie:
        return None
    parts = cookie.split(".")
    if len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit():
        return None
    body = ".".join(parts[:3])
    if not hmac.compare_digest(parts[3].encode(), _mac(token, "session", body).encode()):
        return None
    age = (time.time() if now is None else now) - int(parts[1])
    if not -_CLOCK_SKEW_S <= age < SESSION_TTL_S:
        return None
    return _mac(token, "csrf", parts[2])


def own_origin(conn: HTTPConnection) -> str:
    """`scheme://host[:port]` of this request as the browser addressed it."""
    return f"{conn.url.scheme}://{conn.headers.get('host', '')}"


def same_origin(conn: HTTPConnection) -> bool:
    """False when the browser says the request came from another site or origin; True when it says nothing."""
    site = conn.headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        return False
    origin = conn.headers.get("origin")
    return origin is None or origin == own_origin(conn)


def check_csrf(conn: HTTPConnection, expected: str) -> None:
    """Raise CsrfError unless a cookie-authenticated state change carries the session's CSRF value in the header
    and the cookie, and does not come from another origin."""
    header = conn.headers.get(CSRF_HEADER, "")
    cookie = conn.cookies.get(CSRF_COOKIE, "")
    if not (header and hmac.compare_digest(header.encode(), cookie.encode())
            and hmac.compare_digest(cookie.encode(), expected.encode())):
        raise CsrfError(f"this request changes state: send the {CSRF_COOKIE} cookie's value in X-Stepwise-CSRF")
    if not same_origin(conn):
        raise CsrfError("a state-changing request from another origin is refused")


def is_open(path: str) -> bool:
    """Whether `path` is served without the token."""
    if path in OPEN_PATHS:
        return True
    return path.startswith(OPEN_PREFIXES) and ".." not in path.split("/")


def is_ui(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


def login_redirect(conn: HTTPConnection) -> RedirectResponse:
    """303 to the sign-in page, which sends the browser back here afterwards."""
    target = conn.url.path + (f"?{conn.url.query}" if conn.url.query else "")
    return RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='')}", status_code=303,
                            headers={"Cache-Control": "no-store"})


ADMITTED = "admitted"  # the scope-state key TokenGate sets on a request it let in


class TokenGate:
    """Refuses every request but those to open paths without the token (a bearer header, or a session cookie with
    CSRF checks on state changes), before routing. The viewer's pages answer a missing session with a redirect
    to the sign-in page; everything else with the API's 401."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.token or is_open(scope["path"]):
            return await self.app(scope, receive, send)
        request = Request(scope, receive)
        try:
            self._admit(scope, request)
        except AuthError as exc:
            if is_ui(scope["path"]):
                return await login_redirect(request)(scope, receive, send)
            return await self._refuse(request, exc, scope, receive, send)
        except CsrfError as exc:
            return await self._refuse(request, exc, scope, receive, send)
        return await self.app(scope, receive, send)

    def _admit(self, scope, request: Request) -> None:
        """Pass a request with the bearer header, or with a valid session; raise AuthError or CsrfError otherwise.
        A request let in is marked in its scope (`request.state.admitted`), which the routes' own check reads."""
        authorization = request.headers.get("authorization")
        if authorization is not None:  # a script: the header decides, whatever cookies come along
            check_bearer(self.token, authorization)
        else:
            csrf = verify_session(self.token, request.cookies.get(SESSION_COOKIE))
            if csrf is None:
                raise AuthError("this endpoint needs a bearer token or a signed-in session")
            if scope["method"] not in SAFE_METHODS:
                check_csrf(request, csrf)
        scope.setdefault("state", {})[ADMITTED] = True

    @staticmethod
    async def _refuse(request: Request, exc: Exception, scope, receive, send) -> None:
        from stepwise.api.errors import error_response

        await error_response(request, exc)(scope, receive, send)
