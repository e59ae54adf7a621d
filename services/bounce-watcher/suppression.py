"""When a bounce puts an address on the tenant's suppression list; pure.

A hard bounce (the address itself is undeliverable) suppresses at once. Soft bounces
say nothing certain about the address, so they suppress only when the tenant's
setting says so: `limit` of them within `window_s` (none by default).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from sendrail.events import AddressSuppressed, BounceDetected


@dataclass(frozen=True)
class SoftBounceRule:
    limit: int
    """Soft bounces within the window that suppress; 0: never."""
    window_s: float


@dataclass
class SoftBounceHistory:
    """Recent soft bounces per (tenant, address), oldest first."""

    _times: dict[tuple[str, str], deque[float]] = field(default_factory=dict)

    def record(self, tenant_id: str, address: str, at_s: float, window_s: float) -> int:
        """Remember one; returns how many fall inside the window ending at `at_s`."""
        times = self._times.setdefault((tenant_id, address), deque())
        times.append(at_s)
        while times and times[0] <= at_s - window_s:
            times.popleft()
        return len(times)


def suppression_for(bounce: BounceDetected, history: SoftBounceHistory, rule: SoftBounceRule,
                    now: datetime) -> AddressSuppressed | None:
    """The suppression this bounce causes, if any (an uncorrelated bounce counts too: the
    address bounced from this tenant's mailbox)."""
    if bounce.hard:
        return AddressSuppressed(
            tenant_id=bounce.tenant_id, address=bounce.recipient, source="hard_bounce",
            reason=f"hard bounce: {bounce.reason} ({bounce.status or 'no status'})",
            bounce_id=bounce.bounce_id, suppressed_at=now)
    if rule.limit <= 0:
        return None
    count = history.record(bounce.tenant_id, bounce.recipient, bounce.detected_at.timestamp(),
                           rule.window_s)
    if count < rule.limit:
        return None
    return AddressSuppressed(
        tenant_id=bounce.tenant_id, address=bounce.recipient, source="soft_bounces",
        reason=f"{count} soft bounces within {rule.window_s / 86400:g} days (last: {bounce.reason})",
        bounce_id=bounce.bounce_id, suppressed_at=now)
