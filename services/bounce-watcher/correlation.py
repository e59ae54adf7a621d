"""Tying a bounce to the email that caused it; pure, fed with the senders' `sent` events."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sendrail.bounces.notice import Notice
from sendrail.events import DeliveryEvent, DeliveryStatus
from sendrail.mail.addresses import comparison_key

ARRIVAL_TOLERANCE = timedelta(minutes=5)
"""How much earlier than its send's `sent` event a notice may arrive and still be about it.
The event is stamped when the attempt ends, after the server took the message (a server
may bounce during the transaction, and a session sends several messages per turn); the
arrival time is the mail server's (IMAP INTERNALDATE, whole seconds) against sendrail's
clock. A notice from before that is older mail: it cannot be about this send."""


def arrived_after(sent: DeliveryEvent, arrived_at: datetime) -> bool:
    """Whether a notice that arrived at `arrived_at` can be about `sent`."""
    return arrived_at >= sent.occurred_at - ARRIVAL_TOLERANCE


def went_to(sent: DeliveryEvent, address: str) -> str | None:
    """The recipient of `sent` that is the mailbox `address` names, as the send spelled it."""
    key = comparison_key(address)
    return next((r for r in sent.recipients if comparison_key(r) == key), None)


@dataclass
class SendIndex:
    """Sent emails by send id and by Message-ID.

    Lookups also check the tenant and the connection: a bounce found in one mailbox
    can only be tied to mail that this same mailbox sent.
    """

    by_send_id: dict[uuid.UUID, DeliveryEvent] = field(default_factory=dict)
    by_message_id: dict[str, DeliveryEvent] = field(default_factory=dict)
    by_recipient: dict[tuple[str, str, str], DeliveryEvent] = field(default_factory=dict)
    """(tenant, connection, recipient's comparison key) -> the latest send to that mailbox
    from that connection."""

    def add(self, event: DeliveryEvent) -> None:
        if event.status is not DeliveryStatus.SENT or event.send_id is None:
            return
        self.by_send_id[event.send_id] = event
        if event.message_id:
            self.by_message_id[event.message_id.lower()] = event
        if event.tenant_id and event.connection_id:
            for recipient in event.recipients:
                self.by_recipient[(event.tenant_id, event.connection_id, comparison_key(recipient))] = event

    def find(self, notice: Notice, *, tenant_id: str, connection_id: str,
             recipient: str | None = None, arrived_at: datetime | None = None) -> DeliveryEvent | None:
        """The first piece of evidence that names a send of this mailbox: sendrail's send-id
        header in the quoted original, the original's Message-ID, the notice's own
        In-Reply-To/References, and last the latest send from this mailbox to the failed
        recipient (what X-Failed-Recipients or the report names). A send made after the
        notice arrived (`arrived_at`, when known) is never the one it is about."""
        candidates: list[DeliveryEvent | None] = []
        if notice.original.send_id:
            try:
                candidates.append(self.by_send_id.get(uuid.UUID(notice.original.send_id)))
            except ValueError:
                pass
        message_ids = [notice.original.message_id, *notice.references]
        candidates += [self.by_message_id.get(m.lower()) for m in message_ids if m]
        if recipient is not None:
            candidates.append(self.by_recipient.get((tenant_id, connection_id, comparison_key(recipient))))
        for sent in candidates:
            if (sent is not None and sent.tenant_id == tenant_id and sent.connection_id == connection_id
                    and (arrived_at is None or arrived_after(sent, arrived_at))):
                return sent
        return None
