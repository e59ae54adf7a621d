"""Whether the cluster answers: looked at now and then, so /healthz says when Kafka is gone.

aiokafka's consumers do not fail while the brokers are away: they retry in the background
and simply return nothing, so a service would look healthy while doing no work. A
metadata request every `interval_s` tells the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from sendrail.bus.clients import make_admin
from sendrail.settings import KafkaSettings

log = structlog.get_logger(__name__)

Report = Callable[[str | None], None]
"""Called with why the cluster is unreachable, or None once it answers again."""


async def watch_reachability(settings: KafkaSettings, report: Report, stop: asyncio.Event, *,
                             client_id: str, interval_s: float = 10.0, timeout_s: float = 10.0) -> None:
    unreachable_since: datetime | None = None
    while not stop.is_set():
        try:
            async with asyncio.timeout(timeout_s):
                admin = make_admin(settings, client_id=f"{client_id}-reachability")
                try:
                    await admin.start()
                    await admin.list_topics()
                finally:
                    await admin.close()
        except Exception as error:  # any failure to get an answer is what this reports
            if unreachable_since is None:
                unreachable_since = datetime.now(UTC)
                log.warning("kafka unreachable", bootstrap=settings.bootstrap_servers, error=repr(error))
            report(f"Kafka at {settings.bootstrap_servers} has not answered since "
                   f"{unreachable_since:%Y-%m-%dT%H:%M:%SZ}; work waits and resumes when it does")
        else:
            if unreachable_since is not None:
                log.info("kafka reachable again", bootstrap=settings.bootstrap_servers)
            unreachable_since = None
            report(None)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
