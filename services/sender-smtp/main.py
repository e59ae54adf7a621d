"""The SMTP sender: custom, team, on-premises Exchange and legacy servers, over SMTP AUTH.

These servers' limits and replies are their operators' own, so only the generic
meaning of SMTP replies applies, and per-connection limits come from the registry.
"""

from __future__ import annotations

import asyncio

from sendrail.delivery.policy import ChannelPolicy
from sendrail.delivery.service import run_sender
from sendrail.events import ChannelKind
from sendrail.service import ServiceState
from sendrail.settings import Settings
from sendrail.topics import OUTBOUND_SMTP

POLICY = ChannelPolicy(
    service="sendrail-sender-smtp",
    topic=OUTBOUND_SMTP,
    kinds=frozenset({ChannelKind.CUSTOM_SMTP, ChannelKind.TEAM_SMTP, ChannelKind.EXCHANGE_ONPREM,
                     ChannelKind.LEGACY}),
    provider_rules=(),
    max_recipients=None,
    max_message_bytes=25 * 1024 * 1024,  # a common default; a connection may set its own
    max_sessions_per_connection=8,
)


async def run(settings: Settings, stop: asyncio.Event, state: ServiceState) -> None:
    await run_sender(POLICY, settings, stop, state)
