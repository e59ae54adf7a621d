"""Every Prometheus metric sendrail exports, on one registry, with low-cardinality labels.

Labels are channel kinds and outcomes, never users, addresses or connections: those
would grow without bound.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

requests_routed = Counter(
    "sendrail_requests_routed_total",
    "Send requests the router handled, by chosen channel and outcome.",
    ["channel", "outcome"],  # outcome: routed, held, failed, suppressed, dead_lettered
    registry=REGISTRY,
)
emails_delivered = Counter(
    "sendrail_emails_total",
    "Emails a sender handled, by channel and outcome.",
    ["channel", "outcome"],  # outcome: sent, deferred, failed, held
    registry=REGISTRY,
)
smtp_send_duration = Histogram(
    "sendrail_smtp_send_duration_seconds",
    "Time to hand one message to the provider's SMTP server.",
    ["channel"],
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
