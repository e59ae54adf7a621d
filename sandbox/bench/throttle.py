"""`sendrail bench throttle`: the real SMTP sender, throttled, against the sandbox and a real broker.

Short windows stand in for a day: every connection sends in batches of 5 every 2 s
with a per-minute cap. Heavy connections get a backlog, light ones a few messages
published after it, on the same partitions. Measured at the SMTP server (what a
provider counts): the most sends in any window against its limit, the utilisation of
saturated connections (sent / what the windows allowed over the same span), the
first-email delay of light connections, and the scheduling cost per message. Then
the same with three replicas of the sender, one killed (`kill -9`) midway: lost and
duplicated messages and window violations.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from sendrail.bus.clients import make_consumer, make_producer
from sendrail.bus.codec import decode, encode
from sendrail.events import (
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    DeliveryEvent,
    DeliveryStatus,
    EmailRequested,
    IdentityRegistered,
    SmtpServer,
    Source,
    ThrottleConfigured,
)
from sendrail.registry.store import publish_record
from sendrail.sandbox.bench.router import cpu_s, pid_of
from sendrail.sandbox.ports import free_port
from sendrail.sandbox.stack import LocalStack, ServiceProcess
from sendrail.secrets import SecretBox
from sendrail.settings import KafkaSettings, SecretSettings
from sendrail.throttle.ledger import SendLedger
from sendrail.throttle.policy import BatchSetting, LimitOverrides, ThrottlePolicy
from sendrail.throttle.schedule import earliest_send_s
from sendrail.topics import DELIVERY, REQUESTS

SEND_ID = re.compile(rb"X-Sendrail-Send-Id: ([0-9a-f-]{36})")


@dataclass(frozen=True)
class ThrottleBench:
    connections: int = 50
    heavy: int = 10
    heavy_backlog: int = 40
    light_backlog: int = 3
    batch_size: int = 5
    batch_wait_s: float = 2.0
    per_minute: int = 100
    deadline_s: float = 240.0

    @property
    def policy(self) -> ThrottlePolicy:
        return ThrottlePolicy.compose(
            provider=None, batch=BatchSetting(self.batch_size, self.batch_wait_s),
            overrides=LimitOverrides(per_minute_messages=self.per_minute))


async def run_throttle_bench(bench: ThrottleBench) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sendrail-bench-") as run_dir:
        async with LocalStack(Path(run_dir), kafka_port=free_port()) as stack:
            single = await _scenario(stack, bench, replicas=1, kill_one=False)
            logs = Path(run_dir) / "logs"
            extra = [ServiceProcess("sender-smtp", free_port(), logs / f"sender-smtp-{i}.log")
                     for i in (2, 3)]
            for process in extra:
                await process.start(stack.env)
            try:
                async with aiohttp.ClientSession() as session:
                    await asyncio.gather(*(p.wait_ready(session, 60) for p in extra))
                replicas = await _scenario(stack, bench, replicas=3, kill_one=True)
            finally:
                for process in extra:
                    await process.stop()
    return {"throttle": single, "throttle_three_replicas": replicas,
            "scheduling_us_per_message": _scheduling_cost_us(bench)}


async def _scenario(stack: LocalStack, bench: ThrottleBench, *, replicas: int,
                    kill_one: bool) -> dict[str, Any]:
    tenant = f"bench-{secrets.token_hex(3)}"
    kafka = KafkaSettings(bootstrap_servers=stack.broker.bootstrap_servers)
    box = SecretBox.from_settings(SecretSettings(secret_key_file=Path(stack.env["SENDRAIL_SECRET_KEY_FILE"])))
    endpoint = stack.info.smtp["custom_smtp"]
    producer = make_producer(kafka, client_id="sendrail-bench")
    await producer.start()
    addresses: dict[str, str] = {}
    try:
        now = datetime.now(UTC)
        for i in range(bench.connections):
            connection_id = f"c{i:03d}"
            address = f"{connection_id}@{tenant}.example.com"
            addresses[connection_id] = address
            password = secrets.token_urlsafe(12)
            stack.sandbox.add_password_user("custom_smtp", address, password)
            for record in (
                ConnectionConfigured(tenant_id=tenant, connection_id=connection_id,
                                     kind=ChannelKind.CUSTOM_SMTP, owner_user_id=connection_id,
                                     smtp=SmtpServer(host=endpoint.host, port=endpoint.port),
                                     username=address, password=box.seal(password),
                                     connected_at=now, updated_at=now),
                ConnectionHealthChanged(tenant_id=tenant, connection_id=connection_id, healthy=True,
                                        changed_at=now),
                IdentityRegistered(tenant_id=tenant, user_id=connection_id, address=address,
                                   verified=True, is_default=True, updated_at=now),
                ThrottleConfigured(tenant_id=tenant, connection_id=connection_id,
                                   batch_size=bench.batch_size, batch_wait_s=bench.batch_wait_s,
                                   per_minute_messages=bench.per_minute, updated_at=now),
            ):
                await publish_record(producer, record)
        heavy = list(addresses)[: bench.heavy]
        light = list(addresses)[bench.heavy:]
        requests: dict[str, EmailRequested] = {}
        for connection_id, count in [*((c, bench.heavy_backlog) for c in heavy),
                                     *((c, bench.light_backlog) for c in light)]:
            for n in range(count):
                request = EmailRequested(
                    idempotency_key=f"{tenant}-{connection_id}-{n}", tenant_id=tenant,
                    user_id=connection_id, identity=addresses[connection_id], source=Source.CAMPAIGN,
                    to=[f"lead{n}@example.org"], subject=f"bench {n}", text="Hello from the benchmark.",
                    requested_at=datetime.now(UTC))
                requests[str(request.send_id)] = request
                await producer.send(REQUESTS.name, encode(request), key=f"{tenant}/{connection_id}".encode())
        await producer.flush()
        published_s = time.time()
        measured = pid_of(next(s for s in stack.services if s.name == "sender-smtp"))
        cpu_before = cpu_s(measured)
        sent = await _wait_for_sends(kafka, tenant, requests, bench, kill_one=kill_one,
                                     stack=stack, replicas=replicas)
        # The killed replica is this first one: its CPU time is gone with it.
        cpu_after = None if kill_one else cpu_s(measured)
    finally:
        await producer.stop()

    received: dict[str, list[float]] = defaultdict(list)
    times_by_sender: dict[str, list[float]] = defaultdict(list)
    for envelope in stack.sandbox.received("custom_smtp"):
        match = SEND_ID.search(envelope.content)
        if match and match.group(1).decode() in requests:
            received[match.group(1).decode()].append(envelope.received_at_s)
            times_by_sender[envelope.mail_from].append(envelope.received_at_s)
    duplicates = sum(len(times) - 1 for times in received.values() if len(times) > 1)
    lost = [send_id for send_id in requests if send_id not in received]
    worst: dict[str, float] = {}
    violations = 0
    for window in bench.policy.limits:
        most = max(_most_in_any_window(sorted(t), window.window_s) for t in times_by_sender.values())
        worst[window.name] = most
        violations += sum(1 for t in times_by_sender.values()
                          if _most_in_any_window(sorted(t), window.window_s) > window.limit)
    utilisation = [_utilisation(sorted(times_by_sender[addresses[c]]), bench.policy) for c in heavy]
    light_delays = [(sent[sid].occurred_at - requests[sid].requested_at).total_seconds()
                    for sid in sent if requests[sid].user_id in light]
    result: dict[str, Any] = {
        "replicas": replicas,
        "connections": bench.connections,
        "messages": len(requests),
        "sent": len(sent),
        "lost": len(lost),
        "duplicates": duplicates,
        "violations": violations,
        "limits": {w.name: {"limit": w.limit, "window_s": w.window_s, "most_observed": worst[w.name]}
                   for w in bench.policy.limits},
        "utilisation_min": round(min(utilisation), 4),
        "utilisation_mean": round(statistics.fmean(utilisation), 4),
        "light_first_email_delay_s": {"p50": round(statistics.median(light_delays), 3),
                                      "max": round(max(light_delays), 3)},
        "wall_s": round(time.time() - published_s, 1),
    }
    if replicas == 1 and cpu_after is not None:
        result["sender_cpu_us_per_message"] = round((cpu_after - cpu_before) / len(requests) * 1e6, 1)
    return result


async def _wait_for_sends(kafka: KafkaSettings, tenant: str, requests: dict[str, EmailRequested],
                          bench: ThrottleBench, *, kill_one: bool, stack: LocalStack,
                          replicas: int) -> dict[str, DeliveryEvent]:
    consumer = make_consumer(kafka, DELIVERY.name, group_id=None, client_id="sendrail-bench")
    await consumer.start()
    sent: dict[str, DeliveryEvent] = {}
    killed = not kill_one
    try:
        async with asyncio.timeout(bench.deadline_s):
            async for record in consumer:
                event = decode(DeliveryEvent, record.value or b"")
                if event.tenant_id != tenant or event.status is not DeliveryStatus.SENT:
                    continue
                sent[str(event.send_id)] = event
                if not killed and len(sent) >= len(requests) // 3:
                    victim = next(s for s in stack.services if s.name == "sender-smtp")
                    assert victim.process is not None
                    os.kill(victim.process.pid, signal.SIGKILL)
                    killed = True
                if len(set(sent) & set(requests)) == len(requests):
                    break
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return sent


def _most_in_any_window(times: list[float], window_s: float) -> int:
    """The most sends in any interval (t - window_s, t]; two pointers over sorted times."""
    most, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window_s:
            start += 1
        most = max(most, end - start + 1)
    return most


def _utilisation(times: list[float], policy: ThrottlePolicy) -> float:
    """Sent / allowed over the connection's busy span: how many sends the windows permitted
    between its first and last send, found by sending as early as they allow."""
    if len(times) < 2:
        return 1.0
    ledger, allowed, at_s = SendLedger(), 0, times[0]
    while at_s <= times[-1] + 1e-3:
        ledger.record(at_s, 1)
        allowed += 1
        at_s = earliest_send_s(policy, ledger, 1, at_s)
    return min(1.0, len(times) / allowed)


def _scheduling_cost_us(bench: ThrottleBench, messages: int = 20_000) -> float:
    """The throttle's own cost per message: asking when, then recording the send."""
    policy, ledger, now_s = bench.policy, SendLedger(), 1_000_000.0
    started = time.perf_counter()
    for _ in range(messages):
        now_s = earliest_send_s(policy, ledger, 1, now_s)
        ledger.record(now_s, 1)
        ledger.prune(now_s, policy.keep_s)
    return round((time.perf_counter() - started) / messages * 1e6, 2)
