"""Throttle policies: the providers' documented caps, the batch setting, overrides, validation."""

from __future__ import annotations

import pytest

from sendrail.errors import ConfigurationError
from sendrail.throttle import (
    EXCHANGE_ONLINE,
    GMAIL_CONSUMER,
    GMAIL_WORKSPACE,
    GMAIL_WORKSPACE_TRIAL,
    BatchSetting,
    LimitOverrides,
    ProviderLimits,
    ThrottlePolicy,
    WindowLimit,
)

DAY_S = 86_400.0


def kinds(policy: ThrottlePolicy | ProviderLimits) -> set[tuple[int, float, str]]:
    return {(w.limit, w.window_s, w.unit) for w in policy.limits}


@pytest.mark.parametrize(("provider", "windows", "max_recipients"), [
    (GMAIL_WORKSPACE, {(2_000, DAY_S, "messages"), (2_000, DAY_S, "recipients"), (2, 1.0, "messages")}, 100),
    (GMAIL_WORKSPACE_TRIAL, {(500, DAY_S, "messages"), (500, DAY_S, "recipients"), (2, 1.0, "messages")}, 100),
    (GMAIL_CONSUMER, {(500, DAY_S, "messages")}, 100),
    (EXCHANGE_ONLINE, {(10_000, DAY_S, "recipients"), (30, 60.0, "messages")}, 500),
])
def test_provider_defaults_hold_the_documented_caps(provider: ProviderLimits, windows: set[tuple[int, float, str]],
                                                    max_recipients: int) -> None:
    assert kinds(provider) == windows
    assert provider.max_recipients_per_message == max_recipients


def test_a_provider_alone_is_its_own_policy() -> None:
    policy = ThrottlePolicy.compose(provider=EXCHANGE_ONLINE)
    assert policy.limits == EXCHANGE_ONLINE.limits
    assert policy.max_recipients_per_message == 500
    assert policy.keep_s == DAY_S


def test_the_batch_setting_is_one_more_rolling_window() -> None:
    policy = ThrottlePolicy.compose(provider=GMAIL_WORKSPACE, batch=BatchSetting(25, 45.0))
    assert policy.limits[:-1] == GMAIL_WORKSPACE.limits
    assert policy.limits[-1] == WindowLimit(25, 45.0, "messages", "batch")


def test_no_provider_and_no_batch_is_unthrottled() -> None:
    policy = ThrottlePolicy.compose(provider=None)
    assert policy.limits == ()
    assert policy.max_recipients_per_message is None
    assert policy.keep_s == 0.0


def test_a_batch_alone_throttles_a_custom_channel() -> None:
    policy = ThrottlePolicy.compose(provider=None, batch=BatchSetting(10, 60.0))
    assert kinds(policy) == {(10, 60.0, "messages")}


def test_overrides_replace_the_provider_window_of_the_same_kind() -> None:
    overrides = LimitOverrides(daily_recipients=4_000, per_minute_messages=10, max_recipients_per_message=1_000)
    policy = ThrottlePolicy.compose(provider=EXCHANGE_ONLINE, overrides=overrides)
    assert kinds(policy) == {(4_000, DAY_S, "recipients"), (10, 60.0, "messages")}
    assert {w.name for w in policy.limits} == {"daily recipients", "per-minute"}
    assert policy.max_recipients_per_message == 1_000


def test_overrides_add_a_window_the_provider_has_not() -> None:
    policy = ThrottlePolicy.compose(provider=GMAIL_CONSUMER, overrides=LimitOverrides(daily_recipients=300))
    assert kinds(policy) == {(500, DAY_S, "messages"), (300, DAY_S, "recipients")}


def test_overrides_may_lower_or_raise_a_default() -> None:
    lower = ThrottlePolicy.compose(provider=GMAIL_CONSUMER, overrides=LimitOverrides(daily_messages=100))
    higher = ThrottlePolicy.compose(provider=GMAIL_CONSUMER, overrides=LimitOverrides(daily_messages=900))
    assert kinds(lower) == {(100, DAY_S, "messages")}
    assert kinds(higher) == {(900, DAY_S, "messages")}


def test_empty_overrides_change_nothing() -> None:
    assert ThrottlePolicy.compose(provider=GMAIL_WORKSPACE, overrides=LimitOverrides()) == (
        ThrottlePolicy.compose(provider=GMAIL_WORKSPACE))


@pytest.mark.parametrize(("window_s", "window_ms"), [
    (45.0, 45_000), (0.1, 100), (1.1, 1_100), (0.001, 1), (DAY_S, 86_400_000), (0.1 + 0.2, 300),
])
def test_windows_are_whole_milliseconds(window_s: float, window_ms: int) -> None:
    assert WindowLimit(1, window_s, "messages", "w").window_ms == window_ms


@pytest.mark.parametrize("window_s", [0.0, -1.0, 0.0004, 1.0005, float("nan"), float("inf")])
def test_a_window_that_is_not_whole_milliseconds_is_refused(window_s: float) -> None:
    with pytest.raises(ConfigurationError):
        WindowLimit(1, window_s, "messages", "w")


@pytest.mark.parametrize("limit", [0, -3, True, 2.5])
def test_a_limit_below_one_or_not_whole_is_refused(limit: object) -> None:
    with pytest.raises(ConfigurationError):
        WindowLimit(limit, 1.0, "messages", "w")  # type: ignore[arg-type]


def test_an_unknown_unit_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        WindowLimit(1, 1.0, "bytes", "w")  # type: ignore[arg-type]


@pytest.mark.parametrize(("batch_size", "wait_s"), [
    (0, 45.0), (25, 0.0), (25, -1.0), (25, 0.0001), (25, 0.0005), (25, 0.5), (25, 0.999),
    (25, float("inf")), (25, float("nan")), (25, DAY_S + 0.001), (25, 1.0005), (10_001, 45.0),
])
def test_a_batch_setting_that_cannot_be_kept_is_refused(batch_size: int, wait_s: float) -> None:
    """Under a second apart a batch is a rate (the per-second window paces those), and a wait
    of a few milliseconds would have a connection's turns follow each other with no pause."""
    with pytest.raises(ConfigurationError):
        BatchSetting(batch_size, wait_s)


@pytest.mark.parametrize(("batch_size", "wait_s"), [(1, 1.0), (25, 45.0), (10_000, DAY_S), (3, 1.5)])
def test_batch_settings_at_the_bounds_are_kept(batch_size: int, wait_s: float) -> None:
    assert BatchSetting(batch_size, wait_s).as_window() == WindowLimit(batch_size, wait_s, "messages", "batch")


@pytest.mark.parametrize("changes", [
    {"daily_messages": 0}, {"max_recipients_per_message": 0}, {"daily_messages": 50_001},
    {"daily_recipients": 50_001}, {"per_minute_messages": 50_001}, {"max_recipients_per_message": 1_001},
    {"daily_messages": True}, {"per_minute_messages": 2.5},
], ids=repr)
def test_an_override_out_of_range_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        LimitOverrides(**changes)  # type: ignore[arg-type]


def test_window_names_are_distinct() -> None:
    window = WindowLimit(5, 1.0, "messages", "batch")
    with pytest.raises(ConfigurationError, match="distinct"):
        ThrottlePolicy((window, WindowLimit(9, 2.0, "messages", "batch")), None)


def test_what_one_message_counts_against_a_window() -> None:
    assert WindowLimit(10, 1.0, "messages", "m").units_of(7) == 1
    assert WindowLimit(10, 1.0, "recipients", "r").units_of(7) == 7
