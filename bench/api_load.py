"""REST service under load: latency of `GET /v1/jobs/{id}` and `POST /v1/query` with 50 concurrent clients while
a job runs (prints measured figures; not a timed test).

Everything is real and on loopback: the teacher simulator (`stepwise sim`) and the REST service
(`stepwise serve`, token in $STEPWISE_API_TOKEN) run as subprocesses on free ports; a live job over synthetic
arithmetic questions is submitted with `POST /v1/jobs` and runs in its own process against the simulator. Once
it is running with a few shards written (so queries read real part files), `--clients` closed-loop clients
(aiohttp, one event loop: each sends its next request when the last one is answered) load, for `--seconds`
each, in turn:

    healthz   GET /healthz                    the HTTP floor of the server (no corpus access), as reference
    get       GET /v1/jobs/{id}               live counters, read from the job's part files
    query     POST /v1/query                  accepted count and mean tokens per job over `records`
    mix       the two above, alternating per client

Per phase: requests, errors (any non-2xx or failed request, by status), requests/s, p50 / p90 / p99 / max
latency, the CPU each process used (as a share of one core; `cores` says how many the machine has) and the job's
shards done before and after, to show it kept progressing. Whether the client could be the limit: its own CPU
share is printed, and the healthz phase shows the rate the same client reaches against the cheapest endpoint.
Other programs running meanwhile skew the figures; their CPU is printed as `other` (with a warning when high).
At the end the job is cancelled (or, with `--finish`, waited for) and checked: final status, and no record
written twice. Every subprocess and the temp folder are removed on exit, on an error and on Ctrl-C / SIGTERM.

    python bench/api_load.py                     # 50 clients, 15 s a phase
    python bench/api_load.py --seconds 5 --json  # one machine-readable line
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

JOB_ID = "api-load"
QUERY = ("SELECT job_id, count(*) AS records, count_if(accepted) AS accepted, avg(tokens_in) AS mean_tokens_in, "
         "avg(tokens_out) AS mean_tokens_out FROM records GROUP BY job_id ORDER BY job_id")
STOPPED = {"completed", "cancelled", "failed", "interrupted", "budget_exhausted"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def problems(n: int) -> list[dict]:
    """n distinct two-step word problems of our own, with their answers."""
    rows = []
    for i in range(n):
        boxes, per_box, sold = 2 + i % 17, 3 + (11 * i) % 29, 1 + i % 13
        rows.append({"id": f"q{i:05d}", "answer": str(boxes * per_box - sold),
                     "question": f"A shop has {boxes} boxes of {per_box} pencils and sells {sold} pencils. "
                                 f"How many pencils are left? (order {i})"})
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (None when it is gone)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine spent busy so far (from /proc/stat), to see what else ran meanwhile."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def process_alive(pid: int) -> bool:
    """Running and not a zombie (the job is not our child: nobody may reap it once the server is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ── the stack: simulator, REST service, job ───────────────────────────────────────────────────────────────────


@dataclass
class Stack:
    """The subprocesses and the temp folder of one run; `close()` stops and removes all of them."""

    tmp: Path
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    sim_url: str = ""
    api_url: str = ""

    @property
    def corpus(self) -> Path:
        return self.tmp / "corpus"

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        with (self.tmp / f"{name}.log").open("wb") as log:
            # a session of its own: a Ctrl-C reaches only this script, which then stops everything in order
            proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.tmp / f"{name}.log" if name in self.procs else self.corpus / "jobs" / f"{name}.log"
        try:
            return path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start_sim(self, dataset: Path, latency: float) -> None:
        port_file = self.tmp / "sim.port"
        proc = self._spawn("sim", [sys.executable, "-m", "stepwise", "sim", "--port-file", str(port_file),
                                   "--latency", str(latency), "--capacity", "256", "--dataset", str(dataset),
                                   "--wrong-rate", "0.1"])
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the simulator did not start:\n{self.log_tail('sim')}")
            time.sleep(0.05)
        self.sim_url = f"http://127.0.0.1:{int(port_file.read_text())}"

    def start_api(self) -> None:
        port = free_port()
        # jobs read their data from the temp folder and reach the simulator through a teacher profile
        teachers = self.tmp / "teachers.json"
        teachers.write_text(json.dumps({"profiles": {"sim": {
            "backend": "openai", "base_url": f"{self.sim_url}/v1", "api_key_env": None, "models": ["stepwise-sim"],
            "request_id_headers": True}}}), encoding="utf-8")
        env = {**os.environ, "STEPWISE_API_TOKEN": self.token, "STEPWISE_DATA_DIRS": str(self.tmp),
               "STEPWISE_TEACHERS": str(teachers)}
        proc = self._spawn("api", [sys.executable, "-m", "stepwise", "serve", "--corpus", str(self.corpus),
                                   "--port", str(port), "--log-level", "warning"], env)
        self.api_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the REST service did not start:\n{self.log_tail('api')}")
            try:
                if self.call("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)

    def call(self, method: str, path: str, body: object = None, timeout: float = 30) -> tuple[int, dict]:
        """One request outside the measurement (urllib): (status, JSON body)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api_url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def job(self) -> dict:
        status, view = self.call("GET", f"/v1/jobs/{JOB_ID}")
        if status != 200:
            raise RuntimeError(f"GET /v1/jobs/{JOB_ID}: {status} {view}")
        return view

    def job_pid(self) -> int | None:
        """The job's process, when it still runs the job's spec (the same guard as the service's)."""
        try:
            pid = int((self.corpus / "jobs" / f"{JOB_ID}.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if f"{JOB_ID}.spec.json".encode() in cmdline and process_alive(pid) else None

    def wait_job(self, until: set[str], timeout_s: float, min_shards: int = 0) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            view = self.job()
            if view["status"] in until and view["shards_done"] >= min_shards:
                return view
            if view["status"] in STOPPED - until:
                raise RuntimeError(f"the job stopped as {view['status']}: {view['error']}\n{self.log_tail(JOB_ID)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the job did not reach {sorted(until)} within {timeout_s:g} s: {view}")
            time.sleep(0.2)

    def close(self) -> None:
        """Stop the job (cancel, then kill its process group), the service and the simulator; remove the folder."""
        pid = self.job_pid()
        if pid is not None and self.procs.get("api") is not None and self.procs["api"].poll() is None:
            try:
                self.call("POST", f"/v1/jobs/{JOB_ID}/cancel", timeout=5)
            except OSError:
                pass
            deadline = time.monotonic() + 10
            while process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        if pid is not None and process_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        shutil.rmtree(self.tmp, ignore_errors=True)


def job_body(stack: Stack, data: Path, args: argparse.Namespace) -> dict:
    return {
        "job_id": JOB_ID,
        "dataset": {"path": str(data), "id_field": "id", "question_field": "question", "answer_field": "answer"},
        "task": "arithmetic",
        "prompt": "few_shot_cot",
        "teacher": {"backend": "openai", "profile": "sim", "model": "stepwise-sim",
                    "max_concurrency": args.job_concurrency, "timeout_s": 30},
        "sampling": {"n": 1, "temperature": 0.7, "max_tokens": 128},
        "cost": {"input_per_mtok": 0.15, "output_per_mtok": 0.60},
        "executor": {"kind": "local"},
        "shard_size": args.shard_size,
    }


# ── the load ──────────────────────────────────────────────────────────────────────────────────────────────────


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, ms: float, error: str | None) -> None:
        self.latencies_ms.append(ms)
        if error is not None:
            self.errors[error] = self.errors.get(error, 0) + 1


def percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the samples at or below it."""
    return sorted_ms[max(0, math.ceil(q * len(sorted_ms)) - 1)]


def summary(tally: Tally, seconds: float) -> dict:
    ms = sorted(tally.latencies_ms)
    if not ms:
        return {"requests": 0, "errors": sum(tally.errors.values()), "error_kinds": tally.errors}
    return {"requests": len(ms), "errors": sum(tally.errors.values()), "error_kinds": dict(tally.errors),
            "req_per_s": round(len(ms) / seconds, 1), "p50_ms": round(percentile(ms, 0.50), 1),
            "p90_ms": round(percentile(ms, 0.90), 1), "p99_ms": round(percentile(ms, 0.99), 1),
            "max_ms": round(ms[-1], 1)}


async def load(stack: Stack, kinds: list[str], clients: int, seconds: float) -> tuple[dict[str, Tally], float]:
    """`clients` closed-loop clients for `seconds`; client i cycles through `kinds` starting at kinds[i % len]."""
    import aiohttp

    requests = {
        "healthz": ("GET", "/healthz", None),
        "get": ("GET", f"/v1/jobs/{JOB_ID}", None),
        "query": ("POST", "/v1/query", json.dumps({"sql": QUERY, "max_rows": 100}).encode()),
    }
    headers = {"Authorization": f"Bearer {stack.token}", "Content-Type": "application/json"}
    tallies = {k: Tally() for k in kinds}
    connector = aiohttp.TCPConnector(limit=clients, limit_per_host=clients)  # one keep-alive connection a client
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(stack.api_url, connector=connector, timeout=timeout, headers=headers) as session:
        deadline = time.perf_counter() + seconds

        async def client(i: int) -> None:
            n = i
            while time.perf_counter() < deadline:
                kind = kinds[n % len(kinds)]
                n += 1
                method, path, body = requests[kind]
                started = time.perf_counter()
                error = None
                try:
                    async with session.request(method, path, data=body) as resp:
                        await resp.read()
                        if not 200 <= resp.status < 300:
                            error = f"HTTP {resp.status}"
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    error = type(exc).__name__
                tallies[kind].add((time.perf_counter() - started) * 1000, error)

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - started  # until the last in-flight request was answered
    return tallies, elapsed


def run_phase(stack: Stack, name: str, kinds: list[str], clients: int, seconds: float) -> dict:
    pids = {"api": stack.procs["api"].pid, "job": stack.job_pid(), "sim": stack.procs["sim"].pid}
    before = stack.job()
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    client_cpu0, machine0 = time.process_time(), machine_busy_seconds()
    tallies, elapsed = asyncio.run(load(stack, kinds, clients, seconds))
    client_cpu, machine = time.process_time() - client_cpu0, machine_busy_seconds() - machine0
    cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
    after = stack.job()
    total = Tally()
    for t in tallies.values():
        total.latencies_ms += t.latencies_ms
        for k, v in t.errors.items():
            total.errors[k] = total.errors.get(k, 0) + v
    # CPU used during the phase as a share of one core (the job's process may end inside a phase: then unknown)
    cpu = {k: (round((cpu1[k] - cpu0[k]) / elapsed * 100) if cpu0[k] is not None and cpu1[k] is not None else None)
           for k in pids}
    cpu["client"] = round(client_cpu / elapsed * 100)
    # whatever else ran on the machine meanwhile (other programs skew the figures: rerun on a quiet machine)
    cpu["other"] = max(0, round(machine / elapsed * 100 - sum(v for v in cpu.values() if v is not None)))
    out = {"phase": name, "seconds": round(elapsed, 2), **summary(total, elapsed),
           "client_cpu_ms_per_request": round(client_cpu / max(1, len(total.latencies_ms)) * 1000, 3),
           "server_cpu_ms_per_request": (round((cpu1["api"] - cpu0["api"]) / max(1, len(total.latencies_ms)) * 1000,
                                               2) if cpu1["api"] is not None else None),
           "cpu_percent_of_one_core": cpu,
           "job": {"status_before": before["status"], "status_after": after["status"],
                   "shards_done_before": before["shards_done"], "shards_done_after": after["shards_done"],
                   "n_shards": after["n_shards"], "records_after": after["n_records"]}}
    if len(kinds) > 1:
        out["by_endpoint"] = {k: summary(t, elapsed) for k, t in tallies.items()}
    return out


# ── report ────────────────────────────────────────────────────────────────────────────────────────────────────

ENDPOINTS = {"healthz": "GET /healthz", "get": "GET /v1/jobs/{id}", "query": "POST /v1/query",
             "mix": "mix (get + query)"}


def print_report(result: dict) -> None:
    print(f"stepwise REST service under load: {result['clients']} concurrent clients, {result['seconds']:g} s a "
          f"phase, {result['cores']} cores; a live job of {result['examples']:,} examples "
          f"({result['n_shards']} shards of {result['shard_size']}) runs throughout")
    print(f"query: {QUERY}\n")
    head = f"{'endpoint':<22}{'requests':>9}{'errors':>8}{'req/s':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}" \
           f"{'max ms':>9}{'srv CPU ms/req':>16}{'shards':>11}"
    print(head)
    print("-" * len(head))
    for p in result["phases"]:
        rows = [(ENDPOINTS[p["phase"]], p)]
        rows += [(f"  of which {k}", s) for k, s in p.get("by_endpoint", {}).items()]
        for label, s in rows:
            line = f"{label:<22}{s['requests']:>9,}{s['errors']:>8}{s.get('req_per_s', 0):>8,.1f}"
            line += "".join(f"{s.get(k, float('nan')):>9.1f}" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))
            if s is p:
                j = p["job"]
                srv = p["server_cpu_ms_per_request"]
                line += f"{srv if srv is not None else float('nan'):>16.2f}" \
                        f"{j['shards_done_before']:>5} -> {j['shards_done_after']:<3}"
            print(line)
    print()
    for p in result["phases"]:
        errs = ", ".join(f"{k}: {v}" for k, v in p["error_kinds"].items()) or "none"
        cpu = ", ".join(f"{k} {v}%" if v is not None else f"{k} ?" for k, v in p["cpu_percent_of_one_core"].items())
        print(f"{ENDPOINTS[p['phase']]:<22} CPU (% of one core): {cpu}; client {p['client_cpu_ms_per_request']:.2f} "
              f"ms/request; errors: {errs}")
    busy = max(p["cpu_percent_of_one_core"]["other"] for p in result["phases"])
    if busy >= 20:
        print(f"warning: other programs used up to {busy}% of one core during a phase: the figures are skewed")
    base = next((p for p in result["phases"] if p["phase"] == "healthz"), None)
    if base and base.get("p50_ms"):
        ratios = ", ".join(f"{ENDPOINTS[p['phase']]} {p['p50_ms'] / base['p50_ms']:.1f}x"
                           for p in result["phases"] if p is not base and p.get("p50_ms"))
        print(f"\np50 over the /healthz floor ({base['p50_ms']:.1f} ms): {ratios}")
    end = result["end"]
    print(f"job: shards {end['shards_at_start']} -> {end['shards_at_end_of_load']} during the load "
          f"({end['shards_per_s_during_load']:.2f} shards/s); then {end['action']}: status {end['status']}, "
          f"{end['shards_done']}/{end['n_shards']} shards, {end['n_records']:,} records, "
          f"{end['duplicate_records']} written twice, process gone: {end['process_gone']}")


# ── main ──────────────────────────────────────────────────────────────────────────────────────────────────────


def bench(args: argparse.Namespace, stack: Stack) -> dict:
    data = stack.tmp / "problems.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in problems(args.examples)), encoding="utf-8")
    say(f"starting the simulator (latency {args.latency:g} s) and the REST service ...")
    stack.start_sim(data, args.latency)
    stack.start_api()
    status, reply = stack.call("POST", "/v1/jobs", job_body(stack, data, args))
    if status != 202:
        raise RuntimeError(f"POST /v1/jobs: {status} {reply}")
    say(f"job {JOB_ID} submitted; waiting until {args.min_shards} shards are written ...")
    stack.wait_job({"running"}, timeout_s=120, min_shards=args.min_shards)
    # warm-up, not measured: imports (duckdb, pyarrow), first connections, the thread pool
    asyncio.run(load(stack, ["healthz", "get", "query"], args.clients, 2.0))
    start = stack.job()
    t0 = time.monotonic()
    phases = []
    for name, kinds in (("healthz", ["healthz"]), ("get", ["get"]), ("query", ["query"]), ("mix", ["get", "query"])):
        say(f"phase {name}: {args.clients} clients for {args.phase_seconds(name):.3g} s ...")
        phases.append(run_phase(stack, name, kinds, args.clients, args.phase_seconds(name)))
        if phases[-1]["job"]["status_after"] != "running":
            say(f"warning: the job was {phases[-1]['job']['status_after']} at the end of phase {name}; "
                f"raise --examples so it runs through the whole load")
    mid = stack.job()
    load_s = time.monotonic() - t0
    if args.finish:
        action = "waited for completion"
        view = stack.wait_job({"completed"}, timeout_s=args.finish_timeout)
    elif mid["status"] == "running":
        action = "cancelled"
        status, reply = stack.call("POST", f"/v1/jobs/{JOB_ID}/cancel")
        if status != 202:
            raise RuntimeError(f"POST /v1/jobs/{JOB_ID}/cancel: {status} {reply}")
        view = stack.wait_job({"cancelled"}, timeout_s=60)
    else:
        action, view = "already stopped", mid
    deadline = time.monotonic() + 15
    while stack.job_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    status, counted = stack.call("POST", "/v1/query", {
        "sql": f"SELECT count(*) AS n, count(DISTINCT example_id || '/' || sample_idx) AS distinct_n "
               f"FROM records WHERE job_id = '{JOB_ID}'"})
    if status != 200:
        raise RuntimeError(f"POST /v1/query: {status} {counted}")
    row = counted["rows"][0]
    return {
        "benchmark": "REST service under load", "clients": args.clients, "seconds": args.seconds,
        "cores": os.cpu_count(), "examples": args.examples, "shard_size": args.shard_size,
        "n_shards": view["n_shards"], "teacher_latency_s": args.latency, "job_max_concurrency": args.job_concurrency,
        "query": QUERY, "phases": phases,
        "end": {"shards_at_start": start["shards_done"], "shards_at_end_of_load": mid["shards_done"],
                "shards_per_s_during_load": round((mid["shards_done"] - start["shards_done"]) / load_s, 3),
                "action": action, "status": view["status"], "shards_done": view["shards_done"],
                "n_shards": view["n_shards"], "n_records": row["n"], "duplicate_records": row["n"] - row["distinct_n"],
                "process_gone": stack.job_pid() is None},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=50, help="concurrent closed-loop clients")
    ap.add_argument("--seconds", type=float, default=15.0, help="seconds of load per phase (healthz gets a third)")
    ap.add_argument("--examples", type=int, help="examples in the job (default: enough for it to outlast the load)")
    ap.add_argument("--shard-size", type=int, default=20)
    ap.add_argument("--latency", type=float, default=0.5, help="the simulator's seconds per request")
    ap.add_argument("--job-concurrency", type=int, default=8, help="the job's teacher.max_concurrency")
    ap.add_argument("--min-shards", type=int, default=3, help="shards written before the load starts")
    ap.add_argument("--finish", action="store_true", help="wait for the job to complete instead of cancelling it")
    ap.add_argument("--finish-timeout", type=float, default=600.0)
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    args = ap.parse_args()
    for name in ("clients", "seconds", "shard_size", "latency", "job_concurrency"):
        if getattr(args, name) <= 0:
            ap.error(f"--{name.replace('_', '-')} must be positive")
    args.phase_seconds = lambda name: args.seconds / 3 if name == "healthz" else args.seconds
    if args.examples is None:  # the job's unloaded pace, with room: it must not finish during the load
        per_s = args.job_concurrency / args.latency
        load_s = args.seconds * (3 + 1 / 3) + 2 + 10
        args.examples = math.ceil(per_s * load_s * 1.5 / args.shard_size) * args.shard_size

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # cleaned up like a Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background (SIG_IGN)
    stack = Stack(Path(tempfile.mkdtemp(prefix="stepwise-api-load-")))
    try:
        result = bench(args, stack)
    except KeyboardInterrupt:
        say("interrupted: stopping the job, the service and the simulator")
        sys.exit(130)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        say(f"failed: {exc}")
        sys.exit(1)
    finally:
        stack.close()
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)


if __name__ == "__main__":
    main()
