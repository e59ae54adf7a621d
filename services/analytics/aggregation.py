"""Delivery events and mailbox findings folded into per-tenant summaries, each counted once.

Pure: no I/O, and time (`now`) is an argument. The rules, which the API documents too:

- A send's **outcome** is its first final event (`sent`, `failed`, `suppressed`,
  `dead_lettered`), counted once, in the hour it happened. A later final event of the same
  send (a message in flight at a sender crash sent again, a request published twice) is
  shown in the feed but not counted again.
- A send is **deferred** once, at its first `deferred` event, however often it waited:
  `deferred` says how many sends had to wait, not how many waits there were.
- A **bounced recipient** is counted once per (send, recipient), at its first bounce, with
  that bounce's hardness and reason; a later bounce message for the same recipient of the
  same send does not count again. An uncorrelated bounce has no send: it counts once per
  `bounce_id`, in the tenant's totals and per channel, user and identity where the event
  names them, never per campaign or template.
- Complaints and auto-replies count once per `finding_id`, attributed like bounces.
- **Bounce rate** = bounced recipients / recipients of sends sent, both over the same
  window (see `Counts.summary`). Bounces are counted when detected, sends when sent, so a
  window's rate compares what bounced in it with what was sent in it.

Repeats are recognised by identity, never by arrival: a DeliveryEvent by its send (or by
`event_id` when it has no send id), a bounce by (send, recipient) or `bounce_id`, a
finding by `finding_id`. Reading the topics again into a fresh instance rebuilds the same
summaries; reading an event twice into the same instance changes nothing.

Memory: each series keeps at most 168 hourly buckets; what grows with traffic is one small
entry per send (two flags) and per bounce or finding, which exactness needs.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sendrail.events import (
    AutoReplyDetected,
    BounceDetected,
    ComplaintDetected,
    DeliveryEvent,
    DeliveryStatus,
)
from sendrail.services.analytics.buckets import (
    WINDOW_HOURS,
    Counts,
    Series,
    first_hour,
    hour_of,
    hour_start,
)
from sendrail.services.analytics.feed import FEED_CAPACITY, Feed, FeedFilter
from sendrail.services.analytics.models import (
    Dimension,
    FeedItem,
    FeedKind,
    FeedResponse,
    ItemResponse,
    ItemSummary,
    SummaryResponse,
    TimelinePoint,
    TimelineResponse,
    Window,
)

Finding = BounceDetected | AutoReplyDetected | ComplaintDetected

_OUTCOME_COUNTED = 1
_DEFERRAL_COUNTED = 2
MAX_DETAIL_CHARS = 1000
"""A feed entry keeps this much of a reply text or diagnostic."""


class _Tenant:
    __slots__ = ("by", "feed", "totals")

    def __init__(self, feed_capacity: int) -> None:
        self.totals = Series()
        self.by: dict[Dimension, dict[str, Series]] = {dimension: {} for dimension in Dimension}
        self.feed = Feed(feed_capacity)

    def count(self, delta: Counts, keys: dict[Dimension, str | None], at: datetime, now: datetime) -> None:
        hour, now_hour = hour_of(at), hour_of(now)
        self.totals.add(delta, hour, now_hour)
        for dimension, key in keys.items():
            if key is not None:
                self.by[dimension].setdefault(key, Series()).add(delta, hour, now_hour)


class Analytics:
    """Every tenant's summaries and recent events."""

    def __init__(self, feed_capacity: int = FEED_CAPACITY) -> None:
        self._feed_capacity = feed_capacity
        self._tenants: dict[str, _Tenant] = {}
        self._sends: dict[int, int] = {}
        """Per send id (as its 128-bit integer, the smallest exact key): which counts it has made."""
        self._events_without_send: set[uuid.UUID] = set()
        self._bounced: set[tuple[int, str] | uuid.UUID] = set()
        self._findings: set[uuid.UUID] = set()

    # --- reading events ------------------------------------------------------------------

    def apply_delivery(self, event: DeliveryEvent, now: datetime) -> FeedItem | None:
        """Count a delivery event; the feed entry it made, or None if it was already known."""
        if event.tenant_id is None:
            return None  # a request too malformed to name its tenant belongs to no summary
        tenant = self._tenant(event.tenant_id)
        delta = self._delivery_delta(event)
        if delta is not None:
            tenant.count(delta, {
                Dimension.CAMPAIGN: event.campaign_id, Dimension.TEMPLATE: event.template_id,
                Dimension.USER: event.user_id, Dimension.IDENTITY: event.identity,
                Dimension.CHANNEL: event.channel.value if event.channel else None,
            }, event.occurred_at, now)
        item = FeedItem(
            id=str(event.event_id), kind=FeedKind(event.status.value), at=event.occurred_at,
            tenant_id=event.tenant_id, send_id=event.send_id, user_id=event.user_id,
            identity=event.identity, campaign_id=event.campaign_id, template_id=event.template_id,
            channel=event.channel, recipients=event.recipients, reason=event.reason, hard=None,
            correlated=None, status=None,
            reply_code=str(event.reply_code) if event.reply_code is not None else None,
            detail=_clip(event.reply_text),
        )
        return item if tenant.feed.add(item) else None

    def apply_finding(self, finding: Finding, now: datetime) -> FeedItem | None:
        """Count a bounce, complaint or auto-reply; the feed entry it made, or None if already known."""
        tenant = self._tenant(finding.tenant_id)
        delta = self._finding_delta(finding)
        if delta is not None:
            tenant.count(delta, {
                # Without its send, a finding's campaign and template are unknown.
                Dimension.CAMPAIGN: finding.campaign_id if finding.correlated else None,
                Dimension.TEMPLATE: finding.template_id if finding.correlated else None,
                Dimension.USER: finding.user_id, Dimension.IDENTITY: finding.identity,
                Dimension.CHANNEL: finding.channel.value,
            }, finding.detected_at, now)
        item = _finding_item(finding)
        return item if tenant.feed.add(item) else None

    def _delivery_delta(self, event: DeliveryEvent) -> Counts | None:
        if event.status in (DeliveryStatus.QUEUED, DeliveryStatus.DUPLICATE):
            return None  # a duplicate's send is counted by its original's events
        flag = _DEFERRAL_COUNTED if event.status is DeliveryStatus.DEFERRED else _OUTCOME_COUNTED
        if event.send_id is None:
            if event.event_id in self._events_without_send:
                return None
            self._events_without_send.add(event.event_id)
        else:
            done = self._sends.get(event.send_id.int, 0)
            if done & flag:
                return None
            self._sends[event.send_id.int] = done | flag
        match event.status:
            case DeliveryStatus.SENT:
                return Counts(sent=1, sent_recipients=len(event.recipients))
            case DeliveryStatus.DEFERRED:
                return Counts(deferred=1)
            case DeliveryStatus.FAILED:
                return Counts(failed=1)
            case DeliveryStatus.SUPPRESSED:
                return Counts(suppressed=1)
            case DeliveryStatus.DEAD_LETTERED:
                return Counts(dead_lettered=1)
        return None

    def _finding_delta(self, finding: Finding) -> Counts | None:
        if isinstance(finding, BounceDetected):
            key: tuple[int, str] | uuid.UUID = (
                (finding.send_id.int, finding.recipient.lower())
                if finding.correlated and finding.send_id is not None else finding.bounce_id)
            if key in self._bounced:
                return None
            self._bounced.add(key)
            return Counts(bounced=1, hard_bounced=int(finding.hard), soft_bounced=int(not finding.hard),
                          bounce_reasons={finding.reason: 1})
        if finding.finding_id in self._findings:
            return None
        self._findings.add(finding.finding_id)
        if isinstance(finding, ComplaintDetected):
            return Counts(complaints=1)
        return Counts(auto_replies=1)

    def _tenant(self, tenant_id: str) -> _Tenant:
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            tenant = self._tenants[tenant_id] = _Tenant(self._feed_capacity)
        return tenant

    # --- answering questions -------------------------------------------------------------

    def summary(self, tenant_id: str, window: Window, now: datetime,
                by: Dimension | None = None) -> SummaryResponse:
        """A tenant's totals, and one entry per key of `by` with something counted in the window."""
        now_hour = hour_of(now)
        tenant = self._tenants.get(tenant_id)
        totals = tenant.totals.window(window, now_hour) if tenant else Counts()
        items: list[ItemSummary] = []
        if tenant is not None and by is not None:
            for key, series in sorted(tenant.by[by].items()):
                counts = series.window(window, now_hour)
                if not counts.is_empty():
                    items.append(ItemSummary(key=key, **counts.summary().model_dump()))
        return SummaryResponse(tenant=tenant_id, window=window, by=by, as_of=now,
                               window_start=_window_start(window, now_hour),
                               totals=totals.summary(), items=items)

    def item(self, tenant_id: str, by: Dimension, key: str, window: Window,
             now: datetime) -> ItemResponse | None:
        """One campaign's (template's, ...) summary; None if the tenant never had events for it."""
        series = self._series(tenant_id, by, key)
        if series is None:
            return None
        now_hour = hour_of(now)
        return ItemResponse(tenant=tenant_id, window=window, by=by, key=key, as_of=now,
                            window_start=_window_start(window, now_hour),
                            summary=series.window(window, now_hour).summary())

    def timeline(self, tenant_id: str, window: Window, now: datetime,
                 scope: tuple[Dimension, str] | None = None) -> TimelineResponse | None:
        """Sends and bounces per hour of a 24h or 7d window, for the tenant or for one key of a
        dimension (`scope`); None if that key has no events."""
        if window is Window.ALL:
            raise ValueError("a timeline covers 24h or 7d")
        if scope is None:
            tenant = self._tenants.get(tenant_id)
            series: Series | None = tenant.totals if tenant else Series()
        else:
            series = self._series(tenant_id, *scope)
        if series is None:
            return None
        now_hour = hour_of(now)
        hours: list[TimelinePoint] = []
        for hour in range(now_hour - WINDOW_HOURS[window] + 1, now_hour + 1):
            counts = series.hour(hour) or Counts()
            hours.append(TimelinePoint(start=hour_start(hour), sent=counts.sent, bounced=counts.bounced))
        by, key = scope if scope is not None else (None, None)
        return TimelineResponse(tenant=tenant_id, window=window, by=by, key=key, as_of=now, hours=hours)

    def feed(self, tenant_id: str, feed_filter: FeedFilter, limit: int) -> FeedResponse:
        tenant = self._tenants.get(tenant_id)
        items = tenant.feed.newest(feed_filter, limit) if tenant else []
        return FeedResponse(tenant=tenant_id, items=items)

    def stats(self) -> dict[str, int]:
        """Sizes, for /healthz."""
        return {"tenants": len(self._tenants), "sends": len(self._sends),
                "bounced_recipients": len(self._bounced),
                "feed_entries": sum(len(t.feed) for t in self._tenants.values())}

    def _series(self, tenant_id: str, by: Dimension, key: str) -> Series | None:
        tenant = self._tenants.get(tenant_id)
        return tenant.by[by].get(key) if tenant is not None else None


def _window_start(window: Window, now_hour: int) -> datetime | None:
    start = first_hour(window, now_hour)
    return hour_start(start) if start is not None else None


def _clip(text: str | None) -> str | None:
    return text[:MAX_DETAIL_CHARS] if text is not None else None


def _finding_item(finding: Finding) -> FeedItem:
    common: dict[str, object] = {
        "at": finding.detected_at, "tenant_id": finding.tenant_id, "send_id": finding.send_id,
        "user_id": finding.user_id, "identity": finding.identity, "campaign_id": finding.campaign_id,
        "template_id": finding.template_id, "channel": finding.channel, "correlated": finding.correlated,
        "hard": None, "status": None, "reply_code": None, "detail": None, "reason": None,
    }
    if isinstance(finding, BounceDetected):
        common.update(id=str(finding.bounce_id), kind=FeedKind.BOUNCE, recipients=[finding.recipient],
                      reason=finding.reason, hard=finding.hard, status=finding.status,
                      reply_code=finding.reply_code, detail=_clip(finding.diagnostic))
    else:
        kind = FeedKind.COMPLAINT if isinstance(finding, ComplaintDetected) else FeedKind.AUTO_REPLY
        common.update(id=str(finding.finding_id), kind=kind, recipients=[finding.address])
    return FeedItem.model_validate(common)

