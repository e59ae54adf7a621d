"""sendrail's Kafka topics: name, event type, key and partitioning, documented in one place.

Keys decide ordering: Kafka keeps order per partition, and a key always maps to the
same partition, so mail of one connection (key `tenant/connection`) is sent in order
and one mailbox is never served by two sender replicas at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from sendrail import events
from sendrail.mail.addresses import comparison_key
from sendrail.store.entry import TableEntry


@dataclass(frozen=True)
class Topic:
    name: str
    event: type[BaseModel]
    key: str
    """What the message key is, in words."""
    purpose: str
    partitions: int = 6
    compacted: bool = False
    configs: dict[str, str] = field(default_factory=dict)


REQUESTS = Topic(
    "sendrail.requests", events.EmailRequested, "tenant_id/user_id",
    "Send requests from upstream systems.",
)
REGISTRY = Topic(
    "sendrail.registry", events.ConnectionConfigured, "record/tenant_id/id (see registry_key)",
    "Connections, identities, assignments, tenant settings and connection health; "
    "one record type per value, chosen by its `record` field; the latest per key is the state.",
    partitions=1, compacted=True,
)
_DAY_MS = 24 * 3600 * 1000

OUTBOUND_RETENTION_MS = 7 * _DAY_MS
"""Past the longest a queued message can wait: a sender fails it as expired after
`SenderSettings.max_queued_age_s` (at most 5 days), at the latest a day later, when its
connection next looks at its queue (no wait of a daily window, pause or backoff is longer)."""


def _outbound(name: str, purpose: str) -> Topic:
    return Topic(name, events.EmailRouted, "tenant_id/connection_id", purpose,
                 configs={"retention.ms": str(OUTBOUND_RETENTION_MS)})


OUTBOUND_GMAIL = _outbound("sendrail.outbound.gmail", "Emails routed to Gmail connections.")
OUTBOUND_EXCHANGE = _outbound("sendrail.outbound.exchange",
                              "Emails routed to Exchange Online connections.")
OUTBOUND_SMTP = _outbound(
    "sendrail.outbound.smtp",
    "Emails routed to SMTP servers: custom, team, on-premises Exchange and legacy.")
HELD = Topic(
    "sendrail.held", events.EmailRouted, "tenant_id/connection_id",
    "Emails waiting for a broken connection to be reconnected (or to expire).",
)
HELD_WAITING = Topic(
    "sendrail.held.waiting", TableEntry,
    "tenant_id/connection_id + offset on sendrail.held, binary (see services/router/held.py)",
    "The changelog of the router's table of held mail, on the partition number of the held "
    "record: each email waiting for its connection, until it is released or expires.",
    partitions=HELD.partitions, compacted=True,
    # One-day segments: compaction can drop released mail a day or two after it went, not
    # when a 7-day segment is full. Tombstones are kept a week, for a replica that gets a
    # partition back and catches up from where its copy stopped.
    configs={"segment.ms": str(_DAY_MS), "delete.retention.ms": str(7 * _DAY_MS)},
)
DELIVERY = Topic(
    "sendrail.delivery", events.DeliveryEvent, "send_id",
    "Delivery events: queued, sent, deferred, failed, dead-lettered.",
)
BOUNCES = Topic(
    "sendrail.bounces", events.BounceDetected, "tenant_id",
    "The analytics topic: bounces (and auto-replies and complaints, by their `event` field) "
    "tied to their send, campaign and template.",
)
SUPPRESSION = Topic(
    "sendrail.suppression", events.AddressSuppressed, "tenant_id/address",
    "Each tenant's suppression list; a deleted key lifts the suppression.",
    partitions=1, compacted=True,
)
DEAD_LETTER = Topic(
    "sendrail.dead-letter", events.RequestDeadLettered, "source_topic/partition/offset",
    "Records a consumer could not use, from any topic, with the reason and the original bytes.",
)
WATCHER_CHECKPOINTS = Topic(
    "sendrail.watcher-checkpoints", events.WatcherCheckpoint, "tenant_id/connection_id",
    "How far the bounce watcher has read each mailbox.",
    partitions=1, compacted=True,
)

THROTTLE_STATE = Topic(
    "sendrail.throttle-state", events.ThrottleStateRecorded, "tenant_id/connection_id",
    "Each connection's recent sends, pause and unfinished messages, for exact limits "
    "across restarts and replicas.",
    partitions=1, compacted=True,
)

SEND_ID_RETENTION_MS = 7 * 24 * 3600 * 1000
"""How long a sender remembers a finished send: the same request again within it is not sent."""


def _finished_sends(outbound: Topic) -> Topic:
    """The changelog of a sender's table of finished send ids, co-partitioned with its outbound
    topic. Kafka forgets entries a day after the table does (with one-day segments, a
    record is deleted at most two days after the table stops needing it)."""
    return Topic(
        f"{outbound.name}.send-ids", TableEntry, "send_id",
        f"The send ids finished from {outbound.name}, on the partition they came from.",
        partitions=outbound.partitions, compacted=True,
        configs={"cleanup.policy": "compact,delete",
                 "retention.ms": str(SEND_ID_RETENTION_MS + _DAY_MS), "segment.ms": str(_DAY_MS)},
    )


OUTBOUND_GMAIL_SEND_IDS = _finished_sends(OUTBOUND_GMAIL)
OUTBOUND_EXCHANGE_SEND_IDS = _finished_sends(OUTBOUND_EXCHANGE)
OUTBOUND_SMTP_SEND_IDS = _finished_sends(OUTBOUND_SMTP)
SEND_IDS_BY_OUTBOUND = {
    OUTBOUND_GMAIL.name: OUTBOUND_GMAIL_SEND_IDS,
    OUTBOUND_EXCHANGE.name: OUTBOUND_EXCHANGE_SEND_IDS,
    OUTBOUND_SMTP.name: OUTBOUND_SMTP_SEND_IDS,
}

ALL_TOPICS = (
    REQUESTS, REGISTRY, OUTBOUND_GMAIL, OUTBOUND_EXCHANGE, OUTBOUND_SMTP, HELD, HELD_WAITING,
    DELIVERY, BOUNCES, DEAD_LETTER, WATCHER_CHECKPOINTS, THROTTLE_STATE, SUPPRESSION,
    OUTBOUND_GMAIL_SEND_IDS, OUTBOUND_EXCHANGE_SEND_IDS, OUTBOUND_SMTP_SEND_IDS,
)

OUTBOUND_BY_CHANNEL = {
    events.ChannelKind.GMAIL: OUTBOUND_GMAIL,
    events.ChannelKind.EXCHANGE_ONLINE: OUTBOUND_EXCHANGE,
    events.ChannelKind.EXCHANGE_ONPREM: OUTBOUND_SMTP,
    events.ChannelKind.CUSTOM_SMTP: OUTBOUND_SMTP,
    events.ChannelKind.TEAM_SMTP: OUTBOUND_SMTP,
    events.ChannelKind.LEGACY: OUTBOUND_SMTP,
}


def suppression_key(tenant_id: str, address: str) -> bytes:
    """One key per mailbox, however the address is spelled: compaction then keeps one record
    for it, and a tombstone for any spelling lifts the suppression."""
    return f"{tenant_id}/{comparison_key(address)}".encode()


def connection_key(tenant_id: str, connection_id: str) -> bytes:
    return f"{tenant_id}/{connection_id}".encode()
