"""Settings from the environment are inputs too: none can make a loop spin or a wait never end."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sendrail.settings import HttpSettings, SenderSettings, WatcherSettings


@pytest.mark.parametrize("settings, variable, value", [
    (SenderSettings, "SENDRAIL_SENDER_COMMIT_INTERVAL_S", "0"),
    (SenderSettings, "SENDRAIL_SENDER_RETRY_BACKOFF_BASE_S", "0"),
    (SenderSettings, "SENDRAIL_SENDER_RETRY_BACKOFF_MAX_S", "inf"),
    (SenderSettings, "SENDRAIL_SENDER_SMTP_TIMEOUT_S", "nan"),
    (SenderSettings, "SENDRAIL_SENDER_HELD_RECHECK_S", "-1"),
    (SenderSettings, "SENDRAIL_SENDER_MESSAGES_PER_SESSION_TURN", "0"),
    (SenderSettings, "SENDRAIL_SENDER_CONNECTIONS_PER_SERVER", "100000"),
    (WatcherSettings, "SENDRAIL_WATCHER_PARSE_PROCESSES", "0"),
    (WatcherSettings, "SENDRAIL_WATCHER_FETCH_BATCH", "0"),
    (WatcherSettings, "SENDRAIL_WATCHER_IDLE_TIMEOUT_S", "3600"),  # RFC 2177: re-issue within 29 min
    (WatcherSettings, "SENDRAIL_WATCHER_POLL_INTERVAL_S", "0"),
    (WatcherSettings, "SENDRAIL_WATCHER_RECONNECT_BACKOFF_MAX_S", "inf"),
    (HttpSettings, "SENDRAIL_HTTP_PORT", "70000"),
])
def test_a_setting_out_of_range_is_refused_where_it_enters(
    settings: type[SenderSettings | WatcherSettings | HttpSettings], variable: str, value: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError):
        settings()


def test_the_defaults_and_the_test_settings_are_in_range() -> None:
    SenderSettings(session_idle_s=0.0, retry_backoff_base_s=0.05, commit_interval_s=0.2)
    WatcherSettings(login_interval_s=0.0, poll_interval_s=1.0)
    HttpSettings(port=0)
