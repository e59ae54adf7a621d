"""What came of handing one message to its connection's server: the one type the sending
loop decides on.

A transport turns whatever happened (a reply, a refused login, a dropped connection, an
error of its library) into an `Outcome`; the loop never sees an exception of a send.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from sendrail.errors import ConnectionBroken, DeliveryError, TransientError


class OutcomeKind(StrEnum):
    SENT = "sent"
    """The server accepted the message (perhaps refusing some recipients)."""
    RETRY = "retry"
    """Temporary: try again later with backoff."""
    PAUSE = "pause"
    """The mailbox hit a provider cap: hold its mail until the window frees room."""
    BROKEN = "broken"
    """Credentials refused or sending disabled: hold the mail until the user reconnects."""
    FAILED = "failed"
    """This message will not be accepted as it is: fail it, never retry."""


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    reason: str | None = None
    """What a person should know, in a sentence (None for a plain success)."""
    reply_code: int | None = None
    reply_text: str | None = None
    refused: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    """Recipients the server refused while accepting the others."""

    @classmethod
    def sent(cls, reply_code: int, reply_text: str,
             refused: Mapping[str, tuple[int, str]] | None = None) -> Outcome:
        return cls(OutcomeKind.SENT, reply_code=reply_code, reply_text=reply_text,
                   refused=dict(refused or {}))

    @classmethod
    def failed(cls, reason: str) -> Outcome:
        return cls(OutcomeKind.FAILED, reason)

    @classmethod
    def retry(cls, reason: str) -> Outcome:
        return cls(OutcomeKind.RETRY, reason)

    @classmethod
    def broken(cls, reason: str) -> Outcome:
        return cls(OutcomeKind.BROKEN, reason)


def outcome_of(error: DeliveryError) -> Outcome:
    """A failure raised below the transport (a token endpoint, the message builder) as the
    loop sees it."""
    kind = (OutcomeKind.RETRY if isinstance(error, TransientError)
            else OutcomeKind.BROKEN if isinstance(error, ConnectionBroken)
            else OutcomeKind.FAILED)
    return Outcome(kind, error.reason, reply_code=error.reply_code, reply_text=error.reply_text)
