"""The simulator's own rate-limit arithmetic, written apart from the client's (`pipeline/teachers/limits.py`) on
purpose: the simulator stands in for a provider and judges the client, so a mistake in one must not hide in both.

A provider counts a request's tokens the way OpenAI documents its limits: the prompt (here four characters a
token) plus `n` times the most it may generate (`max_completion_tokens`, else `max_tokens`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import Any

CHARS_PER_TOKEN = 4
DEFAULT_MAX_TOKENS = 256


def text_tokens(text: str) -> int:
    """The simulator's token count of a text: one per four characters, at least one."""
    return max(1, math.floor(len(text) / CHARS_PER_TOKEN))


def charged_tokens(body: Mapping[str, Any]) -> int:
    """What a request counts against a tokens-per-minute limit when it is admitted."""
    messages = body.get("messages")
    prompt = sum(text_tokens(str(m.get("content", ""))) for m in messages if isinstance(m, dict)) \
        if isinstance(messages, list) else 0
    most = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    return prompt + (int(body.get("n") or 1) * int(most))


class Window:
    """A provider's limit: at most `limit` units admitted in any `period` seconds. Admissions are kept as sorted
    times with the running total of units ever admitted, so each question is a binary search; those that left the
    window are skipped by an index and dropped in bulk now and then."""

    def __init__(self, limit: int, period: float = 60.0):
        self.limit, self.period = limit, period
        self.times: list[float] = []
        self.totals: list[int] = []  # totals[i]: units admitted up to and including times[i]
        self.head = 0                # the first admission still inside the window
        self.base = 0                # units admitted before it

    def _expire(self, now: float) -> None:
        self.head = bisect.bisect_right(self.times, now - self.period, lo=self.head)
        if self.head:
            self.base = self.totals[self.head - 1]
        if self.head > 4096 and 2 * self.head > len(self.times):
            del self.times[:self.head], self.totals[:self.head]
            self.head = 0

    @property
    def used(self) -> int:
        return (self.totals[-1] if self.totals else 0) - self.base

    def remaining(self, now: float) -> int:
        self._expire(now)
        return max(0, self.limit - self.used)

    def wait(self, now: float, amount: int) -> float:
        """0 when `amount` fits now, else the seconds until enough admissions have left the window."""
        self._expire(now)
        excess = self.used + amount - self.limit
        if excess <= 0:
            return 0.0
        i = bisect.bisect_left(self.totals, self.base + excess, lo=self.head)  # whose departure frees enough
        return self.times[i] + self.period - now if i < len(self.times) else self.period

    def admit(self, now: float, amount: int) -> None:
        self.times.append(now)
        self.totals.append((self.totals[-1] if self.totals else 0) + amount)
