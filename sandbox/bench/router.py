"""`sendrail bench router`: the router process against a plain aiokafka pipe on the same broker.

Both move the same pre-filled send requests (about 1.5 KB each) on one local broker
with the same client settings (idempotent producer, acks=all, read_committed, offsets
committed after each batch is acknowledged). The pipe copies each record to one topic;
the router validates it, routes it (mixed channels, a registry holding every user it
needs) and publishes the routed email plus its `queued` delivery event. Rates are timed
on the broker's clock (LogAppendTime on the output topics), from the first to the last
output record. Then the router's latency at a steady rate: a paced publisher, each
request timed from its publish timestamp to the broker timestamp of its routed email.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pydantic import BaseModel

from sendrail.bus.clients import ensure_topics, make_admin, make_consumer, make_producer
from sendrail.bus.codec import encode
from sendrail.events import (
    ChannelAssigned,
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    EmailRequested,
    IdentityRegistered,
    ImapServer,
    OAuthGrant,
    RegistryRecord,
    SmtpServer,
    Source,
    TenantConfigured,
)
from sendrail.registry.store import publish_record
from sendrail.sandbox.ports import free_port
from sendrail.sandbox.stack import LocalStack, ServiceProcess
from sendrail.secrets import SecretBox
from sendrail.settings import KafkaSettings, SecretSettings
from sendrail.topics import OUTBOUND_BY_CHANNEL, REQUESTS, Topic

PIPE_IN = Topic("bench.pipe-in", BaseModel, "tenant_id/user_id", "The raw pipe's input.")
PIPE_OUT = Topic("bench.pipe-out", BaseModel, "tenant_id/user_id", "The raw pipe's output.")
CHANNEL_TOPICS = sorted({t.name: t for t in OUTBOUND_BY_CHANNEL.values()}.values(), key=lambda t: t.name)

BODY = ("Hello {name},\n\nThank you for your interest in our spring offer. " * 15
         + "\n\nBest regards,\nThe sales team\n")


@dataclass(frozen=True)
class RouterBench:
    messages: int = 100_000
    users: int = 600
    replicas: int = 1
    paced_per_s: int = 1000
    paced_s: float = 10.0
    deadline_s: float = 300.0


async def run_router_bench(bench: RouterBench) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sendrail-bench-") as run_dir:
        async with bench_stack(Path(run_dir)) as stack:
            kafka = KafkaSettings(bootstrap_servers=stack.broker.bootstrap_servers)
            await ensure_topics(kafka, [PIPE_IN, PIPE_OUT])
            await log_append_time(kafka, [t.name for t in (PIPE_OUT, *CHANNEL_TOPICS)])
            requests = await _registered_requests(stack, kafka, bench)
            message_bytes = statistics.fmean(len(value) for _, value in requests[:1000])
            pipe = await _raw_pipe(kafka, requests, bench)
            routed = await _router_rate(stack, kafka, requests, bench)
            return {"router": {
                "messages": bench.messages,
                "message_bytes": round(message_bytes),
                "raw_pipe_per_s": pipe["messages_per_s"],
                "router_per_s": routed["messages_per_s"],
                "ratio": round(routed["messages_per_s"] / pipe["messages_per_s"], 3),
                "raw_pipe": pipe,
                "router_run": routed,
                "latency": routed.pop("latency"),
            }}


# --- the stack ---------------------------------------------------------------------------


def bench_stack(run_dir: Path) -> LocalStack:
    """The local stack (broker, mail sandbox) with no service started: each benchmark starts
    the ones it measures, when it wants them, so nothing else competes for the two cores."""
    stack = LocalStack(run_dir, kafka_port=free_port())
    stack.services = []
    return stack


async def start_service(stack: LocalStack, name: str, *, instance: int = 1,
                        env: dict[str, str] | None = None, ready_s: float = 60.0) -> ServiceProcess:
    process = ServiceProcess(name, free_port(), stack.run_dir / "logs" / f"{name}-{instance}.log")
    await process.start({**stack.env, **(env or {})})
    try:
        async with aiohttp.ClientSession() as session:
            await process.wait_ready(session, ready_s)
    except BaseException:
        await process.stop()
        raise
    return process


async def log_append_time(kafka: KafkaSettings, topics: Iterable[str]) -> None:
    """Stamp these topics' records with the broker's clock, so times are taken where the
    records land, whoever produced them."""
    admin = make_admin(kafka, client_id="sendrail-bench")
    await admin.start()
    try:
        await admin.alter_configs([
            ConfigResource(ConfigResourceType.TOPIC, name,
                           configs={"message.timestamp.type": "LogAppendTime"})
            for name in topics])
    finally:
        await admin.close()


async def end_offsets(kafka: KafkaSettings, topics: Iterable[Topic]) -> dict[TopicPartition, int]:
    consumer = make_consumer(kafka, group_id=None, client_id="sendrail-bench")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic.name, p) for topic in topics for p in range(topic.partitions)]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


def count_since(start: dict[TopicPartition, int], now: dict[TopicPartition, int]) -> int:
    return sum(end - start.get(tp, 0) for tp, end in now.items())


async def wait_for_count(kafka: KafkaSettings, topics: list[Topic], start: dict[TopicPartition, int],
                         count: int, deadline_s: float) -> None:
    """Until `count` records were written to `topics` since `start` (the broker's end offsets,
    asked every 0.25 s: reading every record as it comes would compete for the cores)."""
    async with asyncio.timeout(deadline_s):
        while count_since(start, await end_offsets(kafka, topics)) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.25)


async def read_range(kafka: KafkaSettings, start: dict[TopicPartition, int],
                     end: dict[TopicPartition, int]) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record between two sets of offsets (read committed)."""
    consumer = make_consumer(kafka, group_id=None, client_id="sendrail-bench", max_records=5000)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        wanted = {tp: end_offset for tp, end_offset in end.items() if end_offset > start.get(tp, 0)}
        consumer.assign(list(wanted))
        for tp in wanted:
            consumer.seek(tp, start.get(tp, 0))
        async with asyncio.timeout(120):
            while wanted:
                fetched = await consumer.getmany(*wanted, timeout_ms=500)
                for tp, batch in fetched.items():
                    records.extend(r for r in batch if r.offset < wanted[tp])
                for tp in list(wanted):
                    if await consumer.position(tp) >= wanted[tp]:
                        del wanted[tp]
    finally:
        await consumer.stop()
    return records


def rate(timestamps_ms: list[int]) -> dict[str, Any]:
    """Messages per second between the first and the last timestamp."""
    span_s = (max(timestamps_ms) - min(timestamps_ms)) / 1000
    return {"messages_per_s": round((len(timestamps_ms) - 1) / span_s) if span_s > 0 else None,
            "window_s": round(span_s, 3)}


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_of(process: ServiceProcess) -> int:
    assert process.process is not None
    return process.process.pid


# --- the registry and the requests -------------------------------------------------------

_KINDS = (ChannelKind.GMAIL, ChannelKind.EXCHANGE_ONLINE, ChannelKind.EXCHANGE_ONPREM,
          ChannelKind.CUSTOM_SMTP, ChannelKind.TEAM_SMTP, ChannelKind.LEGACY)


async def _registered_requests(stack: LocalStack, kafka: KafkaSettings,
                               bench: RouterBench) -> list[tuple[bytes, bytes]]:
    """Registers `bench.users` users, a sixth on each channel kind; returns `bench.messages`
    encoded requests (key, value) spread over them, with the sources their channels allow."""
    tenant, legacy_tenant = f"bench-{secrets.token_hex(3)}", f"bench-old-{secrets.token_hex(3)}"
    box = SecretBox.from_settings(SecretSettings(secret_key_file=Path(stack.env["SENDRAIL_SECRET_KEY_FILE"])))
    now = datetime.now(UTC)
    records: list[RegistryRecord] = [
        TenantConfigured(tenant_id=tenant, team_connection_id="team", updated_at=now),
        TenantConfigured(tenant_id=legacy_tenant, legacy=True, updated_at=now),
        ConnectionConfigured(tenant_id=tenant, connection_id="team", kind=ChannelKind.TEAM_SMTP,
                             owner_user_id=None, smtp=_smtp(stack, ChannelKind.TEAM_SMTP),
                             username="team", password=box.seal("secret"), connected_at=now,
                             updated_at=now),
        ConnectionConfigured(tenant_id=legacy_tenant, connection_id="pool", kind=ChannelKind.LEGACY,
                             owner_user_id=None, smtp=_smtp(stack, ChannelKind.LEGACY),
                             username="pool", password=box.seal("secret"), connected_at=now,
                             updated_at=now),
    ]
    users: list[tuple[str, str, str, ChannelKind]] = []
    for i in range(bench.users):
        kind = _KINDS[i % len(_KINDS)]
        user_tenant = legacy_tenant if kind is ChannelKind.LEGACY else tenant
        user_id, connection_id = f"u{i:04d}", f"u{i:04d}-{kind.value}"
        address = f"{user_id}@{user_tenant}.example.com"
        users.append((user_tenant, user_id, address, kind))
        records.append(IdentityRegistered(tenant_id=user_tenant, user_id=user_id, address=address,
                                          verified=True, is_default=True, updated_at=now))
        if kind is ChannelKind.LEGACY:
            records.append(ChannelAssigned(tenant_id=user_tenant, user_id=user_id, identity=address,
                                           connection_id="pool", updated_at=now))
        if kind in (ChannelKind.TEAM_SMTP, ChannelKind.LEGACY):
            continue
        fields: dict[str, object] = {
            "tenant_id": user_tenant, "connection_id": connection_id, "kind": kind,
            "owner_user_id": user_id, "smtp": _smtp(stack, kind), "connected_at": now,
            "updated_at": now}
        if kind in (ChannelKind.GMAIL, ChannelKind.EXCHANGE_ONLINE):
            fields.update(address=address, oauth=OAuthGrant(refresh_token=box.seal("refresh")),
                          imap=ImapServer(host=stack.info.imap_host, port=stack.info.imap_port))
        else:
            fields.update(username=address, password=box.seal("secret"))
        records.append(ConnectionConfigured.model_validate(fields))
        records.append(ConnectionHealthChanged(tenant_id=user_tenant, connection_id=connection_id,
                                               healthy=True, changed_at=now))
    producer = make_producer(kafka, client_id="sendrail-bench")
    await producer.start()
    try:
        await asyncio.gather(*(publish_record(producer, record) for record in records))
    finally:
        await producer.stop()
    return [_request(i, users[i % len(users)]) for i in range(bench.messages)]


def _smtp(stack: LocalStack, kind: ChannelKind) -> SmtpServer:
    endpoint = stack.info.smtp[kind.value]
    return SmtpServer(host=endpoint.host, port=endpoint.port)


def _request(n: int, user: tuple[str, str, str, ChannelKind]) -> tuple[bytes, bytes]:
    tenant_id, user_id, address, kind = user
    source = (Source.GMAIL_ADDON if kind is ChannelKind.GMAIL and n % 4 == 0
              else Source.OUTLOOK_ADDIN if kind is ChannelKind.EXCHANGE_ONLINE and n % 4 == 0
              else (Source.CAMPAIGN, Source.API, Source.WEB)[n % 3])
    request = EmailRequested(
        idempotency_key=f"bench-{n}", tenant_id=tenant_id, user_id=user_id, identity=address,
        source=source, campaign_id="spring" if source is Source.CAMPAIGN else None,
        template_id="intro" if source is Source.CAMPAIGN else None,
        to=[f"lead{n}@customer{n % 97}.example.org", *([f"boss{n}@customer.example.org"] * (n % 2))],
        cc=[f"copy{n}@{tenant_id}.example.com"] if n % 5 == 0 else [],
        subject=f"Our spring offer, for you ({n})", text=BODY.format(name=f"Lead {n}"),
        headers={"X-Campaign-Step": str(n % 3 + 1)}, requested_at=datetime.now(UTC))
    return f"{tenant_id}/{user_id}".encode(), encode(request)


async def publish(kafka: KafkaSettings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(kafka, client_id="sendrail-bench")
    await producer.start()
    try:
        pending = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


# --- the raw pipe ------------------------------------------------------------------------


async def _raw_pipe(kafka: KafkaSettings, requests: list[tuple[bytes, bytes]],
                    bench: RouterBench) -> dict[str, Any]:
    """consume → produce → confirm → commit, with the services' own client settings."""
    await publish(kafka, PIPE_IN.name, requests)
    start = await end_offsets(kafka, [PIPE_OUT])
    consumer = make_consumer(kafka, PIPE_IN.name, group_id="bench-pipe", client_id="bench-pipe")
    producer = make_producer(kafka, client_id="bench-pipe")
    await consumer.start()
    await producer.start()
    copied = 0
    cpu_before = time.process_time()
    try:
        async with asyncio.timeout(bench.deadline_s):
            while copied < len(requests):
                fetched = await consumer.getmany(timeout_ms=200)
                pending = [await producer.send(PIPE_OUT.name, record.value, key=record.key)
                           for records in fetched.values() for record in records]
                await asyncio.gather(*pending)
                await consumer.commit()
                copied += len(pending)
    finally:
        cpu = time.process_time() - cpu_before
        await consumer.stop()
        await producer.stop()
    end = await end_offsets(kafka, [PIPE_OUT])
    records = await read_range(kafka, start, end)
    return {**rate([r.timestamp for r in records]),
            "cpu_us_per_message": round(cpu / len(requests) * 1e6, 1)}


# --- the router --------------------------------------------------------------------------


async def _router_rate(stack: LocalStack, kafka: KafkaSettings,
                       requests: list[tuple[bytes, bytes]], bench: RouterBench) -> dict[str, Any]:
    start = await end_offsets(kafka, CHANNEL_TOPICS)
    routers: list[ServiceProcess] = []
    try:
        if bench.replicas == 1:
            # The backlog is there before the router starts: it drains it as fast as it can.
            await publish(kafka, REQUESTS.name, requests)
            routers.append(await start_service(stack, "router"))
            published_ms = 0
        else:
            # Replicas join the group first (a rebalance midway would be measured), then the
            # backlog is published; only what they route after the publisher finished counts,
            # so the publisher's own CPU does not compete with them.
            routers = list(await asyncio.gather(*(start_service(stack, "router", instance=i + 1)
                                                  for i in range(bench.replicas))))
            await _wait_group_stable(kafka, "sendrail-router", members=bench.replicas)
            await publish(kafka, REQUESTS.name, requests)
            published_ms = int(time.time() * 1000)
        cpu_before = sum(cpu_s(pid_of(r)) for r in routers)
        await wait_for_count(kafka, CHANNEL_TOPICS, start, len(requests), bench.deadline_s)
        cpu = sum(cpu_s(pid_of(r)) for r in routers) - cpu_before
        end = await end_offsets(kafka, CHANNEL_TOPICS)
        records = await read_range(kafka, start, end)
        timestamps = [r.timestamp for r in records if r.timestamp >= published_ms]
        result: dict[str, Any] = {
            "replicas": bench.replicas, **rate(timestamps), "counted": len(timestamps),
            "window": ("first to last routed email" if bench.replicas == 1
                       else "from the end of publishing to the last routed email"),
        }
        if bench.replicas == 1:
            result["cpu_us_per_request"] = round(cpu / len(requests) * 1e6, 1)
        result["latency"] = await _paced_latency(kafka, requests, bench)
        return result
    finally:
        for router in routers:
            await router.stop()


async def _wait_group_stable(kafka: KafkaSettings, group: str, *, members: int,
                             timeout_s: float = 60.0) -> None:
    admin = make_admin(kafka, client_id="sendrail-bench")
    await admin.start()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                described = (await admin.describe_consumer_groups([group]))[0]
                _, _, state, _, _, group_members, *_ = described.groups[0]
                if state == "Stable" and len(group_members) == members:
                    return
                await asyncio.sleep(0.25)
    finally:
        await admin.close()


async def _paced_latency(kafka: KafkaSettings, requests: list[tuple[bytes, bytes]],
                         bench: RouterBench) -> dict[str, Any]:
    """Requests at a steady `paced_per_s`, each timed from its publish timestamp to the
    broker's timestamp of its routed email."""
    total = int(bench.paced_per_s * bench.paced_s)
    paced = [_fresh_key(key, value, n) for n, (key, value) in
             enumerate(requests[i % len(requests)] for i in range(total))]
    start = await end_offsets(kafka, CHANNEL_TOPICS)
    producer = make_producer(kafka, client_id="sendrail-bench-paced")
    await producer.start()
    published: dict[str, asyncio.Future[Any]] = {}
    loop = asyncio.get_running_loop()
    try:
        began_s = loop.time()
        for n, (send_id, key, value) in enumerate(paced):
            due_s = began_s + n / bench.paced_per_s
            if due_s > loop.time():
                await asyncio.sleep(due_s - loop.time())
            published[send_id] = await producer.send(REQUESTS.name, value, key=key)
        publish_s = loop.time() - began_s
        sent_ms = {send_id: (await future).timestamp for send_id, future in published.items()}
    finally:
        await producer.stop()
    await wait_for_count(kafka, CHANNEL_TOPICS, start, total, bench.deadline_s)
    records = await read_range(kafka, start, await end_offsets(kafka, CHANNEL_TOPICS))
    latencies = sorted(r.timestamp - sent_ms[json.loads(r.value)["send_id"]] for r in records
                       if r.value is not None)
    return {"requests": total, "offered_per_s": bench.paced_per_s,
            "achieved_per_s": round(total / publish_s), "p50_ms": _percentile(latencies, 50),
            "p99_ms": _percentile(latencies, 99), "max_ms": latencies[-1],
            "measured": "request publish timestamp to the routed email's broker timestamp"}


def _fresh_key(key: bytes, value: bytes, n: int) -> tuple[str, bytes, bytes]:
    """The same request under a new idempotency key, so it is a new send."""
    fields = json.loads(value)
    fields["idempotency_key"] = f"paced-{n}"
    request = EmailRequested.model_validate(fields)
    return str(request.send_id), key, encode(request)


def _percentile(sorted_values: list[int], percent: float) -> float:
    index = min(len(sorted_values) - 1, round(percent / 100 * (len(sorted_values) - 1)))
    return float(sorted_values[index])
