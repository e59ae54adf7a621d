"""The RFC 5322 message built for a routed email: line ends, ids, recipients, size."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any

import pytest
from pydantic import ValidationError

from sendrail.errors import PermanentError
from sendrail.events import ChannelKind, EmailRequested, EmailRouted
from sendrail.mail.headers import SEND_ID_HEADER
from sendrail.mail.message import build_message, message_id_for

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NO_LIMIT = 10_000_000


def routed(**changes: Any) -> EmailRouted:
    fields: dict[str, Any] = {
        "idempotency_key": "order-1", "tenant_id": "acme", "user_id": "ann",
        "identity": "ann@Acme.Example", "source": "api", "to": ["lead@customer.example"],
        "subject": "Hello", "text": "Hi there", "requested_at": T0,
    }
    fields.update(changes)
    request = EmailRequested.model_validate(fields)
    return EmailRouted(send_id=request.send_id, channel=ChannelKind.GMAIL, connection_id="c1",
                       request=request, routed_at=T0)


def build(routed_email: EmailRouted, max_bytes: int = NO_LIMIT) -> bytes:
    return build_message(routed_email, date=T0, max_bytes=max_bytes)


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


BODIES = [
    {"text": "one\ntwo\r\nthree\rfour"},
    {"html": "<p>one\ntwo</p>\r\n<p>three\rfour</p>"},
    {"text": "one\ntwo", "html": "<p>one\rtwo</p>"},
    {"text": "long " * 400},
    {"text": "Grüße, naïve café ✓\n"},
]


@pytest.mark.parametrize("bodies", BODIES)
def test_every_line_ends_with_crlf(bodies: dict[str, str]) -> None:
    raw = build(routed(**bodies))
    assert raw.endswith(b"\r\n")
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", raw) is None


@pytest.mark.parametrize("bodies", BODIES)
def test_no_line_is_longer_than_rfc_5322_allows(bodies: dict[str, str]) -> None:
    raw = build(routed(subject="s " * 450, headers={"X-Long": "v" * 998}, **bodies))
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


@pytest.mark.parametrize("bodies", [{"text": "x" * 5000}, {"html": "<p>" + "y" * 3000 + "</p>"},
                                    {"text": "a " * 2000, "html": "<b>" * 900}])
def test_quoted_printable_lines_are_at_most_76_characters(bodies: dict[str, str]) -> None:
    """RFC 2045 §6.7 rule 5: quoted-printable encoded lines are no longer than 76 characters."""
    raw = build(routed(**bodies))
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76


def test_the_body_survives_the_encoding() -> None:
    text, html = "Grüße\nline two\n" + "x" * 300 + "\n", "<p>naïve ✓</p>\n"
    message = parse(build(routed(text=text, html=html)))
    plain, rich = (part.get_content().replace("\r\n", "\n") for part in message.iter_parts())
    assert plain == text
    assert rich == html


def test_headers_carry_the_request() -> None:
    message = parse(build(routed(to=["a@customer.example", "b@customer.example"],
                                 cc=["c@customer.example"], subject="Grüße aus Köln")))
    assert message["From"] == "ann@acme.example"
    assert [parseaddr(a)[1] for a in message["To"].split(",")] == ["a@customer.example",
                                                                     "b@customer.example"]
    assert message["Cc"] == "c@customer.example"
    assert message["Subject"] == "Grüße aus Köln"
    assert message["Date"] == format_datetime(T0)
    assert message["MIME-Version"] == "1.0"


def test_no_cc_header_without_cc() -> None:
    assert "Cc" not in parse(build(routed()))


def test_bcc_recipients_are_never_in_the_message() -> None:
    raw = build(routed(bcc=["hidden@secret.example", "also@secret.example"], cc=["c@x.example"]))
    assert b"secret.example" not in raw
    assert "Bcc" not in parse(raw)


def test_message_id_is_stable_per_send_and_in_the_identity_domain() -> None:
    email_a = routed()
    first = parse(build_message(email_a, date=T0, max_bytes=NO_LIMIT))
    retry = parse(build_message(routed(subject="retried"), date=T0 + timedelta(hours=1),
                                max_bytes=NO_LIMIT))
    assert first["Message-ID"] == retry["Message-ID"] == message_id_for(email_a)
    assert first["Message-ID"] == f"<{email_a.send_id}@acme.example>"
    other_send = routed(idempotency_key="order-2")
    assert message_id_for(other_send) != message_id_for(email_a)


def test_message_id_is_on_one_line_even_with_a_long_domain() -> None:
    domain = ".".join(["d" * 60] * 3) + ".example"
    subject = "word " * 190
    raw = build(routed(identity=f"ann@{domain}", subject=subject))
    lines = header_block(raw).split(b"\r\n")
    message_id_line = next(line for line in lines if line.lower().startswith(b"message-id:"))
    index = lines.index(message_id_line)
    assert message_id_line.endswith(f"@{domain}>".encode())
    assert not lines[index + 1].startswith((b" ", b"\t"))  # no folded continuation


def test_send_id_header_names_the_send() -> None:
    email_a = routed()
    message = parse(build(email_a))
    assert message.get_all(SEND_ID_HEADER) == [str(email_a.send_id)]


@pytest.mark.parametrize(
    ("bodies", "content_type", "parts"),
    [
        ({"text": "t"}, "text/plain", None),
        ({"text": None, "html": "<p>h</p>"}, "text/html", None),
        ({"text": "t", "html": "<p>h</p>"}, "multipart/alternative", ["text/plain", "text/html"]),
    ],
)
def test_body_structure(bodies: dict[str, str | None], content_type: str,
                        parts: list[str] | None) -> None:
    message = parse(build(routed(**bodies)))
    assert message.get_content_type() == content_type
    if parts is None:
        assert not message.is_multipart()
    else:
        # RFC 2046 §5.1.4: alternatives in increasing preference, so HTML comes last.
        assert [p.get_content_type() for p in message.iter_parts()] == parts


@pytest.mark.parametrize(
    "headers",
    [
        {"List-Unsubscribe": "<mailto:unsubscribe@acme.example>", "X-Campaign": "spring"},
        {"In-Reply-To": "<earlier@customer.example>", "References": "<earlier@customer.example>"},
        {"Content-Language": "de"},
    ],
)
@pytest.mark.parametrize("bodies", [{"text": "t"}, {"text": "t", "html": "<p>h</p>"}])
def test_every_accepted_extra_header_is_in_the_message(headers: dict[str, str],
                                                       bodies: dict[str, str]) -> None:
    message = parse(build(routed(headers=headers, **bodies)))
    for name, value in headers.items():
        assert message.get_all(name) == [value], name


def test_size_cap() -> None:
    email_a = routed(text="x" * 2000)
    size = len(build(email_a))
    assert len(build(email_a, max_bytes=size)) == size
    with pytest.raises(PermanentError, match=f"{size} bytes.*at most {size - 1}"):
        build(email_a, max_bytes=size - 1)


@pytest.mark.parametrize(
    "changes",
    [{"identity": "ann@bücher.example"}, {"to": ["kunde@bücher.example"]},
     {"identity": "josé@acme.example"}, {"cc": ["josé@customer.example"]}],
    ids=["IDN identity", "IDN recipient", "UTF-8 identity", "UTF-8 recipient"],
)
def test_international_addresses_are_refused_or_written_correctly(changes: dict[str, Any]) -> None:
    """An address is never written as an RFC 2047 encoded word (RFC 2047 §5 forbids them in an
    addr-spec), and a Message-ID is ASCII: either the request is refused up front, or the
    message carries the domain's A-label (RFC 5890) and a sendable local part."""
    try:
        email_a = routed(**changes)
    except ValidationError:
        return
    raw = build(email_a)
    headers = header_block(raw)
    assert b"=?" not in b"\r\n".join(
        line for line in headers.split(b"\r\n")
        if line.lower().startswith((b"from:", b"to:", b"cc:"))
    )
    assert message_id_for(email_a).isascii()
