"""LaTeX answers: the last `\\boxed{…}` of a text, and a plain-text reading of a LaTeX answer for non-math kinds.

Found with `str.rfind` and a brace counter, never a regular expression over the whole text: reasoning outputs run
to tens of thousands of characters and a box is usually near the end.
"""

from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_MAX_BOXES = 64  # boxes tried from the end before giving up (each malformed one is skipped)
_MAX_BOX_CHARS = 2000  # a box longer than this is not an answer


def _closing_brace(text: str, start: int) -> int:
    """Index of the brace closing the one at `start`, or -1; `\\{` and `\\}` are escaped braces."""
    depth = 0
    i, end = start, min(len(text), start + _MAX_BOX_CHARS)
    while i < end:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _box_at(text: str, pos: int, command: str) -> tuple[int, str] | None:
    """(end, content) of the box whose command starts at `pos`: `\\boxed{…}` or `\\boxed 5`; None if malformed."""
    i = pos + len(command)
    if i < len(text) and (text[i].isalpha()):
        return None  # \boxedx is another command
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        close = _closing_brace(text, i)
        if close < 0:
            return None
        return close + 1, text[i + 1:close].strip()
    j = i
    while j < len(text) and not text[j].isspace() and text[j] not in "$}":
        j += 1
    if j == i:  # `\boxed` followed by nothing it could box
        return None
    return j, text[i:j].rstrip(".,;")


def find_last_box(text: str) -> tuple[int, int, str] | None:
    """(start, end, content) of the last well-formed, non-empty `\\boxed{…}` / `\\fbox{…}` / `\\boxed x` in the
    text, or None. Nested braces are counted; a malformed or empty box is skipped for the one before it."""
    if "\\" not in text:
        return None
    limit = len(text)
    for _ in range(_MAX_BOXES):
        pos, command = max((text.rfind(c, 0, limit), c) for c in _BOX_COMMANDS)
        if pos < 0:
            return None
        found = _box_at(text, pos, command)
        if found is not None and found[1]:
            return pos, found[0], found[1]
        limit = pos
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last box in the text (a reference solution's answer), or None."""
    found = find_last_box(text)
    return found[2] if found else None


# ── LaTeX to plain text (answers of non-math kinds given in a box: `\text{(B)}`, `\$18`, `1{,}000`) ───────────────
_TEXT_COMMANDS = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_REPLACEMENTS = (("\\$", "$"), ("\\%", "%"), ("{,}", ","), ("\\!", ""), ("\\,", " "), ("\\;", " "), ("\\ ", " "),
                 ("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("^\\circ", ""), ("^{\\circ}", ""),
                 ("\\left", ""), ("\\right", ""), ("\\(", ""), ("\\)", ""), ("\\[", ""), ("\\]", ""))


def plain_answer(latex: str) -> str:
    """A LaTeX answer as plain text: text commands unwrapped, `\\frac{a}{b}` as `(a)/(b)`, escapes and spacing
    commands removed, `$` delimiters dropped. Short inputs only (answers, not documents)."""
    text = latex[:_MAX_BOX_CHARS]
    for _ in range(3):  # nested \text{\textbf{..}}
        text = _TEXT_COMMANDS.sub(r"\1", text)
    text = _FRAC.sub(r"(\1)/(\2)", text)
    for old, new in _REPLACEMENTS:
        text = text.replace(old, new)
    if text.count("$") >= 2:  # math delimiters, not a currency sign
        text = text.replace("$", "")
    return text.strip()
