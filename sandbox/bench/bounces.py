"""`sendrail bench bounces`: parsing speed, and how fast a bounce becomes an event.

Parsing: `parse_notice` over the real bounce messages `make setup` fetched, repeated,
on one core; and the slowest parse per KiB of input over hostile notices (anyone can mail
a user's inbox), each as large as the text the parser reads. Latency: one bounce watcher
process watching 200 Gmail mailboxes on the sandbox's Dovecot (IMAP IDLE, XOAUTH2);
Gmail-style bounces are put into the mailboxes one after another, and each is timed from
the moment it lands in the Maildir to the broker's timestamp of its event on the analytics
topic.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sendrail.bounces import parse_notice
from sendrail.bus.clients import make_consumer, make_producer
from sendrail.bus.codec import decode, decode_analytics
from sendrail.events import (
    BounceDetected,
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    ImapServer,
    OAuthGrant,
    SmtpServer,
    WatcherCheckpoint,
)
from sendrail.registry.store import publish_record
from sendrail.sandbox.dsn import Undelivered, gmail_bounce
from sendrail.sandbox.ports import free_port
from sendrail.sandbox.stack import LocalStack
from sendrail.secrets import SecretBox
from sendrail.settings import KafkaSettings, SecretSettings
from sendrail.topics import BOUNCES, WATCHER_CHECKPOINTS

CORPUS = Path(".cache/corpus/flufl_bounce-6.0.0/tests/data")
HOSTILE_NOTICE_BYTES = 128 * 1024  # the most text the parser reads (MAX_TEXT_CHARS)


def parse_throughput(*, messages: int = 5000) -> dict[str, Any]:
    """Messages per second through `parse_notice`, on one core, over the real corpus; and the
    worst parse time per KiB over hostile notices."""
    corpus = [p.read_bytes() for p in sorted(CORPUS.glob("*.txt"))]
    if not corpus:
        raise FileNotFoundError(f"no bounce corpus in {CORPUS}: run `make setup`")
    started = time.process_time()
    for i in range(messages):
        parse_notice(corpus[i % len(corpus)])
    cpu_s = time.process_time() - started
    return {"messages": messages, "corpus_files": len(corpus),
            "messages_per_second": round(messages / cpu_s), **hostile_parse()}


def hostile_parse(*, size_bytes: int = HOSTILE_NOTICE_BYTES, repeats: int = 3) -> dict[str, Any]:
    """The slowest parse per KiB of input over hostile notices, in CPU time on one core (the
    best of `repeats` parses of each). Parsing is linear in its input, so this stays near the
    per-KiB cost of ordinary notices; a quadratic pattern or loop costs hundreds of times as much."""
    per_kib_us: dict[str, float] = {}
    for name, raw in hostile_notices(size_bytes).items():
        best_s = min(_parse_cpu_s(raw) for _ in range(repeats))
        per_kib_us[name] = best_s * 1e6 / (len(raw) / 1024)
    worst = max(per_kib_us, key=lambda name: per_kib_us[name])
    return {"hostile_notices": len(per_kib_us), "hostile_notice_kib": round(size_bytes / 1024),
            "worst_parse_us_per_kib": round(per_kib_us[worst], 1), "worst_parse_input": worst}


def _parse_cpu_s(raw: bytes) -> float:
    started = time.process_time()
    parse_notice(raw)
    return time.process_time() - started


def hostile_notices(size_bytes: int) -> dict[str, bytes]:
    """Notices built to make a parser slow, each about `size_bytes` long, by what they hold:
    long runs of what the parser's patterns look for, and many of what its loops go over. Their
    text ends within the parser's text limit, so that the hostile end of each is read."""
    n = size_bytes - 512  # room for the headers and the notice's own words
    return {
        "spaces, then an at sign": _plain(" " * n + "a@"),
        "tabs, then a mailto address": _plain("\t" * n + "<mailto:a@b.example>"),
        "an address between runs of spaces": _plain(" " * (n // 2) + "a@b.example" + " " * (n // 2) + "x"),
        "a recipient label, then spaces": _plain("Recipient address:" + " " * n + "a@"),
        "RCPT TO, then spaces": _plain("RCPT TO:" + " " * n + "a@"),
        "an expansion, then spaces": _plain("a@b.example (expanded from:" + " " * n + "a@"),
        "address fragments on one line": _plain("a@b." * (n // 4)),
        "addresses on one line": _plain(" ".join(f"u{i % 100}@example.org" for i in range(n // 16))),
        "an address a line": _plain("".join(f"user{i}@host{i}.example: 550 5.1.1 unknown\n"
                                            for i in range(n // 40))),
        "a quote marker, then spaces": _plain("returned message" + " " * n + "x"),
        "a long word before an at sign": _plain("a" * n + "@"),
        "at signs": _plain("@" * n),
        "blank lines": _plain(" \n" * (n // 2)),
        "an unclosed html tag name": _html("<" + "a" * n),
        "html tags": _html("<p>x</p>" * (n // 8)),
        "a boundary parameter, then spaces": (b"Content-Type: multipart/mixed; boundary" + b" " * n
                                              + b"\r\n" + _plain("x")),
        "unclosed encoded words": _report("".join(
            f"Final-Recipient: rfc822; u{i}@example.org\r\nAction: failed\r\n"
            f"Diagnostic-Code: smtp; {'=?c?q? ' * 580}\r\n\r\n" for i in range(n // 4200))),
        "a long diagnostic word": _report(
            f"Final-Recipient: rfc822; u@example.org\r\nAction: failed\r\nDiagnostic-Code: smtp; {'a' * n}"),
        "folded report fields": _report(
            "Final-Recipient: rfc822; u@example.org\r\nAction: failed\r\nDiagnostic-Code: smtp; 550\r\n"
            + " x\r\n" * (n // 4)),
        "punycode text": (b"From: MAILER-DAEMON@mx.example.net\r\nSubject: Undelivered Mail\r\n"
                          b"Content-Type: text/plain; charset=punycode\r\n\r\n"
                          + b"a" * (n // 2) + b"-" + b"a" * (n // 2)),
        "many headers": b"".join(b"X-Header-%d: v\r\n" % i for i in range(n // 16)) + _plain("x"),
    }


_NOTICE_HEADERS = "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\nTo: alice@sender.example\r\n"


def _plain(text: str) -> bytes:
    return (f"{_NOTICE_HEADERS}Subject: Undelivered Mail Returned to Sender\r\nContent-Type: text/plain"
            f"\r\n\r\nThis is the mail system. Delivery has failed.\r\n\r\n{text}\r\n").encode()


def _html(markup: str) -> bytes:
    return (f"{_NOTICE_HEADERS}Subject: Undeliverable\r\nContent-Type: text/html\r\n\r\n"
            f"<p>Delivery has failed to these recipients:</p>{markup}\r\n").encode()


def _report(fields: str) -> bytes:
    """An RFC 3464 report whose per-recipient blocks are `fields`."""
    return (f"{_NOTICE_HEADERS}Subject: Undelivered Mail\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nDelivery has failed.\r\n"
            "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n"
            f"\r\n{fields}\r\n--b--\r\n").encode()


async def watcher_latency(*, mailboxes: int = 200, deadline_s: float = 180.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sendrail-bench-") as run_dir:
        async with LocalStack(Path(run_dir), kafka_port=free_port()) as stack:
            return await _latency(stack, mailboxes, deadline_s)


async def _latency(stack: LocalStack, mailboxes: int, deadline_s: float) -> dict[str, Any]:
    tenant = f"bench-{secrets.token_hex(3)}"
    kafka = KafkaSettings(bootstrap_servers=stack.broker.bootstrap_servers)
    box = SecretBox.from_settings(SecretSettings(secret_key_file=Path(stack.env["SENDRAIL_SECRET_KEY_FILE"])))
    info = stack.info
    addresses = {f"m{i:03d}": f"m{i:03d}@{tenant}.example.com" for i in range(mailboxes)}
    checkpoints = make_consumer(kafka, WATCHER_CHECKPOINTS.name, group_id=None, client_id="bench")
    bounces = make_consumer(kafka, BOUNCES.name, group_id=None, client_id="bench")
    producer = make_producer(kafka, client_id="bench")
    for client in (checkpoints, bounces, producer):
        await client.start()
    try:
        now = datetime.now(UTC)
        endpoint = info.smtp["gmail"]
        for connection_id, address in addresses.items():
            token = stack.sandbox.add_oauth_user("google", address)
            await publish_record(producer, ConnectionConfigured(
                tenant_id=tenant, connection_id=connection_id, kind=ChannelKind.GMAIL,
                owner_user_id=connection_id, address=address,
                smtp=SmtpServer(host=endpoint.host, port=endpoint.port),
                oauth=OAuthGrant(refresh_token=box.seal(token)),
                imap=ImapServer(host=info.imap_host, port=info.imap_port),
                connected_at=now, updated_at=now))
            await publish_record(producer, ConnectionHealthChanged(
                tenant_id=tenant, connection_id=connection_id, healthy=True, changed_at=now))
        watching_started = time.monotonic()
        opened: set[str] = set()
        async with asyncio.timeout(deadline_s):
            async for record in checkpoints:
                checkpoint = decode(WatcherCheckpoint, record.value or b"")
                if checkpoint.tenant_id == tenant:
                    opened.add(checkpoint.connection_id)
                    if len(opened) == mailboxes:
                        break
        all_watched_s = time.monotonic() - watching_started

        landed_ms: dict[str, float] = {}
        for connection_id, address in addresses.items():
            original = (f"From: {address}\r\nTo: gone@{info.bounce_domain}\r\nSubject: hi\r\n"
                        f"Message-ID: <{connection_id}@{tenant}.example.com>\r\n\r\nHello.\r\n").encode()
            at = datetime.now(UTC)
            bounce = gmail_bounce(Undelivered(original=original, sender=address,
                                              recipients=(f"gone-{connection_id}@{info.bounce_domain}",),
                                              reporting_host="mx.google.com", arrived_at=at,
                                              bounced_at=at))
            stack.sandbox.deliver(address, bounce)
            landed_ms[connection_id] = time.time() * 1000
            await asyncio.sleep(0.02)  # 50 bounces a second across the mailboxes
        latencies_s: list[float] = []
        async with asyncio.timeout(deadline_s):
            async for record in bounces:
                finding = decode_analytics(record.value or b"")
                if isinstance(finding, BounceDetected) and finding.tenant_id == tenant:
                    latencies_s.append((record.timestamp - landed_ms[finding.connection_id]) / 1000)
                    if len(latencies_s) == mailboxes:
                        break
    finally:
        for client in (checkpoints, bounces, producer):
            await client.stop()
    latencies_s.sort()
    return {
        "mailboxes_watched": mailboxes,
        "all_mailboxes_open_s": round(all_watched_s, 1),
        "bounces": len(latencies_s),
        "latency_s": {"p50": round(statistics.median(latencies_s), 3),
                      "p95": round(latencies_s[int(0.95 * (len(latencies_s) - 1))], 3),
                      "max": round(latencies_s[-1], 3)},
    }
