"""`sendrail bench hostile`: a campaign runs while hostile records land on every topic.

On a local stack of its own (every service its own process), a custom SMTP user sends a
campaign; while it runs, hostile records are published on every topic a service reads
(undecodable bytes, invalid JSON, a newer schema version, keys that are not UTF-8,
records under another connection's key, oversized requests) and each good request is
published twice, as an upstream system that retries would. Measured: good messages
delivered and lost (at the receiving server), duplicates (a send received twice),
hostile records dead-lettered (matched by their SHA-256 on the dead-letter topic), and
service restarts (must be 0: a process that exited, or a service that had to start
itself again).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import secrets
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from sendrail.bus.clients import make_consumer, make_producer
from sendrail.bus.codec import decode, encode
from sendrail.events import (
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    EmailRequested,
    EmailRouted,
    IdentityRegistered,
    RequestDeadLettered,
    SmtpServer,
    Source,
)
from sendrail.registry.store import publish_record
from sendrail.sandbox.ports import free_port
from sendrail.sandbox.stack import LocalStack
from sendrail.secrets import SecretBox
from sendrail.settings import KafkaSettings, SecretSettings
from sendrail.topics import (
    BOUNCES,
    DEAD_LETTER,
    DELIVERY,
    HELD,
    OUTBOUND_EXCHANGE,
    OUTBOUND_GMAIL,
    OUTBOUND_SMTP,
    REGISTRY,
    REQUESTS,
    SUPPRESSION,
    THROTTLE_STATE,
    WATCHER_CHECKPOINTS,
    connection_key,
)

SEND_ID = re.compile(rb"X-Sendrail-Send-Id: ([0-9a-f-]{36})")
RESTARTED = "service failed; starting again"
"""What a service logs when it has to start itself again (sendrail.service.serve)."""

FOLLOWED = (REGISTRY, SUPPRESSION, WATCHER_CHECKPOINTS, THROTTLE_STATE, DELIVERY, BOUNCES)
CONSUMED = (REQUESTS, OUTBOUND_GMAIL, OUTBOUND_EXCHANGE, OUTBOUND_SMTP, HELD)


@dataclass(frozen=True)
class HostileBench:
    good: int = 200
    rounds: int = 5
    """Hostile records go out in this many rounds spread over the campaign."""
    deadline_s: float = 180.0


async def run_hostile_bench(bench: HostileBench) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sendrail-bench-") as run_dir:
        async with LocalStack(Path(run_dir), kafka_port=free_port()) as stack:
            result = await _campaign(stack, bench)
            restarts = sum(1 for s in stack.services if s.process is None or s.process.returncode is not None)
            restarts += sum(s.log_file.read_text(errors="replace").count(RESTARTED) for s in stack.services)
    return {"hostile": {**result, "service_restarts": restarts}}


async def _campaign(stack: LocalStack, bench: HostileBench) -> dict[str, Any]:
    kafka = KafkaSettings(bootstrap_servers=stack.broker.bootstrap_servers)
    tenant = f"bench-{secrets.token_hex(3)}"
    producer = make_producer(kafka, client_id="sendrail-bench-hostile")
    await producer.start()
    try:
        sender = await _connect(stack, producer, tenant)
        requests = [_request(tenant, sender, n) for n in range(bench.good)]
        hostile: list[tuple[str, bytes]] = []
        started_s = time.time()
        per_round = max(1, len(requests) // bench.rounds)
        for start in range(0, len(requests), per_round):
            for request in requests[start:start + per_round]:
                raw = encode(request)
                for _ in range(2):  # published twice: the second is the same send
                    await producer.send(REQUESTS.name, raw, key=f"{tenant}/{sender}".encode())
            hostile += await _publish_hostile(producer, tenant, sender)
        await producer.flush()
        send_ids = {str(r.send_id) for r in requests}
        await _wait_received(stack, send_ids, bench.deadline_s)
        dead_lettered = await _dead_lettered(kafka, {hashlib.sha256(raw).hexdigest() for _, raw in hostile})
        received = _received(stack, send_ids)  # again: a repeat would have arrived by now
    finally:
        await producer.stop()
    copies = Counter(received)
    by_topic = Counter(topic for topic, raw in hostile
                       if hashlib.sha256(raw).hexdigest() in dead_lettered)
    return {
        "good_requests": len(requests),
        "good_delivered": sum(1 for r in requests if copies[str(r.send_id)] > 0),
        "lost": sum(1 for r in requests if copies[str(r.send_id)] == 0),
        "duplicates": sum(n - 1 for n in copies.values() if n > 1),
        "hostile_records": len(hostile),
        "hostile_dead_lettered": sum(by_topic.values()),
        "dead_lettered_by_topic": dict(sorted(by_topic.items())),
        "wall_s": round(time.time() - started_s, 1),
    }


async def _connect(stack: LocalStack, producer: AIOKafkaProducer, tenant: str) -> str:
    box = SecretBox.from_settings(SecretSettings(secret_key_file=Path(stack.env["SENDRAIL_SECRET_KEY_FILE"])))
    endpoint = stack.info.smtp["custom_smtp"]
    user, address, password = "rep", f"rep@{tenant}.example.com", secrets.token_urlsafe(12)
    stack.sandbox.add_password_user("custom_smtp", address, password)
    now = datetime.now(UTC)
    for record in (
        ConnectionConfigured(tenant_id=tenant, connection_id=user, kind=ChannelKind.CUSTOM_SMTP,
                             owner_user_id=user, smtp=SmtpServer(host=endpoint.host, port=endpoint.port),
                             username=address, password=box.seal(password), connected_at=now,
                             updated_at=now),
        ConnectionHealthChanged(tenant_id=tenant, connection_id=user, healthy=True, changed_at=now),
        IdentityRegistered(tenant_id=tenant, user_id=user, address=address, verified=True,
                           is_default=True, updated_at=now),
    ):
        await publish_record(producer, record)
    return user


def _request(tenant: str, user: str, n: int) -> EmailRequested:
    return EmailRequested(
        idempotency_key=f"hostile-bench-{n}", tenant_id=tenant, user_id=user,
        identity=f"{user}@{tenant}.example.com", source=Source.CAMPAIGN, to=[f"lead{n}@example.org"],
        subject=f"campaign {n}", text="Hello from the hostile-input benchmark.",
        requested_at=datetime.now(UTC))


def _hostile_values(tenant: str, user: str) -> list[bytes]:
    """Different every round (a nonce), so each is its own record on the dead-letter topic."""
    nonce = uuid.uuid4().hex
    good = _request(tenant, user, 0).model_dump(mode="json")
    return [
        b"\xff\xfe not UTF-8 " + nonce.encode(),
        json.dumps({"tenant_id": "\ud800", "nonce": nonce}).encode(),  # a lone surrogate
        b"[" * 20_000 + nonce.encode(),
        json.dumps(good | {"schema_version": 2, "idempotency_key": nonce}).encode(),
        json.dumps({"record": "connection", "tenant_id": 7, "nonce": nonce}).encode(),
    ]


async def _publish_hostile(producer: AIOKafkaProducer, tenant: str, user: str) -> list[tuple[str, bytes]]:
    published: list[tuple[str, bytes]] = []
    for topic in (*CONSUMED, *FOLLOWED):
        for value in _hostile_values(tenant, user):
            key = b"\xff\xfe" + uuid.uuid4().bytes if topic in FOLLOWED else connection_key(tenant, user)
            await producer.send(topic.name, value, key=key)
            published.append((topic.name, value))
    # Mail of this connection under another connection's key: never sent with the wrong login.
    stray = _request(tenant, user, 10**6)
    routed = encode(EmailRouted(send_id=stray.send_id, channel=ChannelKind.CUSTOM_SMTP,
                                connection_id=user, request=stray, routed_at=datetime.now(UTC)))
    await producer.send(OUTBOUND_SMTP.name, routed + b" " * len(published),  # unique bytes
                        key=connection_key(tenant, f"other-{uuid.uuid4().hex[:6]}"))
    published.append((OUTBOUND_SMTP.name, routed + b" " * len(published)))
    return published


def _received(stack: LocalStack, send_ids: set[str]) -> list[str]:
    """Send ids of the campaign as the receiving server saw them (one per message received)."""
    return [m.group(1).decode() for e in stack.sandbox.received("custom_smtp")
            if (m := SEND_ID.search(e.content)) and m.group(1).decode() in send_ids]


async def _wait_received(stack: LocalStack, send_ids: set[str], deadline_s: float) -> None:
    """Until every send arrived or the deadline passed (what is missing then is lost)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(deadline_s):
            while not set(_received(stack, send_ids)) >= send_ids:  # noqa: ASYNC110 - the
                await asyncio.sleep(0.5)  # receiving server's Maildir has no event to wait on


async def _dead_lettered(kafka: KafkaSettings, digests: set[str], timeout_s: float = 60.0) -> set[str]:
    """Which of `digests` have a dead-letter entry, waiting up to `timeout_s` for all of them."""
    consumer = make_consumer(kafka, DEAD_LETTER.name, group_id=None, client_id="sendrail-bench-hostile")
    await consumer.start()
    seen: set[str] = set()
    try:
        async with asyncio.timeout(timeout_s):
            while not digests <= seen:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        entry = decode(RequestDeadLettered, record.value or b"")
                        if entry.original_sha256 in digests:
                            seen.add(entry.original_sha256)
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return seen
