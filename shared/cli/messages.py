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
from sendrail.cli.common import Subcommands, producer_for
from sendrail.clock import system_clock
from sendrail.errors import ConfigurationError
from sendrail.events import EmailRequested, Source
from sendrail.settings import Settings
from sendrail.topics import ALL_TOPICS, REQUESTS


def request_from_args(args: argparse.Namespace) -> EmailRequested:
    if args.file is not None:
        fields: dict[str, Any] = json.loads(Path(args.file).read_text())
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
    except ValidationError as error:
        raise ConfigurationError(f"invalid request:\n{error}") from None


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


async def tail(args: argparse.Namespace) -> int:
    names = {t.name for t in ALL_TOPICS}
    topic = args.topic if args.topic in names else f"sendrail.{args.topic}"
    if topic not in names:
        raise ConfigurationError(f"unknown topic {args.topic}; one of: {', '.join(sorted(names))}")
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
    parser.add_argument("--file", help="a JSON send request (see `sendrail schema`)")
    parser.add_argument("--tenant")
    parser.add_argument("--user")
    parser.add_argument("--identity", help="from-address")
    parser.add_argument("--to", action="append", default=[])
    parser.add_argument("--cc", action="append", default=[])
    parser.add_argument("--subject")
    parser.add_argument("--text")
    parser.add_argument("--html")
    parser.add_argument("--source", choices=[s.value for s in Source], default="api")
    parser.add_argument("--campaign")
    parser.add_argument("--template")
    parser.add_argument("--idempotency-key", help="default: a new UUID")
    parser.set_defaults(handler=send)

    parser = commands.add_parser("tail", help="follow a topic (delivery, bounces, requests, ...)")
    parser.add_argument("topic", help="topic name, with or without the 'sendrail.' prefix")
    parser.add_argument("--json", action="store_true", help="print each event as JSON")
    parser.add_argument("--from-beginning", action="store_true")
    parser.add_argument("--count", type=int, help="stop after this many events")
    parser.set_defaults(handler=tail)
