"""What becomes of mail held for a broken connection."""

from datetime import UTC, datetime, timedelta

import pytest

from sendrail.services.router.held import HeldFate, held_fate

HELD_AT = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
EXPIRY = timedelta(days=3)


@pytest.mark.parametrize(("healthy", "after", "fate"), [
    (True, timedelta(0), HeldFate.RELEASE),
    (True, timedelta(days=5), HeldFate.RELEASE),  # reconnected: sent, however long it waited
    (False, timedelta(0), HeldFate.KEEP),
    (False, EXPIRY - timedelta(seconds=1), HeldFate.KEEP),
    (False, EXPIRY, HeldFate.EXPIRE),
    (False, EXPIRY + timedelta(hours=1), HeldFate.EXPIRE),
])
def test_held_mail_is_released_kept_or_expired(healthy: bool, after: timedelta, fate: HeldFate) -> None:
    assert held_fate(healthy=healthy, held_since=HELD_AT, now=HELD_AT + after, expiry=EXPIRY) is fate
