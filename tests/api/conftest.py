"""The REAL REST service (`stepwise serve`, uvicorn) in a subprocess on a free loopback port, and a small urllib
client. Jobs it starts talk to the real simulator (`start_sim`)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import stop_process
from tests.pipeline.teachers.conftest import start_sim  # noqa: F401  (the simulator fixture)

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-7f3a9c"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Server:
    url: str
    corpus: Path
    proc: subprocess.Popen
    log: Path

    def call(self, method: str, path: str, body: object = None, *, token: str | None = TOKEN,
             raw: bytes | None = None) -> Reply:
        """One request; `token=None` sends no Authorization header."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return Reply(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, dict(exc.headers), exc.read())

    def get(self, path: str, **kw) -> Reply:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: object = None, **kw) -> Reply:
        return self.call("POST", path, body, **kw)

    def wait(self, job_id: str, until: set[str], timeout_s: float = 45.0, **more) -> dict:
        """Poll GET /v1/jobs/{id} until its status is in `until` and the fields in `more` reach their minimum."""
        deadline = time.monotonic() + timeout_s
        view = None
        while time.monotonic() < deadline:
            reply = self.get(f"/v1/jobs/{job_id}")
            assert reply.status == 200, reply.body
            view = reply.json()
            if view["status"] in until and all(view[k] >= v for k, v in more.items()):
                return view
            if view["status"] in {"failed", "interrupted", "completed", "cancelled", "budget_exhausted"} - until:
                break
            time.sleep(0.1)
        log = (self.corpus / "jobs" / f"{job_id}.log")
        raise AssertionError(f"job {job_id} never reached {until}: {view}\n"
                             f"{log.read_text() if log.exists() else ''}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(corpus: Path, log: Path, token: str | None = TOKEN, *flags: str, timeout_s: float = 30.0,
                 env: dict[str, str] | None = None) -> Server:
    """`stepwise serve` over `corpus`; `env` adds STEPWISE_* settings (data dirs, teacher profiles)."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STEPWISE_")}, **(env or {})}
    if token:
        env["STEPWISE_API_TOKEN"] = token
    out = log.open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "stepwise", "serve", "--corpus", str(corpus),
                             "--port", str(port), "--log-level", "warning", *flags],
                            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    out.close()
    server = Server(f"http://127.0.0.1:{port}", corpus, proc, log)
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if server.get("/healthz", token=None).status == 200:
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not answer within {timeout_s} s:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


stop = stop_process  # the shared teardown, under the name these tests use


def open_settings(folder: Path, data_dir: Path) -> dict[str, str]:
    """Settings of a server whose jobs may read any file under `data_dir` (pytest's temp folder, where the tests
    write their datasets) and name a teacher URL of their own (the simulators, on ports picked per test; no key
    is ever sent with one)."""
    teachers = folder / "teachers.yaml"
    teachers.write_text("allow_free_urls: true\n", encoding="utf-8")
    return {"STEPWISE_DATA_DIRS": str(data_dir), "STEPWISE_TEACHERS": str(teachers)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per test module over a fresh corpus, token required; see `open_settings`."""
    folder = tmp_path_factory.mktemp("api")
    srv = start_server(folder / "corpus", folder / "server.log",
                       env=open_settings(folder, tmp_path_factory.getbasetemp()))
    yield srv
    stop(srv.proc)
    stop_jobs(folder / "corpus")


def stop_jobs(corpus: Path) -> None:
    """Jobs are detached on purpose (they outlive the API): stop any that a failed test left running."""
    for pid_file in (corpus / "jobs").glob("*.pid"):
        try:
            pid = int(pid_file.read_text())
            if str(pid_file.with_suffix(".spec.json")).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.killpg(pid, 9)
        except (OSError, ValueError):
            pass
