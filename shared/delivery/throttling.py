"""Which limits apply to a connection: its provider's caps, the team's batch, an admin's overrides.

Throttling switches on by itself for Gmail and Exchange Online (PRODUCT.md section 2),
with the recommended batch unless the team set its own; another channel is throttled
only where an admin configured that connection. Pure: it reads the registry view it is
given.
"""

from __future__ import annotations

from typing import Any

from sendrail.events import OAUTH_CHANNELS, ChannelKind, ConnectionConfigured
from sendrail.registry.view import RegistryView
from sendrail.throttle.policy import (
    EXCHANGE_ONLINE,
    GMAIL_CONSUMER,
    GMAIL_WORKSPACE,
    GMAIL_WORKSPACE_TRIAL,
    BatchSetting,
    LimitOverrides,
    ProviderLimits,
    ThrottlePolicy,
)

DEFAULT_BATCH = BatchSetting(batch_size=25, wait_s=45.0)
"""The recommended default of PRODUCT.md section 2: 25 emails every 45 seconds."""

GMAIL_PLANS = {
    "workspace": GMAIL_WORKSPACE,
    "workspace_trial": GMAIL_WORKSPACE_TRIAL,
    "consumer": GMAIL_CONSUMER,
}


def policy_for(connection: ConnectionConfigured, view: RegistryView) -> ThrottlePolicy:
    team, own = view.throttle_settings(connection.tenant_id, connection.connection_id)
    if connection.kind not in OAUTH_CHANNELS:
        team = None  # the team's throttle is for Gmail and Exchange Online (PRODUCT.md section 2)

    def setting(name: str) -> Any:
        """The connection's own value, else the team's, else None."""
        for record in (own, team):
            if record is not None and getattr(record, name) is not None:
                return getattr(record, name)
        return None

    provider: ProviderLimits | None = None
    if connection.kind is ChannelKind.GMAIL:
        provider = GMAIL_PLANS[setting("gmail_plan") or "workspace"]
    elif connection.kind is ChannelKind.EXCHANGE_ONLINE:
        provider = EXCHANGE_ONLINE
    if setting("enabled") is False:
        return ThrottlePolicy.compose(provider=provider)
    batch: BatchSetting | None = None
    if setting("batch_size") is not None:
        batch = BatchSetting(setting("batch_size"), setting("batch_wait_s"))
    elif provider is not None:
        batch = DEFAULT_BATCH
    overrides = LimitOverrides(
        daily_messages=setting("daily_messages"), daily_recipients=setting("daily_recipients"),
        per_minute_messages=setting("per_minute_messages"),
        max_recipients_per_message=setting("max_recipients_per_message"),
    )
    return ThrottlePolicy.compose(provider=provider, batch=batch, overrides=overrides)
