"""Scale: `stepwise run` end to end against a zero-latency OpenAI-compatible mock, beside a plain aiohttp client on the
same server (prints ratios; not a timed test).

For each size N (examples, one request each): a generated arithmetic dataset, the mock in its own process (a bare
aiohttp server answering every chat completion at once, capacity unbounded), then
  - the reference: a plain aiohttp client sending N requests, 512 in flight, in its own process;
  - stepwise: `stepwise run` in its own process (generate + parse + write Parquet, request cache on), 512 in flight.
Printed per size: requests/s of both and their ratio (the bar: stepwise >= 85 % of plain aiohttp), twice:
`ratio_to_plain_aiohttp` end to end (stepwise's start-up and exit included, the client's not) and `span_ratio`, the
request rate alone (first request to last answer as the mock saw them, for both); stepwise's peak RSS (the bar:
<= 400 MiB, and at 1M <= 1.1 x the 100k peak), the time from launching `stepwise run` to the first
request reaching the mock (<= 0.3 s) and from the last answer to the process exit (<= 0.15 s). Those two are also
printed over several launches of a small job (`--starts`, median and each), one launch being a single sample.

    python bench/scale.py                      # 100k and 1M
    python bench/scale.py --sizes 100000       # one size
    python bench/scale.py --sizes 10000000 --no-reference   # the 10M run: runs to the end under the ceiling?
    python bench/scale.py --latency 0.5 --capacity 128 --sizes 2000   # the span beside plain aiohttp at 0.5 s

The package is byte-compiled first, as an installed one is (`--source-only` removes its bytecode instead: these
machines set PYTHONDONTWRITEBYTECODE, so an editable checkout compiles every module from source at each start).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MOCK = r'''
import asyncio, json, sys, time
from aiohttp import web

latency, capacity, out = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
seen = {"first": None, "last": None, "n": 0}
slots = asyncio.Semaphore(capacity) if capacity else None
BODY = json.dumps({"id": "x", "object": "chat.completion", "model": "mock", "choices": [{"index": 0,
       "message": {"role": "assistant", "content": "Adding them up gives 4. So the answer is 4."},
       "finish_reason": "stop"}], "usage": {"prompt_tokens": 20, "completion_tokens": 12}}).encode()

async def chat(request):
    await request.read()
    now = time.time()
    if seen["first"] is None:
        seen["first"] = now
    if slots is not None:
        async with slots:
            if latency:
                await asyncio.sleep(latency)
    elif latency:
        await asyncio.sleep(latency)
    seen["n"] += 1
    seen["last"] = time.time()
    return web.Response(body=BODY, content_type="application/json")

async def stats(request):
    return web.json_response(seen)

async def reset(request):
    seen.update(first=None, last=None, n=0)
    return web.json_response(seen)

async def main():
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    open(out, "w").write(str(port))
    await asyncio.Event().wait()

try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
'''

CLIENT = r'''
import asyncio, json, sys, time
import aiohttp

url, n, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

async def main():
    queue = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency + 8)) as session:
        async def worker():
            for i in queue:
                body = {"model": "mock", "messages": [{"role": "user", "content": f"Q: What is {i} plus 2?\nA:"}],
                        "max_tokens": 64}
                async with session.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}) as r:
                    json.loads(await r.text())
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        print(json.dumps({"requests_per_s": n / (time.perf_counter() - start), "seconds": time.perf_counter() - start}))

asyncio.run(main())
'''


def start_mock(folder: Path, latency: float, capacity: int) -> tuple[subprocess.Popen, str]:
    port_file = folder / "mock.port"
    port_file.unlink(missing_ok=True)  # a port from an earlier mock is not this one's
    proc = subprocess.Popen([sys.executable, "-c", MOCK, str(latency), str(capacity), str(port_file)])
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            sys.exit("the mock did not start")
        time.sleep(0.02)
    time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port_file.read_text()}"


def mock_stats(url: str, reset: bool = False) -> dict:
    """What the mock saw: its first request, its last answer and how many (since the last reset)."""
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(f"{url}/{'reset' if reset else 'stats'}",
                                                       method="POST" if reset else "GET")) as resp:
        return json.load(resp)


def dataset(folder: Path, n: int) -> Path:
    path = folder / f"data-{n}.jsonl"
    if not path.exists():
        with path.open("w") as fh:
            for i in range(n):
                fh.write(f'{{"id": "q{i}", "question": "What is {i} plus 2?", "answer": "{i + 2}"}}\n')
    return path


def job_file(folder: Path, data: Path, url: str, concurrency: int, tag: str) -> Path:
    prompt = folder / "prompt.yaml"  # one user turn, the size of the reference client's bodies
    prompt.write_text('id: scale\nuser: "Q: {input}\\nA:"\n')
    path = folder / f"job-{tag}.yaml"
    path.write_text(
        f"job_id: scale-{tag}\n"
        f"dataset: {{path: {data}, id_field: id, question_field: question, answer_field: answer}}\n"
        f"task: arithmetic\nprompt: {{id: scale, path: {prompt}}}\n"
        f"teacher: {{backend: openai, model: mock, base_url: {url}/v1, api_key_env: null, "
        f"max_concurrency: {concurrency}, timeout_s: 60}}\n"
        f"sampling: {{n: 1, max_tokens: 64}}\nfilters: {{require_correct: false}}\n")
    return path


def run_stepwise(job: Path, corpus: Path, url: str, quiet: bool = True) -> dict:
    shutil.rmtree(corpus, ignore_errors=True)  # a fresh corpus: nothing resumed, every request sent
    before = mock_stats(url, reset=True)
    log = (corpus.parent / f"{corpus.name}.log").open("w")
    launched = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "stepwise", "run", str(job), "--corpus", str(corpus),
                             *(["--quiet"] if quiet else [])],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource usage, its peak RSS among it
    exited = time.time()
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if proc.returncode != 0:
        sys.exit(f"stepwise run failed:\n{Path(log.name).read_text()[-3000:]}")
    after = mock_stats(url)
    n = after["n"] - before["n"]
    if not n:
        sys.exit(f"stepwise run sent no request:\n{Path(log.name).read_text()[-3000:]}")
    return {"requests": n, "seconds": round(exited - launched, 2), "requests_per_s": round(n / (exited - launched)),
            "span_s": round(after["last"] - after["first"], 3),
            "to_first_request_s": round(after["first"] - launched, 3),
            "last_answer_to_exit_s": round(exited - after["last"], 3), "peak_rss_mib": round(usage.ru_maxrss / 1024),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1)}


PACKAGE = ("stepwise", "pipeline", "storage", "api", "prompts")  # the folders of the package's modules


def compile_bytecode() -> bool:
    """Byte-compile the package, as `pip install` does for an installed one: with PYTHONDONTWRITEBYTECODE set (as
    on these machines) an editable checkout never writes its .pyc files and compiles every module from source at
    each start, about 0.1 s of the time to the first request. Returns whether every module compiled."""
    import compileall

    return all(compileall.compile_dir(ROOT / folder, quiet=1) for folder in PACKAGE)


def remove_bytecode() -> None:
    """The package's compiled bytecode removed (`--source-only`: start-up as an editable checkout without it)."""
    for folder in PACKAGE:
        for cache in (ROOT / folder).rglob("__pycache__"):
            shutil.rmtree(cache, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--concurrency", type=int, default=512)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--capacity", type=int, default=0, help="requests the mock serves at once (0: no bound)")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--keep", help="a folder to keep datasets in between runs")
    ap.add_argument("--starts", type=int, default=7,
                    help="launches of a 2,000-example job whose start-up and exit times are printed (median and "
                         "each): one launch per size is a single sample on a shared, noisy machine")
    ap.add_argument("--source-only", action="store_true",
                    help="remove the package's bytecode first (start-up as an editable checkout without .pyc)")
    args = ap.parse_args()
    if args.source_only:
        remove_bytecode()
    elif not compile_bytecode():
        sys.exit("the package did not byte-compile")
    folder = Path(args.keep or tempfile.mkdtemp(prefix="stepwise-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        mock, url = start_mock(folder, args.latency, args.capacity)  # a fresh mock per size: first-request time
        try:
            row: dict = {"examples": n}
            data = dataset(folder, n)
            ours = run_stepwise(job_file(folder, data, url, args.concurrency, str(n)), folder / f"corpus-{n}", url)
            row["stepwise"] = ours
            if not args.no_reference:
                mock_stats(url, reset=True)
                ref = json.loads(subprocess.run([sys.executable, "-c", CLIENT, f"{url}/v1/chat/completions", str(n),
                                                 str(args.concurrency)], capture_output=True, text=True,
                                                check=True).stdout)
                seen = mock_stats(url)
                ref["span_s"] = round(seen["last"] - seen["first"], 3)
                row["plain_aiohttp"] = ref
                # end to end: stepwise's start-up and exit included, the client's not (it times itself)
                row["ratio_to_plain_aiohttp"] = round(ours["requests_per_s"] / ref["requests_per_s"], 3)
                # the request rate alone: first request to last answer, both as the mock saw them
                row["span_ratio"] = round(ref["span_s"] / ours["span_s"], 3)
            results.append(row)
            print(json.dumps(row), flush=True)
        finally:
            mock.terminate()
            mock.wait(timeout=10)
    starts = start_up(folder, args) if args.starts else None
    print(json.dumps({"benchmark": "scale", "concurrency": args.concurrency, "latency_s": args.latency,
                      "bytecode": "source only" if args.source_only else "compiled", "results": results,
                      "start_up": starts}, indent=2))


def start_up(folder: Path, args) -> dict:
    """Launch to first request, and last answer to exit, over `args.starts` launches of a 2,000-example job, with
    --quiet (as the size runs) and with the progress display (stderr is a file here, so rich draws no live bar,
    but it is set up as for a terminal)."""
    mock, url = start_mock(folder, args.latency, args.capacity)
    out = {}
    try:
        job = job_file(folder, dataset(folder, 2000), url, args.concurrency, "starts")
        for mode, quiet in (("quiet", True), ("progress", False)):
            runs = [run_stepwise(job, folder / "corpus-starts", url, quiet) for _ in range(args.starts)]
            first = sorted(r["to_first_request_s"] for r in runs)
            last = sorted(r["last_answer_to_exit_s"] for r in runs)
            out[mode] = {"launches": len(runs), "to_first_request_s_median": first[len(first) // 2],
                         "to_first_request_s": first, "last_answer_to_exit_s_median": last[len(last) // 2],
                         "last_answer_to_exit_s": last}
            print(json.dumps({"start_up": mode, **out[mode]}), flush=True)
    finally:
        mock.terminate()
        mock.wait(timeout=10)
    return out


if __name__ == "__main__":
    os.environ.setdefault("COLUMNS", "200")
    main()
