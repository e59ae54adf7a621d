"""Analytics aggregation: exact counts per dimension and window, each event once, time as an argument."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from sendrail.events import (
    AutoReplyDetected,
    BounceDetected,
    ChannelKind,
    ComplaintDetected,
    DeliveryEvent,
    DeliveryStatus,
)
from sendrail.services.analytics.aggregation import Analytics, Finding
from sendrail.services.analytics.feed import FeedFilter
from sendrail.services.analytics.models import Dimension, FeedKind, Summary, Window

T0 = datetime(2026, 11, 28, 10, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
ALICE, BOB = "alice@acme.example.com", "bob@acme.example.com"
GMAIL, EXCHANGE = ChannelKind.GMAIL, ChannelKind.EXCHANGE_ONLINE


def delivery(status: DeliveryStatus, send_id: uuid.UUID | None, *, at: datetime = T0, tenant: str = "acme",
             campaign: str | None = "spring", template: str | None = "intro", user: str | None = "alice",
             identity: str | None = ALICE, channel: ChannelKind | None = GMAIL,
             recipients: tuple[str, ...] = ("lee@example.org",), event_id: uuid.UUID | None = None) -> DeliveryEvent:
    return DeliveryEvent(status=status, send_id=send_id, event_id=event_id or uuid.uuid4(), tenant_id=tenant,
                         campaign_id=campaign, template_id=template, user_id=user, identity=identity,
                         channel=channel, recipients=list(recipients), occurred_at=at)


def bounce(send_id: uuid.UUID | None, recipient: str, *, hard: bool = True, reason: str = "userunknown",
           at: datetime = T0, tenant: str = "acme", campaign: str | None = "spring",
           template: str | None = "intro", user: str | None = "alice", identity: str | None = ALICE,
           channel: ChannelKind = GMAIL, correlated: bool = True,
           bounce_id: uuid.UUID | None = None) -> BounceDetected:
    return BounceDetected(bounce_id=bounce_id or uuid.uuid4(), tenant_id=tenant, connection_id="c1",
                          channel=channel, recipient=recipient, status="5.1.1", reply_code="550",
                          diagnostic="550 5.1.1 no such user", reason=reason, hard=hard, correlated=correlated,
                          send_id=send_id, user_id=user, identity=identity, campaign_id=campaign,
                          template_id=template, detected_at=at)


def finding(kind: type[ComplaintDetected] | type[AutoReplyDetected], send_id: uuid.UUID, *,
            at: datetime = T0, finding_id: uuid.UUID | None = None) -> Finding:
    return kind(finding_id=finding_id or uuid.uuid4(), address="lee@example.org", tenant_id="acme",
                connection_id="c1", channel=GMAIL, correlated=True, send_id=send_id, user_id="alice",
                identity=ALICE, campaign_id="spring", template_id="intro", detected_at=at)


S1, S2, S3, S4, S5, S6 = (uuid.uuid4() for _ in range(6))
B1 = uuid.uuid4()

DELIVERIES = [
    # s1: waited twice, then sent.
    delivery(DeliveryStatus.QUEUED, S1, at=T0 - 2 * HOUR),
    delivery(DeliveryStatus.DEFERRED, S1, at=T0 - 2 * HOUR),
    delivery(DeliveryStatus.DEFERRED, S1, at=T0 - HOUR),
    delivery(DeliveryStatus.SENT, S1),
    # s2: two recipients, one of which bounces.
    delivery(DeliveryStatus.QUEUED, S2),
    delivery(DeliveryStatus.SENT, S2, recipients=("a@example.org", "b@example.org")),
    # s3: bob, another template, two days ago; bounces soft.
    delivery(DeliveryStatus.SENT, S3, at=T0 - 2 * DAY, template="followup", user="bob", identity=BOB,
             channel=EXCHANGE),
    # s4: failed at the provider half an hour ago.
    delivery(DeliveryStatus.FAILED, S4, at=T0 - HOUR / 2, campaign="autumn", user="bob", identity=BOB,
             channel=EXCHANGE),
    # s5: refused by the router (no channel) for a suppressed recipient.
    delivery(DeliveryStatus.SUPPRESSED, S5, campaign="autumn", channel=None),
    # s6: ten days ago.
    delivery(DeliveryStatus.SENT, S6, at=T0 - 10 * DAY, campaign="autumn"),
    # A malformed request: no send id, no dimensions.
    delivery(DeliveryStatus.DEAD_LETTERED, None, campaign=None, template=None, user=None, identity=None,
             channel=None, recipients=()),
    # Another tenant's send, which acme never sees.
    delivery(DeliveryStatus.SENT, uuid.uuid4(), tenant="other"),
]
FINDINGS: list[Finding] = [
    bounce(S2, "a@example.org", bounce_id=B1),
    bounce(S2, "A@example.org", hard=False, reason="mailboxfull"),  # a second message, same recipient
    bounce(S3, "lee@example.org", hard=False, reason="mailboxfull", at=T0 - 2 * DAY + HOUR,
           template="followup", user="bob", identity=BOB, channel=EXCHANGE),
    # Not tied to a send: the tenant's, the channel's and the user's, no campaign's or template's.
    bounce(None, "x@example.org", reason="hostunknown", correlated=False, identity=None),
    finding(ComplaintDetected, S1),
    finding(AutoReplyDetected, S1),
    bounce(uuid.uuid4(), "z@example.org", tenant="other"),
]


def loaded(now: datetime = T0, times: int = 1) -> Analytics:
    analytics = Analytics()
    for _ in range(times):
        for event in DELIVERIES:
            analytics.apply_delivery(event, now)
        for found in FINDINGS:
            analytics.apply_finding(found, now)
    return analytics


def counts(summary: Summary) -> dict[str, object]:
    fields = summary.model_dump()
    return {name: value for name, value in fields.items() if name == "bounce_rate" or value not in (0, {})}


def item(analytics: Analytics, by: Dimension, key: str, window: Window) -> dict[str, object]:
    found = analytics.item("acme", by, key, window, T0)
    assert found is not None, f"{by} {key}"
    return counts(found.summary)


TOTALS = [
    (Window.ALL, {"sent": 4, "sent_recipients": 5, "deferred": 1, "failed": 1, "suppressed": 1,
                  "dead_lettered": 1, "bounced": 3, "hard_bounced": 2, "soft_bounced": 1,
                  "bounce_reasons": {"hostunknown": 1, "mailboxfull": 1, "userunknown": 1},
                  "complaints": 1, "auto_replies": 1, "bounce_rate": 3 / 5}),
    (Window.WEEK, {"sent": 3, "sent_recipients": 4, "deferred": 1, "failed": 1, "suppressed": 1,
                   "dead_lettered": 1, "bounced": 3, "hard_bounced": 2, "soft_bounced": 1,
                   "bounce_reasons": {"hostunknown": 1, "mailboxfull": 1, "userunknown": 1},
                   "complaints": 1, "auto_replies": 1, "bounce_rate": 3 / 4}),
    (Window.DAY, {"sent": 2, "sent_recipients": 3, "deferred": 1, "failed": 1, "suppressed": 1,
                  "dead_lettered": 1, "bounced": 2, "hard_bounced": 2,
                  "bounce_reasons": {"hostunknown": 1, "userunknown": 1},
                  "complaints": 1, "auto_replies": 1, "bounce_rate": 2 / 3}),
]


@pytest.mark.parametrize(("window", "expected"), TOTALS)
def test_tenant_totals_per_window(window: Window, expected: dict[str, object]) -> None:
    assert counts(loaded().summary("acme", window, T0).totals) == expected


BY_KEY = [
    (Dimension.CAMPAIGN, "spring", Window.ALL,
     {"sent": 3, "sent_recipients": 4, "deferred": 1, "bounced": 2, "hard_bounced": 1, "soft_bounced": 1,
      "bounce_reasons": {"mailboxfull": 1, "userunknown": 1}, "complaints": 1, "auto_replies": 1,
      "bounce_rate": 0.5}),
    (Dimension.CAMPAIGN, "spring", Window.DAY,
     {"sent": 2, "sent_recipients": 3, "deferred": 1, "bounced": 1, "hard_bounced": 1,
      "bounce_reasons": {"userunknown": 1}, "complaints": 1, "auto_replies": 1, "bounce_rate": 1 / 3}),
    (Dimension.CAMPAIGN, "autumn", Window.ALL,
     {"sent": 1, "sent_recipients": 1, "failed": 1, "suppressed": 1, "bounce_rate": 0.0}),
    (Dimension.CAMPAIGN, "autumn", Window.WEEK, {"failed": 1, "suppressed": 1, "bounce_rate": None}),
    (Dimension.TEMPLATE, "intro", Window.ALL,
     {"sent": 3, "sent_recipients": 4, "deferred": 1, "failed": 1, "suppressed": 1, "bounced": 1,
      "hard_bounced": 1, "bounce_reasons": {"userunknown": 1}, "complaints": 1, "auto_replies": 1,
      "bounce_rate": 0.25}),
    (Dimension.TEMPLATE, "followup", Window.ALL,
     {"sent": 1, "sent_recipients": 1, "bounced": 1, "soft_bounced": 1,
      "bounce_reasons": {"mailboxfull": 1}, "bounce_rate": 1.0}),
    (Dimension.USER, "alice", Window.ALL,
     {"sent": 3, "sent_recipients": 4, "deferred": 1, "suppressed": 1, "bounced": 2, "hard_bounced": 2,
      "bounce_reasons": {"hostunknown": 1, "userunknown": 1}, "complaints": 1, "auto_replies": 1,
      "bounce_rate": 0.5}),
    (Dimension.USER, "bob", Window.ALL,
     {"sent": 1, "sent_recipients": 1, "failed": 1, "bounced": 1, "soft_bounced": 1,
      "bounce_reasons": {"mailboxfull": 1}, "bounce_rate": 1.0}),
    (Dimension.IDENTITY, ALICE, Window.ALL,
     {"sent": 3, "sent_recipients": 4, "deferred": 1, "suppressed": 1, "bounced": 1, "hard_bounced": 1,
      "bounce_reasons": {"userunknown": 1}, "complaints": 1, "auto_replies": 1, "bounce_rate": 0.25}),
    (Dimension.CHANNEL, "gmail", Window.ALL,
     {"sent": 3, "sent_recipients": 4, "deferred": 1, "bounced": 2, "hard_bounced": 2,
      "bounce_reasons": {"hostunknown": 1, "userunknown": 1}, "complaints": 1, "auto_replies": 1,
      "bounce_rate": 0.5}),
    (Dimension.CHANNEL, "exchange_online", Window.ALL,
     {"sent": 1, "sent_recipients": 1, "failed": 1, "bounced": 1, "soft_bounced": 1,
      "bounce_reasons": {"mailboxfull": 1}, "bounce_rate": 1.0}),
    (Dimension.CHANNEL, "exchange_online", Window.DAY, {"failed": 1, "bounce_rate": None}),
]


@pytest.mark.parametrize(("by", "key", "window", "expected"), BY_KEY)
def test_counts_per_dimension_and_window(by: Dimension, key: str, window: Window,
                                         expected: dict[str, object]) -> None:
    assert item(loaded(), by, key, window) == expected


def test_a_breakdown_lists_the_keys_with_something_in_the_window() -> None:
    analytics = loaded()
    assert [i.key for i in analytics.summary("acme", Window.ALL, T0, Dimension.CAMPAIGN).items] == [
        "autumn", "spring"]
    assert [i.key for i in analytics.summary("acme", Window.DAY, T0, Dimension.TEMPLATE).items] == ["intro"]
    assert [i.key for i in analytics.summary("acme", Window.ALL, T0, Dimension.CHANNEL).items] == [
        "exchange_online", "gmail"]
    breakdown = analytics.summary("acme", Window.ALL, T0, Dimension.USER)
    assert {i.key: i.bounced for i in breakdown.items} == {"alice": 2, "bob": 1}


def test_events_read_twice_count_once() -> None:
    once, twice = loaded(), loaded(times=2)
    for by in [None, *Dimension]:
        for window in Window:
            assert twice.summary("acme", window, T0, by) == once.summary("acme", window, T0, by)
    assert twice.feed("acme", FeedFilter(), 500) == once.feed("acme", FeedFilter(), 500)


def test_reading_the_topics_in_another_interleaving_builds_the_same_state() -> None:
    """Each topic keeps its order per partition (a send's events, a tenant's findings); how the
    two topics interleave differs from one reading to the next."""
    findings_first = Analytics()
    for found in FINDINGS:
        findings_first.apply_finding(found, T0)
    for event in DELIVERIES:
        findings_first.apply_delivery(event, T0)
    expected = loaded()
    for by in [None, *Dimension]:
        assert findings_first.summary("acme", Window.ALL, T0, by) == expected.summary("acme", Window.ALL, T0, by)
    assert findings_first.feed("acme", FeedFilter(), 500) == expected.feed("acme", FeedFilter(), 500)


def test_a_tenant_sees_only_its_own_events() -> None:
    analytics = loaded()
    other = analytics.summary("other", Window.ALL, T0, Dimension.CAMPAIGN)
    assert (other.totals.sent, other.totals.bounced) == (1, 1)
    assert [i.key for i in other.items] == ["spring"] and other.items[0].sent == 1
    assert {i.tenant_id for i in analytics.feed("other", FeedFilter(), 500).items} == {"other"}
    assert analytics.summary("nobody", Window.ALL, T0).totals.sent == 0
    assert analytics.item("nobody", Dimension.CAMPAIGN, "spring", Window.ALL, T0) is None


def test_a_send_counts_its_outcome_once_however_many_final_events_it_has() -> None:
    analytics, send = Analytics(), uuid.uuid4()
    first = analytics.apply_delivery(delivery(DeliveryStatus.FAILED, send), T0)
    # Sent again later (a request published twice): shown, not counted again.
    again = analytics.apply_delivery(delivery(DeliveryStatus.SENT, send, at=T0 + HOUR), T0 + HOUR)
    totals = analytics.summary("acme", Window.ALL, T0 + HOUR).totals
    assert (totals.failed, totals.sent) == (1, 0)
    assert first is not None and again is not None
    assert [i.kind for i in analytics.feed("acme", FeedFilter(), 10).items] == [FeedKind.SENT, FeedKind.FAILED]


def test_a_send_that_waited_three_times_is_one_deferred_send() -> None:
    analytics, send = Analytics(), uuid.uuid4()
    for minutes in (0, 5, 10):
        analytics.apply_delivery(delivery(DeliveryStatus.DEFERRED, send, at=T0 + timedelta(minutes=minutes)), T0)
    analytics.apply_delivery(delivery(DeliveryStatus.DEFERRED, uuid.uuid4()), T0)
    assert analytics.summary("acme", Window.ALL, T0).totals.deferred == 2


def test_the_same_event_twice_is_one_feed_entry_and_no_new_count() -> None:
    analytics, event = Analytics(), delivery(DeliveryStatus.SENT, uuid.uuid4())
    assert analytics.apply_delivery(event, T0) is not None
    assert analytics.apply_delivery(event, T0) is None
    repeated = bounce(None, "x@example.org", correlated=False)
    assert analytics.apply_finding(repeated, T0) is not None
    assert analytics.apply_finding(repeated, T0) is None
    malformed = delivery(DeliveryStatus.DEAD_LETTERED, None)
    analytics.apply_delivery(malformed, T0)
    analytics.apply_delivery(malformed, T0)
    totals = analytics.summary("acme", Window.ALL, T0).totals
    assert (totals.sent, totals.bounced, totals.dead_lettered) == (1, 1, 1)
    assert len(analytics.feed("acme", FeedFilter(), 10).items) == 3


BOUNCE_RATES = [
    # (recipients of each sent send, bounced recipients as (send index, address)), expected rate
    ([], [], None),
    ([["a@x.org"]], [], 0.0),
    ([["a@x.org", "b@x.org"]], [(0, "a@x.org")], 0.5),
    ([["a@x.org", "b@x.org"]], [(0, "a@x.org"), (0, "A@X.org")], 0.5),  # one recipient, two bounces
    ([["a@x.org", "b@x.org"]], [(0, "a@x.org"), (0, "b@x.org")], 1.0),
    ([["a@x.org"], ["a@x.org"], ["c@x.org"], ["d@x.org"]], [(0, "a@x.org"), (1, "a@x.org")], 0.5),
]


@pytest.mark.parametrize(("sends", "bounced", "rate"), BOUNCE_RATES)
def test_bounce_rate_is_bounced_recipients_over_recipients_sent(
        sends: list[list[str]], bounced: list[tuple[int, str]], rate: float | None) -> None:
    analytics, ids = Analytics(), [uuid.uuid4() for _ in sends]
    for send_id, recipients in zip(ids, sends, strict=True):
        analytics.apply_delivery(delivery(DeliveryStatus.SENT, send_id, recipients=tuple(recipients)), T0)
    for index, address in bounced:
        analytics.apply_finding(bounce(ids[index], address), T0)
    assert analytics.summary("acme", Window.ALL, T0).totals.bounce_rate == rate
    campaign = analytics.item("acme", Dimension.CAMPAIGN, "spring", Window.ALL, T0)
    assert (campaign.summary.bounce_rate if campaign else None) == rate


def test_an_uncorrelated_bounce_counts_for_the_tenant_channel_and_user_only() -> None:
    analytics = Analytics()
    analytics.apply_finding(bounce(None, "x@example.org", correlated=False, campaign="spring",
                                   template="intro", identity=None), T0)
    assert analytics.summary("acme", Window.ALL, T0).totals.bounced == 1
    assert item(analytics, Dimension.CHANNEL, "gmail", Window.ALL)["bounced"] == 1
    assert item(analytics, Dimension.USER, "alice", Window.ALL)["bounced"] == 1
    for by in (Dimension.CAMPAIGN, Dimension.TEMPLATE, Dimension.IDENTITY):
        assert analytics.summary("acme", Window.ALL, T0, by).items == []
    entry = analytics.feed("acme", FeedFilter(kinds=frozenset({FeedKind.BOUNCE})), 10).items[0]
    assert entry.correlated is False and entry.recipients == ["x@example.org"]


WINDOWS = [
    # (how long after the send the question is asked, counted in 24h, counted in 7d)
    (timedelta(0), True, True),
    (timedelta(hours=23, minutes=29), True, True),  # 09:59 next day: the send's hour is the 24th
    (timedelta(hours=23, minutes=30), False, True),  # 10:00 next day: its hour has left the window
    (timedelta(days=6, hours=23, minutes=29), False, True),
    (timedelta(days=6, hours=23, minutes=30), False, False),
    (timedelta(days=400), False, False),
]


@pytest.mark.parametrize(("later", "in_day", "in_week"), WINDOWS)
def test_windows_slide_with_the_time_asked(later: timedelta, in_day: bool, in_week: bool) -> None:
    analytics = Analytics()
    analytics.apply_delivery(delivery(DeliveryStatus.SENT, uuid.uuid4()), T0)
    now = T0 + later
    sent = {window: analytics.summary("acme", window, now).totals.sent for window in Window}
    assert sent == {Window.DAY: int(in_day), Window.WEEK: int(in_week), Window.ALL: 1}


def test_an_event_older_than_a_week_when_read_counts_in_all_time_only() -> None:
    analytics = Analytics()
    analytics.apply_delivery(delivery(DeliveryStatus.SENT, uuid.uuid4(), at=T0 - 8 * DAY), T0)
    analytics.apply_delivery(delivery(DeliveryStatus.SENT, uuid.uuid4()), T0)
    assert [analytics.summary("acme", w, T0).totals.sent for w in Window] == [1, 1, 2]


def test_the_timeline_has_every_hour_with_its_sends_and_bounces() -> None:
    timeline = loaded().timeline("acme", Window.DAY, T0)
    assert timeline is not None and len(timeline.hours) == 24
    assert timeline.hours[-1].start == datetime(2026, 11, 28, 10, tzinfo=UTC)
    assert [(h.sent, h.bounced) for h in timeline.hours if h.sent or h.bounced] == [(2, 2)]
    week = loaded().timeline("acme", Window.WEEK, T0, (Dimension.TEMPLATE, "followup"))
    assert week is not None and len(week.hours) == 168
    assert sum(h.sent for h in week.hours) == 1 and sum(h.bounced for h in week.hours) == 1
    assert loaded().timeline("acme", Window.DAY, T0, (Dimension.CAMPAIGN, "nothing")) is None


def test_the_feed_is_newest_first_and_filtered() -> None:
    analytics = loaded()
    items = analytics.feed("acme", FeedFilter(), 500).items
    assert [i.at for i in items] == sorted((i.at for i in items), reverse=True)
    assert len(items) == 17  # every distinct acme event, the second bounce message included
    bounces = analytics.feed("acme", FeedFilter(kinds=frozenset({FeedKind.BOUNCE})), 500).items
    assert len(bounces) == 4 and bounces[-1].at == T0 - 2 * DAY + HOUR
    spring = analytics.feed("acme", FeedFilter(campaign="spring", user="bob"), 500).items
    assert [i.kind for i in spring] == [FeedKind.BOUNCE, FeedKind.SENT]
    assert len(analytics.feed("acme", FeedFilter(template="intro"), 3).items) == 3


def test_a_full_feed_keeps_the_newest_whatever_the_reading_order() -> None:
    events = [delivery(DeliveryStatus.SENT, uuid.uuid4(), at=T0 + timedelta(seconds=s)) for s in range(10)]
    forward, backward = Analytics(feed_capacity=4), Analytics(feed_capacity=4)
    for event in events:
        forward.apply_delivery(event, T0)
    for event in reversed(events):
        backward.apply_delivery(event, T0)
    newest = [str(e.event_id) for e in reversed(events[-4:])]
    assert [i.id for i in forward.feed("acme", FeedFilter(), 10).items] == newest
    assert [i.id for i in backward.feed("acme", FeedFilter(), 10).items] == newest
    assert backward.apply_delivery(events[0], T0) is None
    assert forward.summary("acme", Window.ALL, T0).totals.sent == 10
