"""The message builder's fast path writes exactly the bytes the email package writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sendrail.events import ChannelKind, EmailRequested, EmailRouted
from sendrail.mail.message import _mime_message, _plain_message

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ADDRESSES = ["lead@customer.example", "Ann.Lee+x@Mail.Example.ORG", "o'neil@example.org",
             "a{b}|c@example.org", "x@xn--bcher-kva.example", "postmaster@example.org"]
WORDS = st.text(st.sampled_from("abcXYZ09 ()<>\"',;:.=?_\t-éü✓"), max_size=40)


def routed(**fields: Any) -> EmailRouted:
    base: dict[str, Any] = {"idempotency_key": "k1", "tenant_id": "acme", "user_id": "ann",
                            "identity": "ann@acme.example", "source": "api", "requested_at": T0}
    base.update(fields)
    request = EmailRequested.model_validate(base)
    return EmailRouted(send_id=request.send_id, channel=ChannelKind.CUSTOM_SMTP,
                       connection_id="c1", request=request, routed_at=T0)


@settings(max_examples=400, deadline=None)
@given(subject=WORDS, text=st.one_of(st.none(), st.text(max_size=300)),
       html=st.one_of(st.none(), st.text(max_size=100)),
       to=st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=4),
       cc=st.lists(st.sampled_from(ADDRESSES), max_size=2),
       headers=st.dictionaries(st.sampled_from(["X-Campaign-Step", "X-Tag", "Keywords",
                                                "Comments", "Content-Disposition", "Resent-To"]),
                               WORDS, max_size=3),
       minutes=st.integers(0, 10**6))
def test_the_fast_path_writes_what_the_email_package_writes(
        subject: str, text: str | None, html: str | None, to: list[str], cc: list[str],
        headers: dict[str, str], minutes: int) -> None:
    if text is None and html is None:
        text = "body"
    if "\r" in subject or "\n" in subject or any("\r" in v or "\n" in v for v in headers.values()):
        return
    email = routed(subject=subject, text=text, html=html, to=to, cc=cc, headers=headers)
    date = T0 + timedelta(minutes=minutes)
    fast = _plain_message(email, date)
    if fast is not None:
        assert fast == _mime_message(email, date)


def test_a_usual_campaign_email_takes_the_fast_path() -> None:
    email = routed(subject="Our spring offer (for you)", text="Hello Lee,\n\nGrüße " + "word " * 80,
                   to=["lead@customer.example"], cc=["boss@customer.example"],
                   headers={"X-Campaign-Step": "2"})
    assert _plain_message(email, T0) is not None
    assert _plain_message(email, T0) == _mime_message(email, T0)


def test_an_unusual_email_is_left_to_the_email_package() -> None:
    assert _plain_message(routed(subject="Grüße", text="x", to=["a@example.org"]), T0) is None
    assert _plain_message(routed(subject="Hi", text="x", html="<p>x</p>", to=["a@example.org"]),
                          T0) is None
