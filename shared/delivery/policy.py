"""What differs between senders: the channels they serve, their provider's replies and limits."""

from __future__ import annotations

from dataclasses import dataclass

from sendrail.events import ChannelKind
from sendrail.mail.replies import ReplyRule
from sendrail.topics import Topic


@dataclass(frozen=True)
class ChannelPolicy:
    service: str
    """The service's name, also its consumer group and client id."""
    topic: Topic
    kinds: frozenset[ChannelKind]
    provider_rules: tuple[ReplyRule, ...]
    max_recipients: int | None
    """Per message; more would be refused by the provider, so such mail fails up front."""
    max_message_bytes: int
    max_sessions_per_connection: int
