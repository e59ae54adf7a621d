"""What every `Transport` promises, checked against the in-memory fake and the SMTP transport
talking to the sandbox's servers: the same tests for both, so the fake stays honest."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from sendrail.delivery.outcome import Outcome, OutcomeKind
from sendrail.delivery.transport import MemoryTransport, OutgoingMessage, Transport, accept_all
from sendrail.events import SmtpServer
from sendrail.mail.smtp import PasswordAuth, SmtpTransport
from sendrail.mail.tls import client_tls_context
from sendrail.sandbox.mail_sandbox import MailSandbox
from sendrail.settings import TlsSettings


@dataclass
class Subject:
    """A transport, and how to see what reached the other side."""

    good: Transport
    refused_login: Transport
    arrived: Callable[[bytes], int]
    """How many messages carrying this marker arrived."""


def _message(marker: str, recipients: list[str] | None = None) -> OutgoingMessage:
    raw = (f"From: contract@example.com\r\nTo: lee@example.org\r\nSubject: {marker}\r\n"
           f"Message-ID: <{marker}@example.com>\r\n\r\nHello.\r\n").encode()
    return OutgoingMessage("contract@example.com", recipients or ["lee@example.org"], raw)


def _memory() -> Subject:
    good = MemoryTransport()
    refused = MemoryTransport(lambda m: Outcome(OutcomeKind.BROKEN, "the server refused the credentials",
                                                535, "5.7.8 Authentication credentials invalid"))
    return Subject(good, refused, lambda marker: sum(marker in m.raw for m in good.accepted))


def _smtp(mail: MailSandbox) -> Subject:
    mail.add_password_user("custom_smtp", "contract@example.com", "right")
    endpoint = mail.info.smtp["custom_smtp"]
    context: ssl.SSLContext = client_tls_context(TlsSettings(ca_file=mail.info.ca_file))

    def transport(password: str) -> SmtpTransport:
        return SmtpTransport(SmtpServer(host=endpoint.host, port=endpoint.port),
                             PasswordAuth("contract@example.com", password), context,
                             provider_rules=(), max_sessions=2, timeout_s=10, session_idle_s=30)

    return Subject(transport("right"), transport("wrong"),
                   lambda marker: sum(marker in e.content for e in mail.received("custom_smtp")))


@pytest.fixture(params=["memory", "smtp"])
async def subject(request: pytest.FixtureRequest, mail: MailSandbox) -> AsyncIterator[Subject]:
    made = _memory() if request.param == "memory" else _smtp(mail)
    yield made
    await made.good.close()
    await made.refused_login.close()


async def test_an_accepted_message_is_sent_and_arrives_once(subject: Subject) -> None:
    outcome = await subject.good.send(_message("contract-sent"))
    assert outcome.kind is OutcomeKind.SENT and outcome.reply_code == 250
    assert subject.arrived(b"contract-sent") == 1


async def test_refused_credentials_break_the_connection_and_nothing_arrives(subject: Subject) -> None:
    outcome = await subject.refused_login.send(_message("contract-refused"))
    assert outcome.kind is OutcomeKind.BROKEN and outcome.reply_code == 535
    assert outcome.reason
    assert subject.arrived(b"contract-refused") == 0


async def test_sends_after_a_refusal_still_go_through_a_good_transport(subject: Subject) -> None:
    await subject.refused_login.send(_message("contract-before"))
    outcomes = [await subject.good.send(_message(f"contract-after-{i}")) for i in range(3)]
    assert [o.kind for o in outcomes] == [OutcomeKind.SENT] * 3


def test_the_fake_accepts_by_default() -> None:
    assert accept_all(_message("x")).kind is OutcomeKind.SENT
