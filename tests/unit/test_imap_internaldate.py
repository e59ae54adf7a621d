"""When the server took a message in: INTERNALDATE read from a UID FETCH response."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from sendrail.mail.imap import _fetched_messages


def response(item: bytes, body: bytes = b"Subject: x\r\n\r\nhi") -> list[bytes | bytearray]:
    """As aioimaplib hands over one message of `UID FETCH (UID INTERNALDATE BODY.PEEK[])`."""
    return [b"1 FETCH (" + item + b" BODY[] {%d}" % len(body), bytearray(body), b")"]


@pytest.mark.parametrize(("item", "received_at"), [
    (b'UID 9 INTERNALDATE "17-Jul-1996 02:44:25 -0700"',
     datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7)))),
    (b'UID 9 INTERNALDATE " 1-Dec-2026 09:05:00 +0000"', datetime(2026, 12, 1, 9, 5, tzinfo=UTC)),
    (b'UID 9 INTERNALDATE "01-dec-2026 09:05:00 +0530"',
     datetime(2026, 12, 1, 9, 5, tzinfo=timezone(timedelta(hours=5, minutes=30)))),
    (b'INTERNALDATE "01-Dec-2026 09:05:00 +0000" UID 9', datetime(2026, 12, 1, 9, 5, tzinfo=UTC)),
    (b"UID 9", None),
    (b'UID 9 INTERNALDATE "31-Feb-2026 09:05:00 +0000"', None),
    (b'UID 9 INTERNALDATE "01-Foo-2026 09:05:00 +0000"', None),
    (b'UID 9 INTERNALDATE "01-Dec-2026 09:05:00 +9900"', None),
])
def test_internaldate(item: bytes, received_at: datetime | None) -> None:
    (message,) = _fetched_messages(response(item))
    assert message.uid == 9 and message.raw == b"Subject: x\r\n\r\nhi"
    assert message.received_at == received_at


def test_internaldate_after_the_body() -> None:
    lines = [b"1 FETCH (UID 9 BODY[] {2}", bytearray(b"hi"), b' INTERNALDATE "01-Dec-2026 09:05:00 +0000")']
    (message,) = _fetched_messages(lines)
    assert message.received_at == datetime(2026, 12, 1, 9, 5, tzinfo=UTC)
