"""`sendrail bounce parse`: what sendrail reads in raw messages, one JSON line per file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sendrail.bounces import NoticeKind, parse_notice
from sendrail.bounces.parser import MAX_MESSAGE_BYTES
from sendrail.cli.common import Subcommands, existing_file


def describe(path: str, raw: bytes) -> dict[str, Any]:
    """The contract of `sendrail bounce parse`, for one message."""
    notice = parse_notice(raw)
    is_bounce = notice.kind is NoticeKind.BOUNCE
    return {
        "path": path,
        "is_bounce": is_bounce,
        "recipients": [
            {"address": r.address, "status": r.status, "reply_code": r.reply_code,
             "reason": r.reason, "hard": r.hard}
            for r in (notice.recipients if is_bounce else ())
        ],
    }


def parse(args: argparse.Namespace) -> int:
    failures = 0
    out = sys.stdout
    for path in args.paths:
        try:
            with Path(path).open("rb") as file:
                # The parser reads no further, in the watcher as here: a large message (the
                # original attached whole) is classified the same from either.
                raw = file.read(MAX_MESSAGE_BYTES)
        except OSError as error:  # gone or changed since the command line was checked
            print(f"sendrail: error: {path}: {error.strerror}", file=sys.stderr)
            failures += 1
            continue
        out.write(json.dumps(describe(path, raw), ensure_ascii=False) + "\n")
    out.flush()
    return 1 if failures else 0


def register(commands: Subcommands) -> None:
    parser = commands.add_parser("bounce", help="read bounce messages")
    actions = parser.add_subparsers(dest="action", required=True)
    reader = actions.add_parser(
        "parse", help="classify raw messages (RFC 5322 files), one JSON object per line",
        description='Prints {"path", "is_bounce", "recipients": [{"address", "status", '
                    '"reply_code", "reason", "hard"}]} for each file, in order.')
    reader.add_argument("paths", nargs="+", metavar="PATH", type=existing_file)
    reader.set_defaults(handler=parse)
