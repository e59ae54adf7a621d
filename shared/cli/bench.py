"""`sendrail bench`: benchmarks on a local stack of their own, printed and saved as JSON."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sendrail.cli.common import Subcommands
from sendrail.service import configure_logging


async def bench(args: argparse.Namespace) -> int:
    configure_logging(json=False, level=logging.WARNING)  # the JSON report is the output
    from sendrail.sandbox.bench.bounces import parse_throughput, watcher_latency
    from sendrail.sandbox.bench.throttle import ThrottleBench, run_throttle_bench

    results: dict[str, Any] = {}
    if args.which in ("throttle", "all"):
        results.update(await run_throttle_bench(ThrottleBench()))
    if args.which in ("bounces", "all"):
        results["bounce_parse"] = parse_throughput()
        results["bounce_watcher"] = await watcher_latency()
    report = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": _cpus(), "python": platform.python_version()},
        **results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def register(commands: Subcommands) -> None:
    parser = commands.add_parser("bench", help="run benchmarks on a local stack of their own")
    parser.add_argument("which", choices=["throttle", "bounces", "all"], nargs="?", default="all")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    parser.set_defaults(handler=bench)
