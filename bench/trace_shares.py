"""What the trace filters measure on real data: repeated 6-gram shares and foreign-script shares.

For each shared reasoning set (../shared/data/reasoning: R1-Distill-Qwen-1.5B GSM8K, R1-Distill-Qwen-14B MATH-500,
DeepSeek-R1 hyperbaton) it prints the quantiles of both shares over finished traces (the text before `</think>`)
and over unfinished ones (no `</think>`: most ran into the token cap, many of them looping), and the same for the
PaLM completions of the Distilling step-by-step svamp release (cut before an invented next turn, as the parser
cuts them), whose worst ones loop. It ends with the looping texts it finds (share over 0.3) and the time per
character of both measures: the numbers behind the README's suggested `max_repetition: 0.3` and
`max_foreign_script: 0.01`. Run `python bench/trace_shares.py`.
"""

from __future__ import annotations

import json
import time

from _data import DSBS, print_json, require_data

REASONING = DSBS.parent / "reasoning"
SETS = ("tli-r1q1.5b-gsm8k", "tli-r1q14b-math500", "xannadoo-r1-hyperbaton")


def quantiles(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    at = lambda q: v[min(len(v) - 1, int(q * len(v)))]  # noqa: E731
    return {"n": len(v), "median": round(at(0.5), 3), "p90": round(at(0.9), 3), "p99": round(at(0.99), 3),
            "max": round(v[-1], 3)}


def traces(name: str) -> list[tuple[str, str, bool]]:
    """(prompt, trace, finished) for every completion of a shared reasoning set."""
    questions = {}
    for line in (REASONING / name / "data.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        questions[row["id"]] = row["question"]
    out = []
    for line in (REASONING / name / "completions.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        text = row["text"].removeprefix("<think>")
        trace, sep, _ = text.partition("</think>")
        out.append((questions[row["example_id"]], trace, bool(sep)))
    return out


def main() -> None:
    require_data()
    from stepwise.pipeline.importers import load_completions
    from stepwise.pipeline.parsing import cut_follow_on
    from stepwise.pipeline.validate import foreign_script_share, repetition_share, writing_system

    report: dict = {}
    loops: list[tuple[float, str, str]] = []
    chars = seconds_rep = seconds_mix = 0.0
    for name in SETS:
        rows = traces(name)
        for finished in (True, False):
            part = [(p, t) for p, t, done in rows if done is finished]
            if not part:
                continue
            t0 = time.perf_counter()
            rep = [repetition_share(t) for _, t in part]
            t1 = time.perf_counter()
            mix = [foreign_script_share(t, writing_system(p) or frozenset({"Latin"})) for p, t in part]
            t2 = time.perf_counter()
            chars += sum(len(t) for _, t in part)
            seconds_rep, seconds_mix = seconds_rep + t1 - t0, seconds_mix + t2 - t1
            report[f"{name} {'finished' if finished else 'unfinished'}"] = {
                "repetition": quantiles(rep), "foreign_script": quantiles(mix)}
            loops += [(r, name, t) for r, (_, t) in zip(rep, part, strict=True) if r > 0.3]
    # the svamp completions as the parser reads them: cut before the next few-shot turn PaLM went on to invent
    # (its exemplars repeat the prompt's, which is not a loop of the teacher's own)
    texts = [cut_follow_on(t)[0] for split in ("train", "test") for t in load_completions(DSBS / "svamp", split) if t]
    rep = [repetition_share(t) for t in texts]
    report["svamp release (PaLM few-shot CoT, cut before an invented next turn)"] = {
        "repetition": quantiles(rep), "foreign_script": quantiles(
            [foreign_script_share(t, frozenset({"Latin"})) for t in texts])}
    loops += [(r, "svamp", t) for r, t in zip(rep, texts, strict=True) if r > 0.3]
    # a Qwen-style slip: a paragraph of Chinese inside an English trace (text of our own)
    english = "First I add the apples to the pears, then I check the total against the question once more. " * 30
    chinese = "我们先把苹果和梨的数量加起来，然后再检查一遍总数是否正确。" * 4
    report["english trace with one chinese paragraph (our own text)"] = {
        "chars": len(english + chinese), "foreign_script": round(foreign_script_share(english + chinese,
                                                                                    frozenset({"Latin"})), 3)}
    report["loops found (repetition > 0.3)"] = [
        {"set": name, "repetition": round(r, 3), "tail": t[-120:]} for r, name, t in sorted(loops, reverse=True)]
    report["cost"] = {"repetition_ns_per_char": round(seconds_rep / chars * 1e9, 1),
                      "foreign_script_ns_per_char": round(seconds_mix / chars * 1e9, 1)}
    print_json(report)


if __name__ == "__main__":
    main()
