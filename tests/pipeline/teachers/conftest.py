"""Fixtures for the teacher tests: the REAL simulator (`stepwise sim`) in a subprocess on a free loopback port.

The simulator is a test tool standing in for a paid teacher at the outer boundary; the engine talks to it over
real HTTP, so these tests exercise the same code paths as a job against OpenAI or `vllm serve`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import stop_process

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Sim:
    """A running simulator: `url` is the server root (the teacher's base_url is `url + "/v1"`)."""

    url: str
    proc: subprocess.Popen
    log: Path

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def stats(self, keys: bool = False) -> dict:
        """The simulator's /stats (with per-key counts when `keys`)."""
        with urllib.request.urlopen(f"{self.url}/stats{'?keys=1' if keys else ''}", timeout=10) as resp:
            return json.loads(resp.read())


SimFactory = Callable[..., Sim]


@pytest.fixture
def start_sim(tmp_path: Path) -> Iterator[SimFactory]:
    """`start_sim("--latency", "0.05", env={"SIM_KEY": "..."})` starts a simulator and returns a `Sim`.

    Each call starts its own process on a port the OS picks (written to a port file once listening);
    every process is terminated at teardown.
    """
    started: list[tuple[subprocess.Popen, object]] = []

    def start(*flags: str, env: dict[str, str] | None = None, timeout_s: float = 20.0) -> Sim:
        n = len(started)
        port_file = tmp_path / f"sim-{n}.port"
        log = tmp_path / f"sim-{n}.log"
        out = log.open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "stepwise", "sim", "--port-file", str(port_file), *flags],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        started.append((proc, out))
        deadline = time.monotonic() + timeout_s
        while not port_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"simulator exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"simulator did not start within {timeout_s} s")
            time.sleep(0.02)
        sim = Sim(f"http://127.0.0.1:{int(port_file.read_text())}", proc, log)
        assert sim.stats()["received"] == 0
        return sim

    yield start
    for proc, out in started:
        stop_process(proc, timeout=5)
        out.close()
