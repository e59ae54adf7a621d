"""A connection's queue: decoded head, references behind it, loaded in order."""

from __future__ import annotations

from datetime import UTC, datetime

from sendrail.delivery.connection_queue import ConnectionQueue, DecodedBudget, Queued
from sendrail.events import ChannelKind, EmailRequested, EmailRouted, Source

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def routed(n: int) -> EmailRouted:
    request = EmailRequested(idempotency_key=f"k{n}", tenant_id="acme", user_id="ann",
                             identity="ann@acme.example", source=Source.API, to=["a@example.org"],
                             subject="Hi", text="x", requested_at=T0)
    return EmailRouted(send_id=request.send_id, channel=ChannelKind.CUSTOM_SMTP,
                       connection_id="c1", request=request, routed_at=T0)


def test_only_the_first_messages_stay_decoded() -> None:
    queue = ConnectionQueue(loaded_limit=2)
    for offset in (10, 11, 12, 13):
        queue.push(offset, routed(offset))
    assert len(queue) == 4 and queue.loaded == 2
    assert [i.offset for i in queue.loaded_items()] == [10, 11]
    assert queue.references_to_load() == []


def test_references_are_loaded_in_order_as_room_frees() -> None:
    queue = ConnectionQueue(loaded_limit=2)
    for offset in (10, 11, 12, 13, 14):
        queue.push(offset, routed(offset))
    assert queue.pop().offset == 10
    assert queue.references_to_load() == [12]
    assert queue.pop().offset == 11
    assert queue.references_to_load() == [12, 13]
    queue.load({13: routed(13)})  # 12 missing: nothing after it is loaded either
    assert queue.loaded == 0
    head = queue.head()
    assert head is not None and head.offset == 12 and head.routed is None
    queue.load({12: routed(12), 13: routed(13)})
    assert [i.offset for i in queue.loaded_items()] == [12, 13]
    assert len(queue) == 3


def test_a_message_pushed_while_references_wait_becomes_a_reference() -> None:
    queue = ConnectionQueue(loaded_limit=1)
    queue.push(1, routed(1))
    queue.push(2, routed(2))
    queue.pop()
    queue.push(3, routed(3))  # room, but 2 is still a reference: order is kept
    assert queue.loaded == 0 and queue.references_to_load() == [2]


def test_a_repeated_attempt_goes_back_to_the_head() -> None:
    queue = ConnectionQueue(loaded_limit=2)
    queue.push(1, routed(1))
    queue.push(2, routed(2))
    item = queue.pop()
    queue.push_front(item)
    assert queue.head() == item and len(queue) == 2


def test_unreadable_references_are_dropped() -> None:
    queue = ConnectionQueue(loaded_limit=1)
    for offset in (1, 2, 3):
        queue.push(offset, routed(offset))
    queue.drop_references({2})
    queue.pop()
    assert queue.references_to_load() == [3]
    assert isinstance(queue.head(), Queued)


def test_queues_share_one_budget_of_decoded_messages() -> None:
    budget = DecodedBudget(limit=3)
    first, second = (ConnectionQueue(loaded_limit=10, budget=budget) for _ in range(2))
    for offset in (1, 2, 3, 4):
        first.push(offset, routed(offset))
    for offset in (10, 11, 12):
        second.push(offset, routed(offset))  # past the budget: references
    assert (first.loaded, second.loaded, budget.used) == (3, 0, 3)

    # A turn of two reads what it sends, budget or not; nothing more.
    assert second.references_to_load(at_least=2) == [10, 11]
    second.load({10: routed(10), 11: routed(11)})
    assert budget.used == 5
    for _ in range(3):
        first.pop()
    assert budget.used == 2 and first.references_to_load() == [4]  # room again
    second.release()
    assert budget.used == 0


def test_an_overspent_budget_is_shed_from_the_tail_but_a_tried_message_stays_decoded() -> None:
    budget = DecodedBudget(limit=1)
    queue = ConnectionQueue(loaded_limit=10, budget=budget)
    queue.push(1, routed(1))
    queue.load({})  # nothing to load
    tried = Queued(0, routed(0), last_try="421 try again later")
    queue.push_front(tried)
    assert budget.used == 2

    queue.shed()

    assert budget.used == 1 and queue.loaded_items() == [tried]
    assert queue.references_to_load(at_least=2) == [1]  # in order, behind the tried one
