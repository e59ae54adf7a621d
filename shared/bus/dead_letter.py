"""Records no consumer can use: kept on the dead-letter topic with their reason, and passed over.

Every consumer of every topic meets records it cannot use: bytes that are not JSON, JSON
that fails validation, a record of a newer schema version, a record whose handling
raises. None of them may stop the consumer. Each is published to `sendrail.dead-letter`
with where it came from, why it was refused and its original bytes (truncated, with
their size and SHA-256, when they would not fit in a Kafka record), counted in
`sendrail_dead_lettered_total{topic, reason}`, and the consumer goes on with the next.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import structlog
from aiokafka import ConsumerRecord
from pydantic import ValidationError

from sendrail.bus.publisher import Publisher
from sendrail.events import RequestDeadLettered
from sendrail.metrics import dead_lettered
from sendrail.topics import DEAD_LETTER

log = structlog.get_logger(__name__)

KNOWN_SCHEMA_VERSION = 1
"""The newest `schema_version` this code reads (every event's `Literal[1]`)."""

MAX_ORIGINAL_VALUE_BYTES = 256 * 1024
"""Kept of a refused value: as base64 (4/3 larger) with the rest of the entry it stays far
under Kafka's default 1 MiB record limit (`message.max.bytes`, `max.request.size`)."""
MAX_ORIGINAL_KEY_BYTES = 4 * 1024
MAX_REASON_CHARS = 2_000


class Refused(StrEnum):
    """Why a record was dead-lettered: the `reason` label of the metric (few values)."""

    UNDECODABLE = "undecodable"
    """Not UTF-8 JSON."""
    INVALID = "invalid"
    """JSON that fails the event's validation."""
    NEWER_SCHEMA = "newer_schema"
    """A `schema_version` newer than this reader knows: never guessed at."""
    MISMATCHED = "mismatched"
    """Key, partition and content disagree (e.g. a connection's mail on another partition)."""
    HANDLING_FAILED = "handling_failed"
    """Valid, but handling it raised."""


@dataclass(frozen=True)
class Unusable:
    kind: Refused
    reason: str


def unusable_for(value: bytes | None, error: BaseException) -> Unusable:
    """What a failure to decode or handle `value` means, in words a person can act on."""
    if isinstance(error, ValidationError):
        version = _schema_version(value)
        if version is not None and version > KNOWN_SCHEMA_VERSION:
            return Unusable(Refused.NEWER_SCHEMA,
                            f"schema_version {version} is newer than this reader knows "
                            f"({KNOWN_SCHEMA_VERSION}); upgrade the consumer to read it")
        if any(e["type"] in {"json_invalid", "json_type"} for e in error.errors()[:1]):
            return Unusable(Refused.UNDECODABLE, f"not a JSON object: {describe(error)}")
        return Unusable(Refused.INVALID, describe(error))
    if isinstance(error, UnicodeError):
        return Unusable(Refused.UNDECODABLE, f"not UTF-8: {error}")
    return Unusable(Refused.HANDLING_FAILED, f"{type(error).__name__}: {error}")


def describe(error: ValidationError) -> str:
    """The first few field errors, without pydantic's 'Value error, ' prefix."""
    first = error.errors()[:3]
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'message'}: "
             f"{e['msg'].removeprefix('Value error, ')}" for e in first]
    more = error.error_count() - len(first)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _schema_version(value: bytes | None) -> int | None:
    """The record's `schema_version`, read only after validation failed (never on the hot
    path); the value is bounded by the broker's record size."""
    try:
        fields = json.loads(value or b"")
    except (ValueError, RecursionError):
        return None
    version = fields.get("schema_version") if isinstance(fields, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def dead_letter_entry(record: ConsumerRecord[bytes, bytes], unusable: Unusable, *, consumer: str,
                      now: datetime) -> RequestDeadLettered:
    """The entry for `record`, small enough to publish whatever the record's size."""
    value = record.value or b""
    key = record.key
    truncated = len(value) > MAX_ORIGINAL_VALUE_BYTES or len(key or b"") > MAX_ORIGINAL_KEY_BYTES
    return RequestDeadLettered(
        source_topic=record.topic, partition=record.partition, offset=record.offset,
        key_b64=base64.b64encode(key[:MAX_ORIGINAL_KEY_BYTES]).decode() if key is not None else None,
        value_b64=base64.b64encode(value[:MAX_ORIGINAL_VALUE_BYTES]).decode(),
        original_bytes=len(value), original_sha256=hashlib.sha256(value).hexdigest(),
        truncated=truncated,
        kind=unusable.kind.value, reason=unusable.reason[:MAX_REASON_CHARS], consumer=consumer,
        occurred_at=now,
    )


def dead_letter_key(record: ConsumerRecord[bytes, bytes]) -> bytes:
    """Where the record came from: the same record refused twice has the same key."""
    return f"{record.topic}/{record.partition}/{record.offset}".encode()


def stage_dead_letter(publisher: Publisher, record: ConsumerRecord[bytes, bytes], unusable: Unusable,
                      *, consumer: str, now: datetime) -> None:
    """Staged with the consumer's other events: confirmed before its offset is committed."""
    publisher.stage(DEAD_LETTER, dead_letter_entry(record, unusable, consumer=consumer, now=now),
                    key=dead_letter_key(record))
    count(record, unusable, consumer=consumer)


def count(record: ConsumerRecord[bytes, bytes], unusable: Unusable, *, consumer: str) -> None:
    dead_lettered.labels(record.topic, unusable.kind.value).inc()
    log.warning("record dead-lettered", topic=record.topic, partition=record.partition,
                offset=record.offset, consumer=consumer, reason=unusable.kind.value,
                detail=unusable.reason[:300])
