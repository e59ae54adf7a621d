"""`make demo`: a small campaign through every channel, checked end to end.

It uses the stack `make run` started when one is up, or starts its own. It publishes
requests for each sample user (some to a domain the sandbox bounces), an invalid
request and one from an unknown identity, waits until every request has its final
outcome and every expected bounce its event (a deadline, not a sleep), prints a
summary and exits 0 only if all of it is as expected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer

from sendrail.bus.clients import make_consumer, make_producer, wait_for_broker
from sendrail.bus.codec import decode, decode_analytics, encode
from sendrail.clock import system_clock
from sendrail.events import (
    FINAL_STATUSES,
    BounceDetected,
    ChannelKind,
    DeliveryEvent,
    DeliveryStatus,
    EmailRequested,
    Source,
    WatcherCheckpoint,
    send_id_for,
)
from sendrail.sandbox.analytics_access import issue_token, revoke_token
from sendrail.sandbox.mail_sandbox import SandboxInfo
from sendrail.sandbox.ports import free_port
from sendrail.sandbox.sample_users import SAMPLE_USERS, SampleUser
from sendrail.sandbox.stack import SANDBOX_INFO_VARIABLE, LocalStack
from sendrail.settings import LOCAL_ENV_FILE, KafkaSettings
from sendrail.topics import (
    BOUNCES,
    DELIVERY,
    REQUESTS,
    SUPPRESSION,
    WATCHER_CHECKPOINTS,
    suppression_key,
)


@dataclass(frozen=True)
class Expected:
    label: str
    status: DeliveryStatus
    channel: ChannelKind | None
    bounces: bool = False


@dataclass
class Outcome:
    expected: Expected
    final: DeliveryEvent | None = None
    bounces: list[BounceDetected] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.final is not None and (not self.expected.bounces or bool(self.bounces))


def _request(user: SampleUser, run_id: str, n: int, to: str, template: str,
             identity: str | None = None) -> EmailRequested:
    return EmailRequested(
        idempotency_key=f"demo-{run_id}-{n}", tenant_id=user.tenant_id, user_id=user.user_id,
        identity=identity or user.address, source=Source.CAMPAIGN, campaign_id=f"demo-{run_id}",
        template_id=template, to=[to], subject=f"sendrail demo {run_id} ({template})",
        text=f"Hello from {user.user_id}, sent through {user.kind.value}.",
        requested_at=system_clock(),
    )


def bouncing_address(run_id: str, user_id: str, bounce_domain: str) -> str:
    """New for each run: a hard bounce suppresses the address for the tenant."""
    return f"gone-{run_id}-{user_id}@{bounce_domain}"


def plan(run_id: str, bounce_domain: str) -> tuple[list[tuple[EmailRequested, Expected]], bytes, str]:
    """The campaign: what is sent and what must become of it."""
    users = users_by_id()
    planned: list[tuple[EmailRequested, Expected]] = []
    n = 0
    for user in SAMPLE_USERS:
        n += 1
        planned.append((_request(user, run_id, n, f"lee+{user.user_id}@example.org", "intro"),
                        Expected(f"{user.user_id} -> example.org", DeliveryStatus.SENT, user.kind)))
    for user_id in ("alice", "bob", "carol"):
        n += 1
        user = users[user_id]
        watched = user.kind in {ChannelKind.GMAIL, ChannelKind.EXCHANGE_ONLINE}
        planned.append((_request(user, run_id, n, bouncing_address(run_id, user_id, bounce_domain),
                                 "follow-up"),
                        Expected(f"{user_id} -> {bounce_domain}", DeliveryStatus.SENT, user.kind,
                                 bounces=watched)))
    n += 1
    planned.append((_request(users["alice"], run_id, n, "lee@example.org", "intro",
                             identity="not-alice@acme.example.com"),
                    Expected("unknown identity", DeliveryStatus.FAILED, None)))
    invalid_key = f"demo-{run_id}-invalid"
    invalid = json.dumps({
        "idempotency_key": invalid_key, "tenant_id": "acme", "user_id": "alice",
        "identity": "alice@acme.example.com", "source": "campaign", "to": ["lee@example.org"],
        "subject": "hi\r\nBcc: everyone@example.org", "text": "header injection attempt",
        "requested_at": system_clock().isoformat(),
    }).encode()
    return planned, invalid, invalid_key


@contextlib.asynccontextmanager
async def _stack() -> AsyncIterator[tuple[KafkaSettings, SandboxInfo, str, str, str]]:
    """The running local stack if there is one, else a fresh one of our own; with the
    analytics service's address and a token of acme's that lasts as long as the demo."""
    env = _local_env()
    if env:
        kafka = KafkaSettings(bootstrap_servers=env["SENDRAIL_KAFKA_BOOTSTRAP_SERVERS"])
        with contextlib.suppress(TimeoutError):
            await wait_for_broker(kafka, timeout_s=3)
            info = SandboxInfo.load(Path(env[SANDBOX_INFO_VARIABLE]))
            analytics = f"http://127.0.0.1:{env['SENDRAIL_ANALYTICS_PORT']}"
            issued = await issue_token(kafka)
            try:
                yield kafka, info, analytics, issued.token, "the running `make run` stack"
            finally:
                await revoke_token(kafka, issued)
            return
    with tempfile.TemporaryDirectory(prefix="sendrail-demo-") as run_dir:
        async with LocalStack(Path(run_dir), kafka_port=free_port()) as stack:
            await stack.connect_sample_users()
            assert stack.analytics_token is not None
            yield (KafkaSettings(bootstrap_servers=stack.broker.bootstrap_servers), stack.info,
                   f"http://127.0.0.1:{stack.analytics_port}", stack.analytics_token.token,
                   "its own stack (started for this demo)")


def _local_env() -> dict[str, str]:
    if not LOCAL_ENV_FILE.exists():
        return {}
    values = dict(line.split("=", 1) for line in LOCAL_ENV_FILE.read_text().splitlines() if "=" in line)
    return {**values, **{k: v for k, v in os.environ.items() if k in values}}


async def _wait_for_watchers(kafka: KafkaSettings, deadline_s: float) -> None:
    """Bounces are read from the moment a mailbox is first watched: wait for that moment."""
    wanted = {(u.tenant_id, u.connection_id) for u in SAMPLE_USERS
              if u.kind in {ChannelKind.GMAIL, ChannelKind.EXCHANGE_ONLINE}}
    consumer = make_consumer(kafka, WATCHER_CHECKPOINTS.name, group_id=None, client_id="sendrail-demo")
    await consumer.start()
    try:
        async with asyncio.timeout(deadline_s):
            async for record in consumer:
                checkpoint = decode(WatcherCheckpoint, record.value or b"")
                wanted.discard((checkpoint.tenant_id, checkpoint.connection_id))
                if not wanted:
                    return
    finally:
        await consumer.stop()


async def _analytics_disagreement(url: str, token: str, campaign: str, outcomes: dict[uuid.UUID, Outcome],
                                  deadline_s: float) -> str | None:
    """Whether the analytics service counts acme's share of the campaign as the demo saw it
    (it reads the same topics, and the registry for the token, so it may need a moment)."""
    finals = [o.final for o in outcomes.values()
              if o.final is not None and o.final.tenant_id == "acme" and o.final.campaign_id == campaign]
    expected = {
        "sent": sum(1 for f in finals if f.status is DeliveryStatus.SENT),
        "failed": sum(1 for f in finals if f.status is DeliveryStatus.FAILED),
        "suppressed": sum(1 for f in finals if f.status is DeliveryStatus.SUPPRESSED),
        "bounced": sum(len(o.bounces) for o in outcomes.values()),
    }
    seen: dict[str, object] = {}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        try:
            async with asyncio.timeout(min(deadline_s, 15.0)):
                while True:
                    async with session.get(f"{url}/api/tenants/acme/campaigns/{campaign}",
                                           params={"window": "all"}) as response:
                        if response.status == 200:
                            summary = (await response.json())["summary"]
                            seen = {k: summary.get(k) for k in expected}
                            if seen == expected:
                                return None
                    await asyncio.sleep(0.2)
        except (TimeoutError, aiohttp.ClientError):
            pass
    return f"expected {expected}, analytics says {seen or 'nothing'}"


def users_by_id() -> dict[str, SampleUser]:
    return {u.user_id: u for u in SAMPLE_USERS}


async def _wait_for_suppression(kafka: KafkaSettings, tenant_id: str, address: str,
                                deadline_s: float) -> None:
    consumer = make_consumer(kafka, SUPPRESSION.name, group_id=None, client_id="sendrail-demo")
    await consumer.start()
    try:
        async with asyncio.timeout(deadline_s):
            async for record in consumer:
                if record.key == suppression_key(tenant_id, address) and record.value:
                    return
    finally:
        await consumer.stop()


async def _collect(consumer: AIOKafkaConsumer, outcomes: dict[uuid.UUID, Outcome], deadline_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(deadline_s):
            while not all(o.done for o in outcomes.values()):
                async for record in consumer:
                    if record.topic == DELIVERY.name:
                        event = decode(DeliveryEvent, record.value or b"")
                        outcome = outcomes.get(event.send_id) if event.send_id else None
                        if outcome is not None and event.status in FINAL_STATUSES:
                            outcome.final = event
                    else:
                        finding = decode_analytics(record.value or b"")
                        if not isinstance(finding, BounceDetected):
                            continue
                        outcome = outcomes.get(finding.send_id) if finding.send_id else None
                        if outcome is not None:
                            outcome.bounces.append(finding)
                    if all(o.done for o in outcomes.values()):
                        return


async def _duplicate_event(consumer: AIOKafkaConsumer, send_id: uuid.UUID,
                           deadline_s: float) -> DeliveryEvent | None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(deadline_s):
            async for record in consumer:
                if record.topic == DELIVERY.name:
                    event = decode(DeliveryEvent, record.value or b"")
                    if event.send_id == send_id and event.status is DeliveryStatus.DUPLICATE:
                        return event
    return None


def _verdict(outcome: Outcome, campaign: str, template: str) -> str | None:
    """What is wrong with an outcome, or None."""
    expected, final = outcome.expected, outcome.final
    if final is None:
        return "no final outcome before the deadline"
    if final.status is not expected.status:
        return f"expected {expected.status.value}, got {final.status.value} ({final.reason})"
    if expected.channel is not None and final.channel is not expected.channel:
        return f"expected channel {expected.channel.value}, got {final.channel}"
    if expected.bounces != bool(outcome.bounces):
        if expected.bounces:
            return "expected a bounce event"
        return "a bounce was read from an unwatched mailbox"
    for bounce in outcome.bounces:
        if (bounce.campaign_id, bounce.template_id) != (campaign, template) or not bounce.correlated:
            return "bounce not tied to its campaign and template"
    return None


async def run_demo(*, deadline_s: float) -> int:
    started_s = time.monotonic()
    async with _stack() as (kafka, info, analytics_url, analytics_token, where):
        print(f"sendrail demo, using {where}")
        await _wait_for_watchers(kafka, deadline_s)
        run_id = uuid.uuid4().hex[:8]
        planned, invalid, invalid_key = plan(run_id, info.bounce_domain)
        outcomes = {request.send_id: Outcome(expected) for request, expected in planned}
        invalid_id = send_id_for("acme", invalid_key)
        outcomes[invalid_id] = Outcome(Expected("header injection", DeliveryStatus.DEAD_LETTERED, None))
        templates = {request.send_id: request.template_id for request, _ in planned}

        consumer = make_consumer(kafka, DELIVERY.name, BOUNCES.name, group_id=None,
                                 client_id="sendrail-demo")
        await consumer.start()
        producer = make_producer(kafka, client_id="sendrail-demo")
        await producer.start()
        try:
            for request, _ in planned:
                await producer.send(REQUESTS.name, encode(request),
                                    key=f"{request.tenant_id}/{request.user_id}".encode())
            await producer.send(REQUESTS.name, invalid, key=b"acme/alice")
            await producer.flush()
            print(f"published {len(outcomes)} requests for campaign demo-{run_id}; waiting for outcomes ...")
            await _collect(consumer, outcomes, deadline_s)
            # The bounce put alice's address on acme's suppression list: one more try is refused.
            retry = _request(users_by_id()["alice"], run_id, 99,
                             bouncing_address(run_id, "alice", info.bounce_domain), "follow-up")
            outcomes[retry.send_id] = Outcome(Expected("alice -> suppressed address",
                                                       DeliveryStatus.SUPPRESSED, None))
            templates[retry.send_id] = retry.template_id
            await _wait_for_suppression(kafka, "acme", retry.to[0], deadline_s)
            await producer.send_and_wait(REQUESTS.name, encode(retry), key=b"acme/alice")
            await _collect(consumer, outcomes, deadline_s)
            # An upstream retry of a request already sent: the same send, not sent again.
            repeated = planned[0][0]
            await producer.send_and_wait(REQUESTS.name, encode(repeated),
                                         key=f"{repeated.tenant_id}/{repeated.user_id}".encode())
            duplicate = await _duplicate_event(consumer, repeated.send_id, deadline_s)
        finally:
            await producer.stop()
            await consumer.stop()

        campaign = f"demo-{run_id}"
        problems = {sid: v for sid, o in outcomes.items()
                    if (v := _verdict(o, campaign, templates.get(sid) or "")) is not None}
        _print_summary(outcomes, problems, campaign)
        if duplicate is None:
            print("\nthe retried request got no `duplicate` event")
            problems[repeated.send_id] = "no duplicate event for the retried request"
        else:
            print(f"\nretried request published again: {duplicate.status.value}, {duplicate.reason}")
        disagreement = await _analytics_disagreement(analytics_url, analytics_token, campaign, outcomes,
                                                     deadline_s)
        page = f"{analytics_url}/?tenant=acme&campaign={campaign}"
        if disagreement is None:
            print(f"\nanalytics agrees with these counts; see the campaign at {page}")
            if "own stack" not in where:
                print("(the page asks for acme's token: the one `make run` printed)")
            else:
                print("(this stack stops with the demo: run `make run` in another terminal first "
                      "to keep the page up)")
        else:
            print(f"\nanalytics DISAGREES: {disagreement} ({page})")
            problems[uuid.UUID(int=0)] = disagreement
    elapsed_s = time.monotonic() - started_s
    print(f"\n{'OK' if not problems else 'FAILED'}: {len(outcomes) - len(problems)}/{len(outcomes)} "
          f"outcomes as expected, in {elapsed_s:.1f}s")
    return 0 if not problems else 1


def _print_summary(outcomes: dict[uuid.UUID, Outcome], problems: dict[uuid.UUID, str], campaign: str) -> None:
    per_channel: dict[str, Counter[str]] = {}
    for outcome in outcomes.values():
        channel = (outcome.final.channel.value if outcome.final and outcome.final.channel
                   else "(no channel)")
        status = outcome.final.status.value if outcome.final else "pending"
        per_channel.setdefault(channel, Counter())[status] += 1
    print("\nper channel            sent  failed  suppressed  dead-lettered  pending")
    for channel, counts in sorted(per_channel.items()):
        print(f"  {channel:<20} {counts['sent']:>4}  {counts['failed']:>6}  {counts['suppressed']:>10}  "
              f"{counts['dead_lettered']:>13}  {counts['pending']:>7}")
    print(f"\nbounces of campaign {campaign}:")
    for outcome in outcomes.values():
        for b in outcome.bounces:
            print(f"  {b.recipient:<36} {b.reason:<12} {'hard' if b.hard else 'soft'}  status {b.status}"
                  f"  via {b.channel.value:<16} campaign {b.campaign_id}  template {b.template_id}")
    print("\noutcomes:")
    for send_id, outcome in outcomes.items():
        final = outcome.final
        mark = "ok " if send_id not in problems else "BAD"
        detail = problems.get(send_id) or (final.reason if final and final.reason else "")
        print(f"  {mark} {outcome.expected.label:<34} "
              f"{final.status.value if final else 'pending':<14} {detail}")
