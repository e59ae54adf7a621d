"""`sendrail service`, `run`, `demo`, `topics`: running sendrail's parts."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import logging

from sendrail.bus.clients import ensure_topics, wait_for_broker
from sendrail.cli.common import Subcommands, number
from sendrail.errors import ConfigurationError
from sendrail.service import configure_logging, serve
from sendrail.settings import Settings

SERVICES = {
    "router": "sendrail.services.router.main",
    "sender-gmail": "sendrail.services.sender_gmail.main",
    "sender-exchange": "sendrail.services.sender_exchange.main",
    "sender-smtp": "sendrail.services.sender_smtp.main",
    "bounce-watcher": "sendrail.services.bounce_watcher.main",
    "analytics": "sendrail.services.analytics.main",
}
MAX_DEMO_DEADLINE_S = 3600.0
"""The demo's outcomes come within a minute or two; an hour is room for a slow machine."""
PROXY_TENANT_HEADER = "X-Sendrail-Tenant"
"""`--trust-proxy` without a header name: where the authenticating proxy names the tenant."""


async def service(args: argparse.Namespace) -> int:
    configure_logging(json=True)
    settings = Settings.load()
    if args.trust_proxy is not None:
        if args.name != "analytics":
            raise ConfigurationError("--trust-proxy is for the analytics service")
        settings = dataclasses.replace(settings, analytics=settings.analytics.model_copy(
            update={"trust_proxy_header": args.trust_proxy}))
    module = importlib.import_module(SERVICES[args.name])
    await serve(args.name, functools.partial(module.run, settings), settings.http, kafka=settings.kafka)
    return 0


async def topics(_: argparse.Namespace) -> int:
    settings = Settings.load()
    await wait_for_broker(settings.kafka, timeout_s=60)
    await ensure_topics(settings.kafka)
    print(f"topics ready on {settings.kafka.bootstrap_servers}")
    return 0


async def run(_: argparse.Namespace) -> int:
    from sendrail.sandbox.stack import run_local_stack  # the sandbox is a development extra

    configure_logging(json=False)
    return await run_local_stack()


async def demo(args: argparse.Namespace) -> int:
    from sendrail.sandbox.demo import run_demo

    configure_logging(json=False, level=logging.WARNING)  # the summary is the demo's output
    return await run_demo(deadline_s=args.deadline_s)


def register(commands: Subcommands) -> None:
    parser = commands.add_parser("service", help="run one service (what a container runs)")
    parser.add_argument("name", choices=sorted(SERVICES))
    parser.add_argument(
        "--trust-proxy", nargs="?", const=PROXY_TENANT_HEADER, metavar="HEADER",
        help="analytics only: run behind an authenticating proxy that names the tenant in HEADER "
             f"(default {PROXY_TENANT_HEADER}); no bearer tokens are asked for. Only when nothing "
             "but the proxy can reach the service (SENDRAIL_ANALYTICS_TRUST_PROXY_HEADER)")
    parser.set_defaults(handler=service)

    parser = commands.add_parser("topics", help="create sendrail's topics on the cluster if missing")
    parser.set_defaults(handler=topics)

    parser = commands.add_parser(
        "run", help="the local stack: Kafka, the mail sandbox and all services, until Ctrl-C")
    parser.set_defaults(handler=run)

    parser = commands.add_parser(
        "demo", help="a short campaign through every channel, checked end to end")
    parser.add_argument("--deadline-s", type=number(float, 1.0, MAX_DEMO_DEADLINE_S), default=90.0,
                        help=f"give up waiting for outcomes after this long (1 to {MAX_DEMO_DEADLINE_S:g} s)")
    parser.set_defaults(handler=demo)
