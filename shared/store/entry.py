"""A table entry as its changelog carries it: a value stamped with its write time."""

from __future__ import annotations

import struct

from pydantic import BaseModel

FORMAT = 1
"""Raised if the layout changes; a reader skips entries of a format it does not know."""

_HEADER = struct.Struct(">BQ")
"""Format (1 byte), then the write time in ms since the epoch (8 bytes, big-endian)."""

HEADER_BYTES = _HEADER.size
MAX_TIME_MS = 2**63 - 1


class MalformedEntry(ValueError):
    """Bytes that are not an entry of a known format."""


class TableEntry(BaseModel):
    """What a changelog record's value holds. On the wire it is binary, not JSON: a format
    byte (now 1), the write time in ms since the epoch (8 bytes, big-endian), then the
    value's bytes; the record's key is the table's key. Binary keeps records small and
    recovery fast."""

    written_at_ms: int
    value: bytes


def encode_entry(value: bytes, written_at_ms: int) -> bytes:
    if not 0 <= written_at_ms <= MAX_TIME_MS:
        raise ValueError(f"write time out of range: {written_at_ms} ms")
    return _HEADER.pack(FORMAT, written_at_ms) + value


def decode_entry(raw: bytes) -> tuple[int, bytes]:
    """(written_at_ms, value); raises MalformedEntry."""
    if len(raw) < HEADER_BYTES:
        raise MalformedEntry(f"{len(raw)} bytes, shorter than the {HEADER_BYTES}-byte header")
    version, written_at_ms = _HEADER.unpack_from(raw)
    if version != FORMAT:
        raise MalformedEntry(f"unknown format {version}")
    if written_at_ms > MAX_TIME_MS:
        raise MalformedEntry(f"write time out of range: {written_at_ms} ms")
    return written_at_ms, raw[HEADER_BYTES:]


def written_at_ms(raw: bytes) -> int:
    """The write time of an entry known to be well formed (one this table stored)."""
    return int(_HEADER.unpack_from(raw)[1])
