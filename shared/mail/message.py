"""The RFC 5322 message sendrail sends for a routed email."""

from __future__ import annotations

import re
from datetime import datetime
from email import quoprimime
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from sendrail.errors import PermanentError
from sendrail.events import EmailRouted
from sendrail.mail.headers import SEND_ID_HEADER

MAX_LINE_CHARS = 998
"""RFC 5322 §2.1.1: a line is at most 998 characters, CRLF excluded."""
QP_LINE_CHARS = 76
"""RFC 2045 §6.7: a quoted-printable line is at most 76 characters."""

OUTPUT_POLICY = SMTP.clone(max_line_length=MAX_LINE_CHARS)
"""CRLF line ends; headers folded only past RFC 5322's 998-character limit, so ids such as
Message-ID stay on one line where every parser reads them the same. (Bodies are encoded
earlier, under BODY_POLICY.)"""

BODY_POLICY = SMTP.clone(max_line_length=QP_LINE_CHARS)
"""RFC 2045 §6.7: quoted-printable lines of at most 76 characters (the email package wraps
at the policy's line length)."""


def message_id_for(routed: EmailRouted) -> str:
    """Stable per send (a retry reuses it), in the sender's own domain (RFC 5322 §3.6.4)."""
    domain = routed.request.identity.rpartition("@")[2]
    return f"<{routed.send_id}@{domain}>"


def build_message(routed: EmailRouted, *, date: datetime, max_bytes: int) -> bytes:
    """Bytes ready for DATA, CRLF line ends. Bcc recipients are in the envelope only.

    Raises PermanentError when the message is larger than the provider accepts: sending
    it would only be rejected.
    """
    raw = _plain_message(routed, date) or _mime_message(routed, date)
    if len(raw) > max_bytes:
        raise PermanentError(
            f"the message is {len(raw)} bytes and this channel accepts at most {max_bytes}"
        )
    return raw


def _mime_message(routed: EmailRouted, date: datetime) -> bytes:
    """Any message, written by the email package."""
    request = routed.request
    message = EmailMessage(policy=BODY_POLICY)
    message["From"] = request.identity
    message["To"] = ", ".join(request.to)
    if request.cc:
        message["Cc"] = ", ".join(request.cc)
    message["Subject"] = request.subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id_for(routed)
    message[SEND_ID_HEADER] = str(routed.send_id)
    if request.text is not None:
        message.set_content(request.text, cte="quoted-printable")
        if request.html is not None:
            message.add_alternative(request.html, subtype="html", cte="quoted-printable")
    elif request.html is not None:
        message.set_content(request.html, subtype="html", cte="quoted-printable")
    # After the body: setting content replaces every Content-* header.
    for name, value in request.headers.items():
        message[name] = value
    try:
        return message.as_bytes(policy=OUTPUT_POLICY)
    except (ValueError, UnicodeError) as error:
        raise PermanentError(f"the message cannot be encoded: {error}") from error


_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                            r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\Z")
_PLAIN_TEXT = re.compile(r"[!-~]+(?: [!-~]+)*\Z")
"""Printable ASCII words with single spaces: a header value the email package writes as is."""
_PARSED_HEADERS = frozenset(HeaderRegistry().registry)
"""Header names the email package parses into structures (addresses, dates, parameters)."""


def _plain_message(routed: EmailRouted, date: datetime) -> bytes | None:
    """The same bytes `_mime_message` writes, for the common message at a fraction of its cost:
    one body part, plain addresses, header values of printable ASCII words on one line. None
    for anything else (non-ASCII or encoded-word-like values, long lines, two bodies)."""
    request = routed.request
    if (request.text is None) == (request.html is None):
        return None
    addresses = [request.identity, *request.to, *request.cc]
    if not all(_PLAIN_ADDRESS.match(address) for address in addresses):
        return None
    extra = request.headers
    if any(name.lower() in _PARSED_HEADERS for name in extra):
        return None
    if not all(_PLAIN_TEXT.match(value) and "=?" not in value
               for value in (request.subject, *extra.values())):
        return None
    headers = [("From", request.identity), ("To", ", ".join(request.to))]
    if request.cc:
        headers.append(("Cc", ", ".join(request.cc)))
    subtype, body = ("plain", request.text) if request.text is not None else ("html", request.html)
    assert body is not None
    headers += [
        ("Subject", request.subject), ("Date", format_datetime(date)),
        ("Message-ID", message_id_for(routed)), (SEND_ID_HEADER, str(routed.send_id)),
        ("Content-Type", f'text/{subtype}; charset="utf-8"'),
        ("Content-Transfer-Encoding", "quoted-printable"), ("MIME-Version", "1.0"),
        *extra.items(),
    ]
    if any(len(name) + 2 + len(value) > MAX_LINE_CHARS for name, value in headers):
        return None
    try:
        encoded = body.encode("utf-8")
    except UnicodeError:
        return None  # the email package says why
    # As email.contentmanager encodes text for cte="quoted-printable" under BODY_POLICY.
    payload = quoprimime.body_encode((b"\n".join(encoded.splitlines()) + b"\n").decode("latin-1"),
                                     QP_LINE_CHARS)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (head + "\r\n" + payload.replace("\n", "\r\n")).encode("ascii")
