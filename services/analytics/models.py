"""The analytics API's shapes: what its JSON endpoints return, and the schemas its OpenAPI lists."""

from __future__ import annotations

import uuid
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from sendrail.events import ChannelKind


class Window(StrEnum):
    """How far back a summary looks, in whole hours counted back from the current one."""

    DAY = "24h"
    WEEK = "7d"
    ALL = "all"


class Dimension(StrEnum):
    """What a tenant's summaries can be broken down by."""

    CAMPAIGN = "campaign"
    TEMPLATE = "template"
    USER = "user"
    IDENTITY = "identity"
    CHANNEL = "channel"


COLLECTIONS = {Dimension.CAMPAIGN: "campaigns", Dimension.TEMPLATE: "templates", Dimension.USER: "users",
               Dimension.IDENTITY: "identities", Dimension.CHANNEL: "channels"}
"""The path segment under which the API serves one key of each dimension."""


class FeedKind(StrEnum):
    """What a feed entry is: a delivery status, or what the bounce watcher found."""

    QUEUED = "queued"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"
    SUPPRESSED = "suppressed"
    DUPLICATE = "duplicate"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    AUTO_REPLY = "auto_reply"


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Summary(_Shape):
    """Counts over one window; every send and every finding counted once."""

    sent: int = Field(description="Sends whose outcome is `sent` (messages accepted by the server).")
    sent_recipients: int = Field(description="Recipients (to, cc and bcc) of those sends.")
    deferred: int = Field(description="Sends that had to wait at least once (throttled, backed off or "
                                      "held), counted once per send at its first wait.")
    failed: int = Field(description="Sends whose outcome is `failed`.")
    suppressed: int = Field(description="Sends refused because a recipient is suppressed.")
    dead_lettered: int = Field(description="Requests refused as malformed.")
    bounced: int = Field(description="Bounced recipients: each recipient of a send once, however many "
                                     "bounce messages came back for it; an uncorrelated bounce once.")
    hard_bounced: int = Field(description="Bounced recipients whose first bounce was hard.")
    soft_bounced: int = Field(description="Bounced recipients whose first bounce was soft.")
    bounce_reasons: dict[str, int] = Field(description="Bounced recipients by the reason of their first "
                                                       "bounce (the taxonomy of `BounceDetected.reason`).")
    complaints: int = Field(description="Spam complaints (ARF reports).")
    auto_replies: int = Field(description="Automatic replies (out of office).")
    bounce_rate: float | None = Field(description="`bounced / sent_recipients` over the same window; null "
                                                  "when nothing was sent in it.")


class ItemSummary(Summary):
    key: str = Field(description="The campaign, template, user, identity or channel.")


class SummaryResponse(_Shape):
    tenant: str
    window: Window
    by: Dimension | None = Field(description="The breakdown of `items`; null when none was asked for.")
    as_of: AwareDatetime = Field(description="When the summary was computed.")
    window_start: AwareDatetime | None = Field(
        description="Start of the oldest hour counted; null for all time.")
    totals: Summary = Field(description="The tenant's totals, uncorrelated bounces included.")
    items: list[ItemSummary] = Field(description="One entry per key with something counted in the window, "
                                                 "sorted by key.")


class ItemResponse(_Shape):
    tenant: str
    window: Window
    by: Dimension
    key: str
    as_of: AwareDatetime
    window_start: AwareDatetime | None
    summary: Summary


class TimelinePoint(_Shape):
    start: AwareDatetime = Field(description="Start of the hour.")
    sent: int
    bounced: int


class TimelineResponse(_Shape):
    tenant: str
    window: Window
    by: Dimension | None
    key: str | None
    as_of: AwareDatetime
    hours: list[TimelinePoint] = Field(description="Every hour of the window, oldest first, the current "
                                                   "one last.")


class FeedItem(_Shape):
    """One event as a person reads it in the live feed."""

    id: str = Field(description="The event's own id: `event_id`, `bounce_id` or `finding_id`.")
    kind: FeedKind
    at: AwareDatetime = Field(description="When it happened (`occurred_at` or `detected_at`).")
    tenant_id: str
    send_id: uuid.UUID | None
    user_id: str | None
    identity: str | None
    campaign_id: str | None
    template_id: str | None
    channel: ChannelKind | None
    recipients: list[str] = Field(description="The send's recipients; for a bounce the recipient that "
                                              "bounced; for a complaint or an auto-reply who sent it.")
    reason: str | None = Field(description="The bounce reason, or why a send failed or waits.")
    hard: bool | None = Field(description="For a bounce: whether it was hard.")
    correlated: bool | None = Field(description="For the bounce watcher's findings: tied to a send.")
    status: str | None = Field(description="For a bounce: the RFC 3463 status.")
    reply_code: str | None = Field(description="The server's reply code.")
    detail: str | None = Field(description="The server's reply text or the bounce's diagnostic.")


class FeedResponse(_Shape):
    tenant: str
    items: list[FeedItem] = Field(description="Newest first.")


class ErrorResponse(_Shape):
    error: str = Field(description="A stable code: bad_parameter, not_found, method_not_allowed, "
                                   "catching_up, unauthenticated, forbidden, bad_host, misdirected.")
    message: str = Field(description="What was wrong, for a person.")
    parameter: str | None = Field(default=None, description="The parameter at fault, if one was.")
