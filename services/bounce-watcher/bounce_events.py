"""Turning a parsed notice into the events the analytics topic carries; pure."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from sendrail.bounces.notice import Notice, NoticeKind
from sendrail.events import (
    AnalyticsEvent,
    AutoReplyDetected,
    BounceDetected,
    ComplaintDetected,
    ConnectionConfigured,
    DeliveryEvent,
)

FINDING_ID_NAMESPACE = uuid.UUID("0f4b8f9e-52c4-4a53-9d1e-2f6a7c3b8e21")

SentFor = Callable[[str | None], DeliveryEvent | None]
"""The send a notice is about, given the address it concerns (if it names one)."""


def finding_id(connection: ConnectionConfigured, uidvalidity: int, uid: int, address: str) -> uuid.UUID:
    """The same message read again gives the same id, so consumers can drop repeats."""
    return uuid.uuid5(FINDING_ID_NAMESPACE, f"{connection.tenant_id}/{connection.connection_id}/"
                                            f"{uidvalidity}/{uid}/{address}")


def _send_fields(connection: ConnectionConfigured, sent: DeliveryEvent | None) -> dict[str, object]:
    return {
        "tenant_id": connection.tenant_id, "connection_id": connection.connection_id,
        "channel": connection.kind, "correlated": sent is not None,
        "send_id": sent.send_id if sent else None,
        "user_id": sent.user_id if sent else connection.owner_user_id,
        "identity": sent.identity if sent else None,
        "campaign_id": sent.campaign_id if sent else None,
        "template_id": sent.template_id if sent else None,
    }


def mailbox_findings(notice: Notice, connection: ConnectionConfigured, *, uidvalidity: int,
                     uid: int, sent_for: SentFor, now: datetime) -> list[AnalyticsEvent]:
    """Bounces (one per failed recipient), auto-replies and complaints; nothing else."""
    findings: list[AnalyticsEvent] = []
    for recipient in notice.recipients:
        fields = _send_fields(connection, sent_for(recipient.address))
        found_id = finding_id(connection, uidvalidity, uid, recipient.address)
        if notice.kind is NoticeKind.BOUNCE:
            findings.append(BounceDetected(
                bounce_id=found_id, recipient=recipient.address, status=recipient.status,
                reply_code=recipient.reply_code, diagnostic=recipient.diagnostic,
                reason=recipient.reason, hard=recipient.hard, detected_at=now, **fields))
        elif notice.kind is NoticeKind.AUTO_REPLY:
            findings.append(AutoReplyDetected(finding_id=found_id, address=recipient.address,
                                              detected_at=now, **fields))
        elif notice.kind is NoticeKind.COMPLAINT:
            findings.append(ComplaintDetected(finding_id=found_id, address=recipient.address,
                                              detected_at=now, **fields))
    return findings
