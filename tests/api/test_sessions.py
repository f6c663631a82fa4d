"""The viewer's session and CSRF rules (`api.auth`), one rule a test, without a browser or a server; the browser
tests (`test_viewer.py`) show the same rules end to end."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from stepwise.api.auth import (
    CSRF_COOKIE,
    SESSION_TTL_S,
    Session,
    check_csrf,
    is_open,
    verify_session,
)
from stepwise.api.routes.ui import safe_next
from stepwise.pipeline.errors import CsrfError

TOKEN = "server-token-1"
NOW = 1_800_000_000.0


def request(headers: dict[str, str], cookies: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if cookies:
        raw.append((b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()))
    return Request({"type": "http", "method": "POST", "scheme": "http", "server": ("127.0.0.1", 8000),
                    "path": "/v1/query", "query_string": b"", "headers": [(b"host", b"127.0.0.1:8000"), *raw]})


def test_a_session_is_valid_until_it_expires_and_holds_no_token():
    session = Session.issue(TOKEN, now=NOW)
    assert TOKEN not in session.cookie and TOKEN not in session.csrf
    assert verify_session(TOKEN, session.cookie, now=NOW + SESSION_TTL_S - 1) == session.csrf
    assert verify_session(TOKEN, session.cookie, now=NOW + SESSION_TTL_S) is None
    assert Session.issue(TOKEN, now=NOW).cookie != session.cookie  # a nonce each


@pytest.mark.parametrize("tamper", [
    lambda c: c.replace("v1.", "v2.", 1),                                   # another version
    lambda c: c.replace(c.split(".")[1], str(int(c.split(".")[1]) + 3600)),  # a later issue time
    lambda c: c[:-1] + ("0" if c[-1] != "0" else "1"),                      # another mac
    lambda c: c.rsplit(".", 1)[0],                                          # no mac
    lambda c: "",
    lambda c: TOKEN,                                                         # the token itself is no session
])
def test_a_tampered_session_is_refused(tamper):
    assert verify_session(TOKEN, tamper(Session.issue(TOKEN, now=NOW).cookie), now=NOW + 1) is None


def test_a_new_token_ends_every_session():
    assert verify_session("server-token-2", Session.issue(TOKEN, now=NOW).cookie, now=NOW + 1) is None


def test_a_session_from_the_future_is_refused():
    assert verify_session(TOKEN, Session.issue(TOKEN, now=NOW + 3600).cookie, now=NOW) is None


@pytest.mark.parametrize("headers,cookie,ok", [
    ({"x-stepwise-csrf": "GOOD"}, "GOOD", True),
    ({"x-stepwise-csrf": "GOOD", "origin": "http://127.0.0.1:8000", "sec-fetch-site": "same-origin"}, "GOOD", True),
    ({}, "GOOD", False),                                                     # no header
    ({"x-stepwise-csrf": "forged"}, "forged", False),                        # header = cookie, not the session's
    ({"x-stepwise-csrf": "GOOD"}, "other", False),                           # header != cookie
    ({"x-stepwise-csrf": "GOOD", "origin": "http://evil.example"}, "GOOD", False),
    ({"x-stepwise-csrf": "GOOD", "origin": "null"}, "GOOD", False),
    ({"x-stepwise-csrf": "GOOD", "origin": "https://127.0.0.1:8000"}, "GOOD", False),  # another scheme
    ({"x-stepwise-csrf": "GOOD", "sec-fetch-site": "same-site"}, "GOOD", False),
    ({"x-stepwise-csrf": "GOOD", "sec-fetch-site": "cross-site"}, "GOOD", False),
])
def test_a_cookie_signed_state_change_needs_the_sessions_csrf_value_from_this_origin(headers, cookie, ok):
    req = request(headers, {CSRF_COOKIE: cookie})
    if ok:
        check_csrf(req, "GOOD")
    else:
        with pytest.raises(CsrfError):
            check_csrf(req, "GOOD")


@pytest.mark.parametrize("target,goes", [
    ("/ui/jobs/a/records?reason=incorrect", "/ui/jobs/a/records?reason=incorrect"),
    ("/ui", "/ui"),
    (None, "/ui"),
    ("https://evil.example/ui", "/ui"),
    ("//evil.example/ui", "/ui"),
    ("/\\evil.example", "/ui"),
    ("/ui\\@evil.example", "/ui"),
    ("/uievil", "/ui"),
    ("/v1/jobs", "/ui"),
    ("javascript:alert(1)", "/ui"),
])
def test_after_signing_in_only_a_viewer_page_is_a_destination(target, goes):
    assert safe_next(target) == goes


@pytest.mark.parametrize("path,open_", [
    ("/ui/login", True), ("/ui/static/base.css", True), ("/docs/static/swagger-ui.css", True), ("/docs", True),
    ("/ui", False), ("/ui/static/viewer.js", False), ("/ui/static/login.html", False),
    ("/docs/static/../../v1/jobs", False), ("/docs/staticx", False), ("/v1/jobs", False),
])
def test_what_is_open_without_the_token(path, open_):
    assert is_open(path) is open_
