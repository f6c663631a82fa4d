"""The teacher simulator (`stepwise sim`): an OpenAI-compatible server that stands in for a paid teacher in the demo,
the tests and the benchmarks. A test and demo tool, kept apart from production code: it has its own rate-limit
arithmetic (`limits.py`) and production code never imports it. The server is in `server.py`; `running_simulator`
starts one in a subprocess, as the demo and the Python API do."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stepwise.pipeline.errors import StepwiseError
from stepwise.pipeline.sim.server import SimConfig, build_app, parse_faults, serve

__all__ = ["SimConfig", "build_app", "parse_faults", "running_simulator", "serve"]


@contextmanager
def running_simulator(*flags: str, timeout_s: float = 30.0) -> Iterator[str]:
    """Start `stepwise sim` with these flags on a free loopback port; yields its /v1 base URL and stops it on
    the way out."""
    folder = Path(tempfile.mkdtemp(prefix="stepwise-sim-"))
    port_file = folder / "port"
    proc = subprocess.Popen([sys.executable, "-m", "stepwise", "sim", "--port-file", str(port_file), *flags],
                            stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise StepwiseError("the teacher simulator did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text().strip()}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        port_file.unlink(missing_ok=True)
        folder.rmdir()
