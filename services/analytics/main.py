"""The analytics service: delivery and bounce topics read from the start, summaries served over HTTP.

No consumer group: every start reads both topics from their beginning, so a restarted
service rebuilds the same summaries (counting is idempotent, see `aggregation`) and
nothing is lost. It follows the registry for the tenants' token hashes, unless an
authenticating proxy names the tenant instead. The API answers 503 until all of it has
been read up to its end.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiohttp import web

from sendrail.analytics_tokens import TokenRecords
from sendrail.bus.clients import ensure_topics
from sendrail.bus.codec import decode, decode_analytics
from sendrail.bus.table import TopicFollower
from sendrail.clock import system_clock
from sendrail.events import DeliveryEvent
from sendrail.registry.store import RegistryStore
from sendrail.service import ServiceState
from sendrail.services.analytics.access import AccessPolicy
from sendrail.services.analytics.aggregation import Analytics
from sendrail.services.analytics.api import AnalyticsApi
from sendrail.services.analytics.live import LiveFeed
from sendrail.settings import Settings
from sendrail.topics import BOUNCES, DELIVERY

SERVICE = "sendrail-analytics"
SHUTDOWN_TIMEOUT_S = 2.0
"""Open event streams end at once on stop; this bounds any other request still running."""
log = structlog.get_logger(__name__)


async def run(settings: Settings, stop: asyncio.Event, state: ServiceState) -> None:
    access = AccessPolicy.from_settings(settings.analytics)  # refuses bad settings before starting
    await ensure_topics(settings.kafka)
    analytics = Analytics()
    live = LiveFeed()

    # Each raises on a record it cannot use: its follower dead-letters it and goes on.
    def apply_delivery(_: bytes | None, value: bytes | None) -> None:
        if value is None:
            return
        item = analytics.apply_delivery(decode(DeliveryEvent, value), system_clock())
        if item is not None:
            live.publish(item)

    def apply_finding(_: bytes | None, value: bytes | None) -> None:
        if value is None:
            return
        item = analytics.apply_finding(decode_analytics(value), system_clock())
        if item is not None:
            live.publish(item)

    registry: RegistryStore | None = None  # behind the proxy, no tokens to follow

    def tokens() -> TokenRecords:
        return registry.view.analytics_tokens if registry is not None else {}

    api = AnalyticsApi(analytics, live, system_clock, ready=lambda: state.ready, access=access, tokens=tokens)
    async with contextlib.AsyncExitStack() as stack:
        runner = web.AppRunner(api.application(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, settings.analytics.host, settings.analytics.port).start()
        stack.callback(live.close)  # before the runner's cleanup, which waits for open streams
        for topic, apply in ((DELIVERY.name, apply_delivery), (BOUNCES.name, apply_finding)):
            follower = TopicFollower(settings.kafka, topic, apply, client_id=f"{SERVICE}-{topic}")
            await follower.start()  # returns once the topic is read up to its end
            stack.push_async_callback(follower.stop)
        if access.proxy_header is None:
            registry = RegistryStore(settings.kafka, client_id=SERVICE)
            await registry.start()
            stack.push_async_callback(registry.stop)
        state.details = lambda: {**analytics.stats(), "live_streams": len(live)}
        state.ready = True
        log.info("analytics serving", address=f"http://{settings.analytics.host}:{settings.analytics.port}/",
                 access=f"tenant named by the proxy in {access.proxy_header}" if access.proxy_header
                 else "bearer tokens", allowed_hosts=access.hosts.describe())
        await stop.wait()
