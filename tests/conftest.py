"""Shared fixtures. Real data comes from ../shared/data at run time; tests that need it skip without it.
`s3` is a bucket on a real S3-compatible server (moto) on loopback, for corpora on an object store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("STEPWISE_SHARED_DATA", ROOT.parent / "shared" / "data"))
DSBS = SHARED_DATA / "distilling-step-by-step"
REASONING_TEACHER = SHARED_DATA / "reasoning-teacher"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (it ships beside the repo in CI; set STEPWISE_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def dsbs_dir() -> Path:
    """The Distilling step-by-step release folder (cqa, svamp, esnli)."""
    return _need(DSBS)


@pytest.fixture(scope="session")
def reasoning_teacher_dir() -> Path:
    """The Fine-tune-CoT datasets folder."""
    return _need(REASONING_TEACHER)


def load_dsbs_pairs(dsbs: Path, name: str, split: str, limit: int | None = None) -> list[tuple[dict, str]]:
    """(gold row, raw completion) pairs of one release split, in order."""
    from stepwise.pipeline.importers import load_completions

    rows = [json.loads(line) for line in (dsbs / name / f"{name}_{split}.json").open()]
    texts = load_completions(dsbs / name, split)
    pairs = list(zip(rows, texts, strict=False))
    return pairs[:limit] if limit else pairs


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def stepwise(*args: str, cwd: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    # rich wraps stderr at 80 columns when it is not a terminal, inside long paths too: give it room
    proc = subprocess.run([sys.executable, "-m", "stepwise", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=300, env={**os.environ, "COLUMNS": "400"})
    if check and proc.returncode != 0:
        raise AssertionError(f"stepwise {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@dataclass
class S3:
    """A bucket on a real S3-compatible server (moto) on loopback, and the credentials it expects in os.environ."""

    endpoint: str
    bucket: str

    def uri(self, prefix: str = "corpus") -> str:
        """A corpus URI as a user would write it."""
        return f"s3://{self.bucket}/{prefix}?endpoint_override={self.endpoint}&scheme=http"

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under `prefix` in the bucket."""
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(endpoint_override=self.endpoint, scheme="http")
        infos = fs.get_file_info(pafs.FileSelector(f"{self.bucket}/{prefix}".rstrip("/"), recursive=True,
                                                   allow_not_found=True))
        return sorted(i.path.split("/", 1)[1] for i in infos if i.type == pafs.FileType.File)


_S3_ENV = {"AWS_ACCESS_KEY_ID": "stepwise-test", "AWS_SECRET_ACCESS_KEY": "stepwise-test-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server in a thread of this process on a free loopback port; yields `host:port`."""
    pytest.importorskip("moto", reason="the object-store tests need moto: pip install -e '.[test]'")
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    """A fresh bucket; the AWS variables are set for this process and the subprocesses it starts."""
    import pyarrow.fs as pafs

    for key, value in _S3_ENV.items():
        monkeypatch.setenv(key, value)
    bucket = f"stepwise-{uuid.uuid4().hex[:12]}"
    pafs.S3FileSystem(endpoint_override=s3_server, scheme="http", allow_bucket_creation=True).create_dir(bucket)
    return S3(s3_server, bucket)


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate a helper process (a server, a simulator), killing it if it does not go."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def sigkill_when(proc: subprocess.Popen, ready, *, what: str, timeout: float = 30) -> None:
    """Poll `ready()` until true, then SIGKILL `proc`; fail if it ends first or `what` does not happen in time."""
    import os
    import signal
    import time

    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, f"the job ended before it was killed (exit {proc.returncode})"
            assert time.monotonic() < deadline, what
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()


@dataclass
class Listener:
    """A stand-in provider on loopback (`listener` fixture): it answers every POST with a chat completion and
    keeps each request's headers and JSON body, so a test can see what reached it (a key, bookkeeping headers,
    the fields of the body)."""

    base_url: str
    seen: list[dict[str, str]]
    bodies: list[dict] = field(default_factory=list)

    def carried(self, value: str) -> int:
        """How many requests carried `value` in any header."""
        return sum(1 for headers in self.seen if any(value in v for v in headers.values()))


def start_listener() -> tuple[Listener, object]:
    """A Listener on a free loopback port, and the function that stops it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[dict[str, str]] = []
    bodies: list[dict] = []
    answer = json.dumps({"id": "x", "object": "chat.completion", "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Two and two make 4. So the answer is 4."},
         "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 9}}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                bodies.append(json.loads(raw))
            except ValueError:
                bodies.append({})
            seen.append(dict(self.headers))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return Listener(f"http://127.0.0.1:{server.server_address[1]}/v1", seen, bodies), stop


@pytest.fixture
def listener() -> Iterator[Listener]:
    found, stop = start_listener()
    yield found
    stop()
