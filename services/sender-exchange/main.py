"""The Exchange Online sender: Microsoft's reply table and limits on the shared sending loop."""

from __future__ import annotations

import asyncio

from sendrail.delivery.policy import ChannelPolicy
from sendrail.delivery.service import run_sender
from sendrail.events import ChannelKind
from sendrail.service import ServiceState
from sendrail.services.sender_exchange.replies import EXCHANGE_ONLINE_RULES
from sendrail.settings import Settings
from sendrail.topics import OUTBOUND_EXCHANGE

POLICY = ChannelPolicy(
    service="sendrail-sender-exchange",
    topic=OUTBOUND_EXCHANGE,
    kinds=frozenset({ChannelKind.EXCHANGE_ONLINE}),
    provider_rules=EXCHANGE_ONLINE_RULES,
    max_recipients=500,  # Exchange Online's default recipient limit per message
    max_message_bytes=35 * 1024 * 1024,  # Exchange Online's default send limit
    max_sessions_per_connection=3,  # Microsoft: at most 3 concurrent SMTP connections per mailbox
)


async def run(settings: Settings, stop: asyncio.Event, state: ServiceState) -> None:
    await run_sender(POLICY, settings, stop, state)
