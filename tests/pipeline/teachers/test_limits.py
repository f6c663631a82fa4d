"""Rate-limit arithmetic shared by the simulator and the engine: windows, reset headers, pacing, concurrency."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from stepwise.pipeline.teachers.limits import (
    AdaptiveConcurrency,
    RateBudget,
    SlidingWindow,
    parse_reset,
    retry_after_seconds,
)

# ── SlidingWindow ───────────────────────────────────────────────────────────────────────────────────────────────


def test_window_admits_up_to_the_limit_then_waits_for_the_oldest_event_to_expire():
    w = SlidingWindow(3, period=10.0)
    for t in (0.0, 1.0, 2.0):
        assert w.wait_time(t, 1) == 0.0
        w.add(t, 1)
    assert w.remaining(3.0) == 0
    assert w.wait_time(3.0, 1) == pytest.approx(7.0)  # the event at t=0 leaves at t=10
    assert w.wait_time(5.0, 2) == pytest.approx(6.0)  # two must leave: the one at t=1 goes at t=11


def test_window_expires_events_exactly_one_period_old():
    w = SlidingWindow(2, period=10.0)
    w.add(0.0, 1)
    w.add(4.0, 1)
    assert w.remaining(9.999) == 0
    assert w.remaining(10.0) == 1  # the t=0 event is out of the window at t=10
    assert w.wait_time(10.0, 1) == 0.0
    assert w.remaining(14.0) == 2


def test_window_counts_amounts_not_events():
    w = SlidingWindow(100, period=60.0)
    w.add(0.0, 70)
    assert w.remaining(1.0) == 30
    assert w.wait_time(1.0, 30) == 0.0
    assert w.wait_time(1.0, 31) == pytest.approx(59.0)
    w.add(2.0, 20)
    assert w.remaining(3.0) == 10
    assert w.wait_time(3.0, 50) == pytest.approx(57.0)  # the 70 at t=0 must leave; the 20 may stay


# ── reset and retry-after headers ───────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(("text", "seconds"), [
    ("1s", 1.0),
    ("6m0s", 360.0),
    ("20ms", 0.02),
    ("0.5", 0.5),
    ("2", 2.0),
    ("1.5s", 1.5),
    ("1m30s", 90.0),
    ("1h2m3s", 3723.0),
    ("  7s ", 7.0),
    ("0.250s", 0.25),
])
def test_parse_reset_reads_durations(text, seconds):
    assert parse_reset(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "soon", "later please", "s", "ms"])
def test_parse_reset_gives_none_for_garbage(text):
    assert parse_reset(text) is None


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after-ms": "250", "retry-after": "3"}, 0.25),          # the precise one wins
    ({"Retry-After-Ms": "1500"}, 1.5),                                # header names are case-insensitive
    ({"Retry-After": "2"}, 2.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"retry-after-ms": "bad", "retry-after": "4"}, 4.0),             # an unreadable one is skipped
    ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}, 360.0),  # the longer reset
    ({"X-RateLimit-Reset-Requests": "20ms"}, 0.02),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT", "x-ratelimit-reset-tokens": "3s"}, 3.0),
])
def test_retry_after_prefers_ms_then_seconds_then_resets(headers, seconds):
    assert retry_after_seconds(headers) == pytest.approx(seconds)


@pytest.mark.parametrize("headers", [{}, {"content-type": "application/json"}, {"x-ratelimit-reset-requests": "?"}])
def test_retry_after_is_none_without_a_hint(headers):
    assert retry_after_seconds(headers) is None


# ── RateBudget ──────────────────────────────────────────────────────────────────────────────────────────────────


def test_rate_budget_paces_sends_evenly():
    async def run() -> list[float]:
        budget = RateBudget(rpm=600)
        times = []
        for _ in range(6):
            await budget.acquire(10)
            times.append(time.monotonic())
        return times

    times = asyncio.run(run())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    interval = 60.5 / 600  # the window carries a 0.5 s safety margin
    assert all(interval * 0.9 <= g <= interval + 0.15 for g in gaps), gaps  # never early; late only under load
    assert times[-1] - times[0] >= 5 * interval * 0.95


def test_rate_budget_paces_concurrent_senders_in_turn():
    async def run() -> list[float]:
        budget = RateBudget(rpm=1200)
        start = time.monotonic()
        stamps: list[float] = []

        async def one() -> None:
            await budget.acquire(1)
            stamps.append(time.monotonic() - start)

        await asyncio.gather(*(one() for _ in range(8)))
        return stamps

    stamps = sorted(asyncio.run(run()))
    interval = 60.5 / 1200
    assert stamps[0] < 0.05
    assert stamps[-1] >= 7 * interval * 0.95  # eight senders at once still go one interval apart
    assert stamps[-1] < 7 * interval + 0.5


def test_rate_budget_without_limits_never_waits():
    async def run() -> float:
        budget = RateBudget()
        start = time.monotonic()
        for _ in range(1000):
            await budget.acquire(10_000)
        return time.monotonic() - start

    assert asyncio.run(run()) < 0.2


def test_rate_budget_pause_holds_every_sender():
    async def run() -> list[float]:
        budget = RateBudget()
        start = time.monotonic()
        budget.pause(0.3)
        budget.pause(0.1)  # a shorter pause never shortens a longer one
        out = []

        async def one() -> None:
            await budget.acquire(1)
            out.append(time.monotonic() - start)

        await asyncio.gather(one(), one(), one())
        return out

    for t in asyncio.run(run()):
        assert 0.28 <= t < 1.0


def test_rate_budget_token_window_blocks_until_room():
    async def run() -> None:
        budget = RateBudget(tpm=100)
        await asyncio.wait_for(budget.acquire(500), 0.5)  # larger than the whole budget: still goes, alone
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(budget.acquire(1), 0.3)  # the window is full for the next minute

    asyncio.run(run())


def test_rate_budget_request_window_blocks_after_rpm_requests():
    async def run() -> None:
        budget = RateBudget(rpm=2, margin_s=0.0)
        budget.interval = 0.0  # window only: two at once, then nothing for a minute
        await asyncio.wait_for(budget.acquire(1), 0.2)
        await asyncio.wait_for(budget.acquire(1), 0.2)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(budget.acquire(1), 0.3)

    asyncio.run(run())


# ── AdaptiveConcurrency ─────────────────────────────────────────────────────────────────────────────────────────


def test_concurrency_halves_once_per_cooldown():
    async def run() -> None:
        slots = AdaptiveConcurrency(8, cooldown_s=60.0)
        for _ in range(8):
            await slots.acquire()
        slots.release("throttled")
        assert slots.limit == 4.0
        slots.release("throttled")  # same burst of 429s: no second cut
        slots.release("throttled")
        assert slots.limit == 4.0
        assert slots.in_flight == 5

    asyncio.run(run())


def test_concurrency_cuts_again_after_the_cooldown():
    async def run() -> None:
        slots = AdaptiveConcurrency(8, cooldown_s=0.1)
        for _ in range(3):
            await slots.acquire()
        slots.release("throttled")
        assert slots.limit == 4.0
        await asyncio.sleep(0.15)
        slots.release("throttled")
        assert slots.limit == 2.0

    asyncio.run(run())


def test_concurrency_never_below_one():
    async def run() -> None:
        slots = AdaptiveConcurrency(8, cooldown_s=0.0)
        limits = []
        for _ in range(6):
            await slots.acquire()
            slots.release("throttled")
            limits.append(slots.limit)
        assert limits == [4.0, 2.0, 1.0, 1.0, 1.0, 1.0]
        await asyncio.wait_for(slots.acquire(), 0.2)  # one slot is always there
        assert slots.in_flight == 1

    asyncio.run(run())


def test_concurrency_climbs_back_additively_and_stops_at_the_maximum():
    async def run() -> None:
        slots = AdaptiveConcurrency(8, cooldown_s=60.0)
        await slots.acquire()
        slots.release("throttled")
        assert slots.limit == 4.0
        seen = []
        for _ in range(60):
            await slots.acquire()
            slots.release("ok")
            seen.append(slots.limit)
        # +1/limit per success (about `limit` successes gain one slot), capped at the maximum
        expected, x = [], 4.0
        for _ in range(60):
            x = min(8.0, x + 1.0 / x)
            expected.append(x)
        assert seen == pytest.approx(expected)
        assert int(seen[3]) == 4 and int(seen[4]) == 5
        assert seen.index(8.0) in range(20, 28)  # from 4 to 8 takes about (8*8 - 4*4) / 2 = 24 successes
        assert seen[-1] == 8.0
        # errors neither cut nor grow
        await slots.acquire()
        slots.release("error")
        assert slots.limit == 8.0 and slots.in_flight == 0

    asyncio.run(run())


def test_concurrency_holds_at_most_limit_in_flight():
    async def run() -> None:
        slots = AdaptiveConcurrency(3)
        for _ in range(3):
            await slots.acquire()
        waiter = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        assert slots.in_flight == 3
        slots.release("ok")
        await asyncio.sleep(0)
        assert waiter.done() and slots.in_flight == 3

    asyncio.run(run())


def test_concurrency_does_not_wake_waiters_past_a_lowered_limit():
    async def run() -> None:
        slots = AdaptiveConcurrency(4, cooldown_s=60.0)
        for _ in range(4):
            await slots.acquire()
        waiters = [asyncio.ensure_future(slots.acquire()) for _ in range(3)]
        await asyncio.sleep(0)
        slots.release("throttled")  # limit 2, 3 in flight
        slots.release("ok")         # 2 in flight: still at the limit
        await asyncio.sleep(0.01)
        assert not any(w.done() for w in waiters)
        slots.release("ok")         # 1 in flight: one waiter may go
        await asyncio.sleep(0.01)
        assert [w.done() for w in waiters] == [True, False, False]
        assert slots.in_flight == 2
        for w in waiters[1:]:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)

    asyncio.run(run())


def test_concurrency_wakes_waiters_in_fifo_order():
    async def run() -> list[int]:
        slots = AdaptiveConcurrency(1)
        await slots.acquire()
        order: list[int] = []

        async def waiter(i: int) -> None:
            await slots.acquire()
            order.append(i)
            await asyncio.sleep(0.01)
            slots.release("ok")

        tasks = []
        for i in range(6):
            tasks.append(asyncio.ensure_future(waiter(i)))
            await asyncio.sleep(0)  # queue them in this order
        slots.release("ok")
        await asyncio.wait_for(asyncio.gather(*tasks), 2)
        assert slots.in_flight == 0
        return order

    assert asyncio.run(run()) == [0, 1, 2, 3, 4, 5]


def test_cancelled_waiter_does_not_leak_a_slot():
    async def run() -> None:
        slots = AdaptiveConcurrency(1)
        await slots.acquire()
        gone = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        slots.release("ok")
        assert slots.in_flight == 0
        await asyncio.wait_for(slots.acquire(), 0.2)  # the slot was not handed to the cancelled waiter
        assert slots.in_flight == 1

    asyncio.run(run())


def test_waiter_woken_and_cancelled_at_once_hands_its_slot_on():
    async def run() -> None:
        slots = AdaptiveConcurrency(1)
        await slots.acquire()
        first = asyncio.ensure_future(slots.acquire())
        second = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        slots.release("ok")  # the slot is counted for `first`...
        first.cancel()       # ...which is cancelled before it runs
        await asyncio.gather(first, return_exceptions=True)
        assert first.cancelled()
        await asyncio.wait_for(second, 0.5)  # the slot went on to the next waiter
        assert slots.in_flight == 1
        slots.release("ok")
        assert slots.in_flight == 0

    asyncio.run(run())


def test_concurrency_opens_in_a_ramp_then_holds_every_slot():
    """The first `opening` slots are open at once, then twice as many every ramp_s, up to the maximum."""
    async def run() -> None:
        slots = AdaptiveConcurrency(100, opening=8, ramp_s=0.02)
        waiters = [asyncio.ensure_future(slots.acquire()) for _ in range(100)]
        await asyncio.sleep(0)
        assert slots.in_flight == 8  # the opening: the rest wait for the ramp
        seen = [slots.in_flight]
        for _ in range(6):
            await asyncio.sleep(0.025)
            seen.append(slots.in_flight)
        assert seen[-1] == 100 and all(w.done() for w in waiters)
        assert seen == sorted(seen) and 8 < seen[1] <= 32  # widened step by step, not in one go
        for _ in range(100):
            slots.release("ok")
        # once open, a burst is admitted at once
        for _ in range(100):
            await asyncio.wait_for(slots.acquire(), 0.01)
        assert slots.in_flight == 100

    asyncio.run(run())


def test_concurrency_ramp_never_opens_past_a_lowered_limit():
    async def run() -> None:
        slots = AdaptiveConcurrency(64, cooldown_s=60.0, opening=4, ramp_s=0.01)
        for _ in range(4):
            await slots.acquire()
        slots.release("throttled")  # limit 32 while the ramp is still widening
        waiters = [asyncio.ensure_future(slots.acquire()) for _ in range(60)]
        await asyncio.sleep(0.1)
        assert slots.limit == 32.0 and slots.in_flight == 32
        for w in waiters:
            w.cancel()

    asyncio.run(run())
