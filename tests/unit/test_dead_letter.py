"""Why a record was refused, and an entry that always fits in a Kafka record."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime

import pytest
from aiokafka import ConsumerRecord
from pydantic import ValidationError

from sendrail.bus.codec import encode
from sendrail.bus.dead_letter import (
    MAX_ORIGINAL_VALUE_BYTES,
    Refused,
    Unusable,
    dead_letter_entry,
    dead_letter_key,
    unusable_for,
)
from sendrail.events import EmailRequested

NOW = datetime(2026, 12, 1, tzinfo=UTC)
GOOD = {"idempotency_key": "k", "tenant_id": "acme", "user_id": "ann", "identity": "ann@acme.example",
        "source": "api", "to": ["lee@example.org"], "subject": "Hi", "text": "Hi",
        "requested_at": "2026-12-01T10:00:00Z"}


def _refusal(raw: bytes) -> Unusable:
    with pytest.raises(ValidationError) as raised:
        EmailRequested.model_validate_json(raw)
    return unusable_for(raw, raised.value)


@pytest.mark.parametrize("raw, kind, words", [
    (b"\xff\xfe", Refused.UNDECODABLE, "not a JSON object"),
    (b"[" * 10_000, Refused.UNDECODABLE, "not a JSON object"),
    (b"42", Refused.INVALID, "message"),
    (json.dumps(GOOD | {"to": []}).encode(), Refused.INVALID, "to:"),
    (json.dumps(GOOD | {"schema_version": 2}).encode(), Refused.NEWER_SCHEMA, "schema_version 2"),
    (json.dumps(GOOD | {"schema_version": 1, "to": []}).encode(), Refused.INVALID, "to:"),
], ids=["not UTF-8", "nested too deep", "a number", "invalid field", "newer version",
        "known version, invalid"])
def test_a_refusal_names_its_kind(raw: bytes, kind: Refused, words: str) -> None:
    refusal = _refusal(raw)
    assert refusal.kind is kind
    assert words in refusal.reason


def test_an_error_while_handling_is_named_with_its_type() -> None:
    refusal = unusable_for(b"{}", KeyError("tenant"))
    assert refusal == Unusable(Refused.HANDLING_FAILED, "KeyError: 'tenant'")


def _record(value: bytes, key: bytes | None = b"k") -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic="sendrail.requests", partition=3, offset=42, timestamp=0,
                          timestamp_type=0, key=key, value=value, checksum=None,
                          serialized_key_size=0, serialized_value_size=len(value), headers=())


def test_a_small_record_is_kept_whole() -> None:
    entry = dead_letter_entry(_record(b"abc"), Unusable(Refused.INVALID, "bad"), consumer="c", now=NOW)
    assert base64.b64decode(entry.value_b64) == b"abc" and not entry.truncated
    assert (entry.source_topic, entry.partition, entry.offset) == ("sendrail.requests", 3, 42)
    assert dead_letter_key(_record(b"abc")) == b"sendrail.requests/3/42"


def test_a_large_record_is_kept_truncated_with_its_size_and_digest_and_fits() -> None:
    value = b"x" * 1_000_000
    entry = dead_letter_entry(_record(value, key=b"k" * 100_000), Unusable(Refused.INVALID, "r" * 10**6),
                              consumer="c", now=NOW)
    assert entry.truncated and entry.original_bytes == len(value)
    assert entry.original_sha256 == hashlib.sha256(value).hexdigest()
    assert len(base64.b64decode(entry.value_b64)) == MAX_ORIGINAL_VALUE_BYTES
    assert len(encode(entry)) < 512 * 1024  # far under Kafka's 1 MiB record limit
