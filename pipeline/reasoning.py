"""Split a reasoning model's answer into its thinking trace and the content that follows it.

Reasoning models put their trace in one of four places, and the teacher block's `reasoning` says which to expect:

    auto       the server's own field (`Completion.reasoning`) when it sent one; else gpt-oss harmony channels
               that came through raw; else an inline `<think>…</think>` block; else, when only the closing tag
               appears, the text before it (a prefilled trace); else no trace
    inline     the trace is tagged in the content; an opening tag without its closing one is an unfinished trace
               (a closing tag alone still ends a trace: a template opened it)
    prefilled  the chat template opened the trace (R1-Distill, QwQ): the text starts inside it and only the
               closing tag appears; no closing tag means the trace never finished
    none       the text is the content, never split

A server's separate field is the trace in every style: the server has split it already. Texts run to tens of
thousands of characters, so the tags are found with `str.find`, never with a regular expression over the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stepwise.pipeline.types import Completion

TraceStyle = Literal["auto", "inline", "prefilled", "none"]
THINK_TAGS = ("<think>", "</think>")

# gpt-oss (harmony format) decoded without skipping special tokens:
#   <|channel|>analysis<|message|>…<|end|><|start|>assistant<|channel|>final<|message|>…<|return|>
_CHANNEL, _MESSAGE = "<|channel|>", "<|message|>"
_MESSAGE_ENDS = ("<|end|>", "<|return|>", "<|call|>", "<|start|>")
# ... and decoded with special tokens skipped: "analysis…assistantfinal…"
_BARE_ANALYSIS, _BARE_FINAL = "analysis", "assistantfinal"


@dataclass(frozen=True, slots=True)
class Trace:
    """A completion split in two: the thinking trace (None when there is none) and the content after it.

    `unfinished` is an opened trace that never closed: `content` is then empty and nothing in it may be read as
    an answer; `missing` names what never came (the closing tag, harmony's final channel) for the reject detail."""

    reasoning: str | None
    content: str
    unfinished: bool = False
    missing: str | None = None


def split_trace(completion: Completion, style: TraceStyle = "auto",
                tags: tuple[str, str] = THINK_TAGS) -> Trace:
    """The trace and content of one completion, by the teacher's trace style and tag pair."""
    text = completion.text or ""
    if completion.reasoning:  # the server split it: its field is the trace, whatever the style
        return Trace(completion.reasoning.strip(), text.strip())
    return split_text(text, style, tags)


def split_text(text: str, style: TraceStyle = "auto", tags: tuple[str, str] = THINK_TAGS) -> Trace:
    """The trace and content of a raw text (see the module docstring for the styles)."""
    if style == "none":
        return Trace(None, text)
    if style == "inline":
        return _inline(text, tags, opened_anywhere=True) or _closing_only(text, tags) or Trace(None, text)
    if style == "prefilled":
        return _prefilled(text, tags)
    if tags[0] not in text and tags[1] not in text and _CHANNEL not in text and not text.startswith(_BARE_ANALYSIS):
        return Trace(None, text)  # the common case without a trace, decided at once
    return _harmony(text) or _inline(text, tags, opened_anywhere=False) or _closing_only(text, tags) or \
        Trace(None, text)


def _inline(text: str, tags: tuple[str, str], opened_anywhere: bool) -> Trace | None:
    """`<think>trace</think>content`; an opening tag with no closing tag after it is an unfinished trace (in
    `auto` only when the text starts with it: a tag further on may be quoted, not opened)."""
    open_tag, close_tag = tags
    start = text.find(open_tag)
    if start < 0:
        return None
    end = text.find(close_tag, start + len(open_tag))
    if end < 0:
        if opened_anywhere or not text[:start].strip():
            return Trace(text[start + len(open_tag):].strip(), "", unfinished=True, missing=close_tag)
        return None
    close = text.find(close_tag)
    if close < start:  # a closing tag before the opening one: the text started inside the trace
        return None
    return Trace(text[start + len(open_tag):end].strip(), text[end + len(close_tag):].strip())


def _prefilled(text: str, tags: tuple[str, str]) -> Trace:
    """The text starts inside the trace; the first closing tag ends it (an opening tag echoed at the very start
    is dropped)."""
    open_tag, close_tag = tags
    end = text.find(close_tag)
    body_start = 0
    stripped = text.lstrip()
    if stripped.startswith(open_tag):
        body_start = len(text) - len(stripped) + len(open_tag)
    if end < body_start:
        return Trace(text[body_start:].strip(), "", unfinished=True, missing=close_tag)
    return Trace(text[body_start:end].strip(), text[end + len(close_tag):].strip())


def _closing_only(text: str, tags: tuple[str, str]) -> Trace | None:
    """`auto` seeing a closing tag and no opening one before it: a prefilled trace."""
    end = text.find(tags[1])
    if end < 0:
        return None
    return Trace(text[:end].strip(), text[end + len(tags[1]):].strip())


def _harmony(text: str) -> Trace | None:
    """gpt-oss channels: `analysis` (and `commentary`) messages are the trace, the last `final` message the
    content; analysis with no final message is an unfinished trace."""
    if _CHANNEL not in text:
        return _bare_harmony(text)
    thoughts: list[str] = []
    final: str | None = None
    pos = text.find(_CHANNEL)
    while pos >= 0:
        head = pos + len(_CHANNEL)
        body = text.find(_MESSAGE, head)
        if body < 0:
            break
        channel = text[head:body].split(None, 1)[0] if text[head:body].strip() else ""
        body += len(_MESSAGE)
        nxt = text.find(_CHANNEL, body)
        stop = len(text) if nxt < 0 else nxt
        for marker in _MESSAGE_ENDS:
            cut = text.find(marker, body, stop)
            if cut >= 0:
                stop = cut
        message = text[body:stop].strip()
        if channel == "final":
            final = message
        elif message:
            thoughts.append(message)
        pos = nxt
    if final is None and not thoughts:
        return None
    reasoning = "\n\n".join(thoughts) or None
    if final is None:
        return Trace(reasoning, "", unfinished=True, missing="harmony's final channel")
    return Trace(reasoning, final)


def _bare_harmony(text: str) -> Trace | None:
    """Harmony with its special tokens decoded away: `analysis<trace>assistantfinal<content>`."""
    if not text.startswith(_BARE_ANALYSIS):
        return None
    cut = text.find(_BARE_FINAL)
    if cut < 0:
        return None
    return Trace(text[len(_BARE_ANALYSIS):cut].strip(), text[cut + len(_BARE_FINAL):].strip())
