"""`sendrail bench memory`: each service's resident memory, idle and under a large backlog.

Every service runs as its own process on the local stack, with the sample users
connected. Idle: a few seconds after start. Then `backlog` send requests are published
at once for one user whose custom SMTP connection is throttled to one message an hour:
the router drains them (its peak is sampled while it does), and the SMTP sender reads
all the routed emails ahead and keeps them queued for that connection, as offsets past
the first few dozen. The sender's memory is sampled as its queue grows, which shows
what one queued message costs. Resident memory is VmRSS from /proc (Linux).
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from sendrail.bus.clients import make_producer
from sendrail.bus.codec import encode
from sendrail.cli.local import SERVICES
from sendrail.events import (
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    EmailRequested,
    IdentityRegistered,
    SmtpServer,
    Source,
    ThrottleConfigured,
)
from sendrail.registry.store import publish_record
from sendrail.sandbox.bench.router import bench_stack, pid_of, start_service
from sendrail.sandbox.stack import LocalStack, ServiceProcess
from sendrail.secrets import SecretBox
from sendrail.settings import KafkaSettings, SecretSettings
from sendrail.topics import REQUESTS

_BODY = ("Hello {name},\n\nThank you for your interest in our spring offer. " * 15
         + "\n\nBest regards,\nThe sales team\n")
_SAMPLE_S = 0.25


async def run_memory_bench(backlog: int = 100_000, *, deadline_s: float = 600.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sendrail-bench-") as run_dir:
        async with bench_stack(Path(run_dir)) as stack:
            await stack.connect_sample_users()
            services = {name: await start_service(stack, name) for name in SERVICES}
            try:
                return {"memory": await _measure(stack, services, backlog, deadline_s)}
            finally:
                for service in services.values():
                    await service.stop()


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise ValueError(f"no VmRSS for process {pid}")


async def _measure(stack: LocalStack, services: dict[str, ServiceProcess], backlog: int,
                   deadline_s: float) -> dict[str, Any]:
    await asyncio.sleep(3)  # past start-up: topics read, consumers joined
    idle = {name: rss_mb(pid_of(s)) for name, s in services.items()}
    tenant, connection_id = await _throttled_user(stack)
    router, sender = services["router"], services["sender-smtp"]
    publishing = asyncio.create_task(_publish_requests(stack, tenant, backlog))
    router_peak = idle["router"]
    growth: list[tuple[int, float]] = []
    async with aiohttp.ClientSession() as session, asyncio.timeout(deadline_s):
        while True:
            router_peak = max(router_peak, rss_mb(pid_of(router)))
            queued = await _queued(session, sender, f"{tenant}/{connection_id}")
            growth.append((queued, rss_mb(pid_of(sender))))
            if publishing.done() and queued >= backlog - 1:  # one went at once
                break
            await asyncio.sleep(_SAMPLE_S)
    await publishing
    await asyncio.sleep(2)  # settled: the last fetches applied
    loaded = {name: rss_mb(pid_of(s)) for name, s in services.items()}
    first = next((q, m) for q, m in growth if q >= backlog // 10)
    last = growth[-1]
    per_message = (last[1] - first[1]) * 1024 * 1024 / max(1, last[0] - first[0])
    return {
        "backlog": backlog,
        "idle_mb": idle,
        "with_backlog_mb": {**loaded, "router": max(router_peak, loaded["router"])},
        "router": "peak while draining the requests, published at once",
        "sender_smtp_queue_growth": {
            "queued_vs_mb": [growth[i] for i in _spread(len(growth), 6)],
            "bytes_per_queued_message": round(per_message),
        },
        "target_mb": 200,
    }


def _spread(length: int, points: int) -> list[int]:
    return sorted({round(i * (length - 1) / (points - 1)) for i in range(points)})


async def _queued(session: aiohttp.ClientSession, service: ServiceProcess, key: str) -> int:
    async with session.get(f"http://127.0.0.1:{service.http_port}/healthz") as response:
        body = await response.json()
    return int(body.get("queued", {}).get(key, 0))


async def _throttled_user(stack: LocalStack) -> tuple[str, str]:
    """A user on custom SMTP whose connection may send one message an hour."""
    tenant, user_id, connection_id = f"mem-{secrets.token_hex(3)}", "heavy", "heavy-smtp"
    address = f"{user_id}@{tenant}.example.com"
    password = secrets.token_urlsafe(12)
    stack.sandbox.add_password_user("custom_smtp", address, password)
    box = SecretBox.from_settings(SecretSettings(secret_key_file=Path(stack.env["SENDRAIL_SECRET_KEY_FILE"])))
    endpoint = stack.info.smtp["custom_smtp"]
    now = datetime.now(UTC)
    producer = make_producer(KafkaSettings(bootstrap_servers=stack.broker.bootstrap_servers),
                             client_id="sendrail-bench")
    await producer.start()
    try:
        for record in (
            ConnectionConfigured(tenant_id=tenant, connection_id=connection_id,
                                 kind=ChannelKind.CUSTOM_SMTP, owner_user_id=user_id,
                                 smtp=SmtpServer(host=endpoint.host, port=endpoint.port),
                                 username=address, password=box.seal(password), connected_at=now,
                                 updated_at=now),
            ConnectionHealthChanged(tenant_id=tenant, connection_id=connection_id, healthy=True,
                                    changed_at=now),
            IdentityRegistered(tenant_id=tenant, user_id=user_id, address=address, verified=True,
                               is_default=True, updated_at=now),
            ThrottleConfigured(tenant_id=tenant, connection_id=connection_id, batch_size=1,
                               batch_wait_s=3600.0, updated_at=now),
        ):
            await publish_record(producer, record)
    finally:
        await producer.stop()
    return tenant, connection_id


async def _publish_requests(stack: LocalStack, tenant: str, count: int) -> None:
    address = f"heavy@{tenant}.example.com"
    producer = make_producer(KafkaSettings(bootstrap_servers=stack.broker.bootstrap_servers),
                             client_id="sendrail-bench")
    await producer.start()
    try:
        pending = []
        for n in range(count):
            request = EmailRequested(
                idempotency_key=f"memory-{n}", tenant_id=tenant, user_id="heavy", identity=address,
                source=Source.CAMPAIGN, to=[f"lead{n}@customer{n % 97}.example.org"],
                subject=f"Our spring offer, for you ({n})", text=_BODY.format(name=f"Lead {n}"),
                requested_at=datetime.now(UTC))
            pending.append(await producer.send(REQUESTS.name, encode(request),
                                               key=f"{tenant}/heavy".encode()))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
