"""The send ledger: time order, millisecond memory, counting, pruning and its stored form."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sendrail.throttle import SendLedger
from sendrail.throttle.ledger import instant_us, remembered_ms

DAY_S = 86_400.0

sends = st.lists(
    st.tuples(st.integers(min_value=0, max_value=5_000), st.integers(min_value=1, max_value=1_000)),
    max_size=60,
).map(lambda steps: _accumulate(steps))
"""(Unix ms, recipients) in time order, several often in the same millisecond."""


def _accumulate(steps: list[tuple[int, int]], start_ms: int = 1_718_000_000_000) -> list[tuple[int, int]]:
    at_ms, out = start_ms, []
    for gap_ms, recipients in steps:
        at_ms += gap_ms
        out.append((at_ms, recipients))
    return out


def ledger_of(entries: list[tuple[int, int]]) -> SendLedger:
    return SendLedger.from_sends([at for at, _ in entries], [r for _, r in entries])


@pytest.mark.parametrize(("at_s", "at_ms"), [
    (0.0, 0),
    (1.1, 1_100),            # 1.1 is a hair above 1.1 as a float; still 1,100 ms
    (0.1 + 0.2, 300),        # 0.30000000000000004
    (0.7 - 0.4, 300),        # 0.29999999999999993
    (5.0004, 5_001),         # a fraction of a millisecond is remembered as the next one
    (5.000_000_4, 5_000),    # below a microsecond is float noise
    (-0.0015, -1),
    (1_718_000_000.123, 1_718_000_000_123),
])
def test_a_send_is_remembered_at_the_next_whole_millisecond(at_s: float, at_ms: int) -> None:
    ledger = SendLedger()
    ledger.record(at_s, 1)
    assert ledger.sends_at_ms == [at_ms]
    assert remembered_ms(instant_us(at_s)) == at_ms


def test_sends_are_recorded_in_time_order() -> None:
    ledger = SendLedger()
    ledger.record(10.0, 1)
    ledger.record(10.0, 2)
    ledger.record(9.9999, 1)  # the same millisecond as the last: still in order
    with pytest.raises(ValueError, match="time order"):
        ledger.record(9.998, 1)
    assert list(ledger.entries()) == [(10_000, 1), (10_000, 2), (10_000, 1)]


@pytest.mark.parametrize("recipients", [0, -1, True])
def test_a_send_has_at_least_one_recipient(recipients: int) -> None:
    with pytest.raises(ValueError, match="recipient"):
        SendLedger().record(1.0, recipients)


def test_a_time_must_be_finite() -> None:
    with pytest.raises(ValueError, match="finite"):
        SendLedger().record(float("nan"), 1)


def test_count_is_over_the_half_open_interval() -> None:
    ledger = ledger_of([(1_000, 1), (2_000, 3), (2_000, 5), (3_000, 2)])
    assert ledger.count("messages", 1.0, 3.0) == 3      # (1, 3]: not the send at 1
    assert ledger.count("recipients", 1.0, 3.0) == 10
    assert ledger.count("messages", 0.999, 2.0) == 3
    assert ledger.count("recipients", 2.0, 2.999) == 0
    assert ledger.count("messages", 3.0, 1.0) == 0      # an empty interval
    assert ledger.count("messages", 3.0 - 1.0 - 0.1 - 0.9, 3.0) == 3  # 1.0000000000000002 reads as 1 s


def test_prune_drops_what_has_left_the_window_and_nothing_else() -> None:
    ledger = ledger_of([(0, 1), (5_000, 1), (10_000, 1)])
    ledger.prune(10.0, 10.0)        # the send at 0 leaves a 10 s window at 10 s exactly
    assert ledger.sends_at_ms == [5_000, 10_000]
    ledger.prune(14.999, 10.0)
    assert ledger.sends_at_ms == [5_000, 10_000]
    ledger.prune(15.0, 10.0)
    assert ledger.sends_at_ms == [10_000]


def test_prune_keeps_running_totals_right() -> None:
    ledger = ledger_of([(0, 4), (1_000, 2), (2_000, 7)])
    ledger.prune(1.5, 1.0)
    assert list(ledger.entries()) == [(1_000, 2), (2_000, 7)]
    assert ledger.count("recipients", 0.0, 2.0) == 9
    assert ledger.newest_to_drop_ms("recipients", 7) == 1_000


@given(entries=sends, now_ms=st.integers(min_value=1_718_000_000_000, max_value=1_718_000_400_000),
       keep_ms=st.integers(min_value=1, max_value=200_000), sub_ms_us=st.integers(0, 999))
@settings(max_examples=300)
def test_prune_never_drops_a_send_still_inside_the_window(entries: list[tuple[int, int]], now_ms: int,
                                                          keep_ms: int, sub_ms_us: int) -> None:
    now_us = now_ms * 1000 + sub_ms_us
    ledger = ledger_of(entries)
    ledger.prune(now_us / 1e6, keep_ms / 1000)
    # inside a window of w at t while t < T + w (to the microsecond)
    inside = [(at, r) for at, r in entries if now_us < (at + keep_ms) * 1000]
    assert list(ledger.entries()) == inside


@given(entries=sends)
@settings(max_examples=200)
def test_the_compact_form_round_trips_exactly_through_json(entries: list[tuple[int, int]]) -> None:
    ledger = ledger_of(entries)
    stored = json.dumps(ledger.to_compact())
    again = SendLedger.from_compact(json.loads(stored))
    assert again == ledger
    assert list(again.entries()) == entries


@given(entries=sends, unit=st.sampled_from(["messages", "recipients"]),
       since_ms=st.integers(1_718_000_000_000, 1_718_000_300_000), span_ms=st.integers(0, 300_000))
@settings(max_examples=200)
def test_count_matches_a_plain_sum(entries: list[tuple[int, int]], unit: str, since_ms: int,
                                   span_ms: int) -> None:
    until_ms = since_ms + span_ms
    expected = sum(1 if unit == "messages" else r for at, r in entries if since_ms < at <= until_ms)
    assert ledger_of(entries).count(unit, since_ms / 1000, until_ms / 1000) == expected  # type: ignore[arg-type]


@given(entries=sends, unit=st.sampled_from(["messages", "recipients"]), keep=st.integers(0, 3_000))
@settings(max_examples=200)
def test_newest_to_drop_leaves_the_largest_run_of_newest_sends_that_fits(
        entries: list[tuple[int, int]], unit: str, keep: int) -> None:
    units = [1 if unit == "messages" else r for _, r in entries]
    first_kept = next(k for k in range(len(entries) + 1) if sum(units[k:]) <= keep)
    expected = entries[first_kept - 1][0] if first_kept > 0 else None
    assert ledger_of(entries).newest_to_drop_ms(unit, keep) == expected  # type: ignore[arg-type]


def test_a_full_day_of_sends_stores_small() -> None:
    """Exchange Online's 10,000 recipients a day, one every 8.64 s: a few bytes a send."""
    ledger = SendLedger()
    for i in range(10_000):
        ledger.record(1_718_000_000.0 + i * 8.64, 1)
    stored = json.dumps(ledger.to_compact(), separators=(",", ":"))
    assert len(stored) < 10_000 * 8
    assert SendLedger.from_compact(json.loads(stored)) == ledger


@pytest.mark.parametrize("compact", [
    {},
    {"at_ms": [1, 2]},
    {"at_ms": [1, 2], "recipients": [1]},
    {"at_ms": [1, -2], "recipients": [1, 1]},
    {"at_ms": [1, 2.5], "recipients": [1, 1]},
    {"at_ms": [1, 2], "recipients": [1, 0]},
    {"at_ms": [1, True], "recipients": [1, 1]},
    {"at_ms": "1,2", "recipients": [1, 1]},
    [],
])
def test_a_damaged_compact_form_is_refused(compact: object) -> None:
    with pytest.raises(ValueError):
        SendLedger.from_compact(compact)  # type: ignore[arg-type]


def test_from_sends_refuses_sends_out_of_order() -> None:
    with pytest.raises(ValueError, match="time order"):
        SendLedger.from_sends([2_000, 1_000], [1, 1])


def test_equality_is_by_sends() -> None:
    assert ledger_of([(1, 2)]) == ledger_of([(1, 2)])
    assert ledger_of([(1, 2)]) != ledger_of([(1, 3)])
    assert ledger_of([]) == SendLedger()
