"""Whether a bounce puts an address on the tenant's suppression list, and why; pure.

Anyone can mail a user something that reads like a bounce (PRODUCT.md section 4), so a
notice earns the right to suppress only through a send sendrail made: it must be tied
to a send of the same mailbox (so of the same tenant), name one of that send's
recipients, and have arrived after that send. Anything else is still published, for
the mailbox owner to see, and suppresses nothing.

Then a hard bounce (the address itself is undeliverable) suppresses at once. Soft
bounces say nothing certain about the address, so they suppress only when the tenant's
setting says so: `limit` of them within `window_s` (none by default).
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from sendrail.events import AddressSuppressed, BounceDetected, DeliveryEvent
from sendrail.mail.addresses import comparison_key
from sendrail.services.bounce_watcher.correlation import arrived_after, went_to
from sendrail.validation import normalize_address


class Why(StrEnum):
    """The reason behind a decision, for the log and the tests."""

    HARD_BOUNCE = "hard bounce of a recipient of the send"
    SOFT_BOUNCES = "enough soft bounces of a recipient of the send within the window"
    SOFT_BOUNCE = "a soft bounce, below the tenant's limit (or the limit is off)"
    UNCORRELATED = "not tied to a send of this mailbox"
    NOT_A_RECIPIENT = "the send it is tied to did not go to this address"
    BEFORE_THE_SEND = "the notice arrived before the send it is tied to"
    NOT_AN_ADDRESS = "the failed recipient is not an address sendrail could send to"


@dataclass(frozen=True)
class SoftBounceRule:
    limit: int
    """Soft bounces within the window that suppress; 0: never."""
    window_s: float


@dataclass
class SoftBounceHistory:
    """Recent soft bounces per (tenant, address's comparison key), oldest first; each bounce
    counted once, however often its message is read again."""

    _times: dict[tuple[str, str], deque[tuple[float, uuid.UUID]]] = field(default_factory=dict)

    def record(self, tenant_id: str, address: str, at_s: float, window_s: float,
               bounce_id: uuid.UUID) -> int:
        """Remember one; returns how many fall inside the window ending at `at_s`."""
        times = self._times.setdefault((tenant_id, comparison_key(address)), deque())
        if all(seen != bounce_id for _, seen in times):
            times.append((at_s, bounce_id))
        while times and times[0][0] <= at_s - window_s:
            times.popleft()
        return len(times)


@dataclass(frozen=True)
class Decision:
    why: Why
    suppression: AddressSuppressed | None = None
    """What to publish on the suppression topic; None: nothing."""


def refusal(bounce: BounceDetected, sent: DeliveryEvent | None, arrived_at: datetime) -> Why | None:
    """Why this bounce may not suppress its address; None when it may."""
    if (sent is None or not bounce.correlated or sent.send_id != bounce.send_id
            or (sent.tenant_id, sent.connection_id) != (bounce.tenant_id, bounce.connection_id)):
        return Why.UNCORRELATED
    try:
        normalize_address(bounce.recipient)
    except ValueError:
        return Why.NOT_AN_ADDRESS
    if went_to(sent, bounce.recipient) is None:
        return Why.NOT_A_RECIPIENT
    if not arrived_after(sent, arrived_at):
        return Why.BEFORE_THE_SEND
    return None


def decide(bounce: BounceDetected, sent: DeliveryEvent | None, *, arrived_at: datetime,
           history: SoftBounceHistory, rule: SoftBounceRule, now: datetime) -> Decision:
    """Whether `bounce`, read from a message that arrived at `arrived_at`, suppresses its
    address, given `sent`, the send it was tied to (None when it was tied to none)."""
    why = refusal(bounce, sent, arrived_at)
    if why is not None or sent is None:
        return Decision(why or Why.UNCORRELATED)
    recipient = went_to(sent, bounce.recipient) or bounce.recipient  # as the send spelled it
    if bounce.hard:
        return Decision(Why.HARD_BOUNCE, AddressSuppressed(
            tenant_id=bounce.tenant_id, address=recipient, source="hard_bounce",
            reason=f"hard bounce: {bounce.reason} ({bounce.status or 'no status'})",
            bounce_id=bounce.bounce_id, suppressed_at=now))
    if rule.limit <= 0:
        return Decision(Why.SOFT_BOUNCE)
    count = history.record(bounce.tenant_id, recipient, bounce.detected_at.timestamp(),
                           rule.window_s, bounce.bounce_id)
    if count < rule.limit:
        return Decision(Why.SOFT_BOUNCE)
    return Decision(Why.SOFT_BOUNCES, AddressSuppressed(
        tenant_id=bounce.tenant_id, address=recipient, source="soft_bounces",
        reason=f"{count} soft bounces within {rule.window_s / 86400:g} days (last: {bounce.reason})",
        bounce_id=bounce.bounce_id, suppressed_at=now))
