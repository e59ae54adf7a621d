"""Which copy of a send is a repeat: by the table of finished send ids, with a hand-driven clock."""

from __future__ import annotations

import uuid

from sendrail.delivery.repeats import Finished, FinishedSend, RepeatedSends
from sendrail.events import DeliveryStatus
from sendrail.store.changelog import MemoryChangelog
from sendrail.store.entry import encode_entry
from sendrail.store.memory import MemoryTable

DAY_MS = 24 * 3600 * 1000
SEND = uuid.uuid4()


async def _repeats(changelog: MemoryChangelog | None = None) -> tuple[RepeatedSends, MemoryChangelog]:
    changelog = changelog or MemoryChangelog("sends")
    table = MemoryTable(changelog_topic="sends", reader=changelog, retention_ms=7 * DAY_MS)
    await table.start()
    await table.assign({0, 1})
    return RepeatedSends(table), changelog


async def test_a_copy_after_the_first_was_sent_is_a_repeat_naming_it() -> None:
    repeats, changelog = await _repeats()
    assert repeats.lookup(0, SEND, now_ms=0) is None
    repeats.record(FinishedSend(0, 10, SEND, DeliveryStatus.SENT), 0, changelog)
    finished = repeats.lookup(0, SEND, now_ms=1)
    assert finished == Finished(10, "sent") and finished.remembered


async def test_held_mail_is_finished_at_its_offset_but_no_original() -> None:
    """Held mail comes back at a new offset when its connection is reconnected: the same send."""
    repeats, changelog = await _repeats()
    repeats.record(FinishedSend(0, 10, SEND, DeliveryStatus.DEFERRED), 0, changelog)
    finished = repeats.lookup(0, SEND, now_ms=1)
    assert finished == Finished(10, "deferred") and not finished.remembered


async def test_a_failed_send_is_not_tried_again_by_its_repeat() -> None:
    repeats, changelog = await _repeats()
    repeats.record(FinishedSend(1, 5, SEND, DeliveryStatus.FAILED), 0, changelog)
    assert repeats.lookup(1, SEND, now_ms=1) == Finished(5, "failed")


async def test_the_window_is_seven_days() -> None:
    repeats, changelog = await _repeats()
    repeats.record(FinishedSend(0, 10, SEND, DeliveryStatus.SENT), 0, changelog)
    assert repeats.lookup(0, SEND, now_ms=7 * DAY_MS - 1) is not None
    assert repeats.lookup(0, SEND, now_ms=7 * DAY_MS) is None


async def test_another_replica_recovers_what_this_one_finished() -> None:
    first, changelog = await _repeats()
    first.record(FinishedSend(0, 10, SEND, DeliveryStatus.SENT), 0, changelog)
    second, _ = await _repeats(changelog)
    assert second.lookup(0, SEND, now_ms=1) == Finished(10, "sent")


async def test_a_partition_not_owned_is_never_asked() -> None:
    repeats, changelog = await _repeats()
    repeats.record(FinishedSend(5, 10, SEND, DeliveryStatus.SENT), 0, changelog)  # not assigned: not stored
    assert repeats.lookup(5, SEND, now_ms=1) is None
    assert not changelog.records[5]


async def test_a_hostile_changelog_value_is_no_original() -> None:
    changelog = MemoryChangelog("sends")
    changelog.append(0, SEND.bytes, encode_entry(b"not json", 0))
    repeats, _ = await _repeats(changelog)
    assert repeats.lookup(0, SEND, now_ms=1) is None
