"""HttpToolsTransport (the default teacher transport) against raw HTTP servers on loopback.

Each server is a few lines of asyncio in the test's own loop that reads a request (its head up to the blank line,
then Content-Length bytes) and writes bytes we choose, so every framing, failure and timing case is exact. Every
test but the simulator's runs on asyncio's loop and on uvloop's (the engine's loop where uvloop is installed). The
three cancellation races read the pool's state (a connection's `waiter`, the pool's `_waiters`, its `_Connection`s)
only to cancel at the exact loop iteration; what they assert is seen from outside (connections, slots, EOFs).
"""

from __future__ import annotations

import asyncio
import json
import socket
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from stepwise.pipeline.errors import (
    MalformedResponseError,
    RateLimitedError,
    RequestRejectedError,
    TeacherAuthError,
    TeacherConnectionError,
    TeacherServerError,
    TeacherTimeoutError,
)
from stepwise.pipeline.teachers.transport import HttpToolsTransport, _Connection

KEY = "sk-test-SECRET-789"
BODY = {"model": "m", "messages": [{"role": "user", "content": "2 + 2?"}], "max_tokens": 16}
COMPLETION = {"id": "c1", "object": "chat.completion", "model": "served-m",
              "choices": [{"index": 0, "finish_reason": "length",
                           "message": {"role": "assistant", "content": "So the answer is 4.",
                                       "reasoning_content": "two and two"}}],
              "usage": {"prompt_tokens": 11, "completion_tokens": 22,
                        "completion_tokens_details": {"reasoning_tokens": 5}}}
ANSWER = json.dumps(COMPLETION).encode()


# ── a raw HTTP server ───────────────────────────────────────────────────────────────────────────────────────────


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]  # names lowercased
    raw_headers: list[tuple[str, str]]  # names as sent
    body: bytes
    conn: int  # which accepted connection (0, 1, ...) carried it


# answer(request, reader, writer) -> True: keep the connection for another request; False: close it;
# None: the client closed it (counted as an EOF)
Answer = Callable[[Request, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool | None]]


@dataclass
class Server:
    answer: Answer
    requests: list[Request] = field(default_factory=list)
    accepted: int = 0  # connections accepted
    open_now: int = 0
    most_open: int = 0  # connections open at once, at most
    eofs: int = 0  # connections the client closed (EOF seen while waiting for a request or holding one)
    server: asyncio.base_events.Server | None = None

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn, self.accepted = self.accepted, self.accepted + 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                req = await read_request(reader, conn)
                if req is None:
                    self.eofs += 1
                    return
                self.requests.append(req)
                kept = await self.answer(req, reader, writer)
                if kept is None:
                    self.eofs += 1
                if not kept:
                    return
        except ConnectionError:
            self.eofs += 1
        except asyncio.CancelledError:  # the loop closing under a held request: nothing to report
            pass
        finally:
            self.open_now -= 1
            writer.close()


async def serve(answer: Answer) -> Server:
    srv = Server(answer)
    srv.server = await asyncio.start_server(srv._handle, "127.0.0.1", 0)
    return srv


async def read_request(reader: asyncio.StreamReader, conn: int) -> Request | None:
    """One request off the connection; None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    line, *lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, version = line.split(" ")
    assert version == "HTTP/1.1"
    raw = [tuple(part.strip() for part in h.split(":", 1)) for h in lines]
    headers = {name.lower(): value for name, value in raw}
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return Request(method, target, headers, raw, body, conn)


def response(status: int = 200, body: bytes = ANSWER, *headers: str, reason: str = "X") -> bytes:
    """A raw HTTP/1.1 response with a Content-Length."""
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}",
            *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def reply(data: bytes = b"", *, keep: bool = True, delay: float = 0.0) -> Answer:
    """An answer that writes `data` (a 200 chat completion by default) after `delay` seconds."""
    data = data or response()

    async def answer(req, reader, writer) -> bool:
        if delay:
            await asyncio.sleep(delay)
        writer.write(data)
        await writer.drain()
        return keep

    return answer


def holding() -> Answer:
    """Never answers a request whose body asks to be held (it waits for the client to close the connection, an
    EOF); answers every other request with a 200."""

    async def answer(req, reader, writer) -> bool | None:
        if json.loads(req.body).get("hold"):
            assert await reader.read(1) == b""
            return None
        writer.write(response())
        await writer.drain()
        return True

    return answer


async def until(check: Callable[[], bool], what: str, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.005)


def client(srv_or_url, key: str | None = None, timeout_s: float | None = 2.0, max_connections: int = 4,
           path: str = "/v1") -> HttpToolsTransport:
    url = srv_or_url if isinstance(srv_or_url, str) else srv_or_url.url + path
    return HttpToolsTransport(url, key, timeout_s, max_connections)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request) -> Callable[[Awaitable], object]:
    """run(coro): the coroutine to completion on a fresh event loop of either kind."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop

    def go(coro):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(coro, 15))

    return go


def is_ok(resp) -> bool:
    return resp.choices[0].text == "So the answer is 4."


# ── requests and responses ──────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(("path", "target"), [
    ("/v1", "/v1/chat/completions"),
    ("/v1/", "/v1/chat/completions"),
    ("/openai/deployments/x?api-version=1", "/openai/deployments/x/chat/completions?api-version=1"),
])
def test_a_200_is_parsed_and_the_request_is_what_the_server_needs(run, path, target):
    """The request line, Host, Content-Type, key, extra headers and JSON body are sent; the 200 is fully read."""

    async def main():
        srv = await serve(reply())
        t = client(srv, KEY, path=path)
        resp = await t.chat(BODY, {"X-Stepwise-Request": "abc", "OpenAI-Organization": "org-1"})
        no_key = client(srv, None, path=path)
        await no_key.chat(BODY, {})
        await t.close()
        await no_key.close()
        return srv, resp

    srv, resp = run(main())
    assert [(c.text, c.finish_reason, c.reasoning) for c in resp.choices] == [
        ("So the answer is 4.", "length", "two and two")]
    assert (resp.tokens_in, resp.tokens_out, resp.reasoning_tokens, resp.model) == (11, 22, 5, "served-m")
    keyed, keyless = srv.requests
    assert (keyed.method, keyed.target) == ("POST", target)
    assert keyed.headers["host"] == f"127.0.0.1:{srv.port}"
    assert keyed.headers["content-type"] == "application/json"
    assert keyed.headers["authorization"] == f"Bearer {KEY}"
    assert ("X-Stepwise-Request", "abc") in keyed.raw_headers and ("OpenAI-Organization", "org-1") in keyed.raw_headers
    assert json.loads(keyed.body) == BODY and keyed.body == keyless.body
    assert "authorization" not in keyless.headers and keyless.target == target


def test_response_header_names_arrive_lowercased(run):
    """ChatResponse.headers has lowercased names (the rate limiter looks them up that way)."""

    async def main():
        srv = await serve(reply(response(200, ANSWER, "X-RateLimit-Remaining-Requests: 5", "Retry-After-Ms: 250")))
        t = client(srv)
        try:
            return await t.chat(BODY, {})
        finally:
            await t.close()

    headers = run(main()).headers
    assert headers["x-ratelimit-remaining-requests"] == "5" and headers["retry-after-ms"] == "250"
    assert all(name == name.lower() for name in headers)


def test_a_chunked_response_split_over_several_writes_is_read_whole(run):
    """Transfer-Encoding: chunked, in pieces that split the head, a chunk size and a chunk, is read whole; the
    connection is then reused."""
    half = len(ANSWER) // 2
    pieces = [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-",
              b"Encoding: chunked\r\n\r\n",
              b"%x" % half, b"\r\n" + ANSWER[:10], ANSWER[10:half] + b"\r\n",
              b"%x\r\n%s\r\n" % (len(ANSWER) - half, ANSWER[half:]),
              b"0\r\n", b"\r\n"]

    async def answer(req, reader, writer) -> bool:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        return True

    async def main():
        srv = await serve(answer)
        t = client(srv)
        first = await t.chat(BODY, {})
        second = await t.chat(BODY, {})
        await t.close()
        return srv, first, second

    srv, first, second = run(main())
    assert first.choices == second.choices and is_ok(first) and first.tokens_out == 22
    assert srv.accepted == 1


# ── the connection pool ─────────────────────────────────────────────────────────────────────────────────────────


def test_sequential_requests_share_one_keep_alive_connection(run):
    """20 requests one after another go over 1 TCP connection."""

    async def main():
        srv = await serve(reply())
        t = client(srv)
        out = [await t.chat(BODY, {}) for _ in range(20)]
        await t.close()
        return srv, out

    srv, out = run(main())
    assert all(map(is_ok, out)) and len(out) == 20
    assert srv.accepted == 1 and len(srv.requests) == 20


def test_warm_opens_one_connection_that_the_first_request_uses(run):
    """warm() connects before any request (no request is sent), and only once; the first requests reuse it."""

    async def main():
        srv = await serve(reply())
        t = client(srv)
        await t.warm()
        await until(lambda: srv.accepted == 1, "the warm connection accepted")
        await t.warm()  # one is open: nothing more
        before = (srv.accepted, len(srv.requests))
        out = [await t.chat(BODY, {}) for _ in range(3)]
        await t.close()
        return srv, before, out

    srv, before, out = run(main())
    assert before == (1, 0)
    assert all(map(is_ok, out)) and srv.accepted == 1 and [r.conn for r in srv.requests] == [0, 0, 0]


def test_concurrent_requests_open_at_most_max_connections_plus_8(run):
    """50 concurrent requests with max_connections=4 open exactly 4 + 8 connections, reused, and all succeed."""

    async def main():
        srv = await serve(reply(delay=0.02))
        t = client(srv, max_connections=4)
        out = await asyncio.gather(*(t.chat(BODY, {}) for _ in range(50)))
        await t.close()
        await until(lambda: srv.open_now == 0, "the pool's connections closed")
        return srv, out

    srv, out = run(main())
    assert all(map(is_ok, out)) and len(out) == 50
    assert srv.accepted == 12 and srv.most_open == 12
    assert {r.conn for r in srv.requests} == set(range(12))


def test_a_connection_close_response_succeeds_and_the_next_request_reconnects(run):
    """A 200 with `Connection: close` (the server then closes) is read; the next request opens a new connection."""

    async def main():
        srv = await serve(reply(response(200, ANSWER, "Connection: close"), keep=False))
        t = client(srv, max_connections=1)
        out = [await t.chat(BODY, {}) for _ in range(12)]  # more than 1 + 8: each closed connection gave its slot back
        await t.close()
        return srv, out

    srv, out = run(main())
    assert all(map(is_ok, out))
    assert srv.accepted == 12 and [r.conn for r in srv.requests] == list(range(12))


def test_a_body_without_a_length_ends_with_the_connection(run):
    """A 200 with neither Content-Length nor chunks (HTTP/1.0 style) is the bytes up to the server's close; the
    next request opens a new connection."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"

    async def main():
        srv = await serve(reply(head + ANSWER, keep=False))
        t = client(srv, max_connections=1)
        out = [await t.chat(BODY, {}) for _ in range(3)]
        await t.close()
        return srv, out

    srv, out = run(main())
    assert all(map(is_ok, out)) and srv.accepted == 3


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for `localhost` and its key (files), made by the openssl command."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def test_https_verifies_the_server_against_the_trusted_certificates(run, certificate, monkeypatch):
    """An https base_url speaks TLS with the server name checked: a server whose certificate is trusted (here
    through SSL_CERT_FILE, which the default context reads) answers; one that is not is a connection error, and
    the request never reaches it."""
    import ssl

    cert, key = certificate
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)

    async def main():
        srv = Server(reply())
        srv.server = await asyncio.start_server(srv._handle, "127.0.0.1", 0, ssl=server_tls)
        t = client(f"https://localhost:{srv.port}/v1")
        try:
            return srv, await t.chat(BODY, {})
        except TeacherConnectionError as exc:
            return srv, exc
        finally:
            await t.close()

    monkeypatch.setenv("SSL_CERT_FILE", cert)
    srv, resp = run(main())
    assert is_ok(resp) and srv.requests[0].headers["host"] == f"localhost:{srv.port}"
    monkeypatch.setenv("SSL_CERT_FILE", os.devnull)  # nothing trusted
    srv, resp = run(main())
    assert isinstance(resp, TeacherConnectionError) and "SSL" in str(resp) and not srv.requests


# ── failures ────────────────────────────────────────────────────────────────────────────────────────────────────


def test_a_connection_closed_without_an_answer_is_a_connection_error_and_the_pool_recovers(run):
    """The server closing instead of answering is TeacherConnectionError; after more such failures than the pool
    has slots, requests still get connections and succeed."""
    failures = 12  # > max_connections + 8

    async def answer(req, reader, writer) -> bool:
        if req.conn < failures:
            return False  # close without a word
        writer.write(response())
        return True

    async def main():
        srv = await serve(answer)
        t = client(srv, max_connections=1, timeout_s=2.0)
        errors = []
        for _ in range(failures):
            with pytest.raises(TeacherConnectionError) as caught:
                await t.chat(BODY, {})
            errors.append(str(caught.value))
        out = await asyncio.gather(*(t.chat(BODY, {}) for _ in range(30)))
        await t.close()
        return srv, errors, out

    srv, errors, out = run(main())
    assert all("closed the connection" in e for e in errors)
    assert all(map(is_ok, out)) and len(out) == 30
    assert srv.accepted == failures + 9  # the successes shared the pool's 1 + 8 connections


@pytest.mark.parametrize("warm_first", [False, True])
def test_nothing_listening_is_a_connection_error_every_time(run, warm_first):
    """A refused connection is TeacherConnectionError, and gives its slot back (the 10th is not a timeout). Warm-ups
    before it (`warm_first`) raise nothing and keep no slot: the requests then fail as they always do."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main():
        t = client(f"http://127.0.0.1:{port}/v1", max_connections=1, timeout_s=1.0)
        if warm_first:
            for _ in range(10):
                await t.warm()
            assert t._open == 0  # each failed warm-up gave its slot back (a kept one stops the next from trying)
        errors = []
        for _ in range(10):
            with pytest.raises(TeacherConnectionError) as caught:
                await t.chat(BODY, {})
            errors.append(str(caught.value))
        await t.close()
        return errors

    errors = run(main())
    assert len(errors) == 10 and all("ConnectionRefusedError" in e for e in errors)


def test_a_server_that_never_answers_times_out_closes_the_connection_and_the_pool_recovers(run):
    """With timeout_s=0.3 a held request is TeacherTimeoutError within ~1 s, in flight or waiting for a slot;
    its connection is closed (the server sees EOF) and the next request succeeds."""
    async def main():
        srv = await serve(holding())
        t = client(srv, max_connections=1, timeout_s=0.3)
        start = time.monotonic()
        out = await asyncio.gather(*(t.chat({**BODY, "hold": True}, {}) for _ in range(10)), return_exceptions=True)
        elapsed = time.monotonic() - start
        # 9 held at once; the 10th timed out waiting for a slot, or got one just as the first 9 gave theirs up
        await until(lambda: srv.accepted >= 9 and srv.open_now == 0, "the server saw the timed-out connections closed")
        held, accepted, closed = len(srv.requests), srv.accepted, srv.eofs
        after = await asyncio.gather(*(t.chat(BODY, {}) for _ in range(10)))
        await t.close()
        return out, elapsed, held, accepted, closed, after

    out, elapsed, held, accepted, closed, after = run(main())
    assert all(isinstance(e, TeacherTimeoutError) for e in out), out
    assert "0.3 s" in str(out[0])
    assert elapsed < 1.0
    assert 9 <= held <= 10 and accepted == closed >= 9  # every connection of a timed-out request was closed
    assert all(map(is_ok, after))


def test_garbage_instead_of_http_is_a_connection_error(run):
    """Bytes that are not an HTTP response are TeacherConnectionError naming that; the next request works."""

    async def answer(req, reader, writer) -> bool:
        writer.write(b"hello\r\n\r\n" if req.conn == 0 else response())
        return req.conn != 0

    async def main():
        srv = await serve(answer)
        t = client(srv)
        with pytest.raises(TeacherConnectionError) as caught:
            await t.chat(BODY, {})
        ok = await t.chat(BODY, {})
        await t.close()
        return caught.value, ok

    error, ok = run(main())
    assert "not an HTTP response" in str(error)
    assert is_ok(ok)


@pytest.mark.parametrize(("status", "headers", "body", "error"), [
    (429, ("retry-after: 7",), b'{"error": {"message": "slow down"}}', RateLimitedError),
    (401, (), f'{{"error": {{"message": "Incorrect API key provided: {KEY}"}}}}'.encode(), TeacherAuthError),
    (403, (), b"{}", TeacherAuthError),
    (408, (), b"{}", TeacherTimeoutError),
    (409, (), b"{}", TeacherServerError),
    (503, (), f'{{"error": {{"message": "overloaded, key {KEY}"}}}}'.encode(), TeacherServerError),
    (404, (), b'{"error": {"message": "no such model"}}', RequestRejectedError),
    (200, (), b"<html>not json</html>", MalformedResponseError),
    (200, (), b'{"object": "list", "data": []}', MalformedResponseError),
])
def test_statuses_and_bad_bodies_map_onto_the_exception_tree(run, status, headers, body, error):
    """Each status raises its own exception; a 429's retry-after is carried; the key never appears in a message;
    the connection stays usable after an error response."""

    async def main():
        seen: list[Request] = []

        async def answer(req, reader, writer) -> bool:
            seen.append(req)
            writer.write(response(status, body, *headers) if len(seen) == 1 else response())
            return True

        srv = await serve(answer)
        t = client(srv, KEY)
        with pytest.raises(error) as caught:
            await t.chat(BODY, {})
        ok = await t.chat(BODY, {})
        await t.close()
        return srv, caught.value, ok

    srv, exc, ok = run(main())
    assert type(exc) is error
    assert KEY not in str(exc)
    if status == 429:
        assert exc.retry_after == 7.0 and "slow down" in str(exc)
    if status == 503:
        assert "overloaded" in str(exc)
    assert is_ok(ok) and srv.accepted == 1


# ── cancellation ────────────────────────────────────────────────────────────────────────────────────────────────


def test_a_cancelled_request_closes_its_connection_and_leaks_no_slot(run):
    """Cancelling requests (in flight or waiting for a slot) closes their connections (the server sees EOF);
    after more cancellations than the pool has slots a new request still gets a connection."""
    async def main():
        srv = await serve(holding())
        t = client(srv, max_connections=1, timeout_s=2.0)
        tasks = [asyncio.create_task(t.chat({**BODY, "hold": True}, {})) for _ in range(12)]
        await until(lambda: len(srv.requests) == 9, "the held requests reached the server")
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await until(lambda: srv.eofs == 9, "the server saw the cancelled connections closed")
        after = await asyncio.gather(*(t.chat(BODY, {}) for _ in range(10)))
        await t.close()
        return results, after

    results, after = run(main())
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert all(map(is_ok, after))


def test_a_request_cancelled_as_its_answer_arrives_leaks_no_connection(run):
    """A request cancelled after its response was read but before its task resumed still closes (or returns) its
    connection: after more such cancellations than the pool has slots a new request gets a connection."""
    state: dict = {}

    async def answer(req, reader, writer) -> bool:
        writer.write(response())
        if json.loads(req.body).get("race"):
            conn = state["conn"]
            while conn.waiter is not None:  # until the client has parsed the answer (its task not yet resumed)
                await asyncio.sleep(0)
            state["task"].cancel()
        return True

    async def main():
        srv = await serve(answer)
        t = client(srv, max_connections=1, timeout_s=1.0)
        for _ in range(9):  # max_connections + 8
            assert is_ok(await t.chat(BODY, {}))  # a connection in the pool, for the racing request to take
            state["conn"] = t._idle[-1]
            state["task"] = task = asyncio.create_task(t.chat({**BODY, "race": True}, {}))
            with pytest.raises(asyncio.CancelledError):
                await task
        await until(lambda: srv.eofs == 9, "the server saw the cancelled requests' connections closed")
        last = await t.chat(BODY, {})
        await t.close()
        return last

    assert is_ok(run(main()))


def test_a_request_cancelled_as_a_slot_is_handed_to_it_passes_the_slot_on(run):
    """A request waiting for a slot, cancelled just as a closing connection hands it that slot (before its task
    resumed), passes the slot on: the pool still opens max_connections + 8 connections at once afterwards."""
    async def main():
        srv = await serve(holding())
        t = client(srv, max_connections=1, timeout_s=5.0)
        held = [asyncio.create_task(t.chat({**BODY, "hold": True}, {})) for _ in range(9)]
        await until(lambda: len(srv.requests) == 9, "the pool's 9 connections hold a request each")
        victim = asyncio.create_task(t.chat({**BODY, "hold": True}, {}))
        await until(lambda: bool(t._waiters), "the 10th request waits for a slot")
        waiter = t._waiters[0]
        held[0].cancel()  # its connection closes and hands its slot to the waiting request
        while not waiter.done():
            await asyncio.sleep(0)
        victim.cancel()  # before the victim's task resumed with the slot
        for task in held[1:]:
            task.cancel()
        results = await asyncio.gather(victim, *held, return_exceptions=True)
        await until(lambda: srv.eofs == 9, "the server saw the cancelled requests' connections closed")
        again = [asyncio.create_task(t.chat({**BODY, "hold": True}, {})) for _ in range(9)]
        await until(lambda: len(srv.requests) == 18, "9 connections open at once again")
        for task in again:
            task.cancel()
        await asyncio.gather(*again, return_exceptions=True)
        await t.close()
        return results

    assert all(isinstance(r, asyncio.CancelledError) for r in run(main()))


def test_a_request_cancelled_just_as_it_connected_gives_its_slot_back_once(run, monkeypatch):
    """A request cancelled once its connection was made but before its task resumed gives its slot back once (not
    also from the connection's own close): the pool still opens at most max_connections + 8 connections at once."""
    made: list[_Connection] = []
    connection_made = _Connection.connection_made

    def spy(self, transport):
        made.append(self)
        connection_made(self, transport)

    monkeypatch.setattr(_Connection, "connection_made", spy)

    def connected(t: HttpToolsTransport) -> bool:
        return any(c.pool is t and not c.closed for c in made)

    async def main():
        srv = await serve(reply(delay=0.05))
        t = client(srv, max_connections=1)
        for _ in range(3):
            task = asyncio.create_task(t.chat(BODY, {}))
            while not connected(t):
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await until(lambda: srv.open_now == 0, "the cancelled requests' connections closed")
        out = await asyncio.gather(*(t.chat(BODY, {}) for _ in range(20)))
        await t.close()
        return srv, out

    srv, out = run(main())
    assert all(map(is_ok, out))
    assert srv.most_open == 9


# ── the default transport of a job ──────────────────────────────────────────────────────────────────────────────


def test_the_default_transport_is_httptools_and_completes_like_aiohttp_against_the_simulator(start_sim):
    """A teacher spec without `transport` uses httptools, and its completions equal aiohttp's."""
    from stepwise.pipeline.spec import OpenAITeacherSpec
    from stepwise.pipeline.teachers.openai_compat import OpenAIBackend
    from stepwise.pipeline.types import Sampling, TeacherRequest

    sim = start_sim("--latency", "0.01")
    reqs = [TeacherRequest(f"ex{i}", k, ({"role": "user", "content": f"What is {i} + {i}?"},),
                           Sampling(max_tokens=64), "few_shot_cot", "hash", "openai", "stepwise-sim")
            for i in range(4) for k in range(2)]
    texts = {}
    for transport in (None, "aiohttp"):
        spec = OpenAITeacherSpec(backend="openai", model="stepwise-sim", base_url=sim.base_url, api_key_env=None,
                                 **({"transport": transport} if transport else {}))
        backend = OpenAIBackend(spec)
        try:
            out = backend.complete(reqs)
            assert spec.transport == (transport or "httptools")
            assert (type(backend._transport) is HttpToolsTransport) == (transport is None)
        finally:
            backend.close()
        assert all(c.error is None and c.text for c in out)
        texts[spec.transport] = [(c.example_id, c.sample_idx, c.text, c.finish_reason, c.tokens_in) for c in out]
    assert texts["httptools"] == texts["aiohttp"]
    assert set(sim.stats()["statuses"]) == {"200"}
