"""Tying a bounce to the email that caused it; pure, fed with the senders' `sent` events."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sendrail.bounces.notice import Notice
from sendrail.events import DeliveryEvent, DeliveryStatus


@dataclass
class SendIndex:
    """Sent emails by send id and by Message-ID.

    Lookups also check the tenant and the connection: a bounce found in one mailbox
    can only be tied to mail that this same mailbox sent.
    """

    by_send_id: dict[uuid.UUID, DeliveryEvent] = field(default_factory=dict)
    by_message_id: dict[str, DeliveryEvent] = field(default_factory=dict)
    by_recipient: dict[tuple[str, str, str], DeliveryEvent] = field(default_factory=dict)
    """(tenant, connection, recipient) -> the latest send to that address from that mailbox."""

    def add(self, event: DeliveryEvent) -> None:
        if event.status is not DeliveryStatus.SENT or event.send_id is None:
            return
        self.by_send_id[event.send_id] = event
        if event.message_id:
            self.by_message_id[event.message_id.lower()] = event
        if event.tenant_id and event.connection_id:
            for recipient in event.recipients:
                self.by_recipient[(event.tenant_id, event.connection_id, recipient.lower())] = event

    def find(self, notice: Notice, *, tenant_id: str, connection_id: str,
             recipient: str | None = None) -> DeliveryEvent | None:
        """The first piece of evidence that names a send of this mailbox: sendrail's send-id
        header in the quoted original, the original's Message-ID, the notice's own
        In-Reply-To/References, and last the latest send from this mailbox to the failed
        recipient (what X-Failed-Recipients or the report names)."""
        candidates: list[DeliveryEvent | None] = []
        if notice.original.send_id:
            try:
                candidates.append(self.by_send_id.get(uuid.UUID(notice.original.send_id)))
            except ValueError:
                pass
        message_ids = [notice.original.message_id, *notice.references]
        candidates += [self.by_message_id.get(m.lower()) for m in message_ids if m]
        if recipient is not None:
            candidates.append(self.by_recipient.get((tenant_id, connection_id, recipient.lower())))
        for sent in candidates:
            if sent is not None and sent.tenant_id == tenant_id and sent.connection_id == connection_id:
                return sent
        return None
