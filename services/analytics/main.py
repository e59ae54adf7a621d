"""The analytics service: delivery and bounce topics read from the start, summaries served over HTTP.

No consumer group: every start reads both topics from their beginning, so a restarted
service rebuilds the same summaries (counting is idempotent, see `aggregation`) and
nothing is lost. The API answers 503 until both topics have been read up to their end.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiohttp import web
from pydantic import ValidationError

from sendrail.bus.clients import ensure_topics
from sendrail.bus.codec import decode, decode_analytics
from sendrail.bus.table import TopicFollower
from sendrail.clock import system_clock
from sendrail.events import DeliveryEvent
from sendrail.service import ServiceState
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
    await ensure_topics(settings.kafka)
    analytics = Analytics()
    live = LiveFeed()

    def apply_delivery(_: bytes | None, value: bytes | None) -> None:
        if value is None:
            return
        try:
            event = decode(DeliveryEvent, value)
        except ValidationError:
            log.error("unreadable delivery event ignored")
            return
        item = analytics.apply_delivery(event, system_clock())
        if item is not None:
            live.publish(item)

    def apply_finding(_: bytes | None, value: bytes | None) -> None:
        if value is None:
            return
        try:
            finding = decode_analytics(value)
        except ValidationError:
            log.error("unreadable analytics event ignored")
            return
        item = analytics.apply_finding(finding, system_clock())
        if item is not None:
            live.publish(item)

    api = AnalyticsApi(analytics, live, system_clock, ready=lambda: state.ready)
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
        state.details = lambda: {**analytics.stats(), "live_streams": len(live)}
        state.ready = True
        log.info("analytics serving", address=f"http://{settings.analytics.host}:{settings.analytics.port}/")
        await stop.wait()
