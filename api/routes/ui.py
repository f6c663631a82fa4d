"""The viewer: sign-in and sign-out, and the pages at /ui. The pages are fixed HTML that hold no data (each is its
`pages/<name>.html` in the shared `pages/layout.html`); their one script (`static/viewer.js`) fills them from the
REST API, the same endpoints a script calls. `api.auth.TokenGate`
guards all of it but the sign-in page and its stylesheet."""

from __future__ import annotations

import html
import re
from functools import cache
from pathlib import Path
from string import Template
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from stepwise.api.auth import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_TTL_S,
    Session,
    same_origin,
    token_matches,
    verify_session,
)
from stepwise.api.deps import JobId
from stepwise.pipeline.errors import CsrfError

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
PAGES_DIR = Path(__file__).resolve().parents[1] / "pages"
STATIC_URL = "/ui/static"
HOME = "/ui"
MAX_FORM_BYTES = 16 << 10  # a token and a return path; anything longer is not a sign-in form
# pages run only our own files: no inline script or style, nothing from elsewhere, never inside a frame
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
_NEXT = re.compile(r"^/ui(?:[/?#][^\\\s]*)?$")

router = APIRouter(prefix="/ui", include_in_schema=False)


# page -> (its title, whether it draws charts)
PAGES = {"jobs": ("Jobs", False), "job": ("Job", True), "records": ("Records", False), "example": ("Example", False)}
CHARTS = '  <script src="/ui/static/vendor/chart.umd.min.js" defer></script>\n'


@cache
def _html(name: str) -> str:
    title, charts = PAGES[name]
    layout = Template((PAGES_DIR / "layout.html").read_text(encoding="utf-8"))
    return layout.substitute(title=title, page=name, scripts=CHARTS if charts else "",
                             main=(PAGES_DIR / f"{name}.html").read_text(encoding="utf-8"))


def _page(name: str) -> HTMLResponse:
    return HTMLResponse(_html(name), headers=PAGE_HEADERS)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a viewer path on this server, never another site (`//host`, `/\\host`)."""
    if target and _NEXT.match(target) and not target.startswith("//"):
        return target
    return HOME


def _login_page(next_url: str, message: str = "", status: int = 200) -> HTMLResponse:
    """The sign-in form; every value in it is escaped."""
    text = Template((PAGES_DIR / "login.html").read_text(encoding="utf-8")).substitute(
        next=html.escape(next_url, quote=True), message=html.escape(message),
        hidden="" if message else " hidden")
    return HTMLResponse(text, status_code=status, headers=PAGE_HEADERS)


def _signed_in(request: Request) -> bool:
    token = request.app.state.token
    return not token or verify_session(token, request.cookies.get(SESSION_COOKIE)) is not None


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    """The sign-in form; a browser already signed in (or a server without a token) goes straight on."""
    if _signed_in(request):
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(safe_next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    """Exchange the token for a session cookie and a CSRF cookie; the token itself is never stored or echoed."""
    if not same_origin(request):  # nobody else's page may sign this browser in
        raise CsrfError("a sign-in from another origin is refused")
    form = await _read_form(request)
    next_url = safe_next(form.get("next"))
    token = request.app.state.token
    if not token:
        return RedirectResponse(next_url, status_code=303)
    if not token_matches(token, form.get("token", "")):
        return _login_page(next_url, "That token is not the server's. Try again.", status=401)
    session = Session.issue(token)
    response = RedirectResponse(next_url, status_code=303)
    secure = request.url.scheme == "https"
    response.set_cookie(SESSION_COOKIE, session.cookie, max_age=SESSION_TTL_S, path="/", secure=secure,
                        httponly=True, samesite="strict")
    response.set_cookie(CSRF_COOKIE, session.csrf, max_age=SESSION_TTL_S, path="/", secure=secure,
                        httponly=False, samesite="strict")
    return response


async def _read_form(request: Request) -> dict[str, str]:
    """The first value of each field of an urlencoded form, read up to MAX_FORM_BYTES."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=8)
    return {name: values[0] for name, values in fields.items()}


@router.post("/logout", status_code=204)
def logout(request: Request) -> Response:
    """Forget this browser's session (TokenGate has checked the session and its CSRF header)."""
    response = Response(status_code=204)
    secure = request.url.scheme == "https"
    for name, httponly in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
        response.delete_cookie(name, path="/", secure=secure, httponly=httponly, samesite="strict")
    return response


@router.get("")
@router.get("/")
def jobs_page() -> HTMLResponse:
    """Every job: status, progress, counts, cost; live while one runs."""
    return _page("jobs")


@router.get("/jobs/{job_id}")
def job_page(job_id: JobId) -> HTMLResponse:
    """One job: its figures, charts and exports."""
    return _page("job")


@router.get("/jobs/{job_id}/records")
def records_page(job_id: JobId) -> HTMLResponse:
    """A job's records, filtered, sorted and paged."""
    return _page("records")


@router.get("/jobs/{job_id}/examples/{example_id:path}")
def example_page(job_id: JobId, example_id: str) -> HTMLResponse:
    """One example: its prompt and every sample side by side."""
    return _page("example")
