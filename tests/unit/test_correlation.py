"""Tying a bounce to its send, within one mailbox, and the analytics events it becomes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sendrail.bounces.notice import FailedRecipient, Notice, NoticeKind, OriginalMessage
from sendrail.events import (
    ChannelKind,
    ConnectionConfigured,
    DeliveryEvent,
    DeliveryStatus,
    OAuthGrant,
    SmtpServer,
    send_id_for,
)
from sendrail.services.bounce_watcher.bounce_events import finding_id, mailbox_findings
from sendrail.services.bounce_watcher.correlation import SendIndex

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SEND_A = send_id_for("acme", "order-1")
SEND_B = send_id_for("acme", "order-2")
MSGID_A = f"<{SEND_A}@acme.example>"
MSGID_B = f"<{SEND_B}@acme.example>"


def sent(send_id: uuid.UUID = SEND_A, message_id: str | None = MSGID_A, *,
         tenant_id: str = "acme", connection_id: str = "ann-gmail",
         status: DeliveryStatus = DeliveryStatus.SENT) -> DeliveryEvent:
    return DeliveryEvent(
        status=status, send_id=send_id, tenant_id=tenant_id, user_id="ann",
        identity="ann@acme.example", campaign_id="spring", template_id="intro",
        channel=ChannelKind.GMAIL, connection_id=connection_id,
        recipients=["gone@customer.example"], message_id=message_id, occurred_at=T0,
    )


def failed(address: str = "gone@customer.example", *, hard: bool = True) -> FailedRecipient:
    return FailedRecipient(address=address, status="5.1.1", reply_code="550",
                           diagnostic="550 5.1.1 user unknown", reason="userunknown", hard=hard)


def notice(*, kind: NoticeKind = NoticeKind.BOUNCE, send_id: str | None = None,
           message_id: str | None = None, references: tuple[str, ...] = (),
           recipients: tuple[FailedRecipient, ...] | None = None) -> Notice:
    return Notice(
        kind=kind, recipients=(failed(),) if recipients is None else recipients,
        original=OriginalMessage(message_id=message_id, send_id=send_id, subject="Hello"),
        references=references, problem=None,
    )


def index(*events: DeliveryEvent) -> SendIndex:
    found = SendIndex()
    for event in events:
        found.add(event)
    return found


MAILBOX: dict[str, Any] = {"tenant_id": "acme", "connection_id": "ann-gmail"}


@pytest.mark.parametrize(
    "evidence",
    [
        {"send_id": str(SEND_A)},
        {"send_id": str(SEND_A).upper()},
        {"message_id": MSGID_A},
        {"message_id": MSGID_A.upper()},
        {"references": (MSGID_A,)},
        {"references": ("<unrelated@customer.example>", MSGID_A)},
        {"send_id": "not-a-uuid", "message_id": MSGID_A},
        {"send_id": str(uuid.uuid4()), "references": (MSGID_A,)},
        {"message_id": "<unknown@x.example>", "references": (MSGID_A,)},
    ],
    ids=["send-id header", "send-id header upper case", "original Message-ID",
         "Message-ID in another case", "References", "References with others",
         "malformed send-id header", "unknown send-id header", "unknown Message-ID"],
)
def test_a_bounce_is_tied_to_its_send(evidence: dict[str, Any]) -> None:
    found = index(sent(), sent(SEND_B, MSGID_B)).find(notice(**evidence), **MAILBOX)
    assert found is not None
    assert found.send_id == SEND_A


def test_the_send_id_header_outranks_the_message_id() -> None:
    found = index(sent(), sent(SEND_B, MSGID_B)).find(
        notice(send_id=str(SEND_B), message_id=MSGID_A), **MAILBOX)
    assert found is not None and found.send_id == SEND_B


def test_without_evidence_there_is_no_send() -> None:
    assert index(sent()).find(notice(), **MAILBOX) is None
    assert index(sent()).find(notice(message_id="<other@x.example>"), **MAILBOX) is None


@pytest.mark.parametrize("where", [{"tenant_id": "globex"}, {"connection_id": "ann-exchange"}],
                         ids=["another tenant", "another mailbox"])
@pytest.mark.parametrize(
    "evidence",
    [{"send_id": str(SEND_A)}, {"message_id": MSGID_A}, {"references": (MSGID_A,)}],
    ids=["send-id header", "Message-ID", "References"],
)
def test_never_across_tenants_or_mailboxes(where: dict[str, str], evidence: dict[str, Any]) -> None:
    """The send was made by one mailbox; a bounce found in any other mailbox is not its."""
    mailbox = {**MAILBOX, **where}
    assert index(sent()).find(notice(**evidence), **mailbox) is None


def test_a_foreign_send_in_the_evidence_does_not_hide_this_mailboxs_own() -> None:
    foreign = sent(SEND_B, MSGID_B, tenant_id="globex", connection_id="x")
    found = index(sent(), foreign).find(
        notice(send_id=str(SEND_B), references=(MSGID_A,)), **MAILBOX)
    assert found is not None and found.send_id == SEND_A


@pytest.mark.parametrize("status", [s for s in DeliveryStatus if s is not DeliveryStatus.SENT])
def test_only_sent_emails_are_indexed(status: DeliveryStatus) -> None:
    found = index(sent(status=status))
    assert found.by_send_id == {} and found.by_message_id == {}
    assert found.find(notice(send_id=str(SEND_A), message_id=MSGID_A), **MAILBOX) is None


def test_a_sent_email_without_message_id_is_found_by_send_id() -> None:
    found = index(sent(message_id=None))
    assert found.find(notice(send_id=str(SEND_A)), **MAILBOX) is not None
    assert found.find(notice(message_id=MSGID_A), **MAILBOX) is None


# --- bounce events ----------------------------------------------------------------------


def gmail_connection(owner: str = "ann") -> ConnectionConfigured:
    return ConnectionConfigured(
        tenant_id="acme", connection_id="ann-gmail", kind=ChannelKind.GMAIL, owner_user_id=owner,
        address="ann@acme.example", smtp=SmtpServer(host="smtp.gmail.com", port=587),
        oauth=OAuthGrant(refresh_token="sealed"), connected_at=T0, updated_at=T0,
    )


def findings(notice_: Notice, connection: ConnectionConfigured, *, uidvalidity: int, uid: int,
             sent: DeliveryEvent | None, now: datetime) -> list[Any]:
    return mailbox_findings(notice_, connection, uidvalidity=uidvalidity, uid=uid,
                            sent_for=lambda _address: sent, now=now)


def test_a_correlated_bounce_carries_its_send() -> None:
    recipients = (failed("gone@customer.example"), failed("full@customer.example", hard=False))
    events = findings(notice(recipients=recipients), gmail_connection(), uidvalidity=7,
                           uid=42, sent=sent(), now=T0)
    assert [e.recipient for e in events] == ["gone@customer.example", "full@customer.example"]
    assert [e.hard for e in events] == [True, False]
    for event in events:
        assert event.correlated
        assert (event.send_id, event.user_id, event.identity) == (SEND_A, "ann", "ann@acme.example")
        assert (event.campaign_id, event.template_id) == ("spring", "intro")
        assert (event.tenant_id, event.connection_id, event.channel) == (
            "acme", "ann-gmail", ChannelKind.GMAIL)
        assert (event.status, event.reply_code, event.reason) == ("5.1.1", "550", "userunknown")
        assert event.detected_at == T0
    assert events[0].bounce_id != events[1].bounce_id


def test_an_uncorrelated_bounce_names_the_mailbox_owner_only() -> None:
    (event,) = findings(notice(), gmail_connection(), uidvalidity=7, uid=42, sent=None, now=T0)
    assert not event.correlated
    assert event.user_id == "ann"
    assert (event.send_id, event.identity, event.campaign_id, event.template_id) == (
        None, None, None, None)


@pytest.mark.parametrize("kind", [k for k in NoticeKind if k not in {
    NoticeKind.BOUNCE, NoticeKind.AUTO_REPLY, NoticeKind.COMPLAINT}])
def test_notices_that_are_not_findings_give_no_events(kind: NoticeKind) -> None:
    assert findings(notice(kind=kind), gmail_connection(), uidvalidity=7, uid=42,
                         sent=sent(), now=T0) == []


def test_bounce_ids_are_stable_for_a_re_read_message() -> None:
    first = findings(notice(), gmail_connection(), uidvalidity=7, uid=42, sent=None, now=T0)
    again = findings(notice(), gmail_connection(), uidvalidity=7, uid=42, sent=sent(),
                          now=datetime(2025, 1, 1, tzinfo=UTC))
    assert [e.bounce_id for e in first] == [e.bounce_id for e in again]


@pytest.mark.parametrize(
    "changes",
    [{"uidvalidity": 8}, {"uid": 43}, {"recipient": "other@customer.example"},
     {"tenant_id": "globex"}, {"connection_id": "ann-exchange"}],
)
def test_bounce_ids_differ_by_mailbox_position_and_recipient(changes: dict[str, Any]) -> None:
    connection = gmail_connection()
    base = finding_id(connection, 7, 42, "gone@customer.example")
    moved = connection.model_copy(update={k: v for k, v in changes.items()
                                          if k in {"tenant_id", "connection_id"}})
    changed = finding_id(moved, changes.get("uidvalidity", 7), changes.get("uid", 42),
                        changes.get("recipient", "gone@customer.example"))
    assert changed != base


def test_without_ids_the_latest_send_to_the_failed_recipient_is_the_one() -> None:
    older, newer = sent(SEND_A, None), sent(SEND_B, None)
    sends = index(older, newer)
    bare = notice()  # no send-id header, no Message-ID, no References

    assert sends.find(bare, tenant_id="acme", connection_id="ann-gmail") is None
    found = sends.find(bare, tenant_id="acme", connection_id="ann-gmail",
                       recipient="Gone@Customer.example")
    assert found is not None and found.send_id == SEND_B
    assert sends.find(bare, tenant_id="acme", connection_id="bob-gmail",
                      recipient="gone@customer.example") is None


@pytest.mark.parametrize(("kind", "event"), [(NoticeKind.AUTO_REPLY, "auto_reply"),
                                             (NoticeKind.COMPLAINT, "complaint")])
def test_auto_replies_and_complaints_are_findings_of_their_own(kind: NoticeKind, event: str) -> None:
    (finding,) = findings(notice(kind=kind, recipients=(failed("lee@customer.example"),)),
                          gmail_connection(), uidvalidity=7, uid=42, sent=sent(), now=T0)
    assert finding.event == event
    assert finding.address == "lee@customer.example"
    assert finding.correlated and finding.send_id == SEND_A and finding.campaign_id == "spring"


@pytest.mark.parametrize(("sent_to", "named"), [
    ("Gone@Customer.example", "gone@customer.example"),
    ("gone@customer.example", "GONE@CUSTOMER.EXAMPLE"),
    ("Gone.Away@gmail.com", "goneaway@googlemail.com"),
    ("gone@bücher.example", "gone@xn--bcher-kva.example"),
])
def test_the_failed_recipient_is_compared_by_its_key(sent_to: str, named: str) -> None:
    event = sent(SEND_A, None).model_copy(update={"recipients": [sent_to]})
    found = index(event).find(notice(), tenant_id="acme", connection_id="ann-gmail", recipient=named)
    assert found is not None and found.send_id == SEND_A


@pytest.mark.parametrize(("arrived", "tied"), [
    (T0 + timedelta(minutes=3), True),
    (T0, True),
    (T0 - timedelta(seconds=30), True),  # the server's clock, and the event stamped after the attempt
    (T0 - timedelta(hours=2), False),
    (None, True),  # arrival unknown
])
@pytest.mark.parametrize("evidence", [{"send_id": str(SEND_A)}, {"references": (MSGID_A,)}, {}],
                         ids=["send-id header", "References", "recipient only"])
def test_a_notice_that_arrived_before_the_send_is_not_about_it(
    arrived: datetime | None, tied: bool, evidence: dict[str, Any]
) -> None:
    found = index(sent()).find(notice(**evidence), **MAILBOX, recipient="gone@customer.example",
                               arrived_at=arrived)
    assert (found is not None) is tied
