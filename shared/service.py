"""Running one sendrail service: logging, the /metrics and /healthz endpoint, and a clean stop.

A service is a coroutine that runs until its `stop` event is set (SIGTERM or Ctrl-C);
it then finishes or hands back its in-flight work and commits what it finished.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sendrail.metrics import REGISTRY
from sendrail.settings import HttpSettings


def configure_logging(*, json: bool, level: int = logging.INFO) -> None:
    """Structured lines: JSON for machines (services), key=value for people (the CLI)."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # aiosmtpd (the sandbox's servers) warns about its own internals on every login.
    logging.getLogger("mail.log").setLevel(logging.ERROR)


@dataclass
class ServiceState:
    """What /healthz reports: ready once the service consumes, with its own details."""

    name: str
    ready: bool = False
    details: Callable[[], dict[str, object]] = dict
    """Read at each request, so it shows the service's current state."""


async def start_http(settings: HttpSettings, state: ServiceState) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(_: web.Request) -> web.Response:
        body = {"service": state.name, "ready": state.ready, **state.details()}
        return web.json_response(body, status=200 if state.ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    return runner


ServiceMain = Callable[[asyncio.Event, ServiceState], Awaitable[None]]


async def serve(name: str, main: ServiceMain, http: HttpSettings) -> None:
    """Run `main` with its HTTP endpoint until SIGTERM/SIGINT, then let it stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    state = ServiceState(name)
    runner = await start_http(http, state)
    log = structlog.get_logger(name)
    log.info("service starting", http=f"{http.host}:{http.port}")
    try:
        await main(stop, state)
    finally:
        await runner.cleanup()
        log.info("service stopped")
