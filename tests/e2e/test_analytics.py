"""The analytics service on the test broker: exact summaries, the same after a restart, live events,
clear refusals of bad parameters, a real bounce counted for its campaign and template, and access:
a tenant's token reads that tenant only, a revoked one nothing, a foreign Host is refused, and
behind an authenticating proxy its header names the tenant."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer
from multidict import CIMultiDict

from sendrail.analytics_tokens import IssuedToken, issue, revoked, token_id_of
from sendrail.bus.codec import encode
from sendrail.events import (
    AutoReplyDetected,
    BounceDetected,
    ChannelKind,
    ComplaintDetected,
    DeliveryEvent,
    DeliveryStatus,
)
from sendrail.registry.store import publish_record
from sendrail.sandbox.mail_sandbox import MailSandbox
from sendrail.sandbox.ports import free_port
from sendrail.sandbox.processes import stop_process
from sendrail.service import ServiceState
from sendrail.services.analytics.access import AccessPolicy, AllowedHosts
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
async def analytics_service(settings: Settings, **analytics: str) -> AsyncIterator[str]:
    """The service in this event loop on a port of its own; yields its base URL once it is ready
    (it has read both topics and the registry up to their end)."""
    own = dataclasses.replace(settings, analytics=AnalyticsSettings(port=free_port(), **analytics))
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


async def new_token(producer: AIOKafkaProducer, tenant: str) -> IssuedToken:
    """As `sendrail analytics token create` makes one."""
    issued = issue(tenant, datetime.now(UTC))
    await publish_record(producer, issued.record)
    return issued


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def token(tenant: str, producer: AIOKafkaProducer) -> str:
    """A token of the test's tenant, in the registry before the test starts the service."""
    return (await new_token(producer, tenant)).token


@pytest.fixture
async def http(token: str) -> AsyncIterator[aiohttp.ClientSession]:
    """Sends the tenant's token with every request."""
    async with aiohttp.ClientSession(headers=bearer(token)) as session:
        yield session


@pytest.fixture
async def anonymous() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with http.get(url, headers=headers) as response:
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
    other_token = (await new_token(producer, f"{tenant}-other")).token

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
        _, other = await get(http, f"{base}/api/tenants/{tenant}-other/summary?by=campaign",
                             headers=bearer(other_token))
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
    any_host = AccessPolicy(AllowedHosts.parse("*", "127.0.0.1", 0))
    catching_up = AnalyticsApi(Analytics(), LiveFeed(), lambda: datetime.now(UTC), ready=lambda: False,
                               access=any_host, tokens=dict)
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


# --- access ------------------------------------------------------------------------------

TENANT_ROUTES = ("/summary", "/summary?by=campaign&window=7d", "/campaigns/spring", "/channels/gmail",
                 "/timeline", "/feed?kind=bounce", "/events", "/events?campaign=spring", "/nothing-here")
"""Every kind of tenant route, an event stream and a path no route has among them."""
PUBLIC = ("/", "/assets/app.js", "/assets/style.css", "/api/openapi.json")
"""The page and the description hold no tenant's data: they open without a token."""


async def refusal(session: aiohttp.ClientSession, url: str, headers: Any = None,
                  ) -> tuple[int, str | None, dict[str, Any]]:
    """(status, WWW-Authenticate, JSON body); the stream routes answer before streaming anything."""
    async with session.get(url, headers=headers) as response:
        return response.status, response.headers.get("WWW-Authenticate"), await response.json()


async def test_without_a_valid_token_every_tenant_route_answers_401_with_a_bearer_challenge(
    tenant: str, settings: Settings, producer: AIOKafkaProducer, anonymous: aiohttp.ClientSession,
) -> None:
    valid = await new_token(producer, tenant)
    no_token: list[dict[str, str]] = [{}, {"Authorization": f"Basic {valid.token}"},
                                      {"Authorization": valid.token}, {"Authorization": "Bearer"}]
    bad_token = [bearer("srat_0123456789abcdef_" + "A" * 43), bearer(valid.token + "A"),
                 bearer(valid.token[:-1]), bearer("not-a-token")]
    async with analytics_service(settings) as base:
        for path in TENANT_ROUTES:
            url = f"{base}/api/tenants/{tenant}{path}"
            for headers in no_token:
                status, challenge, body = await refusal(anonymous, url, headers)
                assert (status, challenge, body["error"]) == (
                    401, 'Bearer realm="sendrail analytics"', "unauthenticated"), (path, headers)
            for headers in bad_token:
                status, challenge, body = await refusal(anonymous, url, headers)
                assert (status, challenge) == (
                    401, 'Bearer realm="sendrail analytics", error="invalid_token"'), (path, headers)
                assert valid.token not in json.dumps(body)
        for path in PUBLIC:
            async with anonymous.get(base + path) as response:
                assert response.status == 200, path
        # The same token, sent properly, reads the tenant.
        status, _ = await get(anonymous, f"{base}/api/tenants/{tenant}/summary", headers=bearer(valid.token))
        assert status == 200


async def test_a_token_never_reads_another_tenant_existing_or_not(
    tenant: str, settings: Settings, producer: AIOKafkaProducer, http: aiohttp.ClientSession,
) -> None:
    other = f"{tenant}-other"
    await publish(producer, Campaign(other, datetime.now(UTC)).delivery(DeliveryStatus.SENT, uuid.uuid4()))
    await new_token(producer, other)
    async with analytics_service(settings) as base:
        for path in TENANT_ROUTES:
            answers = []
            for someone_else in (other, f"{tenant}-never-seen"):
                status, challenge, body = await refusal(http, f"{base}/api/tenants/{someone_else}{path}")
                assert (status, challenge, body["error"]) == (
                    403, 'Bearer realm="sendrail analytics", error="insufficient_scope"', "forbidden"), path
                answers.append(body)
            # Nothing tells a tenant that exists from one that does not.
            assert answers[0] == answers[1], path
        status, body = await get(http, f"{base}/api/tenants/{tenant}/summary")
        assert status == 200 and body["tenant"] == tenant


async def test_a_revoked_token_is_refused_and_its_open_stream_ends(
    tenant: str, settings: Settings, producer: AIOKafkaProducer,
) -> None:
    issued = await new_token(producer, tenant)
    live = Campaign(tenant, datetime.now(UTC))
    async with analytics_service(settings) as base, aiohttp.ClientSession(headers=bearer(issued.token)) as http:
        stream = await http.get(f"{base}/api/tenants/{tenant}/events")
        assert stream.status == 200
        await publish_record(producer, revoked(issued.record, datetime.now(UTC)))

        async def refused() -> bool:
            status, _ = await get(http, f"{base}/api/tenants/{tenant}/summary")
            return status == 401
        await wait_until_async(refused, "the revoked token refused")
        status, challenge, _ = await refusal(http, f"{base}/api/tenants/{tenant}/feed")
        assert (status, challenge) == (401, 'Bearer realm="sendrail analytics", error="invalid_token"')
        # The stream opened before the revocation ends at the next event instead of sending it.
        await publish(producer, live.delivery(DeliveryStatus.SENT, uuid.uuid4()))
        async with asyncio.timeout(10):
            rest = await stream.content.read()
        assert stream.content.at_eof() and b"data:" not in rest
        stream.release()


async def test_a_host_it_does_not_answer_for_is_refused_on_every_route(
    tenant: str, settings: Settings, http: aiohttp.ClientSession,
) -> None:
    tenant_paths = [f"/api/tenants/{tenant}{path}" for path in ("/summary", "/events")]
    async with analytics_service(settings) as base:
        port = int(base.rsplit(":", 1)[1])
        for path in (*PUBLIC, *tenant_paths):
            # DNS rebinding: a page of the attacker's name, once that name resolves to loopback.
            for host in (f"rebind.attacker.example:{port}", "rebind.attacker.example", f"localhost:{port + 1}"):
                status, _, body = await refusal(http, base + path, {"Host": host})
                assert (status, body["error"]) == (421, "misdirected"), (path, host)
            status, _, body = await refusal(http, base + path, {"Host": "two words"})
            assert (status, body["error"]) == (400, "bad_host"), path
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
            status, _ = await get(http, f"{base}/api/tenants/{tenant}/summary", {"Host": host})
            assert status == 200, host
    async with analytics_service(settings, allowed_hosts="analytics.example.test") as base:
        status, _ = await get(http, f"{base}/api/tenants/{tenant}/summary")  # Host 127.0.0.1:port
        assert status == 421
        status, _ = await get(http, f"{base}/api/tenants/{tenant}/summary", {"Host": "analytics.example.test"})
        assert status == 200


def command_environment(settings: Settings) -> dict[str, str]:
    """A `sendrail` process of this test: the test broker, nothing of a local stack."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("SENDRAIL_")},
            "SENDRAIL_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers}


async def sendrail(settings: Settings, cwd: Path, *args: str) -> tuple[str, str]:
    """Run the `sendrail` command; (stdout, stderr) if it succeeded."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sendrail.cli", *args, cwd=cwd, env=command_environment(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode(), err.decode()


async def test_the_token_commands_create_list_and_revoke(
    tenant: str, settings: Settings, anonymous: aiohttp.ClientSession, tmp_path: Path,
) -> None:
    token, note = await sendrail(settings, tmp_path, "analytics", "token", "create", "--tenant", tenant)
    token = token.strip()
    token_id = token_id_of(token)
    assert token_id is not None and token_id in note and token not in note  # the token alone on stdout
    listed, _ = await sendrail(settings, tmp_path, "analytics", "token", "list", "--tenant", tenant)
    assert token_id in listed and "active" in listed and token not in listed
    assert token.rsplit("_", 1)[1] not in listed
    async with analytics_service(settings) as base:
        status, _ = await get(anonymous, f"{base}/api/tenants/{tenant}/summary", headers=bearer(token))
        assert status == 200
        await sendrail(settings, tmp_path, "analytics", "token", "revoke", "--tenant", tenant, "--id", token_id)

        async def refused() -> bool:
            status, _ = await get(anonymous, f"{base}/api/tenants/{tenant}/summary", headers=bearer(token))
            return status == 401
        await wait_until_async(refused, "the revoked token refused")
    listed, _ = await sendrail(settings, tmp_path, "analytics", "token", "list", "--tenant", tenant)
    assert f"{token_id}  created" in listed and "revoked" in listed and "active" not in listed


async def test_behind_an_authenticating_proxy_its_tenant_header_decides(
    tenant: str, settings: Settings, producer: AIOKafkaProducer, token: str, anonymous: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """`sendrail service analytics --trust-proxy`, as a deployment starts it."""
    await publish(producer, Campaign(tenant, datetime.now(UTC)).delivery(DeliveryStatus.SENT, uuid.uuid4()))
    port, http_port = free_port(), free_port()
    env = {**command_environment(settings), "SENDRAIL_ANALYTICS_PORT": str(port),
           "SENDRAIL_HTTP_PORT": str(http_port)}
    log = tmp_path / "analytics.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sendrail.cli", "service", "analytics", "--trust-proxy", cwd=tmp_path,
            env=env, stdout=output, stderr=output)
    base = f"http://127.0.0.1:{port}"
    try:
        async def ready() -> bool:
            if process.returncode is not None:
                pytest.fail(f"the service exited: {log.read_text()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with anonymous.get(f"http://127.0.0.1:{http_port}/healthz") as response:
                    return response.status == 200
            return False
        await wait_until_async(ready, "the analytics service ready", timeout_s=60)

        own = {"X-Sendrail-Tenant": tenant}
        status, body = await get(anonymous, f"{base}/api/tenants/{tenant}/summary", headers=own)
        assert status == 200 and body["totals"]["sent"] == 1
        async with anonymous.get(f"{base}/api/tenants/{tenant}/events", headers=own) as stream:
            assert stream.status == 200 and stream.content_type == "text/event-stream"
        refused: list[Any] = [
            {"X-Sendrail-Tenant": f"{tenant}-other"},  # another tenant
            {},  # not through the proxy
            bearer(token),  # tokens are not what decides here
            CIMultiDict([("X-Sendrail-Tenant", tenant), ("X-Sendrail-Tenant", tenant)]),  # appended to
        ]
        for headers in refused:
            status, challenge, body = await refusal(anonymous, f"{base}/api/tenants/{tenant}/summary", headers)
            assert (status, challenge, body["error"]) == (403, None, "forbidden"), headers
        async with anonymous.get(f"{base}/") as page:
            assert '<html lang="en" data-auth="proxy">' in await page.text()
        # The Host check stays on behind the proxy.
        status, _ = await get(anonymous, f"{base}/api/tenants/{tenant}/summary",
                              headers={**own, "Host": "rebind.attacker.example"})
        assert status == 421
        assert token not in log.read_text()
    finally:
        await stop_process(process, timeout_s=10)
