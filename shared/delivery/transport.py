"""How the sending loop hands a message to a connection's server, and the in-memory fake.

A `Transport` never raises for a send: whatever happens becomes an `Outcome`. The same
contract tests run against `MemoryTransport` and the SMTP transport (`sendrail.mail.smtp`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sendrail.delivery.outcome import Outcome
from sendrail.events import ConnectionConfigured


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    envelope_from: str
    recipients: Sequence[str]
    raw: bytes
    """The message's bytes, ready for DATA."""


class Transport(Protocol):
    async def send(self, message: OutgoingMessage) -> Outcome: ...

    async def close(self) -> None: ...


Script = Callable[[OutgoingMessage], Outcome]
"""What the fake answers for a message."""


def accept_all(message: OutgoingMessage) -> Outcome:
    return Outcome.sent(250, "2.0.0 OK queued")


class MemoryTransport:
    """Answers from a script and keeps what it accepted, in order."""

    def __init__(self, script: Script = accept_all) -> None:
        self.script = script
        self.accepted: list[OutgoingMessage] = []
        self.attempts = 0
        self.closed = False

    async def send(self, message: OutgoingMessage) -> Outcome:
        self.attempts += 1
        outcome = self.script(message)
        if outcome.kind == "sent":
            self.accepted.append(message)
        return outcome

    async def close(self) -> None:
        self.closed = True


class Transports(Protocol):
    """A transport per connection, kept while its credentials stay the same."""

    def sessions_per_connection(self) -> int: ...

    def for_connection(self, connection: ConnectionConfigured) -> Transport | Outcome:
        """Its transport, or why there cannot be one (stored credentials that cannot be used)."""
        ...

    async def close_idle(self) -> None:
        """Closes what has not been used for a while: memory stays with the active mailboxes."""
        ...

    async def close(self) -> None: ...


class MemoryTransports:
    """One `MemoryTransport` per connection id, all answering from the same script unless a
    connection is given its own."""

    def __init__(self, script: Script = accept_all, *, sessions: int = 1) -> None:
        self.script = script
        self.sessions = sessions
        self.by_connection: dict[str, MemoryTransport] = {}

    def sessions_per_connection(self) -> int:
        return self.sessions

    def for_connection(self, connection: ConnectionConfigured) -> Transport | Outcome:
        return self.transport(connection.connection_id)

    def transport(self, connection_id: str) -> MemoryTransport:
        return self.by_connection.setdefault(connection_id, MemoryTransport(self.script))

    async def close_idle(self) -> None:
        """Nothing to close in memory."""

    async def close(self) -> None:
        for transport in self.by_connection.values():
            await transport.close()
