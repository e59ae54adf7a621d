"""Which bounces put an address on the suppression list."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sendrail.events import BounceDetected, ChannelKind
from sendrail.services.bounce_watcher.suppression import (
    SoftBounceHistory,
    SoftBounceRule,
    suppression_for,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
NEVER = SoftBounceRule(limit=0, window_s=86400.0)
THREE_IN_A_DAY = SoftBounceRule(limit=3, window_s=86400.0)


def bounce(*, hard: bool, at: datetime = T0, tenant_id: str = "acme",
           recipient: str = "lee@example.org") -> BounceDetected:
    return BounceDetected(
        bounce_id=uuid.uuid4(), tenant_id=tenant_id, connection_id="c", channel=ChannelKind.GMAIL,
        recipient=recipient, status="5.1.1" if hard else "4.2.2", reply_code="550",
        diagnostic=None, reason="userunknown" if hard else "mailboxfull", hard=hard,
        correlated=False, detected_at=at)


def test_a_hard_bounce_suppresses_at_once() -> None:
    entry = suppression_for(bounce(hard=True), SoftBounceHistory(), NEVER, T0)
    assert entry is not None
    assert (entry.tenant_id, entry.address, entry.source) == ("acme", "lee@example.org", "hard_bounce")
    assert "userunknown" in entry.reason


def test_soft_bounces_never_suppress_by_default() -> None:
    history = SoftBounceHistory()
    assert all(suppression_for(bounce(hard=False, at=T0 + timedelta(minutes=i)), history, NEVER, T0)
               is None for i in range(50))


def test_soft_bounces_suppress_when_enough_fall_in_the_window() -> None:
    history = SoftBounceHistory()
    outcomes = [suppression_for(bounce(hard=False, at=T0 + timedelta(hours=h)), history,
                                THREE_IN_A_DAY, T0) for h in (0, 30, 40, 50)]
    # 0 h and 30 h are a day apart; 30, 40 and 50 h fall within one day: the third suppresses.
    assert [o is not None for o in outcomes] == [False, False, False, True]
    assert outcomes[-1] is not None and outcomes[-1].source == "soft_bounces"


def test_soft_bounces_are_counted_per_tenant_and_address() -> None:
    history = SoftBounceHistory()
    for tenant, address in [("acme", "a@x.org"), ("globex", "a@x.org"), ("acme", "b@x.org")]:
        assert suppression_for(bounce(hard=False, tenant_id=tenant, recipient=address), history,
                               SoftBounceRule(limit=2, window_s=3600.0), T0) is None
