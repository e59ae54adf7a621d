"""`sendrail bench bounces`: parsing speed, and how fast a bounce becomes an event.

Parsing: `parse_notice` over the real bounce messages `make setup` fetched, repeated,
on one core. Latency: one bounce watcher process watching 200 Gmail mailboxes on
the sandbox's Dovecot (IMAP IDLE, XOAUTH2); Gmail-style bounces are put into the
mailboxes one after another, and each is timed from the moment it lands in the
Maildir to the broker's timestamp of its event on the analytics topic.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sendrail.bounces import parse_notice
from sendrail.bus.clients import make_consumer, make_producer
from sendrail.bus.codec import decode, decode_analytics
from sendrail.events import (
    BounceDetected,
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    ImapServer,
    OAuthGrant,
    SmtpServer,
    WatcherCheckpoint,
)
from sendrail.registry.store import publish_record
from sendrail.sandbox.dsn import Undelivered, gmail_bounce
from sendrail.sandbox.ports import free_port
from sendrail.sandbox.stack import LocalStack
from sendrail.secrets import SecretBox
from sendrail.settings import KafkaSettings, SecretSettings
from sendrail.topics import BOUNCES, WATCHER_CHECKPOINTS

CORPUS = Path(".cache/corpus/flufl_bounce-6.0.0/tests/data")


def parse_throughput(*, messages: int = 5000) -> dict[str, Any]:
    """Messages per second through `parse_notice`, on one core, over the real corpus."""
    corpus = [p.read_bytes() for p in sorted(CORPUS.glob("*.txt"))]
    if not corpus:
        raise FileNotFoundError(f"no bounce corpus in {CORPUS}: run `make setup`")
    started = time.process_time()
    for i in range(messages):
        parse_notice(corpus[i % len(corpus)])
    cpu_s = time.process_time() - started
    return {"messages": messages, "corpus_files": len(corpus),
            "messages_per_second": round(messages / cpu_s)}


async def watcher_latency(*, mailboxes: int = 200, deadline_s: float = 180.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sendrail-bench-") as run_dir:
        async with LocalStack(Path(run_dir), kafka_port=free_port()) as stack:
            return await _latency(stack, mailboxes, deadline_s)


async def _latency(stack: LocalStack, mailboxes: int, deadline_s: float) -> dict[str, Any]:
    tenant = f"bench-{secrets.token_hex(3)}"
    kafka = KafkaSettings(bootstrap_servers=stack.broker.bootstrap_servers)
    box = SecretBox.from_settings(SecretSettings(secret_key_file=Path(stack.env["SENDRAIL_SECRET_KEY_FILE"])))
    info = stack.info
    addresses = {f"m{i:03d}": f"m{i:03d}@{tenant}.example.com" for i in range(mailboxes)}
    checkpoints = make_consumer(kafka, WATCHER_CHECKPOINTS.name, group_id=None, client_id="bench")
    bounces = make_consumer(kafka, BOUNCES.name, group_id=None, client_id="bench")
    producer = make_producer(kafka, client_id="bench")
    for client in (checkpoints, bounces, producer):
        await client.start()
    try:
        now = datetime.now(UTC)
        endpoint = info.smtp["gmail"]
        for connection_id, address in addresses.items():
            token = stack.sandbox.add_oauth_user("google", address)
            await publish_record(producer, ConnectionConfigured(
                tenant_id=tenant, connection_id=connection_id, kind=ChannelKind.GMAIL,
                owner_user_id=connection_id, address=address,
                smtp=SmtpServer(host=endpoint.host, port=endpoint.port),
                oauth=OAuthGrant(refresh_token=box.seal(token)),
                imap=ImapServer(host=info.imap_host, port=info.imap_port),
                connected_at=now, updated_at=now))
            await publish_record(producer, ConnectionHealthChanged(
                tenant_id=tenant, connection_id=connection_id, healthy=True, changed_at=now))
        watching_started = time.monotonic()
        opened: set[str] = set()
        async with asyncio.timeout(deadline_s):
            async for record in checkpoints:
                checkpoint = decode(WatcherCheckpoint, record.value or b"")
                if checkpoint.tenant_id == tenant:
                    opened.add(checkpoint.connection_id)
                    if len(opened) == mailboxes:
                        break
        all_watched_s = time.monotonic() - watching_started

        landed_ms: dict[str, float] = {}
        for connection_id, address in addresses.items():
            original = (f"From: {address}\r\nTo: gone@{info.bounce_domain}\r\nSubject: hi\r\n"
                        f"Message-ID: <{connection_id}@{tenant}.example.com>\r\n\r\nHello.\r\n").encode()
            at = datetime.now(UTC)
            bounce = gmail_bounce(Undelivered(original=original, sender=address,
                                              recipients=(f"gone-{connection_id}@{info.bounce_domain}",),
                                              reporting_host="mx.google.com", arrived_at=at,
                                              bounced_at=at))
            stack.sandbox.deliver(address, bounce)
            landed_ms[connection_id] = time.time() * 1000
            await asyncio.sleep(0.02)  # 50 bounces a second across the mailboxes
        latencies_s: list[float] = []
        async with asyncio.timeout(deadline_s):
            async for record in bounces:
                finding = decode_analytics(record.value or b"")
                if isinstance(finding, BounceDetected) and finding.tenant_id == tenant:
                    latencies_s.append((record.timestamp - landed_ms[finding.connection_id]) / 1000)
                    if len(latencies_s) == mailboxes:
                        break
    finally:
        for client in (checkpoints, bounces, producer):
            await client.stop()
    latencies_s.sort()
    return {
        "mailboxes_watched": mailboxes,
        "all_mailboxes_open_s": round(all_watched_s, 1),
        "bounces": len(latencies_s),
        "latency_s": {"p50": round(statistics.median(latencies_s), 3),
                      "p95": round(latencies_s[int(0.95 * (len(latencies_s) - 1))], 3),
                      "max": round(latencies_s[-1], 3)},
    }
