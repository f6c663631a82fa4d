"""The built-in task kinds: multiple_choice, nli, arithmetic, yes_no, exact, and custom label sets."""

from __future__ import annotations

import math
import re
from dataclasses import replace

from stepwise.pipeline.errors import short
from stepwise.pipeline.tasks.base import Task, normalize_text
from stepwise.pipeline.tasks.numbers import UnsafeExpression, canonical_number, evaluate, numbers_equal
from stepwise.pipeline.types import Example

# ── multiple choice ──────────────────────────────────────────────────────────────────────────────────────────────
_INLINE_CHOICES = re.compile(r"answer choices\s*:\s*(.*)$", re.IGNORECASE | re.DOTALL)
_INLINE_OPTION = re.compile(r"\(([A-Za-z])\)\s*(.*?)\s*(?=,?\s*\([A-Za-z]\)|$)", re.DOTALL)
_LETTER_PREFIX = re.compile(r"^\(?([A-Za-z])\)(?:\s+|$)|^\(?([A-Za-z])\)?[.:]?$")
# hedges before a single answer: "most likely E.", "probably (B)", "I think option C"
_HEDGE = re.compile(r"(?:(?:it\s+is|it's|i\s+(?:think|believe|guess|would\s+say)|(?:most|more|very)\s+likely|"
                    r"likely|probably|possibly|perhaps|maybe|definitely|clearly|option|choice)\b[\s:,]*)+",
                    re.IGNORECASE)
# a letter and then its text: "A, fishmonger.", "(C): staying home.", "B. the park", "D - gravity"
_LETTER_LEAD = re.compile(r"\(([A-Za-z])\)\s*[:.,;\-–—]?\s*|([A-Z])(?:\)|[.:,;]|\s+[-–—])\s*")
# another option named after the first: "(A) or (B)", "A and C"
_OTHER_OPTION = re.compile(r"\(([A-Za-z])\)|\b(?:or|and)\s+\(?([A-Z])\b\)?")


def letter(index: int) -> str:
    return chr(ord("a") + index)


class MultipleChoiceTask(Task):
    """Choices given as a list (or inline as `Answer choices: (A) x, (B) y.`); labels are the choice texts.

    The teacher may answer with a letter, `(d) text`, or the text alone. Choices may repeat: labels are
    compared as normalised text, so two identical choices are the same answer.
    """

    kind = "multiple_choice"

    def prepare(self, example: Example) -> Example:
        if example.choices:
            return example
        m = _INLINE_CHOICES.search(example.input)
        if not m:
            return example
        options = _INLINE_OPTION.findall(m.group(1).strip())
        if len(options) < 2:
            return example
        choices = tuple(text.rstrip(".").strip() for _, text in options)
        return replace(example, choices=choices, meta={**example.meta, "choices_inline": True})

    def label_choices(self, example: Example) -> tuple[str, ...] | None:
        return example.choices

    def student_input(self, example: Example) -> str:
        if not example.choices or example.meta.get("choices_inline"):
            return example.input
        options = "\n".join(f"({letter(i)}) {c}" for i, c in enumerate(example.choices))
        return f"{example.input}\nAnswer Choices:\n{options}"

    def normalize_gold(self, gold: str, example: Example) -> str:
        choices = example.choices
        if not choices:
            g = gold.strip().strip("()").upper()
            if len(g) == 1 and g.isalpha():
                return g
            raise ValueError(f"gold {short(gold)} needs choices: give choices_field or inline 'Answer choices:'")
        g = gold.strip().strip("()")
        by_letter = choices[ord(g.lower()) - 97] if len(g) == 1 and g.isalpha() and ord(g.lower()) - 97 < len(choices) else None
        if by_letter is not None and g.isupper():  # "B" / "(B)" is a letter, even when some choice reads "b"
            return by_letter
        wanted = normalize_text(gold)
        for c in choices:
            if normalize_text(c) == wanted:
                return c
        if by_letter is not None:
            return by_letter
        raise ValueError(f"gold {short(gold)} is neither a choice nor a choice letter")

    def extract(self, answer: str, example: Example) -> str | None:
        """A letter, `(d) text`, the text alone, or one choice the answer mentions; failing those, the same after
        a hedge ("most likely E.") or a letter followed by its text ("A, fishmonger."). An answer that names
        several options is no answer."""
        text = answer.strip()
        label = self._read(text, example)
        if label is not None:
            return label
        hedge = _HEDGE.match(text)
        if hedge and hedge.end() < len(text):
            label = self._read(text[hedge.end():].strip(), example, strict=True)
            if label is not None:
                return label
            text = text[hedge.end():].strip()
        return self._letter_lead(text, example)

    def _letter_lead(self, text: str, example: Example) -> str | None:
        """`A, fishmonger.` / `(C): staying home.`: the letter's choice, or the text's when it names another."""
        m = _LETTER_LEAD.match(text)
        if m is None:
            return None
        code = (m.group(1) or m.group(2)).lower()
        rest = text[m.end():]
        if self._names_another(code, rest, example):
            return None
        choices = example.choices
        if not choices:
            return code.upper()
        wanted = normalize_text(rest)
        for c in choices:
            if wanted and normalize_text(c) == wanted:
                return c
        idx = ord(code) - 97
        return choices[idx] if 0 <= idx < len(choices) else None

    @staticmethod
    def _names_another(code: str, rest: str, example: Example) -> bool:
        """Whether the text after a letter names another option: `(B)`, `or C`, or a lone other letter."""
        count = len(example.choices) if example.choices else 26
        others = {(m.group(1) or m.group(2)).lower() for m in _OTHER_OPTION.finditer(rest)}
        lone = rest.strip().strip(".:,;()").lower()
        if len(lone) == 1 and lone.isalpha():
            others.add(lone)
        return any(o != code and ord(o) - 97 < count for o in others)

    def _read(self, text: str, example: Example, strict: bool = False) -> str | None:
        """The reading of an answer before hedges were understood; `strict` refuses `(a) x or (b) y`, which
        that reading took as (a) (kept so for the answers it always read: a corpus does not change under it)."""
        choices = example.choices
        m = _LETTER_PREFIX.match(text)
        by_letter = None
        rest = text
        if m:
            code = (m.group(1) or m.group(2)).lower()
            rest = text[m.end():]
            if not choices:
                return code.upper()
            idx = ord(code) - 97
            if 0 <= idx < len(choices):
                by_letter = choices[idx]
        if not choices:
            return None
        wanted = normalize_text(rest)
        if wanted:
            for c in choices:
                if normalize_text(c) == wanted:
                    return c
        if by_letter is not None:
            return None if strict and self._names_another(code, rest, example) else by_letter
        if wanted:  # the answer text mentions exactly one choice, e.g. "a train station, because ..."
            found = {normalize_text(c) for c in choices if re.search(rf"\b{re.escape(normalize_text(c))}\b", wanted)}
            if len(found) == 1:
                hit = found.pop()
                return next(c for c in choices if normalize_text(c) == hit)
        return None

    def compare(self, label: str, gold_label: str) -> bool:
        return normalize_text(label) == normalize_text(gold_label)


# ── label sets: nli, yes_no, custom ──────────────────────────────────────────────────────────────────────────────
class LabelSetTask(Task):
    """A closed label set with aliases; the first label word in the answer text wins."""

    aliases: dict[str, str] = {}

    def __init__(self, labels: tuple[str, ...], aliases: dict[str, str], answer_pattern: str | None = None):
        super().__init__(answer_pattern)
        self.labels = labels
        self.aliases = {normalize_text(k): v for k, v in aliases.items()}
        for label in labels:
            self.aliases.setdefault(normalize_text(label), label)
        words = sorted(self.aliases, key=len, reverse=True)
        # (?<!\w) / (?!\w) rather than \b, so labels that end in a symbol ("A+") are found too
        self._word = re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in words) + r")(?!\w)")

    def normalize_gold(self, gold: str, example: Example) -> str:
        label = self.aliases.get(normalize_text(gold))
        if label is None:
            raise ValueError(f"gold {short(gold)} is not one of {list(self.labels)}")
        return label

    def extract(self, answer: str, example: Example) -> str | None:
        text = normalize_text(answer)
        exact = self.aliases.get(text)
        if exact is not None:
            return exact
        m = self._word.search(text)
        return self.aliases[m.group(1)] if m else None


NLI_LABELS = ("entailment", "neutral", "contradiction")
NLI_ALIASES = {
    "0": "entailment", "1": "neutral", "2": "contradiction",
    "entails": "entailment", "entailed": "entailment", "entail": "entailment", "yes": "entailment",
    "true": "entailment",
    "it is not possible to tell": "neutral", "not possible to tell": "neutral", "undetermined": "neutral",
    "unknown": "neutral", "maybe": "neutral", "neither": "neutral",
    "contradicts": "contradiction", "contradict": "contradiction", "contradictory": "contradiction",
    "no": "contradiction", "false": "contradiction",
}


class NliTask(LabelSetTask):
    """Natural language inference: entailment / neutral / contradiction (gold may be 0 / 1 / 2)."""

    kind = "nli"

    def __init__(self, answer_pattern: str | None = None):
        super().__init__(NLI_LABELS, NLI_ALIASES, answer_pattern)


class YesNoTask(LabelSetTask):
    """Yes / no questions (gold may be Yes, no, True, false)."""

    kind = "yes_no"

    def __init__(self, answer_pattern: str | None = None):
        super().__init__(("yes", "no"), {"true": "yes", "false": "no"}, answer_pattern)


class CustomTask(LabelSetTask):
    """A label set declared in the job file, with optional aliases and answer pattern."""

    kind = "custom"

    @classmethod
    def from_spec(cls, spec) -> CustomTask:
        return cls(tuple(spec.labels or ()), spec.aliases, spec.answer_pattern)


# ── arithmetic ───────────────────────────────────────────────────────────────────────────────────────────────────
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_EXPR_RUN = re.compile(r"[\d.\s+\-*/()×÷^=x]*\d[\d.\s+\-*/()×÷^=x]*")
_FIRST_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_GSM8K_MARK = "####"
_CALCULATOR = re.compile(r"<<[^<>\n]*>>")


def _balance(expr: str) -> str:
    expr = expr.strip().rstrip(".").strip()
    while expr.count("(") > expr.count(")") and expr.startswith("("):
        expr = expr[1:].strip()
    while expr.count(")") > expr.count("(") and expr.endswith(")"):
        expr = expr[:-1].strip()
    return expr


class ArithmeticTask(Task):
    """Numeric answers; gold may be a number or an equation such as `( 84.0 / 2.0 )` (evaluated safely).

    The teacher may answer `42`, `$1,234.50`, `(84 / 2)` or `84 / 2 = 42`; the value is what is compared.
    """

    kind = "arithmetic"

    def prepare(self, example: Example) -> Example:
        """GSM8K's gold is a solution ending `#### 18`: the number is the gold answer, the solution before it (its
        calculator annotations `<<3*6=18>>` removed) the example's `gold_rationale`."""
        if example.gold is None or _GSM8K_MARK not in example.gold:
            return example
        solution, _, answer = example.gold.rpartition(_GSM8K_MARK)
        rationale = _CALCULATOR.sub("", solution).strip() or None
        return replace(example, gold=answer.strip(), gold_rationale=example.gold_rationale or rationale)

    def normalize_gold(self, gold: str, example: Example) -> str:
        gold = gold.rpartition(_GSM8K_MARK)[2]
        try:
            return canonical_number(evaluate(_THOUSANDS.sub("", gold).replace("$", "")))
        except UnsafeExpression as exc:
            raise ValueError(f"gold {short(gold)} is not a number or an arithmetic expression ({exc})") from None

    def extract(self, answer: str, example: Example) -> str | None:
        text = _THOUSANDS.sub("", answer.split("\n", 1)[0]).replace("$", "")
        for run in _EXPR_RUN.findall(text):
            sides = [_balance(s) for s in run.replace("x", "*").split("=")]
            for side in reversed(sides):
                if not side:
                    continue
                try:
                    return canonical_number(evaluate(side))
                except UnsafeExpression:
                    m = _FIRST_NUMBER.search(side)
                    if m and math.isfinite(value := float(m.group())):
                        return canonical_number(value)
        return None

    def compare(self, label: str, gold_label: str) -> bool:
        try:
            return numbers_equal(float(label), float(gold_label))
        except ValueError:
            return False


# ── exact ────────────────────────────────────────────────────────────────────────────────────────────────────────
class ExactTask(Task):
    """Free-form answers compared as normalised strings (case, white space, quotes, edge punctuation). With
    `ignore_whitespace` white space inside an answer does not count either: "n a o a" is "naoa" (letter
    concatenation tasks, where teachers space the letters out)."""

    kind = "exact"

    def __init__(self, answer_pattern: str | None = None, ignore_whitespace: bool = False):
        super().__init__(answer_pattern)
        self.ignore_whitespace = ignore_whitespace

    @classmethod
    def from_spec(cls, spec) -> ExactTask:
        return cls(spec.answer_pattern, spec.ignore_whitespace)

    def _label(self, text: str) -> str:
        label = normalize_text(text)
        return "".join(label.split()) if self.ignore_whitespace else label

    def normalize_gold(self, gold: str, example: Example) -> str:
        label = self._label(gold)
        if not label:
            raise ValueError("gold answer is empty")
        return label

    def extract(self, answer: str, example: Example) -> str | None:
        label = self._label(answer.split("\n", 1)[0])
        return label or None
