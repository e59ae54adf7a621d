"""The Gmail sender: Gmail's reply table and limits on the shared sending loop."""

from __future__ import annotations

import asyncio

from sendrail.delivery.policy import ChannelPolicy
from sendrail.delivery.service import run_sender
from sendrail.events import ChannelKind
from sendrail.service import ServiceState
from sendrail.services.sender_gmail.replies import GMAIL_RULES
from sendrail.settings import Settings
from sendrail.topics import OUTBOUND_GMAIL

POLICY = ChannelPolicy(
    service="sendrail-sender-gmail",
    topic=OUTBOUND_GMAIL,
    kinds=frozenset({ChannelKind.GMAIL}),
    provider_rules=GMAIL_RULES,
    max_recipients=100,  # Google: 100 recipients per message through SMTP
    max_message_bytes=35_882_577,  # the SIZE smtp.gmail.com advertises (RFC 1870)
    max_sessions_per_connection=3,
)


async def run(settings: Settings, stop: asyncio.Event, state: ServiceState) -> None:
    await run_sender(POLICY, settings, stop, state)
