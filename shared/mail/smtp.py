"""The SMTP transport: a few reusable sessions to one server for one connection.

Only this module touches aiosmtplib. Whatever a send meets (a reply, a refused login, a
dropped connection, an untrusted certificate) becomes an `Outcome` here, classified by the
channel's reply rules: the sending loop never sees aiosmtplib's errors.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import aiosmtplib
import structlog

from sendrail.delivery.outcome import Outcome, outcome_of
from sendrail.delivery.transport import OutgoingMessage
from sendrail.errors import DeliveryError
from sendrail.events import SmtpServer
from sendrail.mail.oauth import AccessTokenSource
from sendrail.mail.replies import ReplyRule, outcome_for_reply

log = structlog.get_logger(__name__)


class SmtpAuth(Protocol):
    async def login(self, session: aiosmtplib.SMTP) -> None: ...


class PasswordAuth:
    """SMTP AUTH with a username and password (RFC 4954; PLAIN or LOGIN as offered)."""

    def __init__(self, username: str, password: str) -> None:
        self._username = username
        self._password = password

    async def login(self, session: aiosmtplib.SMTP) -> None:
        await session.login(self._username, self._password)

    def __repr__(self) -> str:
        return f"PasswordAuth({self._username!r}, <password hidden>)"


class XOAuth2Auth:
    """SASL XOAUTH2 with the mailbox's access token; a refused cached token is refreshed once."""

    def __init__(self, address: str, tokens: AccessTokenSource) -> None:
        self._address = address
        self._tokens = tokens

    async def login(self, session: aiosmtplib.SMTP) -> None:
        try:
            await session.auth_xoauth2(self._address, await self._tokens.get())
        except aiosmtplib.SMTPAuthenticationError:
            if not self._tokens.invalidate():
                raise
            # The provider may have expired the token early: one fresh token, then give up.
            await session.auth_xoauth2(self._address, await self._tokens.get())


@dataclass
class _Session:
    client: aiosmtplib.SMTP
    last_used_s: float


class SmtpTransport:
    """Sends through at most `max_sessions` concurrent SMTP sessions to one server."""

    def __init__(self, server: SmtpServer, auth: SmtpAuth, tls_context: ssl.SSLContext, *,
                 provider_rules: Sequence[ReplyRule], max_sessions: int, timeout_s: float,
                 session_idle_s: float, local_hostname: str | None = None) -> None:
        self._server = server
        self._auth = auth
        self._tls_context = tls_context
        self._rules = provider_rules
        self._timeout_s = timeout_s
        self._session_idle_s = session_idle_s
        self._local_hostname = local_hostname
        self._slots = asyncio.Semaphore(max_sessions)
        self._idle: list[_Session] = []
        self._sending = 0

    async def send(self, message: OutgoingMessage) -> Outcome:
        self._sending += 1
        try:
            return await self._send(message)
        finally:
            self._sending -= 1

    async def _send(self, message: OutgoingMessage) -> Outcome:
        async with self._slots:
            session = await self._take_session()
            if isinstance(session, Outcome):
                return session
            try:
                refused, text = await session.client.sendmail(
                    message.envelope_from, list(message.recipients), message.raw)
            except aiosmtplib.SMTPRecipientsRefused as error:
                # A session that failed mid-transaction is not trusted again; a new one is cheap.
                await self._discard(session)
                first = error.recipients[0]
                return outcome_for_reply(first.code, first.message, self._rules)
            except aiosmtplib.SMTPResponseException as error:
                await self._discard(session)
                return outcome_for_reply(error.code, error.message, self._rules)
            except (aiosmtplib.SMTPException, OSError) as error:
                await self._discard(session)
                return Outcome.retry(f"connection to {self._server.host} lost: {error}")
            self._keep(session)
            return Outcome.sent(250, text, {address: (reply.code, reply.message)
                                            for address, reply in refused.items()})

    @property
    def busy(self) -> bool:
        """Whether a send is under way or waiting for a session."""
        return self._sending > 0

    @property
    def idle_sessions(self) -> int:
        """Sessions kept open for reuse."""
        return len(self._idle)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for session in idle:
            await self._discard(session)

    async def close_idle(self) -> None:
        """Closes the sessions unused for longer than the idle limit: a mailbox that sends once
        an hour must not keep a TLS session (and its buffers) open in between."""
        now_s = asyncio.get_running_loop().time()
        stale = [s for s in self._idle if now_s - s.last_used_s > self._session_idle_s]
        self._idle = [s for s in self._idle if s not in stale]
        for session in stale:
            await self._discard(session)

    def _keep(self, session: _Session) -> None:
        session.last_used_s = asyncio.get_running_loop().time()
        self._idle.append(session)

    async def _take_session(self) -> _Session | Outcome:
        now_s = asyncio.get_running_loop().time()
        while self._idle:
            session = self._idle.pop()
            if now_s - session.last_used_s <= self._session_idle_s and session.client.is_connected:
                return session
            await self._discard(session)
        client = await self._connect()
        return client if isinstance(client, Outcome) else _Session(client, now_s)

    async def _connect(self) -> aiosmtplib.SMTP | Outcome:
        """A logged-in session, or why there is none."""
        implicit = self._server.tls == "implicit"
        client = aiosmtplib.SMTP(
            hostname=self._server.host, port=self._server.port, use_tls=implicit,
            start_tls=not implicit, tls_context=self._tls_context, timeout=self._timeout_s,
            local_hostname=self._local_hostname,
        )
        try:
            await client.connect()
            await self._auth.login(client)
        except aiosmtplib.SMTPResponseException as error:  # authentication refused, among others
            await _quietly_close(client)
            return outcome_for_reply(error.code, error.message, self._rules)
        except DeliveryError as error:  # the token endpoint's answer
            await _quietly_close(client)
            return outcome_of(error)
        except (aiosmtplib.SMTPException, OSError) as error:
            await _quietly_close(client)
            unverified = error if isinstance(error, ssl.SSLCertVerificationError) else error.__cause__
            if isinstance(unverified, ssl.SSLCertVerificationError):
                return Outcome.broken(f"the TLS certificate of {self._server.host} could not be "
                                      f"verified: {unverified.verify_message}")
            return Outcome.retry(f"cannot reach {self._server.host}:{self._server.port}: {error}")
        return client

    async def _discard(self, session: _Session) -> None:
        await _quietly_close(session.client)


async def _quietly_close(client: aiosmtplib.SMTP) -> None:
    if client.is_connected:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()
