"""A partition's progress: commit up to the lowest unfinished offset, whatever the order."""

from __future__ import annotations

import heapq

from hypothesis import given, settings
from hypothesis import strategies as st

from sendrail.delivery.progress import PartitionProgress


class Reference:
    """The plain model: a set of unfinished offsets."""

    def __init__(self) -> None:
        self.unfinished: set[int] = set()
        self.next_offset: int | None = None

    def consumed(self, offset: int) -> None:
        self.unfinished.add(offset)
        if self.next_offset is None or offset >= self.next_offset:
            self.next_offset = offset + 1

    def finished(self, offset: int) -> None:
        self.unfinished.discard(offset)

    def committable(self) -> int | None:
        return heapq.nsmallest(1, self.unfinished)[0] if self.unfinished else self.next_offset


steps = st.lists(st.tuples(st.sampled_from(["consume", "finish", "commit"]),
                           st.integers(0, 60)), max_size=120)


@settings(max_examples=500, deadline=None)
@given(start=st.integers(0, 10**12), actions=steps)
def test_progress_matches_the_plain_model(start: int, actions: list[tuple[str, int]]) -> None:
    progress, reference = PartitionProgress(), Reference()
    for action, delta in actions:
        offset = start + delta
        if action == "consume":
            progress.consumed(offset)
            reference.consumed(offset)
        elif action == "finish":
            progress.finished(offset)
            reference.finished(offset)
        assert progress.committable() == reference.committable()
        assert progress.unfinished == len(reference.unfinished)


def test_nothing_read_commits_nothing() -> None:
    assert PartitionProgress().committable() is None


def test_gaps_in_the_log_do_not_hold_the_commit() -> None:
    progress = PartitionProgress()
    for offset in (5, 7, 9):  # 6 and 8 are, say, transaction markers
        progress.consumed(offset)
    progress.finished(5)
    assert progress.committable() == 7
    progress.finished(7)
    progress.finished(9)
    assert progress.committable() == 10 and progress.unfinished == 0
