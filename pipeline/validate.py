"""Judge the parsed samples of one example: correctness, self-consistency, length bounds, trace filters, duplicates.

Every sample gets a verdict; a rejected one keeps its reason. Checks run in a fixed order and the first
failing check names the reason, so counts by reason are stable and meaningful:

1. the parser's own reject (`truncated`, `no_answer`, ...);
2. the sample alone: rationale length, then the thinking trace (length in characters, then in tokens,
   repetition, language mixing, a final answer that contradicts the trace);
3. the sample against gold: `incorrect`;
4. the sample against its siblings: `minority` (and `min_agreement`), `duplicate`.

The trace filters sit with the other checks of the sample alone, before gold: a looping or mixed-language trace
is a bad training target whether or not its answer is right, and counting it as `incorrect` would hide how
often the teacher loops. Among them the cheap ones come first. Every measure is one linear pass over the text
(traces run to tens of thousands of characters), so judging stays far cheaper than reading the completion.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from stepwise.pipeline.spec import FilterSpec
from stepwise.pipeline.tasks import Task
from stepwise.pipeline.types import Parsed, RejectReason

# Repetition is measured on word 6-grams. A loop of any period repeats every n-gram after its first turn, so n
# only decides what ordinary text may repeat: with 3-4 words, stock phrases ("let me check the", "so the total
# is") and restated numbers already give normal R1 traces shares up to 0.3; with 8 or more, a loop whose unit
# changes a number every few words ("step 3: ... step 4: ...") slips through. At 6, normal finished traces of
# the shared reasoning sets stay below 0.21 (median 0.00-0.02) while loops measure 0.3-0.84.
REPETITION_N = 6
CHARS_PER_TOKEN = 4  # the estimate of a trace's tokens when the server did not count them

# The letters of each script, as regular-expression class ranges (Unicode blocks; a block's marks and digits
# count with its letters). Characters outside every one (rare scripts, ², ½, ∑) are left out of the
# language-mixing share.
_SCRIPTS: dict[str, str] = {
    "Latin": "A-Za-z\u00aa\u00ba\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u02af\u1d00-\u1dbf\u1e00-\u1eff\u2c60-\u2c7f"
             "\ua720-\ua7ff\uab30-\uab6f\ufb00-\ufb06\uff21-\uff3a\uff41-\uff5a",
    "Greek": "\u00b5\u0370-\u03ff\u1f00-\u1fff",
    "Cyrillic": "\u0400-\u052f\u1c80-\u1c8f\u2de0-\u2dff\ua640-\ua69f",
    "Armenian": "\u0530-\u058f",
    "Hebrew": "\u0590-\u05ff\ufb1d-\ufb4f",
    "Arabic": "\u0600-\u06ff\u0750-\u077f\u0870-\u08ff\ufb50-\ufdff\ufe70-\ufeff",
    "Indic": "\u0900-\u0dff\ua8e0-\ua8ff",  # Devanagari to Sinhala: Brahmic scripts, one group
    "Thai": "\u0e00-\u0eff",  # with Lao
    "Georgian": "\u10a0-\u10ff\u1c90-\u1cbf",
    "Hangul": "\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7ff\uffa0-\uffdc",
    "Kana": "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f",
    "Han": "\u3005\u3007\u3021-\u3029\u3038-\u303b\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U000323af",
}
_SCRIPT_RE = {name: re.compile(f"[{body}]+") for name, body in _SCRIPTS.items()}
_ANY_SCRIPT_RE = re.compile(f"[{''.join(_SCRIPTS.values())}]+")
_ASCII_WORD_RE = re.compile(r"[A-Za-z]{2,}")
_NOT_ASCII_LETTER = bytes(b for b in range(256) if not (65 <= b <= 90 or 97 <= b <= 122))
_ASCII_TO_SPACE = bytes(32 if b < 128 else b for b in range(256))


@dataclass(frozen=True, slots=True)
class Verdict:
    correct: bool | None
    accepted: bool
    reason: RejectReason | None
    detail: str | None
    consensus_label: str | None
    agreement: float | None


def judge_example(parsed: list[Parsed], gold_label: str | None, task: Task, filters: FilterSpec, *,
                  prompt: str | None = None, reasoning_tokens: Sequence[int | None] = ()) -> list[Verdict]:
    """One verdict per parsed sample, in order.

    `prompt` is the example's input: the trace's language-mixing share counts the letters outside its script
    (without it, outside the trace's own main script). `reasoning_tokens[i]` is sample i's trace length in tokens
    as the server counted it (usage), when it did; otherwise it is estimated from characters."""
    votes = Counter(p.label for p in parsed if p.label is not None and p.reject is None)
    consensus, agreement = None, None
    if votes:
        consensus, top = votes.most_common(1)[0]
        agreement = top / sum(votes.values())
    system = writing_system(prompt) if prompt and filters.max_foreign_script is not None else None
    seen_rationales: set[str] = set()
    verdicts = []
    for i, p in enumerate(parsed):
        correct = task.compare(p.label, gold_label) if p.label is not None and gold_label is not None else None
        reason, detail = p.reject, p.detail
        if reason is None:
            key = " ".join(p.rationale.split()) if filters.dedupe else None  # white space folded, once
            tokens = reasoning_tokens[i] if i < len(reasoning_tokens) else None
            reason, detail = _filter(p, correct, consensus, agreement, filters, key in seen_rationales, task,
                                     tokens, system)
            if reason is None and key is not None:
                seen_rationales.add(key)
        verdicts.append(Verdict(correct, reason is None, reason, detail, consensus, agreement))
    return verdicts


Rejection = tuple[RejectReason | None, str | None]


def _filter(p: Parsed, correct: bool | None, consensus: str | None, agreement: float | None, f: FilterSpec,
            seen: bool, task: Task, tokens: int | None, system: frozenset[str] | None) -> Rejection:
    n = len(p.rationale)
    if n < f.min_rationale_chars:
        return RejectReason.TOO_SHORT, f"rationale has {n} characters, fewer than {f.min_rationale_chars}"
    if n > f.max_rationale_chars:
        return RejectReason.TOO_LONG, f"rationale has {n} characters, more than {f.max_rationale_chars}"
    reason, detail = _trace_filter(p, f, task, tokens, system)
    if reason is not None:
        return reason, detail
    if f.require_correct and correct is False:
        return RejectReason.INCORRECT, f"label {p.label!r} disagrees with gold"
    if f.self_consistency and p.label != consensus:
        return RejectReason.MINORITY, f"label {p.label!r} disagrees with the majority {consensus!r}"
    if agreement is not None and agreement < f.min_agreement:
        return RejectReason.MINORITY, f"agreement {agreement:.2f} is below min_agreement {f.min_agreement:.2f}"
    if f.dedupe and seen:
        return RejectReason.DUPLICATE, "same rationale as an earlier sample of this example"
    return None, None


def _trace_filter(p: Parsed, f: FilterSpec, task: Task, tokens: int | None,
                  system: frozenset[str] | None) -> Rejection:
    """The checks of the thinking trace, cheap ones first. Length bounds read the trace alone (a sample without
    one has 0 characters); repetition and language mixing read the reasoning the student learns from: the trace,
    or the rationale of a teacher that has none (few-shot CoT loops too)."""
    trace = p.reasoning or ""
    n = len(trace)
    if n < f.min_reasoning_chars:
        what = f"trace has {n} characters" if trace else "no thinking trace (0 characters)"
        return RejectReason.TRACE_TOO_SHORT, f"{what}, fewer than {f.min_reasoning_chars}"
    if f.max_reasoning_chars is not None and n > f.max_reasoning_chars:
        return RejectReason.TRACE_TOO_LONG, f"trace has {n} characters, more than {f.max_reasoning_chars}"
    if f.max_reasoning_tokens is not None and trace:
        if tokens is not None and tokens > f.max_reasoning_tokens:
            return RejectReason.TRACE_TOO_LONG, (
                f"trace has {tokens} tokens (server usage), more than {f.max_reasoning_tokens}")
        estimate = math.ceil(n / CHARS_PER_TOKEN)
        if tokens is None and estimate > f.max_reasoning_tokens:
            return RejectReason.TRACE_TOO_LONG, (
                f"trace has about {estimate} tokens (estimated at {CHARS_PER_TOKEN} characters a token from "
                f"{n} characters; the server gave no count), more than {f.max_reasoning_tokens}")
    text, what = (trace, "trace") if trace else (p.rationale or "", "rationale")
    if f.max_repetition is not None:
        repeated, total = repeated_ngrams(text)
        if total and repeated / total > f.max_repetition:
            return RejectReason.REPETITION, (
                f"{what} repeats itself: {repeated / total:.3f} of its {REPETITION_N}-word sequences ({repeated} of "
                f"{total}) repeat an earlier one, more than max_repetition {f.max_repetition}")
    if f.max_foreign_script is not None:
        own = system or writing_system(text)
        whose = "the prompt's" if system else "its own main"
        if own is not None:
            foreign, letters = foreign_letters(text, own)
            if letters and foreign / letters > f.max_foreign_script:
                return RejectReason.LANGUAGE_MIXING, (
                    f"{what} mixes scripts: {foreign / letters:.3f} of its letters ({foreign} of {letters}, mostly "
                    f"{_main_foreign_script(text, own)}) are outside {whose} {'+'.join(sorted(own))} script, "
                    f"more than max_foreign_script {f.max_foreign_script}")
    if f.reject_contradiction and p.trace_label is not None and p.label is not None \
            and not task.compare(p.label, p.trace_label):
        return RejectReason.CONTRADICTS_TRACE, (
            f"final answer {p.label!r} contradicts the trace's own conclusion {p.trace_label!r}")
    return None, None


# ── what the trace filters measure ───────────────────────────────────────────────────────────────────────────────
def repeated_ngrams(text: str, n: int = REPETITION_N) -> tuple[int, int]:
    """(repeated, total): how many of the text's word n-grams repeat an earlier one, of how many. A passage said
    k times over scores (k-1)/k; prose that never restates itself 0. Words are split on white space and kept
    verbatim (a loop repeats itself exactly). Linear: the n-grams are hashed once into one set."""
    words = text.split()
    total = len(words) - n + 1
    if total <= 0:
        return 0, 0
    distinct = len(set(map(hash, zip(*(words[i:] for i in range(n))))))
    return total - distinct, total


def repetition_share(text: str, n: int = REPETITION_N) -> float:
    """The share of the text's word n-grams that repeat an earlier one (0.0 for a text of fewer than n words)."""
    repeated, total = repeated_ngrams(text, n)
    return repeated / total if total else 0.0


def _split_ascii(text: str) -> tuple[int, str]:
    """(the number of ASCII letters, the non-ASCII characters with a newline between runs of them). The ASCII
    part is counted on the UTF-8 bytes, which is fast, so regular expressions only read the (usually few) other
    characters, with what stood next to what kept."""
    data = text.encode("utf-8", "surrogatepass")
    ascii_letters = len(data.translate(None, _NOT_ASCII_LETTER))
    if len(data) == len(text):
        return ascii_letters, ""
    return ascii_letters, b"\n".join(data.translate(_ASCII_TO_SPACE).split()).decode("utf-8", "surrogatepass")


def _count(pattern: re.Pattern[str], text: str) -> int:
    return len(text) - len(pattern.sub("", text)) if text else 0


def script_counts(text: str) -> dict[str, int]:
    """Letters of the text per script (names of `_SCRIPTS`), the scripts with none left out."""
    ascii_letters, rest = _split_ascii(text)
    counts = {name: _count(rx, rest) for name, rx in _SCRIPT_RE.items()}
    counts["Latin"] += ascii_letters
    return {name: k for name, k in counts.items() if k}


def writing_system(text: str) -> frozenset[str] | None:
    """The scripts a text is written in: its most common script, with the ones written together with it
    (Japanese is Han and kana, Korean Hangul and Han). None when it has no letters of a known script."""
    counts = script_counts(text)
    if not counts:
        return None
    top = max(counts, key=counts.__getitem__)
    if top in ("Han", "Kana") and counts.get("Kana"):
        return frozenset({"Han", "Kana"})
    if top == "Hangul":
        return frozenset({"Hangul", "Han"})
    return frozenset({top})


@functools.lru_cache(maxsize=64)
def _foreign_run_re(system: frozenset[str]) -> re.Pattern[str]:
    return re.compile(f"[{''.join(body for name, body in _SCRIPTS.items() if name not in system)}]{{2,}}")


def foreign_letters(text: str, system: frozenset[str]) -> tuple[int, int]:
    """(foreign, letters): the text's letters of a known script, and how many of them are outside `system`.
    A foreign letter counts where two or more stand together: a lone π or θ in a formula (or x in a Chinese
    trace) is a symbol, not a language."""
    ascii_letters, rest = _split_ascii(text)
    letters = ascii_letters + _count(_ANY_SCRIPT_RE, rest)
    foreign = sum(map(len, _foreign_run_re(system).findall(rest))) if rest else 0
    if "Latin" not in system and ascii_letters:
        foreign += sum(map(len, _ASCII_WORD_RE.findall(text)))
    return foreign, letters


def foreign_script_share(text: str, system: frozenset[str]) -> float:
    """The share of the text's letters outside the scripts of `system` (0.0 for a text without letters)."""
    foreign, letters = foreign_letters(text, system)
    return foreign / letters if letters else 0.0


def _main_foreign_script(text: str, system: frozenset[str]) -> str:
    counts = {name: k for name, k in script_counts(text).items() if name not in system}
    return max(counts, key=counts.__getitem__) if counts else "none"
