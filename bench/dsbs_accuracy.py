"""Teacher accuracy of the Distilling step-by-step release, imported through the CLI contract.

For each split it runs `stepwise import dsbs` into a temporary corpus, then asks DuckDB for
`avg(coalesce(correct, false)::int)` and the reject reasons. For reference it also scores a re-implementation
of the release's own parsing rules (split on the answer trigger, take the text after the option letter /
inside parentheses / after "Answer: ", compare with gold), and prints ours over theirs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile

from _data import DSBS, ROOT, print_json, real_pairs, require_data

ALL_SPLITS = [("cqa", "train", "multiple_choice"), ("cqa", "test", "multiple_choice"),
              ("svamp", "train", "arithmetic"), ("svamp", "test", "arithmetic"),
              ("esnli", "valid", "nli"), ("esnli", "test", "nli")]
NLI = ["entailment", "neutral", "contradiction"]


def release_label(name: str, text: str) -> str:
    """The release's parsing rules, as we read them (reference only)."""
    try:
        if name == "cqa":
            label = text.split("Q:")[0].rstrip().split("So the answer is")[1]
            label = re.split(r"\(.\)", label)[1].strip()
            return label[:-1] if label.endswith(".") else label
        if name == "svamp":
            label = text.split("Q:")[0].rstrip().split("The answer is")[1]
            return re.search(r"\(.*\)", label).group(0)
        return text.split("Answer: ")[1].split("Premise")[0].rstrip()
    except (IndexError, AttributeError, ValueError):
        return " "


def release_accuracy(name: str, split: str, kind: str) -> tuple[float, int]:
    from stepwise.pipeline.tasks.numbers import UnsafeExpression, evaluate, numbers_equal

    _task, pairs = real_pairs(name, split, kind)
    hits = empty = 0
    for ex, gold, text in pairs:
        label = release_label(name, text)
        empty += label.strip() == ""
        if name == "svamp":
            try:
                hits += numbers_equal(evaluate(label), float(gold))
            except UnsafeExpression:
                pass
        elif name == "esnli":
            hits += label == NLI[int(ex.gold)]
        else:
            hits += label == ex.gold
    return hits / len(pairs), empty


def cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "stepwise", *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"stepwise {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def main() -> None:
    require_data()
    out = {}
    with tempfile.TemporaryDirectory(prefix="stepwise-bench-acc-") as corpus:
        for name, split, kind in ALL_SPLITS:
            if not (DSBS / name / f"{name}_{split}.json").is_file():
                continue
            job = f"{name}-{split}"
            cli("import", "dsbs", "--src", str(DSBS / name), "--split", split, "--task", kind,
                "--corpus", corpus, "--job-id", job, "--quiet")
            rows = json.loads(cli("query", "--corpus", corpus, "--format", "json",
                                  f"SELECT count(*) AS n, avg(coalesce(correct, false)::int) AS acc, "
                                  f"count(label) AS labeled FROM records WHERE job_id = '{job}'"))[0]
            reasons = json.loads(cli("query", "--corpus", corpus, "--format", "json",
                                     f"SELECT reject_reason, count(*) AS n FROM records WHERE job_id = '{job}' "
                                     f"AND reject_reason IS NOT NULL GROUP BY 1 ORDER BY 2 DESC"))
            ref, ref_empty = release_accuracy(name, split, kind)
            out[job] = {"rows": rows["n"], "accuracy": round(rows["acc"], 4), "release_parser_accuracy": round(ref, 4),
                        "ours_over_release": round(rows["acc"] / ref, 4), "labels_found": rows["labeled"],
                        "release_parser_empty_labels": ref_empty,
                        "reject_reasons": {r["reject_reason"]: r["n"] for r in reasons}}
    print_json({"benchmark": "DSBS release teacher accuracy, imported via `stepwise import dsbs`", "splits": out})


if __name__ == "__main__":
    main()
