"""`stepwise demo`: the main job end to end on embedded defaults, with nothing to set up by hand.

Starts the teacher simulator on a free loopback port (answering the demo problems task-aware, with some wrong
answers and a few injected faults), runs the live job `pipeline/samples/demo/live.yaml` against it over the
OpenAI protocol, stops the simulator, prints a DuckDB summary, writes two exports and trains a tiny student on
the corpus (when the `train` extra is installed).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stepwise.pipeline.errors import StepwiseError

SAMPLES = Path(__file__).parent / "samples" / "demo"


def start_simulator(*flags: str) -> tuple[subprocess.Popen, str]:
    """Start `stepwise sim` on a free port; returns the process and its /v1 base URL."""
    port_file = Path(tempfile.mkdtemp(prefix="stepwise-sim-")) / "port"
    proc = subprocess.Popen([sys.executable, "-m", "stepwise", "sim", "--port-file", str(port_file), *flags],
                            stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise StepwiseError("the teacher simulator did not start")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port_file.read_text().strip()}/v1"


def main(corpus: str, out: str, quiet: bool = False) -> int:
    from stepwise.pipeline import cli
    from stepwise.storage.catalog import query

    sim, url = start_simulator("--dataset", str(SAMPLES / "problems.jsonl"), "--latency", "0.3", "--jitter", "0.2",
                               "--wrong-rate", "0.15", "--faults", "error_503=0.05,truncated=0.03", "--seed", "7")
    try:
        cli.err.print(f"teacher simulator listening on {url}")
        code = cli.main(["run", str(SAMPLES / "live.yaml"), "--corpus", corpus, "--set", f"teacher.base_url={url}"]
                        + (["--quiet"] if quiet else []))
        if code != 0:
            return code
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    table = query(corpus, "SELECT coalesce(reject_reason, 'accepted') AS outcome, count(*) AS records, "
                          "round(sum(cost_usd), 6) AS cost_usd FROM records WHERE job_id = 'demo-live' "
                          "GROUP BY 1 ORDER BY records DESC").table
    cli.print_table(table)
    for fmt, path, split in (("finetune_cot", f"{out}/demo-finetune-cot.jsonl", None),
                             ("dsbs", f"{out}/demo-dsbs", "0.8,0.1,0.1")):
        args = ["export", "--corpus", corpus, "--job", "demo-live", "--format", fmt, "--out", path]
        code = cli.main(args + (["--split", split] if split else []))
        if code != 0:
            return code
    # the loop closed: a tiny student (offline, seconds on a CPU) trains on the corpus in Fine-tune-CoT's format
    # and is scored with the task's own comparator; it shows the plumbing, not accuracy
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        cli.err.print("student: skipped (pip install 'stepwise[train]' for the trainer)")
    else:
        code = cli.main(["train", "--corpus", corpus, "--job", "demo-live", "--mode", "cot", "--model", "tiny",
                         "--steps", "30", "--threads", "2", "--out", f"{out}/demo-student", "--quiet"])
        if code != 0:
            return code
        cli.err.print("student: the tiny offline T5 checks the loop, it is not a real student; train one with "
                      "`stepwise train --model <a T5 folder>` on a GPU")
    cli.err.print(f"demo done: corpus in {corpus}, exports and the student in {out}")
    return 0
