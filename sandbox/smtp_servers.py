"""Submission servers that play the providers: Gmail, Exchange Online and password SMTP servers.

Each server is aiosmtpd on 127.0.0.1 with STARTTLS on the sandbox certificate, and
answers the way its provider does: the same authentication mechanisms, limits and
reply texts (PRODUCT.md sections 2 and 3). Accepted mail is delivered into the
recipients' Maildirs; recipients in the bounce domain get no mail, and the sender
gets the provider's bounce instead, as a real submission server accepts first and
bounces later.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import hmac
import secrets
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import format_datetime
from typing import Any, Literal

import structlog
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from sendrail.sandbox.dsn import (
    BounceBuilder,
    Undelivered,
    gmail_bounce,
    office365_bounce,
    postfix_bounce,
)
from sendrail.sandbox.maildir import MaildirStore
from sendrail.sandbox.oauth_authority import OAuthAuthority
from sendrail.sandbox.tls import SandboxCertificates

log = structlog.get_logger(__name__)

ServerKind = Literal[
    "gmail", "exchange_online", "exchange_onprem", "custom_smtp", "team_smtp", "legacy"
]
SERVER_KINDS: tuple[ServerKind, ...] = (
    "gmail",
    "exchange_online",
    "exchange_onprem",
    "custom_smtp",
    "team_smtp",
    "legacy",
)
AuthKind = Literal["xoauth2", "password"]

_MB = 1024 * 1024


@dataclass(frozen=True)
class Replies:
    """A provider's reply texts; `{trace}` is a fresh per-reply id, `{host}` the server."""

    greeting: str
    """After `220 <host> `."""
    starttls_first: str
    auth_required: str
    auth_succeeded: str
    auth_failed: str
    mail_accepted: str
    rcpt_accepted: str
    data_accepted: str
    too_many_recipients: str


@dataclass(frozen=True)
class SessionLimit:
    """How many authenticated sessions one mailbox may hold at once, and the reply beyond that."""

    max_sessions: int
    refused: str


@dataclass(frozen=True)
class ServerProfile:
    """How one kind of server behaves: authentication, limits, replies and bounce style."""

    kind: ServerKind
    hostname: str
    auth: AuthKind
    max_message_bytes: int
    max_recipients: int
    """RFC 5321 section 4.5.3.1.8 requires at least 100; providers set their own."""
    replies: Replies
    bounce: BounceBuilder
    xoauth2_error: str = ""
    """The JSON a failed XOAUTH2 gets as its 334 challenge."""
    send_as_denied: str | None = None
    """The reply to a MAIL FROM other than the authenticated address; None lets it through."""
    session_limit: SessionLimit | None = None


_GMAIL_REPLIES = Replies(
    greeting="ESMTP {trace} - gsmtp",
    starttls_first="530 5.7.0 Must issue a STARTTLS command first. {trace} - gsmtp",
    auth_required=(
        "530-5.7.0 Authentication Required. For more information, go to\r\n"
        "530 5.7.0  https://support.google.com/mail/?p=WantAuthError {trace} - gsmtp"
    ),
    auth_succeeded="235 2.7.0 Accepted",
    auth_failed=(
        "535-5.7.8 Username and Password not accepted. For more information, go to\r\n"
        "535 5.7.8  https://support.google.com/mail/?p=BadCredentials {trace} - gsmtp"
    ),
    mail_accepted="250 2.1.0 OK {trace} - gsmtp",
    rcpt_accepted="250 2.1.5 OK {trace} - gsmtp",
    data_accepted="250 2.0.0 OK  {epoch} {trace} - gsmtp",
    too_many_recipients=(
        "452 4.5.3 Your message has too many recipients. For more information regarding "
        "Google's sending limits, go to  https://support.google.com/mail/answer/6592 "
        "{trace} - gsmtp"
    ),
)

_EXCHANGE_REPLIES = Replies(
    greeting="Microsoft ESMTP MAIL Service ready at {date}",
    starttls_first="530 5.7.0 Must issue a STARTTLS command first",
    auth_required="530 5.7.57 Client not authenticated to send mail. [{host}]",
    auth_succeeded="235 2.7.0 Authentication successful",
    auth_failed="535 5.7.3 Authentication unsuccessful [{host}]",
    mail_accepted="250 2.1.0 Sender OK",
    rcpt_accepted="250 2.1.5 Recipient OK",
    data_accepted="250 2.0.0 OK <{trace}@{host}> [Hostname={host}]",
    too_many_recipients="452 4.5.3 Too many recipients",
)

_POSTFIX_REPLIES = Replies(
    greeting="ESMTP Postfix",
    starttls_first="530 5.7.0 Must issue a STARTTLS command first",
    auth_required="530 5.7.0 Authentication required",
    auth_succeeded="235 2.7.0 Authentication successful",
    auth_failed="535 5.7.8 Authentication credentials invalid",
    mail_accepted="250 2.1.0 Ok",
    rcpt_accepted="250 2.1.5 Ok",
    data_accepted="250 2.0.0 Ok: queued as {queue_id}",
    too_many_recipients="452 4.5.3 Error: too many recipients",
)


def _password_server(kind: ServerKind, hostname: str) -> ServerProfile:
    return ServerProfile(
        kind=kind,
        hostname=hostname,
        auth="password",
        max_message_bytes=25 * _MB,
        # Postfix's default smtpd_recipient_limit.
        max_recipients=1000,
        replies=_POSTFIX_REPLIES,
        bounce=postfix_bounce,
    )


PROFILES: dict[ServerKind, ServerProfile] = {
    # Gmail SMTP: 35 MB messages (the SIZE smtp.gmail.com advertises), 100 recipients
    # per message through SMTP (Google Workspace sending limits).
    "gmail": ServerProfile(
        kind="gmail",
        hostname="smtp.gmail.com",
        auth="xoauth2",
        xoauth2_error='{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}',
        max_message_bytes=35_882_577,
        max_recipients=100,
        replies=_GMAIL_REPLIES,
        bounce=gmail_bounce,
    ),
    # Exchange Online: 35 MB default message size, 500 recipients by default, at most
    # 3 concurrent connections per mailbox, and no sending as another address
    # (Exchange Online limits; "SMTP AUTH client submission" documentation).
    "exchange_online": ServerProfile(
        kind="exchange_online",
        hostname="SN4PR0201CA0052.outlook.office365.com",
        auth="xoauth2",
        xoauth2_error='{"status":"401","schemes":"bearer","scope":"https://outlook.office.com/SMTP.Send"}',
        max_message_bytes=35 * _MB,
        max_recipients=500,
        replies=_EXCHANGE_REPLIES,
        bounce=office365_bounce,
        send_as_denied=(
            "550 5.7.60 SMTP; Client does not have permissions to send as this sender [{host}]"
        ),
        session_limit=SessionLimit(
            max_sessions=3,
            refused=(
                "432 4.3.2 Concurrent connections limit exceeded. Visit "
                "https://aka.ms/concurrent_sending for more information. [Hostname={host}]"
            ),
        ),
    ),
    "exchange_onprem": _password_server("exchange_onprem", "exchange.corp.example"),
    "custom_smtp": _password_server("custom_smtp", "smtp.custom.example"),
    "team_smtp": _password_server("team_smtp", "smtp.team.example"),
    "legacy": _password_server("legacy", "legacy-pool.sendrail.example"),
}


@dataclass(frozen=True)
class ReceivedEnvelope:
    """One message a server accepted, as the client submitted it."""

    auth_mechanism: str
    identity: str
    """Who authenticated: the token's address (XOAUTH2) or the username (PLAIN/LOGIN)."""
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    received_at_s: float
    """When the server accepted it: what the provider counts against its limits."""


@dataclass(frozen=True)
class _Authenticated:
    mechanism: str
    identity: str


@dataclass(frozen=True)
class _XOAuth2Response:
    """The XOAUTH2 initial response (developers.google.com/gmail/imap/xoauth2-protocol)."""

    user: str
    access_token: str


def _parse_xoauth2(initial_response: bytes) -> _XOAuth2Response | None:
    """`user=<address>^Aauth=Bearer <token>^A^A`, or None if it is not that."""
    try:
        text = initial_response.decode("utf-8")
    except UnicodeDecodeError:
        return None
    fields = dict(part.split("=", 1) for part in text.split("\x01") if "=" in part)
    scheme, _, token = fields.get("auth", "").partition(" ")
    user = fields.get("user", "")
    if not user or scheme.lower() != "bearer" or not token:
        return None
    return _XOAuth2Response(user, token)


def _server_tls_context(certificates: SandboxCertificates) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # Exchange Online accepts TLS 1.2 and later only; so does every sandbox server.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificates.cert_file, certificates.key_file)
    return context


class _ProviderSMTP(SMTP):
    """aiosmtpd's protocol engine with the provider's STARTTLS and AUTH rules in front.

    RFC 3207 section 4: a server may refuse every command but NOOP, EHLO, STARTTLS
    and QUIT before STARTTLS, answering 530; providers also refuse AUTH there
    (so credentials never cross in clear text).
    """

    def __init__(self, handler: _ProviderHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._provider_handler = handler

    def _reply(self, template: str) -> str:
        return self._provider_handler.reply(template)

    async def _refused_before_tls(self) -> bool:
        assert self.session is not None
        if self.session.ssl is None:
            await self.push(self._reply(self._provider_handler.profile.replies.starttls_first))
            return True
        return False

    async def smtp_AUTH(self, arg: str) -> None:
        if await self._refused_before_tls():
            return
        await super().smtp_AUTH(arg)

    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self._refused_before_tls():
            return
        assert self.session is not None
        if self.session.host_name and not self.session.authenticated:
            # RFC 4954 section 6: 530 when the server requires authentication.
            await self.push(self._reply(self._provider_handler.profile.replies.auth_required))
            return
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self._refused_before_tls():
            return
        await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg: str) -> None:
        if await self._refused_before_tls():
            return
        await super().smtp_DATA(arg)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first_connection = self.transport is None
        super().connection_made(transport)
        if first_connection:
            self._provider_handler.session_opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        assert self.session is not None
        self._provider_handler.session_closed(self, self.session)
        super().connection_lost(error)


@dataclass
class _SessionSlots:
    """The authenticated sessions a mailbox holds (Exchange Online counts them)."""

    by_mailbox: dict[str, set[Session]] = field(default_factory=dict)

    def acquire(self, mailbox: str, session: Session, limit: int) -> bool:
        holders = self.by_mailbox.setdefault(mailbox, set())
        if session in holders:
            return True
        if len(holders) >= limit:
            return False
        holders.add(session)
        return True

    def release(self, session: Session) -> None:
        for holders in self.by_mailbox.values():
            holders.discard(session)


class _ProviderHandler:
    """aiosmtpd handler hooks: what the provider checks and where accepted mail goes."""

    def __init__(
        self,
        profile: ServerProfile,
        *,
        authority: OAuthAuthority,
        maildirs: MaildirStore,
        bounce_domain: str,
        clock: Callable[[], float],
    ) -> None:
        self.profile = profile
        self._authority = authority
        self._maildirs = maildirs
        self._bounce_domain = bounce_domain.lower()
        self._clock = clock
        self.passwords: dict[str, str] = {}
        self.received: list[ReceivedEnvelope] = []
        self.scripted_mail_replies: dict[str, deque[str]] = {}
        """Replies the next MAIL FROMs of a sender get instead of acceptance (quota, 421...)."""
        self.refused_recipients: dict[str, str] = {}
        self.open_sessions: set[_ProviderSMTP] = set()
        self._slots = _SessionSlots()

    def reply(self, template: str) -> str:
        now_s = self._clock()
        return template.format(
            trace=secrets.token_hex(10),
            host=self.profile.hostname,
            epoch=int(now_s),
            queue_id=secrets.token_hex(5).upper(),
            date=format_datetime(datetime.datetime.fromtimestamp(now_s, datetime.UTC)),
        )

    def session_opened(self, protocol: _ProviderSMTP) -> None:
        self.open_sessions.add(protocol)

    def session_closed(self, protocol: _ProviderSMTP, session: Session) -> None:
        self.open_sessions.discard(protocol)
        self._slots.release(session)

    # --- authentication ---

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """SASL XOAUTH2 as Gmail and Exchange Online implement it (PRODUCT.md section 3)."""
        if len(args) == 2:
            try:
                initial_response = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Cannot Decode response")
                return AuthResult(success=False, handled=True)
        else:
            # RFC 4954 section 4: without an initial response the server sends an empty challenge.
            challenged = await server.challenge_auth("")
            if challenged is MISSING:
                return AuthResult(success=False, handled=True)
            initial_response = challenged
        parsed = _parse_xoauth2(initial_response)
        address = None
        if parsed is not None:
            address = self._authority.check_access(
                parsed.access_token, now_s=self._clock(),
                provider="google" if self.profile.kind == "gmail" else "microsoft",
            )
        if parsed is not None and address is not None and address == parsed.user.lower():
            log.info(
                "smtp.auth_succeeded",
                server=self.profile.kind,
                mechanism="XOAUTH2",
                identity=address,
            )
            return AuthResult(
                success=True,
                auth_data=_Authenticated("XOAUTH2", address),
                message=self.reply(self.profile.replies.auth_succeeded),
            )
        log.info("smtp.auth_failed", server=self.profile.kind, mechanism="XOAUTH2")
        # The error travels as a 334 challenge; the client answers with an empty
        # line and only then gets the final 535 (Google's XOAUTH2 protocol page).
        answer = await server.challenge_auth(self.profile.xoauth2_error, encode_to_b64=True)
        if answer is MISSING:
            return AuthResult(success=False, handled=True)
        return AuthResult(
            success=False, handled=False, message=self.reply(self.profile.replies.auth_failed)
        )

    def authenticate_password(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """aiosmtpd's authenticator for its built-in PLAIN and LOGIN mechanisms."""
        assert isinstance(auth_data, LoginPassword)
        username = auth_data.login.decode("utf-8", "replace")
        expected = self.passwords.get(username)
        given = auth_data.password.decode("utf-8", "replace")
        if expected is not None and hmac.compare_digest(expected.encode(), given.encode()):
            log.info(
                "smtp.auth_succeeded",
                server=self.profile.kind,
                mechanism=mechanism,
                identity=username,
            )
            return AuthResult(
                success=True,
                auth_data=_Authenticated(mechanism, username),
                message=self.reply(self.profile.replies.auth_succeeded),
            )
        log.info("smtp.auth_failed", server=self.profile.kind, mechanism=mechanism)
        return AuthResult(
            success=False, handled=False, message=self.reply(self.profile.replies.auth_failed)
        )

    # --- the mail transaction ---

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        authenticated = session.auth_data
        assert isinstance(authenticated, _Authenticated)
        send_as_denied = self.profile.send_as_denied
        if send_as_denied is not None and address.lower() != authenticated.identity.lower():
            return self.reply(send_as_denied)
        limit = self.profile.session_limit
        if limit is not None and not self._slots.acquire(
            authenticated.identity, session, limit.max_sessions
        ):
            return self.reply(limit.refused)
        scripted = self.scripted_mail_replies.get(address.lower())
        if scripted:
            return self.reply(scripted.popleft())
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return self.reply(self.profile.replies.mail_accepted)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.profile.max_recipients:
            # RFC 5321 section 4.5.3.1.10: 452 for too many recipients; the client
            # sends the rest in another transaction.
            return self.reply(self.profile.replies.too_many_recipients)
        refusal = self.refused_recipients.get(address.lower())
        if refusal is not None:
            return self.reply(refusal)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return self.reply(self.profile.replies.rcpt_accepted)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        authenticated = session.auth_data
        assert isinstance(authenticated, _Authenticated)
        assert envelope.mail_from is not None and envelope.original_content is not None
        content = envelope.original_content
        self.received.append(
            ReceivedEnvelope(
                auth_mechanism=authenticated.mechanism,
                identity=authenticated.identity,
                mail_from=envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos),
                content=content,
                received_at_s=self._clock(),
            )
        )
        self._deliver(authenticated, envelope.mail_from, envelope.rcpt_tos, content)
        return self.reply(self.profile.replies.data_accepted)

    def _deliver(
        self, authenticated: _Authenticated, mail_from: str, rcpt_tos: Sequence[str], content: bytes
    ) -> None:
        now_s = self._clock()
        unreachable = tuple(
            r for r in rcpt_tos if r.rpartition("@")[2].lower() == self._bounce_domain
        )
        for recipient in rcpt_tos:
            if recipient not in unreachable:
                self._maildirs.deliver(recipient, content, return_path=mail_from, now_s=now_s)
        if not unreachable:
            return
        # Gmail and Exchange Online return bounces to the account's own inbox
        # (PRODUCT.md section 4); other servers to the envelope sender (RFC 5321 section 6.1).
        bounce_to = authenticated.identity if self.profile.auth == "xoauth2" else mail_from
        now = datetime.datetime.fromtimestamp(now_s, datetime.UTC)
        bounce = self.profile.bounce(
            Undelivered(
                original=content,
                sender=bounce_to,
                recipients=unreachable,
                reporting_host=self.profile.hostname,
                arrived_at=now,
                bounced_at=now,
            )
        )
        # RFC 5321 section 4.5.5: a bounce travels with the null reverse-path.
        self._maildirs.deliver(bounce_to, bounce, return_path="", now_s=now_s)
        log.info("smtp.bounced", server=self.profile.kind, recipients=len(unreachable))


class SandboxSmtpServer:
    """One provider's submission server on a free port of 127.0.0.1, with STARTTLS."""

    host = "127.0.0.1"

    def __init__(
        self,
        profile: ServerProfile,
        *,
        certificates: SandboxCertificates,
        authority: OAuthAuthority,
        maildirs: MaildirStore,
        bounce_domain: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.profile = profile
        self._tls_context = _server_tls_context(certificates)
        self._handler = _ProviderHandler(
            profile,
            authority=authority,
            maildirs=maildirs,
            bounce_domain=bounce_domain,
            clock=clock,
        )
        self._server: asyncio.Server | None = None
        self.port = 0

    def add_password_user(self, username: str, password: str) -> None:
        if self.profile.auth != "password":
            raise ValueError(f"{self.profile.kind} authenticates with XOAUTH2, not passwords")
        self._handler.passwords[username] = password

    def script_mail_replies(self, mail_from: str, replies: list[str]) -> None:
        self._handler.scripted_mail_replies.setdefault(mail_from.lower(), deque()).extend(replies)

    def refuse_recipient(self, address: str, reply: str) -> None:
        self._handler.refused_recipients[address.lower()] = reply

    @property
    def received(self) -> list[ReceivedEnvelope]:
        """What this server accepted so far, oldest first."""
        return list(self._handler.received)

    def _protocol(self) -> _ProviderSMTP:
        excluded = ["XOAUTH2"] if self.profile.auth == "password" else ["PLAIN", "LOGIN"]
        return _ProviderSMTP(
            self._handler,
            hostname=self.profile.hostname,
            ident=self._handler.reply(self.profile.replies.greeting),
            data_size_limit=self.profile.max_message_bytes,
            tls_context=self._tls_context,
            auth_required=True,
            auth_require_tls=True,
            auth_exclude_mechanism=excluded,
            authenticator=self._handler.authenticate_password,
            loop=asyncio.get_running_loop(),
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host=self.host, port=0)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("smtp.started", server=self.profile.kind, port=self.port)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for protocol in list(self._handler.open_sessions):
            if protocol.transport is not None:
                protocol.transport.close()
        await self._server.wait_closed()
        self._server = None
