"""The SMTP transport against the sandbox's servers: TLS, authentication, reuse, limits."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from sendrail.delivery.outcome import OutcomeKind
from sendrail.delivery.transport import OutgoingMessage
from sendrail.events import SmtpServer
from sendrail.mail.oauth import AccessTokenSource, TokenEndpoint
from sendrail.mail.smtp import PasswordAuth, SmtpTransport, XOAuth2Auth
from sendrail.mail.tls import client_tls_context
from sendrail.sandbox.mail_sandbox import MailSandbox
from sendrail.services.sender_exchange.replies import EXCHANGE_ONLINE_RULES
from sendrail.settings import OAuthSettings, TlsSettings


def _message(sender: str, subject: str) -> bytes:
    return (f"From: {sender}\r\nTo: lee@example.org\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@example.com>\r\n\r\nHello.\r\n").encode()


def _transport(mail: MailSandbox, kind: str, auth, context: ssl.SSLContext, *,
               max_sessions: int = 3, idle_s: float = 30.0) -> SmtpTransport:
    endpoint = mail.info.smtp[kind]
    return SmtpTransport(SmtpServer(host=endpoint.host, port=endpoint.port), auth, context,
                         provider_rules=EXCHANGE_ONLINE_RULES, max_sessions=max_sessions,
                         timeout_s=10, session_idle_s=idle_s)


@pytest.fixture(scope="module")
def trusted(mail: MailSandbox) -> ssl.SSLContext:
    return client_tls_context(TlsSettings(ca_file=mail.info.ca_file))


@pytest.fixture(scope="module")
async def tokens_endpoint(mail: MailSandbox) -> AsyncIterator[TokenEndpoint]:
    async with aiohttp.ClientSession() as session:
        yield TokenEndpoint(OAuthSettings(google_token_url=mail.info.token_url_google,
                                          microsoft_token_url=mail.info.token_url_microsoft), session)


async def test_an_unknown_certificate_authority_is_refused(mail: MailSandbox) -> None:
    mail.add_password_user("custom_smtp", "tls@example.com", "pw")
    untrusting = client_tls_context(TlsSettings())  # the system's CAs only
    transport = _transport(mail, "custom_smtp", PasswordAuth("tls@example.com", "pw"), untrusting)

    outcome = await transport.send(OutgoingMessage("tls@example.com", ["lee@example.org"],
                                                   _message("tls@example.com", "t1")))
    assert outcome.kind is OutcomeKind.BROKEN and "certificate" in (outcome.reason or "")
    assert not any(e.mail_from == "tls@example.com" for e in mail.received("custom_smtp"))


async def test_a_wrong_password_breaks_the_connection(mail: MailSandbox, trusted: ssl.SSLContext) -> None:
    mail.add_password_user("custom_smtp", "pw@example.com", "right")
    transport = _transport(mail, "custom_smtp", PasswordAuth("pw@example.com", "wrong"), trusted)

    outcome = await transport.send(OutgoingMessage("pw@example.com", ["lee@example.org"],
                                                   _message("pw@example.com", "t2")))
    assert outcome.kind is OutcomeKind.BROKEN and outcome.reply_code == 535


async def test_sessions_are_reused_and_capped(mail: MailSandbox, trusted: ssl.SSLContext,
                                              tokens_endpoint: TokenEndpoint) -> None:
    address = "cap@example.com"
    refresh_token = mail.add_oauth_user("microsoft", address)
    tokens = AccessTokenSource(tokens_endpoint, "microsoft", refresh_token,
                               microsoft_tenant="common", clock_s=time.time)
    transport = _transport(mail, "exchange_online", XOAuth2Auth(address, tokens), trusted,
                           max_sessions=3)
    # Ten at once: Exchange Online refuses a fourth concurrent session (432 4.3.2), so this
    # passes only if the transport never opens more than three.
    replies = await asyncio.gather(*(
        transport.send(OutgoingMessage(address, ["lee@example.org"], _message(address, f"cap{i}"))) for i in range(10)))

    assert all(reply.kind is OutcomeKind.SENT and reply.reply_code == 250 for reply in replies)
    assert 1 <= transport.idle_sessions <= 3
    before = transport.idle_sessions
    await transport.send(OutgoingMessage(address, ["lee@example.org"], _message(address, "again")))
    assert transport.idle_sessions == before  # a kept session was used, none was added
    await transport.close()
    assert transport.idle_sessions == 0


async def test_recipients_over_the_providers_limit_are_reported_refused(
    mail: MailSandbox, trusted: ssl.SSLContext, tokens_endpoint: TokenEndpoint
) -> None:
    address = "many@example.com"
    tokens = AccessTokenSource(tokens_endpoint, "google", mail.add_oauth_user("google", address),
                               microsoft_tenant="common", clock_s=time.time)
    transport = _transport(mail, "gmail", XOAuth2Auth(address, tokens), trusted)
    recipients = [f"r{i}@example.org" for i in range(101)]

    reply = await transport.send(OutgoingMessage(address, recipients, _message(address, "many")))

    # Gmail takes 100 recipients over SMTP and answers 452 4.5.3 to the next one; the
    # sender refuses such messages before sending, and this shows why.
    assert list(reply.refused) == ["r100@example.org"]
    code, text = reply.refused["r100@example.org"]
    assert code == 452 and "4.5.3" in text
    await transport.close()


async def test_a_sent_message_arrives_unchanged(mail: MailSandbox, trusted: ssl.SSLContext) -> None:
    mail.add_password_user("team_smtp", "team@example.com", "pw")
    transport = _transport(mail, "team_smtp", PasswordAuth("team@example.com", "pw"), trusted)
    raw = _message("team@example.com", "exact")

    await transport.send(OutgoingMessage("team@example.com", ["lee@example.org"], raw))

    received = [e for e in mail.received("team_smtp") if b"exact@example.com" in e.content]
    assert len(received) == 1
    parsed = email.message_from_bytes(received[0].content, policy=email.policy.default)
    assert parsed["Message-ID"] == "<exact@example.com>"
    await transport.close()


async def test_sessions_idle_past_the_limit_are_closed(mail: MailSandbox, trusted: ssl.SSLContext) -> None:
    mail.add_password_user("team_smtp", "idle@example.com", "pw")
    transport = _transport(mail, "team_smtp", PasswordAuth("idle@example.com", "pw"), trusted, idle_s=0.0)
    await transport.send(OutgoingMessage("idle@example.com", ["lee@example.org"],
                                         _message("idle@example.com", "idle")))
    assert transport.idle_sessions == 1 and not transport.busy

    await transport.close_idle()  # idle for longer than 0 s by now

    assert transport.idle_sessions == 0
