"""`sendrail`: run the services and the local stack, manage the registry, send and watch mail."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys

from pydantic import ValidationError

from sendrail.cli import bench, bounces, local, messages, registry_commands, schema, suppression
from sendrail.errors import SendrailError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sendrail",
        description="Outbound email delivery over Kafka. Settings come from SENDRAIL_* "
                    "environment variables (see the README); while `make run` is up, commands "
                    "reach the local stack through .cache/local.env.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (local, registry_commands, messages, bounces, suppression, schema, bench):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        outcome = args.handler(args)
        exit_code = asyncio.run(outcome) if inspect.iscoroutine(outcome) else outcome
    except SendrailError as error:
        print(f"sendrail: {error}", file=sys.stderr)
        exit_code = 2
    except ValidationError as error:
        # Only the messages: the input may hold (sealed) secrets and is the user's own anyway.
        reasons = "; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())
        print(f"sendrail: {reasons}", file=sys.stderr)
        exit_code = 2
    except KeyboardInterrupt:
        exit_code = 130
    sys.exit(exit_code)
