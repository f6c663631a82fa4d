"""Records pages of the viewer over a corpus of 1,000,000 records: latency of `GET /v1/jobs/{id}/records` over
real HTTP (prints measured figures; not a timed test).

The corpus is one job of `--records` records (4 samples per example, example ids that are hex hashes, so their
order says nothing about which part file holds them) in `--parts` part files, written with the project's own
writer (`storage.parquet.write_table_atomic`, the explicit schema, dictionary columns as the runner writes
them), and the job's registry row. Text lengths are modelled on real teachers: questions of 150-600 characters,
rationales of 150-1,500, completions a little longer, and a thinking trace on one record in five, of 1,500 to
30,000 characters. Texts are drawn from pools of generated sentences with a unique tail per record, which keeps
generation well under a minute.

The real `stepwise serve` (token in $STEPWISE_API_TOKEN) runs on a free loopback port; each page is asked
`--repeat` times, one request at a time, after one warm-up request:

    first           the first page (50 rows, brief), in the default order (stored order)
    deep            offset 500,000 (50 rows, brief)
    filtered        reason=incorrect & correct=false
    sorted          sort=agreement & order=desc
    by_id           sort=example_id (ids are hashes: the page's rows lie in ~13 part files)
    filtered_by_id  the filtered page in example id order (its rows lie in ~40 part files)
    search          q=<a word in one trace of 40> (it reads every text of the job)
    full            the first page without `brief` (every text whole)
    example         GET /v1/jobs/{id}/examples/{example_id} of the first record

Per page: p50 / p90 / p99 latency, p50 over the issue's bar (300 ms), the server process's CPU per request (all
its threads: the steadier figure when other programs share the machine), the page's `total`, rows and size.

What limits a page (see `storage/pages.py`): finding the page's keys and counting the matches read narrow columns
of the whole job (40-130 ms with DuckDB's Parquet reader); reading the page's rows costs ~13 ms per part file that
holds some of them, because a part file's text columns are decompressed whole (one row group per shard). In the
stored order a page's rows lie in one or two part files; sorted by a column or an id they are spread over many.

    python bench/viewer_records.py                          # build in a temp folder, measure, remove it
    python bench/viewer_records.py --keep /tmp/viewer-1m    # build once, reuse the corpus on later runs
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

JOB_ID = "viewer-1m"
SAMPLES = 4
BAR_MS = 300.0
LABELS = ["A", "B", "C", "D", "E"]
# the reject reasons of rejected records, and how often each comes up
REASONS = [("incorrect", 40), ("minority", 25), ("no_answer", 10), ("too_long", 8), ("truncated", 7),
           ("duplicate", 5), ("label_out_of_space", 5)]
WORDS = ("the a of to and in is that it for on was with as be by this are at from or have an they which one you "
         "were all we when there can has more if will each about how up out them then she many some so these would "
         "other into her two time could no make than first been its who now people my made over did down only way "
         "find use may water long little very after words called just where most know get through back much go good "
         "new write our used me man too any day same right look think also around another came come work three must "
         "because does part even place well such here take why help put different away again off went old number "
         "great tell men say small every found still between name should home big give air line set own under read "
         "last never us left end along while might next sound below saw something thought both few those always show "
         "large often together asked house world going want school important until form food keep children feet land "
         "side without boy once animal life enough took four head above kind began almost live page got earth need "
         "far hand high year mother light country father let night picture being study second soon story since white "
         "ever paper hard near sentence better best across during today however sure knew try told young sun thing "
         "whole hear example heard several change answer room sea against top turned learn point city play toward "
         "five himself usually money seen didn't car morning i'm body upon family later turn move face door cut done "
         "group true leave color red friends easy war eat").split()
SEARCH_WORD = "zephyrine"  # in a share of the traces only (see `_pools`)


# ── the corpus ───────────────────────────────────────────────────────────────────────────────────────────────────
def _text(rng: random.Random, chars: int) -> str:
    """Sentences of common words, about `chars` long."""
    out, n = [], 0
    while n < chars:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18))).capitalize() + "."
        out.append(sentence)
        n += len(sentence) + 1
    return " ".join(out)[:chars]


@functools.cache
def _pools(seed: int = 7) -> dict[str, list[str]]:
    """Pools of generated texts the records draw from (built once per process); the search word sits in one
    trace in 40."""
    rng = random.Random(seed)
    traces = []
    for i in range(600):
        chars = min(30_000, int(rng.lognormvariate(8.3, 0.7)) + 1500)
        trace = _text(rng, chars)
        if i % 40 == 0:
            at = rng.randrange(len(trace))
            trace = f"{trace[:at]} {SEARCH_WORD} {trace[at:]}"
        traces.append(trace)
    return {"input": [_text(rng, rng.randint(150, 600)) for _ in range(2000)],
            "rationale": [_text(rng, rng.randint(150, 1500)) for _ in range(3000)],
            "reasoning": traces}


def _part(pools: dict[str, list[str]], rng: random.Random, first_example: int, n_examples: int, created: datetime):
    """One part file's table: `n_examples` examples of SAMPLES records each."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from stepwise.storage.schema import RECORDS_SCHEMA

    n = n_examples * SAMPLES
    ids = [hashlib.blake2b(f"{e}".encode(), digest_size=8).hexdigest()
           for e in range(first_example, first_example + n_examples)]
    example_id = [i for i in ids for _ in range(SAMPLES)]
    gold = [rng.choice(LABELS) for _ in ids]
    gold_label = [g for g in gold for _ in range(SAMPLES)]
    label = [g if rng.random() < 0.8 else rng.choice(LABELS) for g in gold_label]
    correct = [a == b for a, b in zip(label, gold_label, strict=True)]
    agreement = []
    for e in range(n_examples):
        same = sum(label[e * SAMPLES + k] == label[e * SAMPLES] for k in range(SAMPLES))
        agreement += [same / SAMPLES] * SAMPLES
    reasons = [r for r, _ in REASONS]
    weights = [w for _, w in REASONS]
    reject = [None if ok and rng.random() < 0.85 else ("incorrect" if not ok else rng.choices(reasons, weights)[0])
              for ok in correct]
    tails = pa.array([f" ({eid}/{k})" for eid in ids for k in range(SAMPLES)])

    def drawn(pool: str, share: float = 1.0) -> pa.Array:
        picks = pa.array([rng.randrange(len(pools[pool])) if rng.random() < share else None for _ in range(n)],
                         pa.int32())
        return pc.binary_join_element_wise(pa.array(pools[pool]).take(picks), tails, "")

    rationale = drawn("rationale")
    answers = pa.array([f" So the answer is ({lab})." for lab in label])
    values = {
        "job_id": [JOB_ID] * n, "example_id": example_id, "sample_idx": list(range(SAMPLES)) * n_examples,
        "task": ["multiple_choice"] * n, "input": drawn("input").take(pa.array(
            [e * SAMPLES for e in range(n_examples) for _ in range(SAMPLES)])),
        "gold_label": gold_label, "label": label, "rationale": rationale, "correct": correct,
        "accepted": [r is None for r in reject], "reject_reason": reject,
        "reject_detail": [None if r is None else f"{r}: synthetic" for r in reject],
        "consensus_label": [label[(i // SAMPLES) * SAMPLES] for i in range(n)], "agreement": agreement,
        "prompt_id": ["few_shot_cot"] * n, "prompt_hash": ["0123456789abcdef"] * n,
        "teacher_backend": ["openai"] * n, "teacher_model": ["teacher-large"] * n,
        "request_key": [secrets.token_hex(16) for _ in range(n)], "finish_reason": ["stop"] * n,
        "tokens_in": [rng.randint(300, 1200) for _ in range(n)],
        "tokens_out": [rng.randint(60, 8000) for _ in range(n)],
        "cost_usd": [rng.random() / 500 for _ in range(n)], "latency_s": [rng.random() * 20 for _ in range(n)],
        "completion": pc.binary_join_element_wise(rationale, answers, ""),
        "created_at": [created] * n,  # one time per shard, as the runner judges a shard at once
        "reasoning": drawn("reasoning", 0.2), "reasoning_tokens": [None] * n, "trace_label": [None] * n,
        "gold_rationale": [None] * n,
    }
    columns = [v if isinstance(v, pa.Array) else pa.array(v, type=f.type)
               for f in RECORDS_SCHEMA for v in (values[f.name],)]
    columns = [c.cast(f.type) for c, f in zip(columns, RECORDS_SCHEMA, strict=True)]
    return pa.Table.from_arrays(columns, schema=RECORDS_SCHEMA)


def build_corpus(root: Path, records: int, parts: int) -> None:
    """`records` records of one job in `parts` part files, and the job's registry row, as the runner writes
    them."""
    from concurrent.futures import ProcessPoolExecutor

    from stepwise.pipeline.spec import JobSpec
    from stepwise.storage.jobs import JobRegistry, JobState

    examples = records // SAMPLES
    per_part = -(-examples // parts)
    starts = list(range(0, examples, per_part))
    with ProcessPoolExecutor(max(1, min(len(starts), os.cpu_count() or 1))) as pool:
        list(pool.map(_write_part, [str(root)] * len(starts), range(len(starts)), starts,
                      [min(per_part, examples - s) for s in starts]))
    spec = JobSpec.model_validate({
        "job_id": JOB_ID, "task": "multiple_choice", "prompt": "few_shot_cot",
        "dataset": {"path": str(root / "questions.jsonl")}, "teacher": {"backend": "replay",
                                                                         "path": str(root / "answers.jsonl")}})
    now = datetime.now(UTC)
    JobRegistry(root).save(JobState(
        job_id=JOB_ID, status="completed", fingerprint="bench", spec_json=spec.model_dump_json(),
        task="multiple_choice", prompt_id="few_shot_cot", teacher_backend="openai", teacher_model="teacher-large",
        n_shards=len(starts), shards_done=len(starts), n_examples=examples, n_records=examples * SAMPLES,
        created_at=now, updated_at=now))


def _write_part(root: str, shard: int, first_example: int, n_examples: int) -> None:
    from stepwise.storage import layout
    from stepwise.storage.parquet import write_table_atomic
    from stepwise.storage.schema import DICTIONARY_COLUMNS

    rng = random.Random(shard)  # the same pools in every worker (seeded), each part's own draws
    table = _part(_pools(), rng, first_example, n_examples, datetime(2025, 1, 1, tzinfo=UTC) + timedelta(hours=shard))
    write_table_atomic(table, Path(root).joinpath(*layout.part(JOB_ID, shard)), dictionary=DICTIONARY_COLUMNS)


def _corpus_ready(root: Path, records: int, parts: int) -> bool:
    """Whether `root` holds a corpus this script built with these sizes (its marker file says so)."""
    marker = root / "bench-viewer.json"
    return marker.is_file() and json.loads(marker.read_text()) == {"records": records, "parts": parts}


def prepare(root: Path, records: int, parts: int) -> float | None:
    """Build the corpus under `root` unless it is there already; the seconds building took, or None."""
    if _corpus_ready(root, records, parts):
        return None
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    build_corpus(root, records, parts)
    (root / "bench-viewer.json").write_text(json.dumps({"records": records, "parts": parts}))
    return time.perf_counter() - started


# ── the server and the pages ─────────────────────────────────────────────────────────────────────────────────────
PAGES = {  # name -> query of GET /v1/jobs/{id}/records
    "first": "limit=50&brief=true",
    "deep": "limit=50&offset=500000&brief=true",
    "filtered": "reason=incorrect&correct=false&limit=50&brief=true",
    "sorted": "sort=agreement&order=desc&limit=50&brief=true",
    "by_id": "sort=example_id&limit=50&brief=true",
    "filtered_by_id": "reason=incorrect&correct=false&sort=example_id&limit=50&brief=true",
    "search": f"q={SEARCH_WORD}&limit=50&brief=true",
    "full": "limit=50",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def serve(root: Path, token: str, log: Path) -> tuple[subprocess.Popen, str]:
    """`stepwise serve` over the corpus on a free loopback port, once it answers /healthz."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STEPWISE_")}, "STEPWISE_API_TOKEN": token}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stepwise", "serve", "--corpus", str(root), "--port", str(port),
                                 "--log-level", "warning"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not answer within 60 s")


def get(url: str, token: str) -> tuple[float, bytes]:
    """One GET: (milliseconds, body); any status but 200 is an error."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as reply:
        body = reply.read()
    return (time.perf_counter() - started) * 1000, body


def percentile(sorted_ms: list[float], p: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, round(p / 100 * (len(sorted_ms) - 1)))]


def measure(url: str, token: str, pid: int, repeat: int, search_repeat: int) -> dict[str, dict]:
    """Every page `repeat` times (search `search_repeat`), one request at a time, after one warm-up request each;
    the example page of the first record too."""
    base = f"{url}/v1/jobs/{JOB_ID}"
    _, first = get(f"{base}/records?limit=1", token)
    example_id = json.loads(first)["items"][0]["example_id"]
    targets = {name: f"{base}/records?{q}" for name, q in PAGES.items()}
    targets["example"] = f"{base}/examples/{urllib.parse.quote(example_id, safe='')}"
    out = {}
    for name, target in targets.items():
        _, body = get(target, token)  # warm-up
        n = search_repeat if name == "search" else repeat
        cpu = cpu_seconds(pid)
        ms = sorted(get(target, token)[0] for _ in range(n))
        answer = json.loads(body)
        out[name] = {"p50_ms": round(percentile(ms, 50), 1), "p90_ms": round(percentile(ms, 90), 1),
                     "p99_ms": round(percentile(ms, 99), 1),
                     "server_cpu_ms": round((cpu_seconds(pid) - cpu) * 1000 / n, 1),
                     "total": answer.get("total"), "rows": len(answer.get("items", answer.get("samples", []))),
                     "kb": round(len(body) / 1024, 1), "repeat": n}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--parts", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=30, help="requests per page (after one warm-up request)")
    ap.add_argument("--search-repeat", type=int, default=5, help="requests of the search page (it scans all text)")
    ap.add_argument("--keep", type=Path, help="build the corpus here and keep it; reused when it is there")
    ap.add_argument("--json", action="store_true", help="one machine-readable line")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="stepwise-viewer-bench-"))
    root = args.keep or tmp / "corpus"
    proc = None
    try:
        built = prepare(root, args.records, args.parts)
        if built is not None:
            print(f"built {args.records:,} records in {args.parts} part files in {built:.1f} s under {root}",
                  file=sys.stderr)
        token = secrets.token_urlsafe(24)
        proc, url = serve(root, token, tmp / "server.log")
        load = os.getloadavg()[0]
        result = measure(url, token, proc.pid, args.repeat, args.search_repeat)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps({"records": args.records, "parts": args.parts, "cores": os.cpu_count(), "load": load,
                          "bar_ms": BAR_MS, "pages": result}))
        return
    print(f"GET /v1/jobs/{{id}}/records over {args.records:,} records in {args.parts} part files, real HTTP on "
          f"loopback, one request at a time ({os.cpu_count()} cores, load average {load:.1f} at the start)")
    print(f"  {'page':<14} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'p50/bar':>8} {'server CPU ms':>14} "
          f"{'total':>10} {'rows':>5} {'KiB':>7}")
    for name, r in result.items():
        total = "" if r["total"] is None else f"{r['total']:,}"
        print(f"  {name:<14} {r['p50_ms']:>8.1f} {r['p90_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['p50_ms'] / BAR_MS:>8.2f} "
              f"{r['server_cpu_ms']:>14.1f} {total:>10} {r['rows']:>5} {r['kb']:>7.1f}")
    print(f"  (p50/bar: p50 over the issue's bar of {BAR_MS:.0f} ms; server CPU: the server process's CPU per "
          f"request, all its threads; example: GET /v1/jobs/{{id}}/examples/{{example_id}})")


if __name__ == "__main__":
    main()
