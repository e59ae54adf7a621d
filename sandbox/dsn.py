"""Delivery status notifications (bounces) in the styles of the providers the sandbox plays.

Each builder turns a message that could not be delivered into the bounce its
provider would return to the sender: an RFC 6522 `multipart/report;
report-type=delivery-status` with a human-readable part, an RFC 3464
`message/delivery-status` part and the original (whole or headers only).
Builders are pure: the original comes in as bytes, the bounce goes out as
bytes, and the time is an argument. Identifiers in the bounce are derived from
its inputs, so the same inputs give the same bounce.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser
from email.utils import format_datetime

_CRLF = "\r\n"
_HEADER_POLICY = policy.SMTP


@dataclass(frozen=True)
class Undelivered:
    """What the reporting server knows about a message it could not deliver."""

    original: bytes
    """The message as the sender submitted it (RFC 5322 bytes)."""
    sender: str
    """The mailbox the bounce goes back to."""
    recipients: tuple[str, ...]
    """The recipients the message could not reach."""
    reporting_host: str
    """The server that gives up on the message."""
    arrived_at: datetime.datetime
    """When the server accepted the message (timezone-aware)."""
    bounced_at: datetime.datetime
    """When the server gives up and writes the bounce (timezone-aware)."""


BounceBuilder = Callable[[Undelivered], bytes]


@dataclass(frozen=True)
class _OriginalHeaders:
    message_id: str | None
    subject: str
    header_block: bytes
    """The original's header section, up to and including the blank line."""


def _original_headers(original: bytes) -> _OriginalHeaders:
    headers = BytesHeaderParser(policy=policy.default).parsebytes(original)
    match = re.search(rb"\r?\n\r?\n", original)
    header_block = original[: match.end()] if match else original + b"\r\n"
    message_id = headers.get("Message-ID")
    return _OriginalHeaders(
        message_id=str(message_id).strip() if message_id else None,
        subject=str(headers.get("Subject", "")),
        header_block=header_block,
    )


def _digest(undelivered: Undelivered, purpose: str) -> str:
    seed = hashlib.sha256()
    seed.update(purpose.encode())
    seed.update(undelivered.original)
    seed.update(undelivered.bounced_at.isoformat().encode())
    return seed.hexdigest()


def _header(name: str, value: str) -> str:
    """One header field, folded, with non-ASCII text as RFC 2047 encoded words."""
    folded: str = _HEADER_POLICY.header_factory(name, value).fold(policy=_HEADER_POLICY)
    return folded


def _fields(fields: Sequence[tuple[str, str]]) -> str:
    """Header-style fields written verbatim (RFC 3464 section 2.1: they follow RFC 822 syntax)."""
    return "".join(f"{name}: {value}{_CRLF}" for name, value in fields)


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", _CRLF)


@dataclass(frozen=True)
class _Part:
    headers: Sequence[tuple[str, str]]
    body: bytes


def _text_part(text: str, *, subtype: str = "plain", description: str | None = None) -> _Part:
    headers = [("Content-Type", f'text/{subtype}; charset="us-ascii"')]
    if description:
        headers.insert(0, ("Content-Description", description))
    return _Part(headers, _crlf(text).encode("ascii", "replace"))


def _multipart(boundary: str, parts: Sequence[_Part], preamble: str = "") -> bytes:
    """The body of a multipart entity (RFC 2046 section 5.1.1)."""
    body = _crlf(preamble).encode("ascii")
    for part in parts:
        body += f"--{boundary}{_CRLF}".encode("ascii")
        body += _fields(part.headers).encode("ascii") + _CRLF.encode("ascii")
        body += part.body
        if not part.body.endswith(b"\n"):
            body += _CRLF.encode("ascii")
    body += f"--{boundary}--{_CRLF}".encode("ascii")
    return body


def _report(
    undelivered: Undelivered,
    *,
    top_headers: Sequence[tuple[str, str]],
    human_readable: _Part,
    per_message: Sequence[tuple[str, str]],
    per_recipient: Callable[[str], Sequence[tuple[str, str]]],
    returned: _Part,
    preamble: str = "",
) -> bytes:
    """An RFC 6522 report: human-readable part, RFC 3464 status, then the returned original."""
    boundary = f"report_{_digest(undelivered, 'boundary')[:32]}"
    # RFC 3464 section 2.1: per-message fields, then one block per recipient,
    # each block preceded by a blank line.
    status_text = _fields(per_message)
    for recipient in undelivered.recipients:
        status_text += _CRLF + _fields(per_recipient(recipient))
    status = _Part([("Content-Type", "message/delivery-status")], status_text.encode("ascii"))
    headers = "".join(_header(name, value) for name, value in top_headers)
    headers += _header("MIME-Version", "1.0")
    headers += _header(
        "Content-Type",
        f'multipart/report; report-type=delivery-status; boundary="{boundary}"',
    )
    body = _multipart(boundary, [human_readable, status, returned], preamble)
    return headers.encode("ascii") + _CRLF.encode("ascii") + body


def _threading_headers(original: _OriginalHeaders) -> list[tuple[str, str]]:
    if original.message_id is None:
        return []
    return [("In-Reply-To", original.message_id), ("References", original.message_id)]


def _whole_original(undelivered: Undelivered, description: str | None = None) -> _Part:
    headers = [("Content-Type", "message/rfc822")]
    if description:
        headers.insert(0, ("Content-Description", description))
    return _Part(headers, undelivered.original)


# --- Gmail ---------------------------------------------------------------------------------

_GMAIL_NO_SUCH_USER = (
    "550-5.1.1 The email account that you tried to reach does not exist. Please try",
    "550-5.1.1 double-checking the recipient's email address for typos or",
    "550-5.1.1 unnecessary spaces. For more information, go to",
    "550 5.1.1  https://support.google.com/mail/?p=NoSuchUser",
)


def gmail_bounce(undelivered: Undelivered) -> bytes:
    """A bounce as Gmail writes it when the recipient's server answers 550 5.1.1 (no such user)."""
    original = _original_headers(undelivered.original)
    trace_id = _digest(undelivered, "trace")[:20]
    diagnostic = list(_GMAIL_NO_SUCH_USER)
    diagnostic[-1] += f" {trace_id} - gsmtp"
    recipients = ", ".join(undelivered.recipients)
    response = " ".join(line[len("550-5.1.1 ") :].strip() for line in _GMAIL_NO_SUCH_USER)
    text = (
        "\n** Address not found **\n\n"
        f"Your message wasn't delivered to {recipients} because the address couldn't be found, "
        "or is unable to receive mail.\n\n"
        "Learn more here: https://support.google.com/mail/?p=NoSuchUser\n\n"
        f"The response was:\n\n{response}\n"
    )
    html = (
        "<html><body><h2>Address not found</h2>"
        f"<p>Your message wasn't delivered to <b>{recipients}</b> because the address "
        "couldn't be found, or is unable to receive mail.</p>"
        f"<p>The response was:</p><p>{response}</p>"
        "</body></html>\n"
    )
    alternative_boundary = f"alt_{_digest(undelivered, 'alternative')[:32]}"
    human_readable = _Part(
        [("Content-Type", f'multipart/alternative; boundary="{alternative_boundary}"')],
        _multipart(
            alternative_boundary,
            [_text_part(text), _text_part(html, subtype="html")],
        ),
    )
    top_headers = [
        ("From", "Mail Delivery Subsystem <mailer-daemon@googlemail.com>"),
        ("To", undelivered.sender),
        ("Auto-Submitted", "auto-replied"),
        ("Subject", "Delivery Status Notification (Failure)"),
        *_threading_headers(original),
        ("X-Failed-Recipients", recipients),
        ("Message-ID", f"<{_digest(undelivered, 'message-id')[:24]}.GMR@mx.google.com>"),
        ("Date", format_datetime(undelivered.bounced_at)),
    ]
    per_message = [
        ("Reporting-MTA", "dns; googlemail.com"),
        ("Received-From-MTA", f"dns; {undelivered.sender}"),
        ("Arrival-Date", format_datetime(undelivered.arrived_at)),
    ]
    if original.message_id is not None:
        per_message.append(("X-Original-Message-ID", original.message_id))

    def per_recipient(recipient: str) -> list[tuple[str, str]]:
        domain = recipient.rpartition("@")[2]
        # RFC 3464 section 2.3.6: continuation lines of the SMTP reply fold into Diagnostic-Code.
        return [
            ("Final-Recipient", f"rfc822; {recipient}"),
            ("Action", "failed"),
            ("Status", "5.1.1"),
            ("Remote-MTA", f"dns; mx.{domain}. (the server for the domain {domain}.)"),
            ("Diagnostic-Code", "smtp; " + f"{_CRLF} ".join(diagnostic)),
            ("Last-Attempt-Date", format_datetime(undelivered.bounced_at)),
        ]

    return _report(
        undelivered,
        top_headers=top_headers,
        human_readable=human_readable,
        per_message=per_message,
        per_recipient=per_recipient,
        returned=_whole_original(undelivered),
    )


# --- Office 365 ----------------------------------------------------------------------------

_O365_RECIPIENT_NOT_FOUND = (
    "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
)


def office365_tenant(address: str) -> str:
    """The `<tenant>.onmicrosoft.com` name Microsoft gives an organisation: from its domain."""
    first_label = address.rpartition("@")[2].split(".")[0]
    return re.sub(r"[^a-z0-9]", "", first_label.lower()) or "tenant"


def office365_bounce(undelivered: Undelivered) -> bytes:
    """A non-delivery report as Exchange Online writes it for an unknown recipient (5.1.10)."""
    original = _original_headers(undelivered.original)
    tenant = office365_tenant(undelivered.sender)
    server = undelivered.reporting_host
    lines = [
        "Your message couldn't be delivered to the following recipients:",
        "",
        *undelivered.recipients,
        "",
        "The address couldn't be found. Check it for typos and try sending the message again.",
        "",
        "Diagnostic information for administrators:",
        "",
        f"Generating server: {server}",
        "",
    ]
    for recipient in undelivered.recipients:
        lines += [recipient, f"Remote Server returned '{_O365_RECIPIENT_NOT_FOUND}'", ""]
    lines += ["Original message headers:", ""]
    text = "\n".join(lines) + "\n" + original.header_block.decode("ascii", "replace")
    top_headers = [
        (
            "From",
            "Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e"
            f"@{tenant}.onmicrosoft.com>",
        ),
        ("To", f"<{undelivered.sender}>"),
        ("Date", format_datetime(undelivered.bounced_at)),
        ("X-MS-Exchange-Message-Is-Ndr", ""),
        ("Content-Language", "en-US"),
        ("Message-ID", f"<{_digest(undelivered, 'message-id')[:32]}@{server}>"),
        *_threading_headers(original),
        ("Subject", f"Undeliverable: {original.subject}"),
        ("Auto-Submitted", "auto-replied"),
    ]
    per_message = [
        ("Reporting-MTA", f"dns;{server}"),
        ("Received-From-MTA", f"dns;{server}"),
        ("Arrival-Date", format_datetime(undelivered.arrived_at)),
    ]

    def per_recipient(recipient: str) -> list[tuple[str, str]]:
        return [
            ("Final-Recipient", f"rfc822;{recipient}"),
            ("Action", "failed"),
            ("Status", "5.1.10"),
            ("Diagnostic-Code", f"smtp;{_O365_RECIPIENT_NOT_FOUND}"),
        ]

    # RFC 6522 section 3: the third part may carry only the original's headers.
    returned = _Part([("Content-Type", "text/rfc822-headers")], original.header_block)
    return _report(
        undelivered,
        top_headers=top_headers,
        human_readable=_text_part(text.replace("\r\n", "\n")),
        per_message=per_message,
        per_recipient=per_recipient,
        returned=returned,
    )


# --- Postfix (generic MTA) -----------------------------------------------------------------


def postfix_bounce(undelivered: Undelivered) -> bytes:
    """A bounce as a Postfix MTA writes it when the recipient's domain does not resolve (5.1.2)."""
    host = undelivered.reporting_host
    queue_id = _digest(undelivered, "queue-id")[:10].upper()

    def reason(recipient: str) -> str:
        domain = recipient.rpartition("@")[2]
        return (
            "Host or domain name not found. Name service error\n"
            f"    for name={domain} type=A: Host not found"
        )

    notification = (
        f"This is the mail system at host {host}.\n\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients. It's attached below.\n\n"
        "For further assistance, please send mail to postmaster.\n\n"
        "If you do so, please include this problem report. You can\n"
        "delete your own text from the attached returned message.\n\n"
        "                   The mail system\n\n"
        + "".join(f"<{recipient}>: {reason(recipient)}\n" for recipient in undelivered.recipients)
    )
    top_headers = [
        ("From", f"MAILER-DAEMON@{host} (Mail Delivery System)"),
        ("Subject", "Undelivered Mail Returned to Sender"),
        ("To", undelivered.sender),
        ("Auto-Submitted", "auto-replied"),
        ("Message-ID", f"<{_digest(undelivered, 'message-id')[:20]}@{host}>"),
        ("Date", format_datetime(undelivered.bounced_at)),
    ]
    per_message = [
        ("Reporting-MTA", f"dns; {host}"),
        ("X-Postfix-Queue-ID", queue_id),
        ("X-Postfix-Sender", f"rfc822; {undelivered.sender}"),
        ("Arrival-Date", format_datetime(undelivered.arrived_at)),
    ]

    def per_recipient(recipient: str) -> list[tuple[str, str]]:
        return [
            ("Final-Recipient", f"rfc822; {recipient}"),
            ("Original-Recipient", f"rfc822;{recipient}"),
            ("Action", "failed"),
            ("Status", "5.1.2"),
            ("Diagnostic-Code", "X-Postfix; " + _crlf(reason(recipient))),
        ]

    return _report(
        undelivered,
        top_headers=top_headers,
        human_readable=_text_part(notification, description="Notification"),
        per_message=per_message,
        per_recipient=per_recipient,
        returned=_whole_original(undelivered, description="Undelivered Message"),
        preamble="This is a MIME-encapsulated message.\n\n",
    )
