"""When the next message may go: concrete timelines, then properties checked by brute force.

The properties run a sender that sends each message at `earliest_send_s`, in arrival
order, and check with plain loops (no bisection, no running totals) that (1) no window
ever holds more than its limit, at any window position, (2) no message waited while
there was room: one microsecond (the time resolution) before its send it would not have
fitted, unless it went on arrival or right behind the message before it, and (3) the
messages went in arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sendrail.throttle import (
    EXCHANGE_ONLINE,
    GMAIL_WORKSPACE,
    UNLIMITED_ROOM,
    BatchSetting,
    NeverFits,
    SendLedger,
    ThrottlePolicy,
    WindowLimit,
    earliest_send_s,
    room,
)
from sendrail.throttle.ledger import instant_us, remembered_ms
from sendrail.throttle.policy import UNITS

DAY_S = 86_400.0


def send_all(policy: ThrottlePolicy, arrivals: list[tuple[float, int]]) -> list[float]:
    """Send each (arrival time, recipients) as early as allowed, in order; the send times."""
    ledger, times = SendLedger(), []
    for arrival_s, recipients in arrivals:
        at_s = earliest_send_s(policy, ledger, recipients, arrival_s)
        ledger.record(at_s, recipients)
        times.append(at_s)
    return times


def policy_of(*windows: tuple[int, float, str], max_recipients: int | None = None) -> ThrottlePolicy:
    return ThrottlePolicy(tuple(WindowLimit(limit, window_s, unit, f"w{i}")  # type: ignore[arg-type]
                                for i, (limit, window_s, unit) in enumerate(windows)), max_recipients)


# --- timelines ------------------------------------------------------------------------


def test_a_batch_of_25_every_45_s_sends_25_at_once_and_the_26th_at_45_s() -> None:
    policy = ThrottlePolicy.compose(provider=None, batch=BatchSetting(25, 45.0))
    times = send_all(policy, [(0.0, 1)] * 60)
    assert times == [0.0] * 25 + [45.0] * 25 + [90.0] * 10


def test_a_batch_spread_out_releases_each_slot_45_s_after_it_was_used() -> None:
    policy = ThrottlePolicy.compose(provider=None, batch=BatchSetting(3, 45.0))
    times = send_all(policy, [(0.0, 1), (10.0, 1), (20.0, 1), (21.0, 1), (22.0, 1), (23.0, 1)])
    assert times == [0.0, 10.0, 20.0, 45.0, 55.0, 65.0]


def test_exchange_sends_30_messages_a_minute() -> None:
    policy = ThrottlePolicy.compose(provider=EXCHANGE_ONLINE)
    times = send_all(policy, [(float(i), 1) for i in range(33)])
    assert times[:30] == [float(i) for i in range(30)]
    assert times[30:] == [60.0, 61.0, 62.0]  # each waits for the send 30 before it to leave


def test_exchange_holds_the_21st_message_of_500_recipients_until_the_first_leaves_the_day() -> None:
    policy = ThrottlePolicy.compose(provider=EXCHANGE_ONLINE)
    times = send_all(policy, [(i * 600.0, 500) for i in range(22)])
    assert times[:20] == [i * 600.0 for i in range(20)]
    assert times[20:] == [DAY_S, DAY_S + 600.0]


def test_exchange_lets_small_messages_use_what_large_ones_leave() -> None:
    policy = ThrottlePolicy.compose(provider=EXCHANGE_ONLINE)
    times = send_all(policy, [(0.0, 500)] * 19 + [(0.0, 499), (0.0, 1), (0.0, 1)])
    assert times == [0.0] * 21 + [DAY_S]


def test_gmail_sends_2_a_second() -> None:
    policy = ThrottlePolicy.compose(provider=GMAIL_WORKSPACE)
    assert send_all(policy, [(0.0, 1)] * 5) == [0.0, 0.0, 1.0, 1.0, 2.0]


def test_gmail_holds_the_2001st_message_of_the_day() -> None:
    policy = ThrottlePolicy.compose(provider=GMAIL_WORKSPACE)
    times = send_all(policy, [(0.0, 1)] * 2_003)
    assert times[1_998:2_000] == [999.0, 999.0]
    assert times[2_000:] == [DAY_S, DAY_S, DAY_S + 1.0]


def test_gmail_counts_recipients_against_the_day_too() -> None:
    policy = ThrottlePolicy.compose(provider=GMAIL_WORKSPACE)
    times = send_all(policy, [(0.0, 100)] * 21)
    assert times[19] == 9.0
    assert times[20] == DAY_S


def test_a_full_exchange_day_stays_cheap_and_exact() -> None:
    """10,000 messages queued at once, each scheduled over a growing ledger of up to
    10,000 sends: bisection keeps this well under a second, where a scan per call would not."""
    policy = ThrottlePolicy.compose(provider=EXCHANGE_ONLINE)
    times = send_all(policy, [(0.0, 1)] * 10_001)
    assert times[9_999] == 333 * 60.0
    assert times[10_000] == DAY_S


@pytest.mark.parametrize(("policy", "recipients", "limit_name"), [
    (ThrottlePolicy.compose(provider=GMAIL_WORKSPACE), 101, "recipients per message"),
    (ThrottlePolicy.compose(provider=EXCHANGE_ONLINE), 501, "recipients per message"),
    (policy_of((10, 60.0, "recipients")), 11, "w0"),
])
def test_a_message_that_can_never_fit_says_why(policy: ThrottlePolicy, recipients: int, limit_name: str) -> None:
    with pytest.raises(NeverFits) as raised:
        earliest_send_s(policy, SendLedger(), recipients, 0.0)
    assert raised.value.limit_name == limit_name
    assert raised.value.recipients == recipients
    assert str(recipients) in raised.value.reason


def test_a_message_with_no_recipients_is_a_mistake() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        earliest_send_s(ThrottlePolicy.compose(provider=None), SendLedger(), 0, 0.0)


def test_an_unthrottled_policy_sends_at_once() -> None:
    policy = ThrottlePolicy.compose(provider=None)
    assert send_all(policy, [(5.0, 1)] * 100) == [5.0] * 100
    assert room(policy, SendLedger(), 5.0) == UNLIMITED_ROOM


def test_room_is_what_every_window_has_left() -> None:
    policy = ThrottlePolicy.compose(provider=GMAIL_WORKSPACE, batch=BatchSetting(25, 45.0))
    ledger = SendLedger()
    assert room(policy, ledger, 0.0) == 2  # the per-second window is the tightest
    for at_s in (0.0, 0.0, 1.0, 1.0, 2.0):
        ledger.record(at_s, 1)
    assert room(policy, ledger, 2.0) == 1
    assert room(policy, ledger, 3.0) == 2
    assert room(policy, ledger, 45.0) == 2
    for at_s in range(3, 23):
        ledger.record(float(at_s), 1)
    assert room(policy, ledger, 23.0) == 0   # 25 in the batch window
    assert room(policy, ledger, 44.999) == 0
    assert room(policy, ledger, 45.0) == 2   # the two sends at 0 left


# --- window boundaries and float noise -------------------------------------------------


def test_a_send_leaves_its_window_exactly_one_window_later() -> None:
    policy = policy_of((1, 0.2, "messages"))
    ledger = SendLedger()
    ledger.record(0.1, 1)
    assert earliest_send_s(policy, ledger, 1, 0.15) == 0.3
    assert earliest_send_s(policy, ledger, 1, 0.1 + 0.2) == 0.1 + 0.2   # 0.30000000000000004: now
    assert earliest_send_s(policy, ledger, 1, 0.7 - 0.4) == 0.7 - 0.4   # 0.29999999999999993 is 0.3 s
    assert earliest_send_s(policy, ledger, 1, 0.299999) == 0.3          # a microsecond early: wait
    assert room(policy, ledger, 0.299999) == 0
    assert room(policy, ledger, 0.7 - 0.4) == 1


def test_a_send_within_a_millisecond_counts_from_the_next_one() -> None:
    """Remembered at 5.001 s, the send leaves a 1 s window at 6.001 s: never before a full
    second after it went, at most a millisecond later than strictly needed."""
    policy = policy_of((1, 1.0, "messages"))
    ledger = SendLedger()
    ledger.record(5.0004, 1)
    assert earliest_send_s(policy, ledger, 1, 5.5) == 6.001
    assert earliest_send_s(policy, ledger, 1, 6.0009) == 6.001
    assert earliest_send_s(policy, ledger, 1, 6.0012) == 6.0012


def test_now_comes_back_unchanged_when_the_message_fits() -> None:
    policy = policy_of((1, 1.0, "messages"))
    assert earliest_send_s(policy, SendLedger(), 1, 0.123_456_789) == 0.123_456_789


def test_a_clock_behind_the_ledger_never_sends_before_the_last_send() -> None:
    ledger = SendLedger()
    ledger.record(100.0, 1)
    policy = ThrottlePolicy.compose(provider=None)
    assert earliest_send_s(policy, ledger, 1, 90.0) == 100.0
    assert earliest_send_s(policy, ledger, 1, 99.9995) == 99.9995  # remembered at 100.0 too
    assert room(policy, ledger, 90.0) == 0
    ledger.record(earliest_send_s(policy, ledger, 1, 90.0), 1)
    assert ledger.sends_at_ms == [100_000, 100_000]


def test_times_at_unix_scale_keep_their_microseconds() -> None:
    policy = policy_of((2, 1.0, "messages"))
    start = 1_718_000_000.0
    times = send_all(policy, [(start + 0.000_250, 1)] * 4)
    assert times[:2] == [start + 0.000_250] * 2
    assert times[2:] == [start + 1.001] * 2  # sends remembered at ...000.001


# --- properties -------------------------------------------------------------------------


@dataclass
class Sent:
    arrival_us: int
    at_us: int
    recipients: int
    before: list[tuple[int, int]]
    """The ledger's (ms, recipients) when this message was scheduled."""


@st.composite
def policies(draw: st.DrawFn) -> ThrottlePolicy:
    windows = []
    for i in range(draw(st.integers(1, 3))):
        unit = draw(st.sampled_from(UNITS))
        limit = draw(st.integers(1, 5 if unit == "messages" else 9))
        windows.append(WindowLimit(limit, draw(st.integers(1, 60)) / 1000, unit, f"w{i}"))
    return ThrottlePolicy(tuple(windows), draw(st.none() | st.integers(1, 5)))


@st.composite
def arrivals(draw: st.DrawFn) -> list[tuple[int, int]]:
    """(arrival µs, recipients), in order; on the millisecond grid, or anywhere."""
    grid_us = draw(st.sampled_from([1_000, 1, 250]))
    at_us = draw(st.integers(-5_000, 5_000)) * grid_us
    out = []
    for gap, recipients in draw(st.lists(st.tuples(st.integers(0, 25), st.integers(1, 5)),
                                         min_size=1, max_size=40)):
        at_us += gap * grid_us
        out.append((at_us, recipients))
    return out


def units(window: WindowLimit, recipients: int) -> int:
    return recipients if window.unit == "recipients" else 1


def can_ever_fit(policy: ThrottlePolicy, recipients: int) -> bool:
    most = policy.max_recipients_per_message
    return (most is None or recipients <= most) and all(
        units(w, recipients) <= w.limit for w in policy.limits)


def fits_at(policy: ThrottlePolicy, before: list[tuple[int, int]], recipients: int, at_us: int) -> bool:
    """Whether the message fits every window at `at_us`, counting each earlier send while
    at < its time + the window (the interval (at - window, at] seen from the send)."""
    for window in policy.limits:
        window_us = window.window_ms * 1000
        used = sum(units(window, r) for ms, r in before if at_us < ms * 1000 + window_us)
        if used + units(window, recipients) > window.limit:
            return False
    return True


def overfull_windows(policy: ThrottlePolicy, sends: list[tuple[int, int]], per_ms: int) -> list[str]:
    """Every window position ending at a send (the only places a count can rise): sends in
    (end - window, end]; `per_ms` is the time unit's count per millisecond."""
    found = []
    for window in policy.limits:
        window_len = window.window_ms * per_ms
        for end, _ in sends:
            used = sum(units(window, r) for at, r in sends if end - window_len < at <= end)
            if used > window.limit:
                found.append(f"{window.name}: {used} > {window.limit} in ({end - window_len}, {end}]")
    return found


def simulate(policy: ThrottlePolicy, queue: list[tuple[int, int]]) -> tuple[list[Sent], SendLedger]:
    ledger, sent = SendLedger(), []
    for arrival_us, recipients in queue:
        try:
            at_s = earliest_send_s(policy, ledger, recipients, arrival_us / 1e6)
        except NeverFits:
            assert not can_ever_fit(policy, recipients)
            continue
        assert can_ever_fit(policy, recipients)
        before = list(ledger.entries())
        ledger.record(at_s, recipients)
        sent.append(Sent(arrival_us, instant_us(at_s), recipients, before))
    return sent, ledger


@given(policy=policies(), queue=arrivals())
@settings(max_examples=400)
@example(policy=policy_of((2, 0.01, "messages"), (5, 0.03, "recipients")),
         queue=[(0, 2), (0, 2), (0, 1), (1_000, 3), (10_000, 1)])
def test_no_window_ever_exceeds_its_limit(policy: ThrottlePolicy, queue: list[tuple[int, int]]) -> None:
    sent, ledger = simulate(policy, queue)
    # as the ledger remembers the sends (whole ms) ...
    assert overfull_windows(policy, list(ledger.entries()), per_ms=1) == []
    # ... and at the times they really went (to the µs)
    assert overfull_windows(policy, [(s.at_us, s.recipients) for s in sent], per_ms=1000) == []


@given(policy=policies(), queue=arrivals())
@settings(max_examples=400)
def test_no_message_waits_while_there_is_room(policy: ThrottlePolicy, queue: list[tuple[int, int]]) -> None:
    sent, _ = simulate(policy, queue)
    for previous, message in zip([None, *sent], sent, strict=False):
        assert fits_at(policy, message.before, message.recipients, message.at_us)
        on_arrival = message.at_us == message.arrival_us
        behind_previous = previous is not None and message.at_us == remembered_ms(previous.at_us) * 1000
        if not (on_arrival or behind_previous):
            assert message.at_us > message.arrival_us
            assert not fits_at(policy, message.before, message.recipients, message.at_us - 1)


@given(policy=policies(), queue=arrivals())
@settings(max_examples=200)
def test_messages_go_in_arrival_order_and_never_before_they_arrive(
        policy: ThrottlePolicy, queue: list[tuple[int, int]]) -> None:
    sent, _ = simulate(policy, queue)
    assert [s.at_us for s in sent] == sorted(s.at_us for s in sent)
    assert all(s.at_us >= s.arrival_us for s in sent)


@st.composite
def ledgers(draw: st.DrawFn) -> list[tuple[int, int]]:
    at_ms, out = draw(st.integers(-100, 100)), []
    for gap_ms, recipients in draw(st.lists(st.tuples(st.integers(0, 20), st.integers(1, 5)), max_size=30)):
        at_ms += gap_ms
        out.append((at_ms, recipients))
    return out


@given(policy=policies(), entries=ledgers(), now_us=st.integers(-200_000, 800_000),
       recipients=st.integers(1, 5))
@settings(max_examples=400)
def test_earliest_is_the_first_moment_that_fits(policy: ThrottlePolicy, entries: list[tuple[int, int]],
                                                now_us: int, recipients: int) -> None:
    """Against a search of every moment a window can change: now, and each send's leaving."""
    ledger = SendLedger.from_sends([ms for ms, _ in entries], [r for _, r in entries])
    if not can_ever_fit(policy, recipients):
        with pytest.raises(NeverFits):
            earliest_send_s(policy, ledger, recipients, now_us / 1e6)
        return
    lowest_us = now_us
    if entries and remembered_ms(now_us) < entries[-1][0]:
        lowest_us = entries[-1][0] * 1000  # the ledger stays in time order
    moments = sorted({lowest_us} | {ms * 1000 + w.window_ms * 1000 for ms, _ in entries for w in policy.limits})
    expected_us = next(t for t in moments if t >= lowest_us and fits_at(policy, entries, recipients, t))
    at_s = earliest_send_s(policy, ledger, recipients, now_us / 1e6)
    assert instant_us(at_s) == expected_us
    if expected_us == now_us:
        assert at_s == now_us / 1e6


@given(policy=policies(), entries=ledgers(), now_us=st.integers(-200_000, 800_000))
@settings(max_examples=300)
def test_room_agrees_with_the_schedule(policy: ThrottlePolicy, entries: list[tuple[int, int]],
                                       now_us: int) -> None:
    ledger = SendLedger.from_sends([ms for ms, _ in entries], [r for _, r in entries])
    free = room(policy, ledger, now_us / 1e6)
    assert (free > 0) == (earliest_send_s(policy, ledger, 1, now_us / 1e6) == now_us / 1e6)
    # exactly `free` one-recipient messages go now, the next one waits
    for _ in range(min(free, 20)):
        assert earliest_send_s(policy, ledger, 1, now_us / 1e6) == now_us / 1e6
        ledger.record(now_us / 1e6, 1)
    if free <= 20:
        assert earliest_send_s(policy, ledger, 1, now_us / 1e6) > now_us / 1e6
