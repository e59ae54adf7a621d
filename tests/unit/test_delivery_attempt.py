"""One attempt's failures belong to its message: nothing it raises escapes as a bare exception."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime

import aiohttp

from sendrail.delivery.attempt import DeliveryAttempts, Result
from sendrail.events import (
    ChannelKind,
    ConnectionConfigured,
    EmailRequested,
    EmailRouted,
    SmtpServer,
    Source,
    send_id_for,
)
from sendrail.mail.oauth import TokenEndpoint
from sendrail.secrets import SecretBox
from sendrail.services.sender_smtp.main import POLICY
from sendrail.settings import OAuthSettings, SenderSettings

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _connection(box: SecretBox) -> ConnectionConfigured:
    return ConnectionConfigured(
        tenant_id="acme", connection_id="dave-smtp", kind=ChannelKind.CUSTOM_SMTP, owner_user_id="dave",
        smtp=SmtpServer(host="127.0.0.1", port=1), username="dave", password=box.seal("pw"),
        connected_at=NOW, updated_at=NOW)


def _unbuildable() -> EmailRouted:
    """Headers equal but for case: validation refuses them now; a record from before (or
    built around validation) must still fail alone, not raise out of the turn."""
    request = EmailRequested.model_construct(
        idempotency_key="k", tenant_id="acme", user_id="dave", identity="dave@acme.example",
        source=Source.API, campaign_id=None, template_id=None, to=["lee@example.org"], cc=[], bcc=[],
        subject="Hello", text="Hi", html=None, requested_at=NOW, schema_version=1,
        headers={"X-Step": "1", "x-step": "2", "Orig-Date": "x", "orig-date": "y"})
    return EmailRouted.model_construct(
        send_id=send_id_for("acme", "k"), channel=ChannelKind.CUSTOM_SMTP, connection_id="dave-smtp",
        request=request, routed_at=NOW, schema_version=1)


async def test_a_message_that_cannot_be_built_fails_alone_with_the_reason() -> None:
    box = SecretBox(SecretBox.generate_key())
    async with aiohttp.ClientSession() as http:
        attempts = DeliveryAttempts(POLICY, box, TokenEndpoint(OAuthSettings(), http),
                                    ssl.create_default_context(), SenderSettings(), lambda *_: None)
        attempted = await attempts.attempt(_unbuildable(), _connection(box), NOW)
        await attempts.close()
    assert attempted.result is Result.FAILED
    assert attempted.reason is not None and attempted.reason.startswith("the message could not be built")
