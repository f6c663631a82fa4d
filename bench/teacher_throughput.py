"""Generation engine throughput against the teacher simulator (prints ratios; not a timed test).

Scenario `capacity`: a teacher with 1.0 s latency and 128 concurrent slots (limit 128 requests/s);
5,000 distinct requests. Prints requests/s over the limit for our engine (the default httptools transport, and
the aiohttp one) and, as a reference, for the same engine over the `openai` SDK transport, plus the engine's CPU
time per request.

Scenario `rate`: RPM 1,200 and a TPM limit; prints throughput over the allowed rate and the share of requests
answered 429.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def start_sim(*flags: str) -> tuple[subprocess.Popen, str]:
    port_file = Path(tempfile.mkdtemp()) / "port"
    proc = subprocess.Popen([sys.executable, "-m", "stepwise", "sim", "--port-file", str(port_file), *flags],
                            cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            sys.exit("the simulator did not start")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port_file.read_text()}"


def sim_stats(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"{url}/stats") as resp:
        return json.load(resp)


def make_requests(n: int, max_tokens: int, tag: str = ""):
    from stepwise.pipeline.types import Sampling, TeacherRequest

    sampling = Sampling(temperature=0.0, max_tokens=max_tokens)
    return [TeacherRequest(f"{tag}q{i}", 0, ({"role": "user", "content": f"{tag}Q: What is {i} plus {i % 7}?\nA:"},),
                           sampling, "bench", None, "openai", "stepwise-sim") for i in range(n)]


def drive(url: str, n: int, max_tokens: int, **teacher) -> dict:
    """Send n requests through the real backend (cache on disk, as in a job); returns measurements."""
    from stepwise.storage.cache import RequestCache
    from stepwise.pipeline.spec import OpenAITeacherSpec
    from stepwise.pipeline.teachers.openai_compat import OpenAIBackend

    spec = OpenAITeacherSpec(backend="openai", model="stepwise-sim", base_url=f"{url}/v1", api_key_env=None,
                             **teacher)
    requests = make_requests(n, max_tokens, tag=f"{teacher.get('transport', '')}{teacher.get('max_concurrency', '')}-")
    with tempfile.TemporaryDirectory() as tmp:
        backend = OpenAIBackend(spec, cache=RequestCache(Path(tmp) / "cache.sqlite"))
        try:
            cpu0, t0 = time.process_time(), time.perf_counter()
            done = backend.submit(requests).result()
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        finally:
            backend.close()
    ok = sum(1 for c in done if c.text is not None)
    return {"requests": n, "completed": ok, "seconds": round(elapsed, 2), "requests_per_s": round(n / elapsed, 1),
            "cpu_ms_per_request": round(cpu / n * 1000, 3), "sent": backend.stats.sent,
            "rate_limited": backend.stats.rate_limited, "retries": backend.stats.retries}


def capacity(n: int) -> dict:
    proc, url = start_sim("--latency", "1.0", "--capacity", "128")
    limit = 128 / 1.0
    out = {"scenario": "capacity: latency 1.0 s, 128 slots, limit 128 requests/s", "limit_per_s": limit}
    try:
        for transport, conc in (("httptools", 128), ("httptools", 160), ("aiohttp", 128), ("aiohttp", 160),
                                ("openai_sdk", 160)):
            r = drive(url, n, 64, transport=transport, max_concurrency=conc)
            r["ratio_to_limit"] = round(r["requests_per_s"] / limit, 3)
            out[f"{transport}, max_concurrency {conc}"] = r
        out["sim"] = {k: v for k, v in sim_stats(url).items() if k in ("completed", "completed_more_than_once",
                                                                          "max_in_flight")}
    finally:
        proc.terminate()
    return out


def rate(n: int, tpm_factor: float) -> dict:
    """RPM 1,200 and a TPM limit `tpm_factor` times what 1,200 requests of this size need
    (above 1: RPM binds; below 1: TPM binds)."""
    from stepwise.pipeline.teachers.limits import request_tokens

    rpm, tokens_each = 1200, request_tokens({"messages": [{"content": "rpm-Q: What is 1000 plus 3?\nA:"}],
                                             "max_tokens": 64})
    tpm = int(rpm * tokens_each * tpm_factor)
    proc, url = start_sim("--latency", "1.0", "--capacity", "128", "--rpm", str(rpm), "--tpm", str(tpm))
    allowed = min(rpm, tpm / tokens_each) / 60
    try:
        r = drive(url, n, 64, max_concurrency=128, rpm=rpm, tpm=tpm)
        stats = sim_stats(url)
    finally:
        proc.terminate()
    # steady state: the first request goes at t=0 and the last is answered one latency after it was sent
    r["ratio_to_allowed"] = round(n / (r["seconds"] - 1.0) / allowed, 3)
    r["share_429"] = round(stats["statuses"].get("429", 0) / max(1, stats["received"]), 4)
    bound = "RPM" if tpm_factor >= 1 else "TPM"
    return {"scenario": f"rate: RPM {rpm}, TPM {tpm} (~{tokens_each} tokens a request; {bound} binds)",
            "allowed_per_s": round(allowed, 2), **r, "sim_max_accepted_in_any_60s": stats["max_accepted_in_any_60s"],
            # the busiest minute the server saw, over what the limits allow in a minute
            "busiest_minute_over_allowed": round(stats["max_accepted_in_any_60s"] / (allowed * 60), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--rate-requests", type=int, default=1500)
    ap.add_argument("--only", choices=("capacity", "rate"))
    args = ap.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    results = []
    if args.only in (None, "capacity"):
        results.append(capacity(args.requests))
    if args.only in (None, "rate"):
        results.append(rate(args.rate_requests, 1.1))
        results.append(rate(args.rate_requests, 0.8))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
