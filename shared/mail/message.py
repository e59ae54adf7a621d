"""The RFC 5322 message sendrail sends for a routed email."""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from sendrail.errors import PermanentError
from sendrail.events import EmailRouted
from sendrail.mail.headers import SEND_ID_HEADER

OUTPUT_POLICY = SMTP.clone(max_line_length=998)
"""CRLF line ends; headers folded only past RFC 5322's 998-character limit, so ids such as
Message-ID stay on one line where every parser reads them the same. (Bodies are encoded
earlier, under BODY_POLICY.)"""

BODY_POLICY = SMTP.clone(max_line_length=76)
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
        raw = message.as_bytes(policy=OUTPUT_POLICY)
    except (ValueError, UnicodeError) as error:
        raise PermanentError(f"the message cannot be encoded: {error}") from error
    if len(raw) > max_bytes:
        raise PermanentError(
            f"the message is {len(raw)} bytes and this channel accepts at most {max_bytes}"
        )
    return raw
