"""`sendrail bench`: benchmarks on a local stack of their own, printed and saved as JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sendrail.cli.common import Subcommands


async def bench(args: argparse.Namespace) -> int:
    from sendrail.sandbox.bench.throttle import ThrottleBench, run_throttle_bench

    results: dict[str, Any] = {}
    if args.which in ("throttle", "all"):
        results.update(await run_throttle_bench(ThrottleBench()))
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
    parser.add_argument("which", choices=["throttle", "all"], nargs="?", default="all")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    parser.set_defaults(handler=bench)
