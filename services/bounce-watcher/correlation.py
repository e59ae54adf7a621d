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

    def add(self, event: DeliveryEvent) -> None:
        if event.status is not DeliveryStatus.SENT or event.send_id is None:
            return
        self.by_send_id[event.send_id] = event
        if event.message_id:
            self.by_message_id[event.message_id.lower()] = event

    def find(self, notice: Notice, *, tenant_id: str, connection_id: str) -> DeliveryEvent | None:
        """The first piece of evidence that names a send of this mailbox: sendrail's send-id
        header in the quoted original, the original's Message-ID, then the notice's own
        In-Reply-To/References."""
        candidates: list[DeliveryEvent | None] = []
        if notice.original.send_id:
            try:
                candidates.append(self.by_send_id.get(uuid.UUID(notice.original.send_id)))
            except ValueError:
                pass
        message_ids = [notice.original.message_id, *notice.references]
        candidates += [self.by_message_id.get(m.lower()) for m in message_ids if m]
        for sent in candidates:
            if sent is not None and sent.tenant_id == tenant_id and sent.connection_id == connection_id:
                return sent
        return None
