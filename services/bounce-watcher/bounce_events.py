"""Turning a parsed bounce into the events the analytics topic carries; pure."""

from __future__ import annotations

import uuid
from datetime import datetime

from sendrail.bounces.notice import Notice, NoticeKind
from sendrail.events import BounceDetected, ConnectionConfigured, DeliveryEvent

BOUNCE_ID_NAMESPACE = uuid.UUID("0f4b8f9e-52c4-4a53-9d1e-2f6a7c3b8e21")


def bounce_id(connection: ConnectionConfigured, uidvalidity: int, uid: int, recipient: str) -> uuid.UUID:
    """The same message read again gives the same id, so consumers can drop repeats."""
    return uuid.uuid5(BOUNCE_ID_NAMESPACE, f"{connection.tenant_id}/{connection.connection_id}/"
                                           f"{uidvalidity}/{uid}/{recipient}")


def bounce_events(notice: Notice, connection: ConnectionConfigured, *, uidvalidity: int, uid: int,
                  sent: DeliveryEvent | None, now: datetime) -> list[BounceDetected]:
    if notice.kind is not NoticeKind.BOUNCE:
        return []
    return [
        BounceDetected(
            bounce_id=bounce_id(connection, uidvalidity, uid, failed.address),
            tenant_id=connection.tenant_id, connection_id=connection.connection_id,
            channel=connection.kind, recipient=failed.address, status=failed.status,
            reply_code=failed.reply_code, diagnostic=failed.diagnostic, reason=failed.reason,
            hard=failed.hard, correlated=sent is not None,
            send_id=sent.send_id if sent else None,
            user_id=sent.user_id if sent else connection.owner_user_id,
            identity=sent.identity if sent else None,
            campaign_id=sent.campaign_id if sent else None,
            template_id=sent.template_id if sent else None,
            detected_at=now,
        )
        for failed in notice.recipients
    ]
