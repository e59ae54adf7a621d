"""Notice: what a message found in a sender's inbox says about mail that sendrail sent."""

from dataclasses import dataclass
from enum import StrEnum


class NoticeKind(StrEnum):
    """What kind of message the notice is; only BOUNCE reports a failed delivery."""

    BOUNCE = "bounce"  # a delivery failed for good (RFC 3464 Action: failed, or its plain-text kin)
    DELAY = "delay"  # a delivery is late and still being retried (Action: delayed)
    AUTO_REPLY = "auto_reply"  # an out-of-office or other RFC 3834 automatic response
    COMPLAINT = "complaint"  # a spam complaint (RFC 5965 feedback report)
    DELIVERED = "delivered"  # a success notice (Action: delivered, relayed or expanded)
    OTHER = "other"  # ordinary mail, including human replies
    UNPARSEABLE = "unparseable"  # could not be read, or reads as a bounce that names no one


@dataclass(frozen=True)
class FailedRecipient:
    """One address the notice is about, with why (for a bounce: why delivery failed)."""

    address: str  # lowercased addr-spec
    status: str | None  # RFC 3463 "5.1.1"; Microsoft's three-digit details kept ("5.7.708")
    reply_code: str | None  # SMTP basic reply code "550"
    diagnostic: str | None  # the server's words, whitespace collapsed, bounded length
    reason: str  # a name from sendrail.bounces.reasons.Reason
    hard: bool  # the address itself is permanently undeliverable
    remote_mta: str | None = None  # the server that refused it (RFC 3464 Remote-MTA), if said


@dataclass(frozen=True)
class OriginalMessage:
    """What the notice quotes of the email it is about, to tie the notice back to its send."""

    message_id: str | None  # the original's Message-ID, normalised "<...>"
    send_id: str | None  # the original's X-Sendrail-Send-Id header value
    subject: str | None


@dataclass(frozen=True)
class Notice:
    """A message from a sender's inbox, read as a bounce, a warning, a reply or nothing at all.

    `recipients` holds the addresses the notice is about: for BOUNCE the failed ones (never
    empty), for DELAY the delayed ones, for DELIVERED the delivered ones, for COMPLAINT the
    complaining recipient(s) when the report names them, for AUTO_REPLY the responder.
    """

    kind: NoticeKind
    recipients: tuple[FailedRecipient, ...]
    original: OriginalMessage
    references: tuple[str, ...]  # Message-IDs in the notice's own In-Reply-To and References
    problem: str | None  # for UNPARSEABLE: what was wrong
