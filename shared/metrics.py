"""Every Prometheus metric sendrail exports, on one registry, with low-cardinality labels.

Labels are channel kinds and outcomes, never users, addresses or connections: those
would grow without bound.
"""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)  # process_* (CPU, memory) and python_* series

requests_routed = Counter(
    "sendrail_requests_routed_total",
    "Send requests the router handled, by chosen channel and outcome.",
    ["channel", "outcome"],  # outcome: routed, held, failed, suppressed, dead_lettered;
    # channel "none" where no channel was chosen
    registry=REGISTRY,
)
emails_delivered = Counter(
    "sendrail_emails_total",
    "Delivery events a sender published, by channel and outcome; one email can be deferred "
    "several times, so a sum over outcomes counts events, not emails.",
    ["channel", "outcome"],  # outcome: sent, deferred (held mail included), failed
    registry=REGISTRY,
)
smtp_send_duration = Histogram(
    "sendrail_smtp_send_duration_seconds",
    "Time to hand one message to the provider's SMTP server, opening a session (and "
    "refreshing its token) included.",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
    registry=REGISTRY,
)
oauth_refreshes = Counter(
    "sendrail_oauth_token_refreshes_total",
    "Access-token refreshes, by provider and outcome.",
    ["provider", "outcome"],  # outcome: ok, revoked, error
    registry=REGISTRY,
)
queue_depth = Gauge(
    "sendrail_queue_depth",
    "Emails a sender holds queued (read, not yet sent), by channel; per connection see /healthz.",
    ["channel"],
    registry=REGISTRY,
)
bounces_detected = Counter(
    "sendrail_bounces_total",
    "Bounces published, by channel, hardness and whether they were tied to a send.",
    ["channel", "hardness", "correlated"],
    registry=REGISTRY,
)
watched_mailboxes = Gauge(
    "sendrail_watched_mailboxes",
    "Inboxes the bounce watcher currently has open.",
    ["channel"],
    registry=REGISTRY,
)
mailbox_messages_read = Counter(
    "sendrail_mailbox_messages_read_total",
    "Messages the bounce watcher read from inboxes, by what they turned out to be.",
    ["kind"],
    registry=REGISTRY,
)
mailbox_message_failures = Counter(
    "sendrail_mailbox_message_failures_total",
    "Inbox messages the bounce watcher could not handle and passed over, by channel.",
    ["channel"],
    registry=REGISTRY,
)
mailbox_retries = Counter(
    "sendrail_mailbox_retries_total",
    "Times a mailbox watcher backed off, by channel and what failed (mailbox, bus, crash).",
    ["channel", "cause"],
    registry=REGISTRY,
)
dead_lettered = Counter(
    "sendrail_dead_lettered_total",
    "Records a consumer could not use and put on the dead-letter topic, by source topic and "
    "reason (undecodable, invalid, newer_schema, mismatched, handling_failed).",
    ["topic", "reason"],
    registry=REGISTRY,
)
consumer_lag = Gauge(
    "sendrail_consumer_lag_messages",
    "Messages on a topic's assigned partitions the consumer group has not finished: end "
    "offset minus the offset done with, summed per topic.",
    ["group", "topic"],
    registry=REGISTRY,
)
