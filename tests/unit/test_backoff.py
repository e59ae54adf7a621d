"""Capped exponential backoff: bounded for every attempt and jitter, growing until the cap."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sendrail.backoff import backoff_s

attempts = st.integers(min_value=-5, max_value=10**6)
jitters = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
bases_s = st.floats(min_value=0.001, max_value=60.0)
maxima_s = st.floats(min_value=0.001, max_value=3600.0)


def ceiling_s(attempt: int, base_s: float, max_s: float) -> float:
    return min(max_s, base_s * 2.0 ** min(max(0, attempt - 1), 64))


@given(attempt=attempts, base_s=bases_s, max_s=maxima_s, jitter=jitters)
@example(attempt=1025, base_s=0.5, max_s=60.0, jitter=0.5)  # a mailbox down for half a day
@example(attempt=5000, base_s=1.0, max_s=300.0, jitter=0.0)
def test_wait_is_between_half_and_all_of_the_capped_ceiling(
    attempt: int, base_s: float, max_s: float, jitter: float
) -> None:
    wait_s = backoff_s(attempt, base_s=base_s, max_s=max_s, jitter=jitter)
    ceiling = ceiling_s(attempt, base_s, max_s)
    assert math.isfinite(wait_s)
    assert ceiling / 2 <= wait_s <= ceiling
    assert wait_s <= max_s


@given(attempt=st.integers(min_value=1, max_value=200), base_s=bases_s, max_s=maxima_s)
def test_more_jitter_never_waits_less(attempt: int, base_s: float, max_s: float) -> None:
    waits = [backoff_s(attempt, base_s=base_s, max_s=max_s, jitter=j) for j in (0.0, 0.3, 0.999)]
    assert waits == sorted(waits)


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 0.999])
def test_wait_doubles_until_the_cap_then_stays(jitter: float) -> None:
    waits = [backoff_s(a, base_s=1.0, max_s=30.0, jitter=jitter) for a in range(1, 12)]
    share = 0.5 + jitter / 2
    assert waits == pytest.approx([share * c for c in (1, 2, 4, 8, 16, 30, 30, 30, 30, 30, 30)])


def test_first_retry_waits_about_the_base() -> None:
    assert backoff_s(1, base_s=2.0, max_s=60.0, jitter=0.0) == pytest.approx(1.0)
    assert backoff_s(1, base_s=2.0, max_s=60.0, jitter=0.999) == pytest.approx(2.0, rel=1e-3)


@pytest.mark.parametrize("attempt", [0, -1, -100])
def test_attempts_before_the_first_wait_like_the_first(attempt: int) -> None:
    assert backoff_s(attempt, base_s=3.0, max_s=60.0, jitter=0.5) == backoff_s(
        1, base_s=3.0, max_s=60.0, jitter=0.5)


@given(attempt=st.integers(min_value=1, max_value=200), base_s=bases_s, max_s=maxima_s,
       jitter=jitters)
def test_wait_never_shrinks_with_more_attempts(attempt: int, base_s: float, max_s: float,
                                              jitter: float) -> None:
    assert backoff_s(attempt + 1, base_s=base_s, max_s=max_s, jitter=jitter) >= backoff_s(
        attempt, base_s=base_s, max_s=max_s, jitter=jitter)
