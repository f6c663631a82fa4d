"""`storage.catalog.query` latency over a local corpus of 200,000 records in 50 part files (prints measured
figures; not a timed test).

Two queries, each run `--repeat` times in one thread, after a warm-up that builds the shared database:

    group   SELECT job_id, accepted, count(*) ... GROUP BY job_id, accepted      (reads two columns of every file)
    page    SELECT * FROM records WHERE job_id = ... ORDER BY example_id LIMIT 100 OFFSET 5000   (a records page)

and then `--threads` threads running `page` together (the REST service runs one query per core at a time).
Prints per query the minimum (the least disturbed by other programs), median and p90 latency, queries/s and the
process CPU per query, and the cost of deciding whether the shared database is still current (`catalog._parts`,
paid by every query). The corpus is built once under `--corpus` (default: a temp folder, removed afterwards) from
synthetic records of our own.

    python bench/query_sandbox.py
    python bench/query_sandbox.py --corpus /tmp/qcorpus --json   # keep the corpus for a later comparison
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

JOBS = 4
QUERIES = {
    "group": "SELECT job_id, accepted, count(*) AS n FROM records GROUP BY job_id, accepted ORDER BY 1, 2",
    "page": "SELECT * FROM records WHERE job_id = 'bench-2' ORDER BY example_id LIMIT 100 OFFSET 5000",
}


def build_corpus(root: Path, records: int, parts: int) -> None:
    """`records` synthetic records in `parts` part files, spread over JOBS jobs, written as the runner does."""
    import pyarrow as pa

    from stepwise.storage.parquet import write_table_atomic
    from stepwise.storage.schema import DICTIONARY_COLUMNS, RECORDS_SCHEMA

    per_part = records // parts
    now = datetime.now(UTC)
    for p in range(parts):
        job = f"bench-{p % JOBS}"
        ids = [f"q{p:03d}-{i:06d}" for i in range(per_part)]
        values = {
            "job_id": [job] * per_part, "example_id": ids, "sample_idx": [0] * per_part,
            "task": ["arithmetic"] * per_part,
            "input": [f"A shop has {i % 17 + 2} boxes of {i % 29 + 3} pencils and sells {i % 13 + 1}. ({e})"
                      for i, e in enumerate(ids)],
            "gold_label": [str(i % 97) for i in range(per_part)], "label": [str(i % 97) for i in range(per_part)],
            "rationale": [f"There are {i % 17 + 2} boxes of {i % 29 + 3} pencils, so {(i % 17 + 2) * (i % 29 + 3)} "
                          f"pencils; after selling {i % 13 + 1} there are some left. " * 2
                          for i in range(per_part)],
            "correct": [i % 10 != 0 for i in range(per_part)], "accepted": [i % 10 != 0 for i in range(per_part)],
            "prompt_id": ["few_shot_cot"] * per_part, "teacher_backend": ["openai"] * per_part,
            "teacher_model": ["stepwise-sim"] * per_part, "tokens_in": [420] * per_part,
            "tokens_out": [96] * per_part, "created_at": [now] * per_part,
        }
        columns = [pa.array(values.get(f.name, [None] * per_part), type=f.type) for f in RECORDS_SCHEMA]
        table = pa.Table.from_arrays(columns, schema=RECORDS_SCHEMA)
        write_table_atomic(table, root / "records" / job / f"shard-{p:06d}.parquet", dictionary=DICTIONARY_COLUMNS)


def rows_of(result) -> int:
    """Rows of a query's answer: a pyarrow Table, or a result that carries one as `.table`."""
    return getattr(result, "table", result).num_rows


def timed(fn, repeat: int) -> dict:
    """Wall-clock latency, and the CPU the whole process (all its threads) spent per call: the steadier figure
    when other programs share the machine."""
    ms = []
    cpu = time.process_time()
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - started) * 1000)
    cpu_ms = (time.process_time() - cpu) * 1000 / repeat
    ms.sort()
    return {"min_ms": round(ms[0], 2), "median_ms": round(statistics.median(ms), 2),
            "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 2), "per_s": round(1000 / statistics.mean(ms), 1),
            "cpu_ms": round(cpu_ms, 2)}


def bench(root: Path, repeat: int, threads: int) -> dict:
    from stepwise.storage import catalog
    from stepwise.storage.location import CorpusLocation

    out = {}
    for name, sql in QUERIES.items():
        rows_of(catalog.query(root, sql))  # warm-up: builds the shared database
        out[name] = timed(lambda sql=sql: catalog.query(root, sql), repeat)
    assert rows_of(catalog.query(root, QUERIES["page"])) == 100
    loc = CorpusLocation(root)
    state = getattr(catalog, "_parts", None) or catalog._state  # its name before the pyarrow-dataset views
    out["state_check"] = timed(lambda: state(loc), repeat * 10)
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: catalog.query(root, QUERIES["page"]), range(repeat * threads)))
    out[f"page_{threads}_threads_per_s"] = round(repeat * threads / (time.perf_counter() - started), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, help="where the corpus is built (or reused, when it exists)")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--parts", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = None
    root = args.corpus
    if root is None:
        tmp = Path(tempfile.mkdtemp(prefix="stepwise-query-bench-"))
        root = tmp / "corpus"
    try:
        if not (root / "records").is_dir():
            print(f"building {args.records:,} records in {args.parts} part files under {root} ...", file=sys.stderr)
            build_corpus(root, args.records, args.parts)
        result = {"records": args.records, "parts": args.parts, "repeat": args.repeat, **bench(root, args.repeat,
                                                                                                args.threads)}
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
        return
    print(f"storage.catalog.query over {args.records:,} records in {args.parts} part files "
          f"({args.repeat} runs each, one thread)")
    for name in (*QUERIES, "state_check"):
        r = result[name]
        print(f"  {name:<12} min {r['min_ms']:>8.2f} ms   median {r['median_ms']:>8.2f} ms   p90 {r['p90_ms']:>8.2f} ms"
              f"   {r['per_s']:>8.1f}/s   CPU {r['cpu_ms']:>7.2f} ms")
    key = f"page_{args.threads}_threads_per_s"
    print(f"  page, {args.threads} threads together: {result[key]:.1f} queries/s")


if __name__ == "__main__":
    main()
