"""`sendrail`: run the services and the local stack, manage the registry, send and watch mail."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
from typing import NoReturn

from aiokafka.errors import KafkaConnectionError
from pydantic import ValidationError

from sendrail.cli import (
    analytics_tokens,
    bench,
    bounces,
    local,
    messages,
    registry_commands,
    schema,
    suppression,
)
from sendrail.cli.common import reasons
from sendrail.errors import SendrailError


class Parser(argparse.ArgumentParser):
    """Refuses a command line in one line, `sendrail ...: error: ...` (status 2), as argparse
    does but without the usage block: with many flags it would bury the one that is wrong.
    Sub-commands get the same class (argparse makes them with the parent's)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sendrail",
        description="Outbound email delivery over Kafka. Settings come from SENDRAIL_* "
                    "environment variables (see the README); while `make run` is up, commands "
                    "reach the local stack through .cache/local.env.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (local, registry_commands, analytics_tokens, messages, bounces, suppression, schema,
                   bench):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        outcome = args.handler(args)
        exit_code = asyncio.run(outcome) if inspect.iscoroutine(outcome) else outcome
    except SendrailError as error:
        print(f"sendrail: error: {_one_line(str(error))}", file=sys.stderr)
        exit_code = 2
    except ValidationError as error:
        print(f"sendrail: error: {_one_line(reasons(error))}", file=sys.stderr)
        exit_code = 2
    except (KafkaConnectionError, TimeoutError) as error:
        print(f"sendrail: error: Kafka did not answer ({_one_line(str(error)) or 'timed out'}); is "
              "`make run` up, or SENDRAIL_KAFKA_BOOTSTRAP_SERVERS set?", file=sys.stderr)
        exit_code = 1
    except KeyboardInterrupt:
        exit_code = 130
    sys.exit(exit_code)


def _one_line(message: str) -> str:
    return " ".join(message.split())
