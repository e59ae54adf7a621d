"""`sendrail bench`: benchmarks on a local stack of their own, printed and saved as JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
from datetime import UTC, datetime
from typing import Any

from sendrail.cli.common import Subcommands, number, output_file
from sendrail.errors import ConfigurationError
from sendrail.service import configure_logging
from sendrail.topics import REQUESTS

BENCHMARKS = ["throttle", "bounces", "router", "smtp", "memory", "mailboxes", "hostile", "dedup"]
MAX_MESSAGES = 10_000_000
"""A hundred times the router's default run: larger runs measure the disk, not sendrail."""
MAX_SESSIONS = 256
"""Concurrent SMTP sessions on one machine, for both sides of the benchmark."""
MAX_BACKLOG = 1_000_000
"""Ten times the memory benchmark's default backlog."""


async def bench(args: argparse.Namespace) -> int:
    configure_logging(json=False, level=logging.WARNING)  # the JSON report is the output
    from sendrail.sandbox.bench.bounces import parse_throughput, watcher_latency
    from sendrail.sandbox.bench.dedup import DedupBench, run_dedup_bench
    from sendrail.sandbox.bench.hostile import HostileBench, run_hostile_bench
    from sendrail.sandbox.bench.mailboxes import MailboxesBench, run_mailboxes_bench
    from sendrail.sandbox.bench.memory import run_memory_bench
    from sendrail.sandbox.bench.router import RouterBench, run_router_bench
    from sendrail.sandbox.bench.smtp import SmtpBench, run_smtp_bench
    from sendrail.sandbox.bench.throttle import ThrottleBench, run_throttle_bench

    chosen = BENCHMARKS if args.which == "all" else [args.which]
    results: dict[str, Any] = {}
    if "throttle" in chosen:
        results.update(await run_throttle_bench(ThrottleBench()))
    if "bounces" in chosen:
        results["bounce_parse"] = parse_throughput()
        results["bounce_watcher"] = await watcher_latency()
    if "router" in chosen:
        router = RouterBench(replicas=args.replicas)
        if args.messages is not None:
            router = dataclasses.replace(router, messages=args.messages)
        results.update(await run_router_bench(router))
    if "smtp" in chosen:
        smtp = SmtpBench(sessions=args.sessions)
        if args.messages is not None:
            smtp = dataclasses.replace(smtp, messages=args.messages)
        results.update(await run_smtp_bench(smtp))
    if "memory" in chosen:
        results.update(await run_memory_bench(args.backlog))
    if "mailboxes" in chosen:
        results.update(await run_mailboxes_bench(MailboxesBench()))
    if "hostile" in chosen:
        results.update(await run_hostile_bench(HostileBench()))
    if "dedup" in chosen:
        dedup = DedupBench()
        if args.messages is not None:
            dedup = dataclasses.replace(dedup, messages=args.messages)
        results.update(await run_dedup_bench(dedup))
    report = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": _cpus(), "python": platform.python_version()},
        **results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text + "\n")
        except OSError as error:
            raise ConfigurationError(f"cannot write the report to {args.out}: {error.strerror}") from None
    return 0


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def register(commands: Subcommands) -> None:
    parser = commands.add_parser("bench", help="run benchmarks on a local stack of their own")
    parser.add_argument("which", choices=[*BENCHMARKS, "all"], nargs="?", default="all")
    parser.add_argument("--out", type=output_file, help="also write the JSON report here")
    parser.add_argument("--messages", type=number(int, 1, MAX_MESSAGES),
                        help="messages per run (router: 100,000; smtp: 20,000; dedup: 50,000 by default)")
    # More routers than the requests topic has partitions would have nothing to read.
    parser.add_argument("--replicas", type=number(int, 1, REQUESTS.partitions), default=1,
                        help=f"router processes in its consumer group, 1 to {REQUESTS.partitions} (router)")
    parser.add_argument("--sessions", type=number(int, 1, MAX_SESSIONS), default=16,
                        help="concurrent SMTP sessions, for both sides (smtp)")
    parser.add_argument("--backlog", type=number(int, 1, MAX_BACKLOG), default=100_000,
                        help="requests queued at once (memory)")
    parser.set_defaults(handler=bench)
