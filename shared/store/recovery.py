"""Reading a changelog back into a table: which records are used, which are skipped and why.

A changelog is written by sendrail, but a topic accepts anything anyone produces to
it: a record without a key, with a value of an unknown format or cut short is skipped
and counted, never the end of recovery.
"""

from __future__ import annotations

from typing import NamedTuple

import structlog

from sendrail.store.entry import MalformedEntry, decode_entry
from sendrail.store.protocol import ChangelogRecord

log = structlog.get_logger(__name__)

LOGGED_PER_RECOVERY = 10
"""Skipped records logged one by one per recovery; the rest only counted, so a flood of
bad records does not flood the log."""


class Change(NamedTuple):
    key: bytes
    entry: bytes | None
    """The encoded entry as stored, or None: the key was deleted."""
    written_at_ms: int
    """-1 for a deletion."""


class SkippedRecords:
    def __init__(self, topic_name: str) -> None:
        self.topic_name = topic_name
        self.total = 0
        self._logged = 0

    def new_recovery(self) -> None:
        self._logged = 0

    def skip(self, partition: int, offset: int, reason: str) -> None:
        self.total += 1
        if self._logged < LOGGED_PER_RECOVERY:
            self._logged += 1
            log.warning("changelog record skipped", topic=self.topic_name, partition=partition,
                        offset=offset, reason=reason)


def changes(partition: int, records: list[ChangelogRecord], skipped: SkippedRecords) -> list[Change]:
    """The usable records of a fetched batch, in order."""
    usable: list[Change] = []
    for offset, key, value in records:
        if not key:
            skipped.skip(partition, offset, "no key")
            continue
        if value is None:
            usable.append(Change(key, None, -1))
            continue
        try:
            written_at_ms, _ = decode_entry(value)
        except MalformedEntry as error:
            skipped.skip(partition, offset, str(error))
            continue
        usable.append(Change(key, value, written_at_ms))
    return usable
