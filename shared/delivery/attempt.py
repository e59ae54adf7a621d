"""One attempt to hand one email to its connection's SMTP server, and what came of it.

No retries and no waiting here: the dispatcher decides when to try again, so a
connection's trouble never holds up another's mail.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sendrail.delivery.credentials import StoreRotatedToken, smtp_auth_for
from sendrail.delivery.policy import ChannelPolicy
from sendrail.errors import (
    ConfigurationError,
    ConnectionBroken,
    DeliveryError,
    PermanentError,
    QuotaExceeded,
    TransientError,
)
from sendrail.events import ConnectionConfigured, EmailRouted
from sendrail.mail.message import build_message
from sendrail.mail.oauth import TokenEndpoint
from sendrail.mail.smtp import SmtpReply, SmtpTransport
from sendrail.secrets import SecretBox
from sendrail.settings import SenderSettings


class Result(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    PAUSE = "pause"
    BROKEN = "broken"
    FAILED = "failed"


@dataclass(frozen=True)
class Attempted:
    result: Result
    reply: SmtpReply | None = None
    error: DeliveryError | None = None

    @property
    def reason(self) -> str | None:
        return self.error.reason if self.error is not None else None


_RESULTS: tuple[tuple[type[DeliveryError], Result], ...] = (
    (QuotaExceeded, Result.PAUSE),  # before TransientError, its base
    (TransientError, Result.RETRY),
    (ConnectionBroken, Result.BROKEN),
    (PermanentError, Result.FAILED),
)

ConnectionVersion = tuple[str, str, datetime]
"""(tenant_id, connection_id, connected_at): new credentials mean new sessions."""



class DeliveryAttempts:
    def __init__(self, policy: ChannelPolicy, secrets: SecretBox, tokens: TokenEndpoint,
                 tls_context: ssl.SSLContext, settings: SenderSettings,
                 store_rotated: StoreRotatedToken) -> None:
        self._policy = policy
        self._secrets = secrets
        self._tokens = tokens
        self._tls_context = tls_context
        self._settings = settings
        self._store_rotated = store_rotated
        self._transports: dict[ConnectionVersion, SmtpTransport] = {}

    def sessions_per_connection(self) -> int:
        return min(self._policy.max_sessions_per_connection, self._settings.connections_per_server)

    async def attempt(self, routed: EmailRouted, connection: ConnectionConfigured,
                      now: datetime) -> Attempted:
        try:
            raw = self._message(routed, connection, now)
            reply = await self._send(connection, routed, raw)
        except DeliveryError as error:
            result = next(r for kind, r in _RESULTS if isinstance(error, kind))
            return Attempted(result, error=error)
        except ConfigurationError as error:  # stored credentials that cannot be used
            return Attempted(Result.BROKEN, error=ConnectionBroken(str(error)))
        return Attempted(Result.SENT, reply=reply)

    def _message(self, routed: EmailRouted, connection: ConnectionConfigured, now: datetime) -> bytes:
        """The message's bytes; whatever stops it from being built fails this message alone."""
        max_bytes = min(self._policy.max_message_bytes,
                        connection.max_message_bytes or self._policy.max_message_bytes)
        try:
            return build_message(routed, date=now, max_bytes=max_bytes)
        except DeliveryError:
            raise
        except Exception as error:
            raise PermanentError(f"the message could not be built: {type(error).__name__}: "
                                 f"{error}") from error

    async def _send(self, connection: ConnectionConfigured, routed: EmailRouted, raw: bytes) -> SmtpReply:
        """The transport converts the errors it knows. Anything else fails this message alone:
        retried, it would block its connection's queue for good, and it may have reached the
        server already (never sent twice)."""
        try:
            return await self._transport(connection).send(
                routed.request.identity, routed.request.recipients, raw)
        except (DeliveryError, ConfigurationError):
            raise
        except Exception as error:
            raise PermanentError(f"unexpected failure while sending: {type(error).__name__}: "
                                 f"{error}") from error

    def _transport(self, connection: ConnectionConfigured) -> SmtpTransport:
        version = (connection.tenant_id, connection.connection_id, connection.connected_at)
        transport = self._transports.get(version)
        if transport is None:
            auth = smtp_auth_for(connection, self._tokens, self._secrets, self._store_rotated)
            transport = SmtpTransport(
                connection.smtp, auth, self._tls_context,
                provider_rules=self._policy.provider_rules,
                max_sessions=self.sessions_per_connection(),
                timeout_s=self._settings.smtp_timeout_s,
                session_idle_s=self._settings.session_idle_s,
            )
            self._transports[version] = transport
        return transport

    async def close(self) -> None:
        transports, self._transports = self._transports, {}
        for transport in transports.values():
            await transport.close()
