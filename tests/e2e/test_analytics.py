"""The analytics service on the test broker: exact summaries, the same after a restart, live events,
clear refusals of bad parameters, and a real bounce counted for its campaign and template."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer

from sendrail.bus.codec import encode
from sendrail.events import (
    AutoReplyDetected,
    BounceDetected,
    ChannelKind,
    ComplaintDetected,
    DeliveryEvent,
    DeliveryStatus,
)
from sendrail.sandbox.mail_sandbox import MailSandbox
from sendrail.sandbox.ports import free_port
from sendrail.service import ServiceState
from sendrail.services.analytics.aggregation import Analytics
from sendrail.services.analytics.api import AnalyticsApi
from sendrail.services.analytics.live import LiveFeed
from sendrail.services.analytics.main import run
from sendrail.settings import AnalyticsSettings, Settings
from sendrail.topics import BOUNCES, DELIVERY
from support.accounts import Accounts
from support.delivery import final_event
from support.event_log import EventLog
from support.waiting import wait_until

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


@contextlib.asynccontextmanager
async def analytics_service(settings: Settings) -> AsyncIterator[str]:
    """The service in this event loop on a port of its own; yields its base URL once it is ready
    (it has read both topics up to their end)."""
    own = dataclasses.replace(settings, analytics=AnalyticsSettings(port=free_port()))
    stop, state = asyncio.Event(), ServiceState("analytics")
    task = asyncio.create_task(run(own, stop, state), name="analytics")
    await wait_until(lambda: state.ready or task.done(), timeout_s=30, what="analytics ready")
    if task.done():
        task.result()  # raises what stopped it
    try:
        yield f"http://127.0.0.1:{own.analytics.port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def publish(producer: AIOKafkaProducer, *events: DeliveryEvent | BounceDetected | ComplaintDetected
                  | AutoReplyDetected) -> None:
    for event in events:
        if isinstance(event, DeliveryEvent):
            await producer.send_and_wait(DELIVERY.name, encode(event), key=str(event.send_id).encode())
        else:
            await producer.send_and_wait(BOUNCES.name, encode(event), key=event.tenant_id.encode())


async def wait_until_async(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 10.0) -> None:
    """Ask the API again until its answer holds; fail naming `what` after the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}")


@dataclasses.dataclass
class Campaign:
    """Events of one tenant, built around `now`, as the router, senders and watcher publish them."""

    tenant: str
    now: datetime

    def user(self, name: str) -> dict[str, Any]:
        channel = ChannelKind.GMAIL if name == "alice" else ChannelKind.EXCHANGE_ONLINE
        return {"user_id": name, "identity": f"{name}@{self.tenant}.example.com", "channel": channel}

    def delivery(self, status: DeliveryStatus, send_id: uuid.UUID, *, user: str = "alice",
                 campaign: str = "spring", template: str = "intro", ago: timedelta = timedelta(0),
                 recipients: tuple[str, ...] = ("lee@example.org",)) -> DeliveryEvent:
        return DeliveryEvent(status=status, send_id=send_id, tenant_id=self.tenant, campaign_id=campaign,
                             template_id=template, connection_id=f"{user}-conn", recipients=list(recipients),
                             occurred_at=self.now - ago, **self.user(user))

    def bounce(self, send_id: uuid.UUID | None, recipient: str, *, hard: bool = True,
               reason: str = "userunknown", user: str = "alice", campaign: str | None = "spring",
               template: str | None = "intro", ago: timedelta = timedelta(0)) -> BounceDetected:
        correlated = send_id is not None
        who = self.user(user)
        return BounceDetected(
            bounce_id=uuid.uuid4(), tenant_id=self.tenant, connection_id=f"{user}-conn", channel=who["channel"],
            recipient=recipient, status="5.1.1" if hard else "4.2.2", reply_code="550" if hard else "452",
            diagnostic="550 5.1.1 The email account that you tried to reach does not exist.",
            reason=reason, hard=hard, correlated=correlated, send_id=send_id, user_id=user,
            identity=who["identity"] if correlated else None,
            campaign_id=campaign if correlated else None, template_id=template if correlated else None,
            detected_at=self.now - ago)

    def finding(self, kind: type[ComplaintDetected] | type[AutoReplyDetected],
                send_id: uuid.UUID) -> ComplaintDetected | AutoReplyDetected:
        return kind(finding_id=uuid.uuid4(), address="lee@example.org", tenant_id=self.tenant,
                    connection_id="alice-conn", channel=ChannelKind.GMAIL, correlated=True, send_id=send_id,
                    user_id="alice", identity=f"alice@{self.tenant}.example.com", campaign_id="spring",
                    template_id="intro", detected_at=self.now)


def known_sequence(tenant: str, now: datetime) -> list[Any]:
    """Repeats included: an event published twice, a recipient bouncing twice, a send waiting twice."""
    c = Campaign(tenant, now)
    s1, s2, s3, s4, s5 = (uuid.uuid4() for _ in range(5))
    sent_once = c.delivery(DeliveryStatus.SENT, s1)
    first_bounce = c.bounce(s2, "a@example.org", ago=timedelta(minutes=1))
    other = Campaign(f"{tenant}-other", now)
    other_send = uuid.uuid4()
    return [
        c.delivery(DeliveryStatus.QUEUED, s1), c.delivery(DeliveryStatus.DEFERRED, s1),
        c.delivery(DeliveryStatus.DEFERRED, s1), sent_once, sent_once,
        c.delivery(DeliveryStatus.SENT, s2, recipients=("a@example.org", "b@example.org")),
        first_bounce, first_bounce, c.bounce(s2, "a@example.org", hard=False, reason="mailboxfull"),
        c.delivery(DeliveryStatus.SENT, s3, user="bob", template="followup", ago=2 * DAY),
        c.bounce(s3, "lee@example.org", hard=False, reason="mailboxfull", user="bob", template="followup",
                 ago=2 * DAY - HOUR),
        c.delivery(DeliveryStatus.FAILED, s4, user="bob", campaign="autumn"),
        c.delivery(DeliveryStatus.SENT, s5, campaign="autumn", ago=10 * DAY),
        c.bounce(None, "x@example.org", reason="hostunknown"),
        c.finding(ComplaintDetected, s1), c.finding(AutoReplyDetected, s1),
        # Another tenant's, with the same campaign name: never seen by this one.
        other.delivery(DeliveryStatus.SENT, other_send), other.bounce(other_send, "lee@example.org"),
    ]


FIELDS = ("sent", "sent_recipients", "deferred", "failed", "bounced", "hard_bounced", "soft_bounced",
          "complaints", "auto_replies")


def brief(summary: dict[str, Any]) -> dict[str, Any]:
    counts = {name: summary[name] for name in FIELDS if summary[name]}
    rate = summary["bounce_rate"]
    return {**counts, "rate": None if rate is None else round(rate, 4)}


EXPECTED_TOTALS = {
    "all": {"sent": 4, "sent_recipients": 5, "deferred": 1, "failed": 1, "bounced": 3, "hard_bounced": 2,
            "soft_bounced": 1, "complaints": 1, "auto_replies": 1, "rate": 0.6},
    "7d": {"sent": 3, "sent_recipients": 4, "deferred": 1, "failed": 1, "bounced": 3, "hard_bounced": 2,
           "soft_bounced": 1, "complaints": 1, "auto_replies": 1, "rate": 0.75},
    "24h": {"sent": 2, "sent_recipients": 3, "deferred": 1, "failed": 1, "bounced": 2, "hard_bounced": 2,
            "complaints": 1, "auto_replies": 1, "rate": 0.6667},
}
EXPECTED_ALL_TIME = {
    "campaign": {
        "spring": {"sent": 3, "sent_recipients": 4, "deferred": 1, "bounced": 2, "hard_bounced": 1,
                   "soft_bounced": 1, "complaints": 1, "auto_replies": 1, "rate": 0.5},
        "autumn": {"sent": 1, "sent_recipients": 1, "failed": 1, "rate": 0.0},
    },
    "template": {
        "intro": {"sent": 3, "sent_recipients": 4, "deferred": 1, "failed": 1, "bounced": 1, "hard_bounced": 1,
                  "complaints": 1, "auto_replies": 1, "rate": 0.25},
        "followup": {"sent": 1, "sent_recipients": 1, "bounced": 1, "soft_bounced": 1, "rate": 1.0},
    },
    "user": {
        "alice": {"sent": 3, "sent_recipients": 4, "deferred": 1, "bounced": 2, "hard_bounced": 2,
                  "complaints": 1, "auto_replies": 1, "rate": 0.5},
        "bob": {"sent": 1, "sent_recipients": 1, "failed": 1, "bounced": 1, "soft_bounced": 1, "rate": 1.0},
    },
    "channel": {
        "gmail": {"sent": 3, "sent_recipients": 4, "deferred": 1, "bounced": 2, "hard_bounced": 2,
                  "complaints": 1, "auto_replies": 1, "rate": 0.5},
        "exchange_online": {"sent": 1, "sent_recipients": 1, "failed": 1, "bounced": 1, "soft_bounced": 1,
                            "rate": 1.0},
    },
}


async def everything(http: aiohttp.ClientSession, base: str, tenant: str) -> dict[str, Any]:
    """Every summary the API gives for the tenant, without the moment it was computed."""
    answers: dict[str, Any] = {}
    for window in ("24h", "7d", "all"):
        for by in ("", "campaign", "template", "user", "identity", "channel"):
            status, body = await get(http, f"{base}/api/tenants/{tenant}/summary?window={window}&by={by}"
                                     if by else f"{base}/api/tenants/{tenant}/summary?window={window}")
            assert status == 200, body
            answers[f"{window}/{by}"] = {k: v for k, v in body.items() if k != "as_of"}
    status, answers["feed"] = await get(http, f"{base}/api/tenants/{tenant}/feed?limit=500")
    assert status == 200
    return answers


async def test_summaries_are_exact_and_a_restart_rebuilds_them(
    tenant: str, settings: Settings, producer: AIOKafkaProducer, http: aiohttp.ClientSession,
) -> None:
    now = datetime.now(UTC)
    await publish(producer, *known_sequence(tenant, now))

    async with analytics_service(settings) as base:
        # Ready means both topics were read to their end: the numbers are final, no waiting.
        for window, expected in EXPECTED_TOTALS.items():
            status, body = await get(http, f"{base}/api/tenants/{tenant}/summary?window={window}")
            assert status == 200 and brief(body["totals"]) == expected, window
        for by, expected_items in EXPECTED_ALL_TIME.items():
            _, body = await get(http, f"{base}/api/tenants/{tenant}/summary?by={by}&window=all")
            assert {i["key"]: brief(i) for i in body["items"]} == expected_items, by
        _, body = await get(http, f"{base}/api/tenants/{tenant}/summary?by=identity")
        assert {i["key"]: i["bounced"] for i in body["items"]} == {
            f"alice@{tenant}.example.com": 1, f"bob@{tenant}.example.com": 1}  # the uncorrelated has none
        _, autumn = await get(http, f"{base}/api/tenants/{tenant}/campaigns/autumn?window=24h")
        assert brief(autumn["summary"]) == {"failed": 1, "rate": None}
        assert (autumn["by"], autumn["key"], autumn["window"]) == ("campaign", "autumn", "24h")
        _, spring = await get(http, f"{base}/api/tenants/{tenant}/templates/followup?window=7d")
        assert brief(spring["summary"]) == EXPECTED_ALL_TIME["template"]["followup"]
        _, bounces = await get(http, f"{base}/api/tenants/{tenant}/feed?campaign=spring&kind=bounce")
        # Newest first; the second bounce message for a@ is shown, though not counted again.
        assert [(b["recipients"], b["hard"]) for b in bounces["items"]] == [
            (["a@example.org"], False), (["a@example.org"], True), (["lee@example.org"], False)]
        _, other = await get(http, f"{base}/api/tenants/{tenant}-other/summary?by=campaign")
        assert brief(other["totals"]) == {"sent": 1, "sent_recipients": 1, "bounced": 1, "hard_bounced": 1,
                                          "rate": 1.0}

        # Live: what is published now shows up in the running service.
        live = Campaign(tenant, datetime.now(UTC))
        s6 = uuid.uuid4()
        await publish(producer, live.delivery(DeliveryStatus.SENT, s6, campaign="winter"),
                      live.bounce(s6, "lee@example.org", campaign="winter"))
        url = f"{base}/api/tenants/{tenant}/campaigns/winter"

        async def winter_counted() -> bool:
            status, body = await get(http, url)
            return status == 200 and brief(body["summary"]) == {
                "sent": 1, "sent_recipients": 1, "bounced": 1, "hard_bounced": 1, "rate": 1.0}
        await wait_until_async(winter_counted, "the live campaign counted")
        before = await everything(http, base, tenant)
        assert brief(before["all/"]["totals"])["sent"] == 5

    async with analytics_service(settings) as base:
        after = await everything(http, base, tenant)
    assert after == before


async def test_the_event_stream_sends_new_events_that_match_its_filter_and_ends_on_stop(
    tenant: str, settings: Settings, producer: AIOKafkaProducer, http: aiohttp.ClientSession,
) -> None:
    c = Campaign(tenant, datetime.now(UTC))
    send = uuid.uuid4()
    async with analytics_service(settings) as base:
        stream = await http.get(f"{base}/api/tenants/{tenant}/events?kind=bounce&campaign=spring")
        assert stream.status == 200 and stream.content_type == "text/event-stream"
        sent, bounce = c.delivery(DeliveryStatus.SENT, send), c.bounce(send, "lee@example.org")
        await publish(producer, sent)

        async def sent_read() -> bool:
            _, feed = await get(http, f"{base}/api/tenants/{tenant}/feed")
            return any(item["id"] == str(sent.event_id) for item in feed["items"])
        await wait_until_async(sent_read, "the sent event read")
        await publish(producer, c.bounce(uuid.uuid4(), "z@example.org", campaign="other"), bounce)
        data: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while not data:
                line = (await stream.content.readline()).decode()
                if line.startswith("data: "):
                    data.append(json.loads(line.removeprefix("data: ")))
        # The sent event and the other campaign's bounce were read first, and filtered out.
        assert [(d["id"], d["kind"], d["campaign_id"]) for d in data] == [
            (str(bounce.bounce_id), "bounce", "spring")]
    # Stopping the service ended the open stream rather than waiting for its reader.
    async with asyncio.timeout(5):
        await stream.content.read()
    assert stream.content.at_eof()
    stream.release()


async def test_the_api_answers_503_until_the_topics_are_read() -> None:
    catching_up = AnalyticsApi(Analytics(), LiveFeed(), lambda: datetime.now(UTC), ready=lambda: False)
    async with TestClient(TestServer(catching_up.application(), host="127.0.0.1")) as client:
        response = await client.get("/api/tenants/acme/summary")
        assert response.status == 503 and (await response.json())["error"] == "catching_up"
        assert (await client.get("/api/openapi.json")).status == 200


BAD_REQUESTS = [
    # (method, path after /api/tenants/{tenant}, status, error, parameter)
    ("GET", "/summary?by=country", 400, "bad_parameter", "by"),
    ("GET", "/summary?window=1d", 400, "bad_parameter", "window"),
    ("GET", "/summary?windw=7d", 400, "bad_parameter", "windw"),
    ("GET", "/summary?window=24h&window=7d", 400, "bad_parameter", "window"),
    ("GET", "/feed?limit=0", 400, "bad_parameter", "limit"),
    ("GET", "/feed?limit=501", 400, "bad_parameter", "limit"),
    ("GET", "/feed?limit=ten", 400, "bad_parameter", "limit"),
    ("GET", "/feed?kind=bounced", 400, "bad_parameter", "kind"),
    ("GET", "/feed?campaign=no%20spaces", 400, "bad_parameter", "campaign"),
    ("GET", "/events?kind=nothing", 400, "bad_parameter", "kind"),
    ("GET", "/timeline?window=all", 400, "bad_parameter", "window"),
    ("GET", "/timeline?by=campaign", 400, "bad_parameter", "key"),
    ("GET", "/channels/pigeon", 400, "bad_parameter", "key"),
    ("GET", "/campaigns/never-sent", 404, "not_found", None),
    ("GET", "/nothing-here", 404, "not_found", None),
    ("POST", "/summary", 405, "method_not_allowed", None),
]


async def test_bad_requests_get_a_clear_error(
    tenant: str, settings: Settings, http: aiohttp.ClientSession,
) -> None:
    async with analytics_service(settings) as base:
        for method, path, status, error, parameter in BAD_REQUESTS:
            async with http.request(method, f"{base}/api/tenants/{tenant}{path}") as response:
                body = await response.json()
                assert (response.status, body["error"], body["parameter"]) == (status, error, parameter), path
                assert body["message"], path
        for path in ("/api/tenants/-leading-dash/summary", "/api/tenants/has%20space/feed",
                     f"/api/tenants/{'x' * 129}/summary"):
            status, body = await get(http, base + path)
            assert (status, body["error"], body["parameter"]) == (400, "bad_parameter", "tenant"), path
        status, body = await get(http, f"{base}/api/unknown")
        assert (status, body["error"]) == (404, "not_found")
        status, body = await get(http, f"{base}/api/openapi.json")
        assert status == 200 and "/api/tenants/{tenant}/summary" in body["paths"]


async def test_a_real_bounce_is_counted_for_its_campaign_and_template(
    tenant: str, settings: Settings, accounts: Accounts, send, events: EventLog, mail: MailSandbox,
    http: aiohttp.ClientSession,
) -> None:
    account = await accounts.user(tenant, "rita", ChannelKind.GMAIL)
    await events.wait_for(events.checkpoints, lambda c: c.connection_id == account.connection_id,
                          what=f"the watcher opening {account.address}")
    async with analytics_service(settings) as base:
        requests = [await send(tenant, "rita", account.address, to=to, campaign="launch", template="hello")
                    for to in ("lee@example.org", "kim@example.org", f"ghost@{mail.info.bounce_domain}")]
        for request in requests:
            assert (await final_event(events, request.send_id)).status is DeliveryStatus.SENT
        url = f"{base}/api/tenants/{tenant}/campaigns/launch"

        async def bounce_counted() -> bool:
            status, body = await get(http, url)
            return status == 200 and body["summary"]["bounced"] == 1

        await wait_until_async(bounce_counted, "the bounce counted for the campaign", timeout_s=20)
        _, campaign = await get(http, url)
        # Gmail's default throttle (2 a second) may make some of them wait: each counts once.
        waited = len({e.send_id for e in events.delivery if e.status is DeliveryStatus.DEFERRED
                      and e.send_id in {r.send_id for r in requests}})
        assert brief(campaign["summary"]) == {"sent": 3, "sent_recipients": 3, "bounced": 1, "hard_bounced": 1,
                                              "rate": 0.3333, **({"deferred": waited} if waited else {})}
        assert campaign["summary"]["bounce_reasons"] == {"userunknown": 1}
        _, template = await get(http, f"{base}/api/tenants/{tenant}/templates/hello")
        assert template["summary"] == campaign["summary"]
        _, feed = await get(http, f"{base}/api/tenants/{tenant}/feed?kind=bounce")
        assert [(b["send_id"], b["campaign_id"], b["template_id"]) for b in feed["items"]] == [
            (str(requests[2].send_id), "launch", "hello")]
