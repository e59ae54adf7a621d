"""Running one sendrail service: logging, the /metrics and /healthz endpoint, and a clean stop.

A service is a coroutine that runs until its `stop` event is set (SIGTERM or Ctrl-C);
it then finishes or hands back its in-flight work and commits what it finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sendrail.backoff import backoff_s
from sendrail.bus.reachability import watch_reachability
from sendrail.errors import ConfigurationError
from sendrail.metrics import REGISTRY
from sendrail.settings import HttpSettings, KafkaSettings


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
    trouble: str | None = None
    """Why the service is not working now (its work failed) and when it tries again."""
    bus_trouble: str | None = None
    """Set while Kafka does not answer (`sendrail.bus.reachability`)."""

    @property
    def healthy(self) -> bool:
        return self.ready and self.trouble is None and self.bus_trouble is None


async def start_http(settings: HttpSettings, state: ServiceState) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(_: web.Request) -> web.Response:
        body = {"service": state.name, "ready": state.healthy, **state.details()}
        troubles = [t for t in (state.trouble, state.bus_trouble) if t is not None]
        if troubles:
            body["trouble"] = "; ".join(troubles)
        return web.json_response(body, status=200 if state.healthy else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    return runner


ServiceMain = Callable[[asyncio.Event, ServiceState], Awaitable[None]]


async def serve(name: str, main: ServiceMain, http: HttpSettings, *, kafka: KafkaSettings | None = None,
                restart_base_s: float = 1.0, restart_max_s: float = 60.0) -> None:
    """Run `main` with its HTTP endpoint until SIGTERM/SIGINT, then let it stop cleanly.

    A failure of `main` (Kafka unreachable, a broker that stopped answering, a fault) does
    not end the process, which a supervisor would only start again at once, in a loop:
    the service says so on /healthz, waits (capped exponential backoff with jitter) and
    starts `main` again, which reads on from its committed offsets.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    state = ServiceState(name)
    runner = await start_http(http, state)
    log = structlog.get_logger(name)
    log.info("service starting", http=f"{http.host}:{http.port}")
    failures = 0
    watching = None
    if kafka is not None:
        def report(trouble: str | None) -> None:
            state.bus_trouble = trouble

        watching = asyncio.create_task(watch_reachability(kafka, report, stop, client_id=name))
    try:
        while not stop.is_set():
            started_s = loop.time()
            try:
                await main(stop, state)
                return
            except ConfigurationError:
                raise  # settings or stored data a person must fix: starting again would not
            except Exception as error:
                # A run that went well for a while starts the backoff over.
                failures = 1 if loop.time() - started_s > restart_max_s else failures + 1
                wait_s = backoff_s(failures, base_s=restart_base_s, max_s=restart_max_s,
                                   jitter=random.random())
                state.ready = False
                state.trouble = f"{type(error).__name__}: {error}; starting again in {wait_s:.0f} s"
                log.error("service failed; starting again", wait_s=round(wait_s, 1),
                          failures=failures, exc_info=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait_s)
                state.trouble = None
    finally:
        if watching is not None:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
        await runner.cleanup()
        log.info("service stopped")
