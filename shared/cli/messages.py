"""`sendrail send` publishes a request; `sendrail tail` follows a topic as readable lines."""

from __future__ import annotations

import argparse
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sendrail.bus.clients import make_consumer
from sendrail.bus.codec import encode
from sendrail.cli.common import (
    ADDRESS,
    ID,
    Subcommands,
    checked,
    existing_file,
    field_of,
    number,
    producer_for,
    read_bounded,
    reasons,
)
from sendrail.clock import system_clock
from sendrail.errors import ConfigurationError
from sendrail.events import EmailRequested, Source
from sendrail.settings import Settings
from sendrail.topics import ALL_TOPICS, REQUESTS
from sendrail.validation import HeaderValue

MAX_REQUEST_FILE_BYTES = 1024 * 1024
"""A request travels as one Kafka record, at most 1 MiB by default (the producer's
max_request_size, the broker's message.max.bytes)."""
MAX_TAIL_COUNT = 1_000_000_000
"""`tail --count` stops after at most this many events; more is no count at all."""
REQUEST_FLAGS = ("tenant", "user", "identity", "to", "cc", "subject", "text", "html", "campaign",
                 "template", "idempotency_key")
"""What `--file` holds itself; given with it, they would be ignored."""


def request_from_file(path: Path) -> dict[str, Any]:
    raw = read_bounded(path, MAX_REQUEST_FILE_BYTES, "a request")
    try:
        fields = json.loads(raw)
    except UnicodeDecodeError:
        raise ConfigurationError(f"{path}: not UTF-8 text") from None
    except ValueError as error:
        raise ConfigurationError(f"{path}: not JSON: {error}") from None
    if not isinstance(fields, dict):
        raise ConfigurationError(f"{path}: a request is a JSON object, not {type(fields).__name__}")
    return fields


def request_from_args(args: argparse.Namespace) -> EmailRequested:
    if args.file is not None:
        both = [f"--{name.replace('_', '-')}" for name in REQUEST_FLAGS if getattr(args, name)]
        if both:
            raise ConfigurationError(f"--file holds the whole request: leave out {', '.join(both)}")
        fields = request_from_file(Path(args.file))
    else:
        missing = [f"--{n}" for n in ("tenant", "user", "identity", "subject")
                   if getattr(args, n) is None]
        if missing or not args.to:
            raise ConfigurationError(f"missing {', '.join(missing + ([] if args.to else ['--to']))}"
                                     " (or pass --file request.json)")
        fields = {
            "tenant_id": args.tenant, "user_id": args.user, "identity": args.identity,
            "to": args.to, "cc": args.cc, "subject": args.subject, "text": args.text,
            "html": args.html, "source": args.source, "campaign_id": args.campaign,
            "template_id": args.template, "idempotency_key": args.idempotency_key or str(uuid.uuid4()),
        }
    fields.setdefault("requested_at", system_clock().isoformat())
    try:
        return EmailRequested.model_validate(fields)
    except ValidationError as error:  # the rule the router applies to every request
        raise ConfigurationError(f"invalid request: {reasons(error)}") from None


async def send(args: argparse.Namespace) -> int:
    request = request_from_args(args)
    async with producer_for(Settings.load()) as producer:
        await producer.send_and_wait(REQUESTS.name, encode(request),
                                     key=f"{request.tenant_id}/{request.user_id}".encode())
    print(f"published send {request.send_id} (follow it with `sendrail tail delivery`)")
    return 0


def _readable(topic: str, event: dict[str, Any]) -> str:
    """One line a person can scan; the full event is available with --json."""
    when = str(event.get("occurred_at") or event.get("detected_at") or event.get("routed_at")
               or event.get("requested_at") or event.get("updated_at") or "")[:23]
    keys = {
        "sendrail.delivery": ["status", "send_id", "channel", "connection_id", "reply_code", "reason"],
        "sendrail.bounces": ["recipient", "reason", "hard", "status", "campaign_id", "template_id",
                             "send_id"],
        "sendrail.requests": ["tenant_id", "user_id", "identity", "to", "subject"],
        "sendrail.dead-letter": ["source_topic", "offset", "reason"],
    }.get(topic, [k for k in event if k not in {"schema_version"}][:6])
    parts = [f"{k}={event[k]}" for k in keys if event.get(k) not in (None, [], "")]
    return f"{when} {' '.join(parts)}"


def topic_name(text: str) -> str:
    """A topic's full name, from it or from its name without the 'sendrail.' prefix."""
    names = {t.name for t in ALL_TOPICS}
    topic = text if text in names else f"sendrail.{text}"
    if topic not in names:
        raise argparse.ArgumentTypeError(f"unknown topic {text!r}; one of: {', '.join(sorted(names))}")
    return topic


async def tail(args: argparse.Namespace) -> int:
    topic: str = args.topic
    consumer = make_consumer(Settings.load().kafka, topic, group_id=None, client_id="sendrail-tail",
                             from_beginning=args.from_beginning)
    await consumer.start()
    shown = 0
    try:
        with contextlib.suppress(KeyboardInterrupt):
            async for record in consumer:
                raw = record.value or b""
                if args.json:
                    print(raw.decode(errors="replace"), flush=True)
                else:
                    try:
                        print(_readable(topic, json.loads(raw)), flush=True)
                    except ValueError:
                        print(f"(not JSON, {len(raw)} bytes)", flush=True)
                shown += 1
                if args.count is not None and shown >= args.count:
                    break
    finally:
        await consumer.stop()
    return 0


def register(commands: Subcommands) -> None:
    parser = commands.add_parser("send", help="publish a send request (from flags or a JSON file)")
    parser.add_argument("--file", type=existing_file,
                        help=f"a JSON send request (see `sendrail schema`), at most "
                             f"{MAX_REQUEST_FILE_BYTES // 1024} KiB")
    parser.add_argument("--tenant", type=ID)
    parser.add_argument("--user", type=ID)
    parser.add_argument("--identity", type=ADDRESS, help="from-address")
    parser.add_argument("--to", action="append", default=[], type=ADDRESS)
    parser.add_argument("--cc", action="append", default=[], type=ADDRESS)
    parser.add_argument("--subject", type=checked(HeaderValue))
    parser.add_argument("--text")
    parser.add_argument("--html")
    parser.add_argument("--source", choices=[s.value for s in Source], default="api")
    parser.add_argument("--campaign", type=ID)
    parser.add_argument("--template", type=ID)
    parser.add_argument("--idempotency-key", type=field_of(EmailRequested, "idempotency_key", expected=(
        "1 to 200 printable ASCII characters, no spaces")), help="default: a new UUID")
    parser.set_defaults(handler=send)

    parser = commands.add_parser("tail", help="follow a topic (delivery, bounces, requests, ...)")
    parser.add_argument("topic", type=topic_name,
                        help="topic name, with or without the 'sendrail.' prefix")
    parser.add_argument("--json", action="store_true", help="print each event as JSON")
    parser.add_argument("--from-beginning", action="store_true")
    parser.add_argument("--count", type=number(int, 1, MAX_TAIL_COUNT), help="stop after this many events")
    parser.set_defaults(handler=tail)
