"""Which bounces put an address on the suppression list, and why; and the list itself."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sendrail.bus.codec import encode
from sendrail.events import AddressSuppressed, BounceDetected, ChannelKind, DeliveryEvent, DeliveryStatus
from sendrail.services.bounce_watcher.suppression import (
    SoftBounceHistory,
    SoftBounceRule,
    Why,
    decide,
)
from sendrail.suppression.store import SuppressionEntries
from sendrail.topics import suppression_key

T0 = datetime(2026, 11, 1, tzinfo=UTC)
NEVER = SoftBounceRule(limit=0, window_s=86400.0)
THREE_IN_A_DAY = SoftBounceRule(limit=3, window_s=86400.0)
SEND = uuid.UUID("8d7f3c3e-2a51-4a54-9f33-1c0a6c9e7f10")


def sent(*, recipients: tuple[str, ...] = ("Lee@Example.org",), tenant_id: str = "acme",
         connection_id: str = "ann-gmail", at: datetime = T0) -> DeliveryEvent:
    return DeliveryEvent(status=DeliveryStatus.SENT, send_id=SEND, tenant_id=tenant_id,
                         connection_id=connection_id, channel=ChannelKind.GMAIL,
                         recipients=list(recipients), occurred_at=at)


def bounce(*, hard: bool = True, at: datetime = T0 + timedelta(minutes=1), tenant_id: str = "acme",
           connection_id: str = "ann-gmail", recipient: str = "lee@example.org",
           correlated: bool = True, bounce_id: uuid.UUID | None = None) -> BounceDetected:
    return BounceDetected(
        bounce_id=bounce_id or uuid.uuid4(), tenant_id=tenant_id, connection_id=connection_id,
        channel=ChannelKind.GMAIL, recipient=recipient, status="5.1.1" if hard else "4.2.2",
        reply_code="550", diagnostic=None, reason="userunknown" if hard else "mailboxfull",
        hard=hard, correlated=correlated, send_id=SEND if correlated else None, detected_at=at)


LATER = T0 + timedelta(minutes=1)

# (case, bounce fields, the send it was tied to, arrived at, why, suppresses)
CASES: list[tuple[str, dict[str, Any], DeliveryEvent | None, datetime, Why, bool]] = [
    ("hard bounce of the send's recipient", {}, sent(), LATER, Why.HARD_BOUNCE, True),
    ("the recipient in another case", {"recipient": "LEE@EXAMPLE.ORG"}, sent(), LATER,
     Why.HARD_BOUNCE, True),
    ("Gmail dots", {"recipient": "leesmith@gmail.com"}, sent(recipients=("Lee.Smith@gmail.com",)),
     LATER, Why.HARD_BOUNCE, True),
    ("one of several recipients", {}, sent(recipients=("kim@example.org", "lee@example.org")), LATER,
     Why.HARD_BOUNCE, True),
    ("a stranger's notice, tied to nothing", {"correlated": False}, None, LATER,
     Why.UNCORRELATED, False),
    ("tied to a send of another mailbox", {}, sent(connection_id="ann-exchange"), LATER,
     Why.UNCORRELATED, False),
    ("tied to a send of another tenant", {}, sent(tenant_id="globex"), LATER, Why.UNCORRELATED, False),
    ("naming an address the send did not go to", {"recipient": "ceo@example.org"}, sent(), LATER,
     Why.NOT_A_RECIPIENT, False),
    ("naming a plus-tagged variant", {"recipient": "lee+x@example.org"}, sent(), LATER,
     Why.NOT_A_RECIPIENT, False),
    ("arrived a day before the send", {}, sent(), T0 - timedelta(days=1), Why.BEFORE_THE_SEND, False),
    ("arrived moments before the send was recorded", {}, sent(), T0 - timedelta(seconds=2),
     Why.HARD_BOUNCE, True),
    ("a special-use domain", {"recipient": "bob@corp.local"}, sent(recipients=("x@example.org",)),
     LATER, Why.NOT_AN_ADDRESS, False),
    ("a non-ASCII local part", {"recipient": "jörg@example.org"}, sent(), LATER,
     Why.NOT_AN_ADDRESS, False),
    ("garbage", {"recipient": "<<not an address>>"}, sent(), LATER, Why.NOT_AN_ADDRESS, False),
    ("a soft bounce, soft bounces never suppressing", {"hard": False}, sent(), LATER,
     Why.SOFT_BOUNCE, False),
]


@pytest.mark.parametrize(("fields", "tied_to", "arrived_at", "why", "suppresses"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_what_a_bounce_may_suppress(fields: dict[str, Any], tied_to: DeliveryEvent | None,
                                   arrived_at: datetime, why: Why, suppresses: bool) -> None:
    decision = decide(bounce(**fields), tied_to, arrived_at=arrived_at, history=SoftBounceHistory(),
                      rule=NEVER, now=LATER)
    assert decision.why is why
    assert (decision.suppression is not None) is suppresses


def test_a_suppression_names_the_address_as_the_send_spelled_it_for_that_tenant() -> None:
    found = bounce(recipient="lee@example.org")
    entry = decide(found, sent(), arrived_at=LATER, history=SoftBounceHistory(), rule=NEVER,
                   now=LATER).suppression
    assert entry is not None
    assert (entry.tenant_id, entry.address, entry.source) == ("acme", "Lee@example.org", "hard_bounce")
    assert entry.bounce_id == found.bounce_id and "userunknown" in entry.reason


def test_soft_bounces_suppress_when_enough_fall_in_the_window() -> None:
    history = SoftBounceHistory()
    outcomes = [decide(bounce(hard=False, at=T0 + timedelta(hours=h)), sent(), arrived_at=LATER,
                       history=history, rule=THREE_IN_A_DAY, now=T0) for h in (0, 30, 40, 50)]
    # 0 h and 30 h are a day apart; 30, 40 and 50 h fall within one day: the third suppresses.
    assert [o.why for o in outcomes] == [Why.SOFT_BOUNCE] * 3 + [Why.SOFT_BOUNCES]
    entry = outcomes[-1].suppression
    assert entry is not None and entry.source == "soft_bounces"


def test_a_soft_bounce_read_again_counts_once() -> None:
    history = SoftBounceHistory()
    again = uuid.uuid4()
    outcomes = [decide(bounce(hard=False, bounce_id=again, at=T0 + timedelta(minutes=m)), sent(),
                       arrived_at=LATER, history=history, rule=SoftBounceRule(2, 86400.0), now=T0)
                for m in (1, 2, 3)]
    assert [o.suppression for o in outcomes] == [None, None, None]


def test_untrusted_soft_bounces_are_not_counted() -> None:
    history = SoftBounceHistory()
    rule = SoftBounceRule(limit=2, window_s=86400.0)
    for _ in range(5):  # a stranger's notices, however many
        decide(bounce(hard=False, correlated=False), None, arrived_at=LATER, history=history,
               rule=rule, now=T0)
    first = decide(bounce(hard=False), sent(), arrived_at=LATER, history=history, rule=rule, now=T0)
    assert first.suppression is None


def test_soft_bounces_are_counted_per_tenant_and_mailbox() -> None:
    history = SoftBounceHistory()
    rule = SoftBounceRule(limit=2, window_s=3600.0)
    for tenant, address in [("acme", "a@x.org"), ("globex", "a@x.org"), ("acme", "b@x.org")]:
        decision = decide(bounce(hard=False, tenant_id=tenant, recipient=address),
                          sent(tenant_id=tenant, recipients=(address,)), arrived_at=LATER,
                          history=history, rule=rule, now=T0)
        assert decision.suppression is None
    spelled_otherwise = decide(bounce(hard=False, recipient="A@X.org"), sent(recipients=("a@x.org",)),
                               arrived_at=LATER, history=history, rule=rule, now=T0)
    assert spelled_otherwise.why is Why.SOFT_BOUNCES


# --- the list ------------------------------------------------------------------------------


def entry(address: str, *, tenant_id: str = "acme", at: datetime = T0) -> AddressSuppressed:
    return AddressSuppressed(tenant_id=tenant_id, address=address, source="admin", reason="asked",
                             suppressed_at=at)


def entries(*records: tuple[bytes, AddressSuppressed | None]) -> SuppressionEntries:
    table = SuppressionEntries()
    for key, value in records:
        table.apply(key, encode(value) if value is not None else None)
    return table


@pytest.mark.parametrize(("suppressed", "asked", "found"), [
    ("bob@x.com", "Bob@x.com", True),
    ("Bob@X.com", "bob@x.com", True),
    ("bob@x.com", "BOB@X.COM", True),
    ("bob.smith@gmail.com", "BobSmith@googlemail.com", True),
    ("bob@x.com", "bob+tag@x.com", False),
    ("bob.smith@x.com", "bobsmith@x.com", False),
    ("bob@x.com", "bob@x.org", False),
])
def test_lookups_compare_both_sides_by_their_key(suppressed: str, asked: str, found: bool) -> None:
    table = entries((suppression_key("acme", suppressed), entry(suppressed)))
    assert bool(table.suppressed("acme", [asked])) is found
    assert table.suppressed("globex", [asked]) == []


def test_one_key_per_mailbox_whoever_spelled_it() -> None:
    assert suppression_key("acme", "Bob@X.com") == suppression_key("acme", "bob@x.com") == b"acme/bob@x.com"


def test_a_record_under_an_old_spelling_counts_until_its_own_key_is_deleted() -> None:
    old_key = b"acme/Bob@x.com"  # written before keys were normalised
    table = entries((old_key, entry("Bob@x.com")),
                    (suppression_key("acme", "bob@x.com"), entry("bob@x.com", at=T0 + timedelta(days=1))))
    assert [e.address for e in table.suppressed("acme", ["BOB@x.com"])] == ["bob@x.com"]
    assert table.record_keys("acme", "bob@X.com") == sorted([old_key, b"acme/bob@x.com"])
    assert [e.address for e in table.of_tenant("acme")] == ["bob@x.com"]

    table.apply(b"acme/bob@x.com", None)
    assert [e.address for e in table.suppressed("acme", ["bob@x.com"])] == ["Bob@x.com"]
    table.apply(old_key, None)
    assert table.suppressed("acme", ["bob@x.com"]) == [] and table.of_tenant("acme") == []


@pytest.mark.parametrize("key, value", [
    (b"globex/bob@x.com", "acme"),  # another tenant's record under this tenant's key
    (b"\xff\xfe/bob@x.com", "acme"),  # a key that is not UTF-8
    (None, "acme"),
], ids=["another tenant", "not UTF-8", "no key"])
def test_a_record_the_table_cannot_use_is_refused_and_changes_nothing(key: bytes | None, value: str) -> None:
    """Refused by raising: the follower dead-letters it and goes on."""
    table = SuppressionEntries()
    with pytest.raises(ValueError):
        table.apply(key, encode(entry("bob@x.com", tenant_id=value)))
    assert table.suppressed("acme", ["bob@x.com"]) == [] and table.suppressed("globex", ["bob@x.com"]) == []


def test_an_invalid_value_is_refused() -> None:
    with pytest.raises(ValueError):
        SuppressionEntries().apply(b"acme/bob@x.com", b'{"tenant_id": "acme"}')
