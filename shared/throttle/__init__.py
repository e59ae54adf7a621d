"""Throttling: the pure math that keeps each Gmail and Exchange Online mailbox inside its limits."""

from sendrail.throttle.ledger import CompactLedger, SendLedger
from sendrail.throttle.policy import (
    EXCHANGE_ONLINE,
    GMAIL_CONSUMER,
    GMAIL_WORKSPACE,
    GMAIL_WORKSPACE_TRIAL,
    BatchSetting,
    LimitOverrides,
    ProviderLimits,
    ThrottlePolicy,
    Unit,
    WindowLimit,
)
from sendrail.throttle.pushback import ConnectionThrottle, PushbackSettings
from sendrail.throttle.schedule import UNLIMITED_ROOM, NeverFits, check_fits, earliest_send_s, room

__all__ = [
    "EXCHANGE_ONLINE",
    "GMAIL_CONSUMER",
    "GMAIL_WORKSPACE",
    "GMAIL_WORKSPACE_TRIAL",
    "UNLIMITED_ROOM",
    "BatchSetting",
    "CompactLedger",
    "ConnectionThrottle",
    "LimitOverrides",
    "NeverFits",
    "ProviderLimits",
    "PushbackSettings",
    "SendLedger",
    "ThrottlePolicy",
    "Unit",
    "WindowLimit",
    "check_fits",
    "earliest_send_s",
    "room",
]
