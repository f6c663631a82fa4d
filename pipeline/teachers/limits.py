"""Rate limits as both sides see them: sliding windows, client-side budgets, adaptive concurrency; and what one
request may cost in tokens and time, from its output limit (`max_completion_tokens`, else `max_tokens`).

The simulator enforces RPM and TPM with `SlidingWindow`; the client paces itself with the same arithmetic
(plus a small safety margin for the time a request spends on the wire), so a well-behaved client sees almost
no 429s and still uses nearly all of the allowed rate.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DEFAULT_MAX_TOKENS = 256    # the output limit assumed for a body that names none
TIMEOUT_FLOOR_S = 120.0     # the default request timeout before any output: queueing and the prompt
SLOW_TOKENS_PER_S = 20.0    # a slow generation rate (one sequence of many on a busy server)


def estimate_tokens(text: str) -> int:
    """About four characters per token: the estimate both the simulator and the client use."""
    return max(1, len(text) // 4)


def max_output_tokens(body: Mapping[str, Any]) -> int:
    """The most tokens one choice of a request may generate: `max_completion_tokens` (what reasoning models take;
    it bounds trace and answer together), else `max_tokens`, else what a server assumes without either."""
    return int(body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS)


def output_budget(body: Mapping[str, Any]) -> int:
    """The most output tokens a whole request may cost (n choices): what the cost cap reserves for it."""
    return int(body.get("n") or 1) * max_output_tokens(body)


def request_tokens(body: Mapping[str, Any]) -> int:
    """Tokens a request may consume, as rate limiters count them: prompt estimate + n * the output limit."""
    prompt = sum(estimate_tokens(str(m.get("content", ""))) for m in body.get("messages", []) if isinstance(m, dict))
    return prompt + output_budget(body)


def request_timeout_s(body: Mapping[str, Any]) -> float:
    """The default timeout of one request: a floor for the queue and the prompt, plus its output limit generated
    at a slow rate, so a 32k-token reasoning answer from a loaded server (~29 min) is waited for while a short
    answer that stalls is given up and retried within minutes. The choices of a request generate side by side,
    so one choice's limit counts, not n times it."""
    return TIMEOUT_FLOOR_S + max_output_tokens(body) / SLOW_TOKENS_PER_S


def parse_reset(value: str | None) -> float | None:
    """`x-ratelimit-reset-*` values such as `1s`, `6m0s`, `20ms`, `0.5` -> seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    return sum(float(n) * _UNIT[u] for n, u in parts) if parts else None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """How long the server asked us to wait: `retry-after-ms`, `retry-after`, else the ratelimit resets."""
    lower = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lower:
        try:
            return float(lower["retry-after-ms"]) / 1000
        except ValueError:
            pass
    if "retry-after" in lower:
        try:
            return float(lower["retry-after"])
        except ValueError:
            pass
    resets = [parse_reset(lower.get(k)) for k in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")]
    resets = [r for r in resets if r is not None]
    return max(resets) if resets else None


class SlidingWindow:
    """At most `limit` units in any `period` seconds."""

    def __init__(self, limit: int, period: float = 60.0):
        self.limit, self.period = limit, period
        self.events: deque[tuple[float, int]] = deque()
        self.total = 0

    def _expire(self, now: float) -> None:
        while self.events and self.events[0][0] <= now - self.period:
            self.total -= self.events.popleft()[1]

    def wait_time(self, now: float, amount: int) -> float:
        """0 when `amount` fits now, else the seconds until enough of the window has expired."""
        self._expire(now)
        if self.total + amount <= self.limit:
            return 0.0
        excess, freed = self.total + amount - self.limit, 0
        for t, a in self.events:
            freed += a
            if freed >= excess:
                return t + self.period - now
        return self.period

    def add(self, now: float, amount: int) -> None:
        self.events.append((now, amount))
        self.total += amount

    def remaining(self, now: float) -> int:
        self._expire(now)
        return max(0, self.limit - self.total)


class RateBudget:
    """Client-side RPM / TPM budget: paced sends plus a sliding-window guard.

    Pacing spreads requests evenly (60 / rpm seconds apart) instead of bursting a whole minute at once; the
    window is a little longer than the server's (`margin_s`) so wire delays never push two requests into the
    same server-side minute. `pause_until` holds every sender after a 429's Retry-After.
    """

    def __init__(self, rpm: int | None = None, tpm: int | None = None, margin_s: float = 0.5):
        self.rpm = SlidingWindow(rpm, 60.0 + margin_s) if rpm else None
        self.tpm = SlidingWindow(tpm, 60.0 + margin_s) if tpm else None
        self.interval = (60.0 + margin_s) / rpm if rpm else 0.0
        self.next_send = 0.0
        self.pause_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        self.pause_until = max(self.pause_until, time.monotonic() + seconds)

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of `tokens` tokens may be sent, then count it."""
        if self.rpm is None and self.tpm is None and self.pause_until <= time.monotonic():
            return  # no budgets and no pause: nothing to wait for
        if self.tpm and tokens > self.tpm.limit:
            tokens = self.tpm.limit  # a request larger than the whole budget still goes, alone
        async with self._lock:  # one waiter at a time keeps sends in order and evenly spaced
            while True:
                now = time.monotonic()
                wait = max(self.pause_until - now, self.next_send - now,
                           self.rpm.wait_time(now, 1) if self.rpm else 0.0,
                           self.tpm.wait_time(now, tokens) if self.tpm else 0.0)
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            if self.rpm:
                self.rpm.add(now, 1)
            if self.tpm:
                self.tpm.add(now, tokens)
            self.next_send = max(now, self.next_send) + self.interval


class AdaptiveConcurrency:
    """How many requests may be in flight: halves on throttling (429, timeouts), climbs back by one per
    `limit` successes (additive increase, multiplicative decrease), within [1, maximum].

    The first slots open in a short ramp: `opening` at once, twice as many every `ramp_s`, up to the limit (512
    slots are all open after 4 ms). Hundreds of connections opened in one go are set up in lockstep, client and
    server alike, so that no request goes out before all of them are connected (a quarter of a second for 512 on
    loopback, far more with TLS); the ramp lets the first requests out at once. Its steps are short: with 10 ms
    steps a run at 0.5 s latency against a server of 128 slots took 2-4 % longer than a plain client's, with 1 ms
    steps it is within 1 % (`bench/scale.py --latency 0.5 --capacity 128 --sizes 2000`).

    Waiters queue in FIFO order and a release wakes exactly as many as there are free slots, so thousands of
    queued requests cost nothing per release (a Condition's notify_all would wake them all every time).
    """

    def __init__(self, maximum: int, cooldown_s: float = 1.0, opening: int = 32, ramp_s: float = 0.001):
        self.maximum = maximum
        self.limit = float(maximum)
        self.in_flight = 0
        self.cooldown_s = cooldown_s
        self._last_cut = 0.0
        self._waiters: deque[asyncio.Future] = deque()
        self._open = min(maximum, opening)  # slots open so far in the ramp
        self._ramp_s = ramp_s
        self._ramping = False

    async def acquire(self) -> None:
        if not self._waiters and self.in_flight < self._allowed():
            self.in_flight += 1
            return
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiters.append(fut)
        if self._open < self.maximum and not self._ramping:
            self._ramping = True
            loop.call_later(self._ramp_s, self._widen)
        try:
            await fut  # the slot is counted for us before we are woken
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release("error")  # woken and cancelled at once: hand the slot on
            raise

    def _allowed(self) -> int:
        return min(int(self.limit), self._open)

    def _widen(self) -> None:
        """One step of the opening ramp (on the loop, every ramp_s until every slot is open)."""
        self._open = min(self.maximum, self._open * 2)
        self._wake()
        if self._open < self.maximum:
            asyncio.get_running_loop().call_later(self._ramp_s, self._widen)

    def release(self, outcome: str = "ok") -> None:
        """`outcome`: ok, throttled (429 / timeout) or error (anything else)."""
        self.in_flight -= 1
        if outcome == "throttled":
            now = time.monotonic()
            if now - self._last_cut >= self.cooldown_s:  # one cut per burst of 429s, not one per 429
                self.limit = max(1.0, self.limit / 2)
                self._last_cut = now
        elif outcome == "ok" and self.limit < self.maximum:
            self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)
        self._wake()

    def _wake(self) -> None:
        allowed = self._allowed()
        while self._waiters and self.in_flight < allowed:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)
