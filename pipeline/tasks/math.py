"""`math`: LaTeX answers (MATH, AIME, olympiad sets), compared by math-verify, the verifier open-r1 uses.

Equivalence is math-verify's, not ours: fractions, roots, intervals, sets, units and `\\text{}`, percent, degrees,
thousands separators and `x = 5` all compare by value. Two cheap paths run first (the same text once spacing,
`\\dfrac`, `\\text{}` and the like are set aside; two integers or fractions), and results are cached: math-verify's
reading of an answer by its text (an example's gold is parsed once for all its samples), verdicts by the pair.

math-verify can run for ever on hostile input (`10^{10^{10}}` is computed exactly). It bounds itself with
SIGALRM, which works only in a process's main thread; anywhere else (Ray's threaded workers) the call runs in a
spawned helper process that is killed and replaced when it overruns.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import replace
from fractions import Fraction
from functools import lru_cache
from typing import Any

from stepwise.pipeline.errors import short
from stepwise.pipeline.tasks.base import Task
from stepwise.pipeline.tasks.latex import find_last_box, last_boxed
from stepwise.pipeline.types import Example

PARSE_TIMEOUT_S = 2     # math-verify's own bound on parsing one text (whole seconds: it uses signal.alarm)
VERIFY_TIMEOUT_S = 2    # ... and on one comparison
CALL_TIMEOUT_S = 10.0   # the helper process's bound on one call, off the main thread
STARTUP_TIMEOUT_S = 120.0  # ... and on its start (importing sympy)
MAX_ANSWER_CHARS = 1000  # a longer "answer" is compared as text only
MAX_CONTENT_CHARS = 8000  # the end of a content searched for an unmarked answer

_COSMETIC = (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\:", ""), ("\\ ", ""),
             ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("^\\circ", ""), ("^{\\circ}", ""), ("\\degree", ""),
             ("\\%", ""), ("%", ""), ("{,}", ","), ("\\$", ""))
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_ASSIGNED = re.compile(r"^[A-Za-z]=(?=[^=])")
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)")
_FRACTION = re.compile(r"(-?)\\frac(?:\{(\d+)\}|(\d))(?:\{(\d+)\}|(\d))")  # \frac{12}{5}, \frac12
_READY = "ready"
_NOT_PROSE = " \t\n$.,;:\\[]()"  # what may sit around a bare boxed answer
_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\[", "\\]"), ("\\(", "\\)"))
_log = logging.getLogger(__name__)


# ── math-verify, bounded ─────────────────────────────────────────────────────────────────────────────────────────
def _strip_delimiters(latex: str) -> str:
    text = latex.strip()
    for left, right in _DELIMITERS:
        if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
            return text[len(left):-len(right)].strip()
    return text


@lru_cache(maxsize=8192)
def _parsed(latex: str) -> list[Any]:
    """math-verify's reading of one answer, `$…$` around it (bare LaTeX is not found otherwise), cached."""
    from math_verify import parse

    found = parse(f"${latex}$", parsing_timeout=PARSE_TIMEOUT_S)
    return found or parse(latex, parsing_timeout=PARSE_TIMEOUT_S)


def _verify_here(gold: str, answer: str) -> bool:
    from math_verify import verify

    g, a = _parsed(gold), _parsed(answer)
    return bool(g and a and verify(g, a, timeout_seconds=VERIFY_TIMEOUT_S))


def _extract_here(content: str) -> str | None:
    """math-verify's default extraction (LaTeX, then plain expressions) of a text: the matched answer text."""
    from math_verify import parse

    found = parse(content, parsing_timeout=PARSE_TIMEOUT_S)
    texts = [f for f in found if isinstance(f, str) and f.strip()]
    return texts[-1].strip() if texts else None


_HERE = {"verify": _verify_here, "extract": _extract_here}


def _serve(conn) -> None:
    """The helper process: run calls from its parent in its own main thread, where math-verify's alarms work."""
    import math_verify  # noqa: F401 - imported before saying ready, so a call's bound is not spent importing

    conn.send(_READY)
    while True:
        try:
            name, args = conn.recv()
        except EOFError:
            return
        try:
            result = _HERE[name](*args)
        except Exception:  # noqa: BLE001 - a failure to verify is "not equal", never a crash of the job
            result = None
        conn.send(result)


class _Helper:
    """One spawned process serving math-verify calls for threads other than the main one; one call at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: Any = None

    def call(self, name: str, *args: str) -> Any:
        with self._lock:
            if (self._proc is None or not self._proc.is_alive()) and not self._start():
                return None
            self._conn.send((name, args))
            if self._conn.poll(CALL_TIMEOUT_S):
                try:
                    return self._conn.recv()
                except EOFError:
                    pass
            _log.warning("math-verify overran %ss on %s; its helper process is replaced", CALL_TIMEOUT_S,
                         short(args))
            self._stop()
            return None

    def _start(self) -> bool:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # never fork a threaded process
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="stepwise-math-verify")
        self._proc.start()
        child.close()
        try:
            if self._conn.poll(STARTUP_TIMEOUT_S) and self._conn.recv() == _READY:
                return True
        except EOFError:
            pass
        _log.warning("the math-verify helper process did not start; answers are compared as text")
        self._stop()
        return False

    def _stop(self) -> None:
        self._proc.kill()
        self._proc.join()
        self._proc = None


_HELPER = _Helper()


def _bounded(name: str, *args: str) -> Any:
    """Run a math-verify call with a bound on its time, in this thread when it is the main one."""
    if threading.current_thread() is threading.main_thread():
        try:
            return _HERE[name](*args)
        except Exception:  # noqa: BLE001 - math-verify raises what sympy raises
            return None
    return _HELPER.call(name, *args)


# ── cheap paths: the same answer written the same way, or two exact numbers ───────────────────────────────────────
def _canonical(latex: str) -> str:
    """A LaTeX answer without what never changes its value: spacing, `\\left`/`\\right`, `\\dfrac`, degrees,
    percent, `\\text{}` around words, thousands separators, a leading `x =`, a final period."""
    text = _strip_delimiters(latex)
    for old, new in _COSMETIC:
        text = text.replace(old, new)
    text = _TEXT_WRAP.sub(r"\1", "".join(text.split()))
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    return _ASSIGNED.sub("", text, count=1).rstrip(".")


def _exact_number(text: str) -> tuple[Fraction, bool] | None:
    """(value, whether it is exact: an integer or a fraction of integers) of a canonical number, or None."""
    if _NUMBER.fullmatch(text):
        return Fraction(text), "." not in text
    m = _FRACTION.fullmatch(text)
    if m is None:
        return None
    num, den = int(m.group(2) or m.group(3)), int(m.group(4) or m.group(5))
    return (Fraction(num, den) * (-1 if m.group(1) else 1), True) if den else None


@lru_cache(maxsize=65536)
def equivalent(gold: str, answer: str) -> bool:
    """Whether an answer is the gold answer: the same canonical text, the same exact number, else math-verify's
    verdict (which also decides numbers it rounds: `0.3333333` is `\\frac{1}{3}` to six places)."""
    g, a = _canonical(gold), _canonical(answer)
    if g == a:
        return True
    gn, an = _exact_number(g), _exact_number(a)
    if gn is not None and an is not None and (gn[0] == an[0] or (gn[1] and an[1])):
        return gn[0] == an[0]
    if len(g) > MAX_ANSWER_CHARS or len(a) > MAX_ANSWER_CHARS:
        return False
    return bool(_bounded("verify", _strip_delimiters(gold), _strip_delimiters(answer)))


# ── the task ─────────────────────────────────────────────────────────────────────────────────────────────────────


class MathTask(Task):
    """LaTeX answers, compared by value with math-verify. Gold is the answer (`\\frac{14}{3}`) or a reference
    solution whose last `\\boxed{}` is the answer (the solution is then kept as the example's `gold_rationale`).
    Labels are the answers as the teacher wrote them, LaTeX delimiters removed."""

    kind = "math"
    latex_answers = True

    def prepare(self, example: Example) -> Example:
        """A gold that is a reference solution (text around its last box) becomes the `gold_rationale` too."""
        gold = example.gold
        if gold is None or example.gold_rationale is not None:
            return example
        box = find_last_box(gold)
        if box is None or not (gold[:box[0]] + gold[box[1]:]).strip(_NOT_PROSE):
            return example
        return replace(example, gold_rationale=gold.strip())

    def normalize_gold(self, gold: str, example: Example) -> str:
        answer = last_boxed(gold) if ("\\boxed" in gold or "\\fbox" in gold) else gold
        label = _strip_delimiters(answer or "")
        if not label:
            raise ValueError(f"gold {short(gold)} has no answer (an empty box?)")
        return label

    def extract(self, answer: str, example: Example) -> str | None:
        text = answer.strip()
        boxed = last_boxed(text) if "\\boxed" in text or "\\fbox" in text else None
        if boxed is None:
            text = text.split("\n", 1)[0]
            spans = text.split("$")
            if len(spans) >= 3:  # `is $\frac{1}{2}$ square units`: the last math span
                text = spans[-2] if len(spans) % 2 == 1 else spans[-3]
        label = _strip_delimiters(boxed if boxed is not None else text).rstrip(".,;:").strip()
        return label or None

    def unmarked_answer(self, content: str) -> str | None:
        """math-verify's own extraction of the content (its default LaTeX and expression extraction)."""
        tail = content[-MAX_CONTENT_CHARS:]
        return _bounded("extract", tail) if tail.strip() else None

    def compare(self, label: str, gold_label: str) -> bool:
        return equivalent(gold_label, label)
