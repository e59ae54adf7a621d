"""Looking up what became of a send: its final delivery event and what the server received."""

from __future__ import annotations

import email
import email.policy
import uuid
from email.message import EmailMessage

from sendrail.events import FINAL_STATUSES, ChannelKind, DeliveryEvent
from sendrail.mail.headers import SEND_ID_HEADER
from sendrail.sandbox.mail_sandbox import MailSandbox
from sendrail.sandbox.smtp_servers import ReceivedEnvelope
from support.event_log import EventLog
from support.waiting import wait_until


async def final_event(events: EventLog, send_id: uuid.UUID, *, timeout_s: float = 20.0) -> DeliveryEvent:
    return await events.wait_for(
        events.delivery, lambda e: e.send_id == send_id and e.status in FINAL_STATUSES,
        what=f"the final delivery event of {send_id}", timeout_s=timeout_s)


def received_message(mail: MailSandbox, kind: ChannelKind, send_id: uuid.UUID
                     ) -> tuple[ReceivedEnvelope, EmailMessage]:
    """The envelope and message the `kind` server accepted for this send (exactly one)."""
    found = []
    for envelope in mail.received(kind.value):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        if message[SEND_ID_HEADER] == str(send_id):
            found.append((envelope, message))
    assert len(found) == 1, f"{kind.value} server received {len(found)} messages for {send_id}"
    envelope, message = found[0]
    assert isinstance(message, EmailMessage)
    return envelope, message


async def wait_received(mail: MailSandbox, kind: ChannelKind, send_id: uuid.UUID) -> None:
    def arrived() -> bool:
        return any(str(send_id).encode() in e.content for e in mail.received(kind.value))
    await wait_until(arrived, timeout_s=20, what=f"{send_id} at the {kind.value} server")
