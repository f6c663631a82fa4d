"""The simulator's rate-limit arithmetic (`pipeline/sim/limits.py`) is written apart from the client's
(`pipeline/teachers/limits.py`) so that a mistake in one cannot hide in both. Written apart, they must still agree:
a provider and a client that counted differently would fight (429s the client never expected)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stepwise.pipeline.sim.limits import Window, charged_tokens, text_tokens
from stepwise.pipeline.teachers.limits import SlidingWindow, estimate_tokens, request_tokens

steps = st.lists(st.tuples(st.floats(0.0, 3.0), st.integers(1, 40)), min_size=1, max_size=300)


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(1, 200), period=st.floats(0.5, 20.0), steps=steps)
def test_the_simulators_window_answers_as_the_clients_does(limit, period, steps):
    ours, theirs = Window(limit, period), SlidingWindow(limit, period)
    now = 0.0
    for gap, amount in steps:
        now += gap
        assert ours.wait(now, amount) == theirs.wait_time(now, amount)
        assert ours.remaining(now) == theirs.remaining(now)
        if ours.wait(now, amount) == 0:
            ours.admit(now, amount)
            theirs.add(now, amount)


@given(st.text(max_size=400))
def test_a_text_counts_the_same_tokens_on_both_sides(text):
    assert text_tokens(text) == estimate_tokens(text)


@given(st.lists(st.text(max_size=200), max_size=5), st.integers(1, 4), st.integers(1, 4096),
       st.sampled_from(["max_tokens", "max_completion_tokens"]))
def test_a_request_is_charged_what_the_client_reserves(contents, n, most, field):
    body = {"messages": [{"role": "user", "content": c} for c in contents], "n": n, field: most}
    assert charged_tokens(body) == request_tokens(body)


def test_a_long_window_drops_what_left_it():
    window = Window(10, 1.0)
    for i in range(10_000):  # far more admissions than the window ever holds at once
        assert window.wait(float(i), 10) == 0.0
        window.admit(float(i), 10)
    assert window.remaining(9_999.5) == 0 and window.wait(9_999.5, 1) == 0.5  # the last one leaves at 10,000
    assert window.remaining(10_000.0) == 10
    assert len(window.times) < 10_000  # dropped in bulk
