"""The data-efficiency sweep: train every mode (x label source) at every data fraction, then write the table
(`sweep.csv`, `sweep.md`) and the figure (`sweep.png`: test accuracy against the share of training data, one line
per variant), as in the papers' figures.

Each run is an ordinary `main(config)` run in `<out>/<mode>-<label source>/f<fraction>/`, with its own
checkpoint, log, predictions and metrics.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import replace
from pathlib import Path

from stepwise.pipeline.errors import MissingExtraError
from stepwise.pipeline.trainer.config import SweepConfig
from stepwise.pipeline.trainer.model import MISSING
from stepwise.pipeline.trainer.train import main

COLUMNS = ("variant", "mode", "label_source", "fraction", "train_examples", "train_pairs", "steps", "accuracy",
           "correct", "n", "final_loss", "seconds", "out")


def variant(mode: str, label_source: str) -> str:
    return f"{mode}-{label_source}"


def sweep(config: SweepConfig) -> list[dict]:
    """Run the grid; returns one row per run (also in sweep.csv / sweep.md / sweep.png under `base.out`)."""
    out = Path(config.base.out)
    rows = []
    for mode in config.modes:
        for label_source in config.label_sources:
            for fraction in config.fractions:
                run_out = out / variant(mode, label_source) / f"f{fraction:g}"
                m = main(replace(config.base, mode=mode, label_source=label_source, fraction=fraction,
                                 out=str(run_out)))
                rows.append({"variant": variant(mode, label_source), "mode": mode, "label_source": label_source,
                             "fraction": fraction, "train_examples": m["train_examples"],
                             "train_pairs": m["train_pairs"], "steps": m["steps"], "accuracy": m["accuracy"],
                             "correct": m["correct"], "n": m["n"], "final_loss": m["final_loss"],
                             "seconds": m["seconds"], "out": str(run_out)})
                if not config.base.quiet:
                    print(f"sweep {variant(mode, label_source)} fraction {fraction:g}: accuracy {m['accuracy']:.2%} "
                          f"({m['correct']} / {m['n']})", file=sys.stderr, flush=True)
    write_table(rows, out)
    plot(rows, out / "sweep.png")
    return rows


def pivot(rows: list[dict]) -> str:
    """Accuracy (%) by variant (rows) and fraction (columns), as a Markdown table."""
    fractions = sorted({r["fraction"] for r in rows})
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    acc = {(r["variant"], r["fraction"]): r["accuracy"] for r in rows}
    lines = ["| variant | " + " | ".join(f"{f:g}" for f in fractions) + " |",
             "|---|" + "---:|" * len(fractions)]
    for v in variants:
        cells = [f"{100 * acc[v, f]:.1f}" if (v, f) in acc else "" for f in fractions]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_table(rows: list[dict], out: Path) -> None:
    """sweep.csv (one row per run) and sweep.md (the accuracy pivot, then the runs)."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "sweep.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    runs = ["| " + " | ".join(COLUMNS[:-1]) + " |", "|" + "---|" * (len(COLUMNS) - 1)]
    for r in rows:
        runs.append("| " + " | ".join(_cell(r[c]) for c in COLUMNS[:-1]) + " |")
    text = (f"# Data-efficiency sweep\n\n## Test accuracy (%) by share of the training data\n\n{pivot(rows)}\n\n"
            f"## Runs\n\n" + "\n".join(runs) + "\n")
    (out / "sweep.md").write_text(text, encoding="utf-8")


def plot(rows: list[dict], path: Path) -> None:
    """Accuracy against data fraction, one line per variant (matplotlib's Agg canvas: no display needed)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError(MISSING) from None
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.subplots()
    fractions = sorted({r["fraction"] for r in rows})
    for v in dict.fromkeys(r["variant"] for r in rows):
        points = sorted((r["fraction"], 100 * r["accuracy"]) for r in rows if r["variant"] == v)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=v)
    ax.set_xscale("log", base=2)
    ax.set_xticks(fractions, [f"{100 * f:g}%" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("share of the training data")
    ax.set_ylabel("test accuracy (%)")
    top = max(100 * r["accuracy"] for r in rows)
    ax.set_ylim(0, min(100, max(10, top * 1.15)))  # accuracy is never negative; a little room above the best
    ax.set_title(f"Data efficiency ({max(r['n'] for r in rows)} test questions)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
