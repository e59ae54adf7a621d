"""The sending loop: each connection its own queue, throttled, sent as soon as its limits allow.

The consumer reads a channel topic ahead of what has been sent, so one connection's
backlog never holds up another connection's mail on the same partition; a backlog
beyond a few dozen messages is kept as offsets, not messages. Each connection takes
*turns*: it reserves its sends in the throttle ledger (acknowledged by Kafka before
anything is sent, so a crash or a rebalance never lets a connection burst over its
limits), sends, records the outcome, and is woken again when its windows, a pause or
a backoff allow. Offsets are committed up to the lowest unfinished message of each
partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from pydantic import ValidationError

from sendrail.backoff import backoff_s
from sendrail.bus.codec import decode
from sendrail.bus.dead_letter import Refused, Unusable, stage_dead_letter, unusable_for
from sendrail.bus.publisher import Publisher
from sendrail.bus.refetch import Refetcher
from sendrail.delivery.attempt import Attempted, DeliveryAttempts, Result
from sendrail.delivery.connection_queue import ConnectionQueue, Queued
from sendrail.delivery.policy import ChannelPolicy
from sendrail.delivery.progress import PartitionProgress
from sendrail.delivery.repeats import Original, RepeatedSends
from sendrail.delivery.throttle_state import ConnectionBook, ThrottleStateStore
from sendrail.delivery.throttling import policy_for
from sendrail.events import (
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    DeliveryEvent,
    DeliveryStatus,
    EmailRouted,
    RegistryRecord,
    ThrottleConfigured,
    registry_key,
)
from sendrail.mail.message import message_id_for
from sendrail.metrics import emails_delivered, queue_depth, smtp_send_duration
from sendrail.registry.store import RegistryStore
from sendrail.settings import SenderSettings
from sendrail.throttle import NeverFits
from sendrail.throttle.policy import ThrottlePolicy
from sendrail.topics import DELIVERY, HELD, REGISTRY, connection_key

log = structlog.get_logger(__name__)

ConnectionKey = tuple[str, str]
Clock = Callable[[], datetime]

_UNTHROTTLED = ThrottlePolicy((), None)


@dataclass
class _Connection:
    key: ConnectionKey
    kind: ChannelKind
    queue: ConnectionQueue
    book: ConnectionBook | None = None
    """Taken from the state store at the first turn, once the partition's state is caught up."""
    in_turn: bool = False
    waiting_until_s: float | None = None
    """Set while the connection waits for its limits, a pause or a backoff."""
    announced: set[int] = field(default_factory=set)
    """Offsets whose wait was already published, so a backlog is announced once."""
    arrived_in_turn: list[tuple[int, EmailRouted]] = field(default_factory=list)
    """Arrivals while a turn runs: announced at its end if the connection then waits."""
    failed_turns: int = 0
    """Turns in a row that failed outside any message's handling."""
    retry_at_s: float | None = None
    """When a connection whose turn failed before its book was known may try again."""
    done_offsets: list[int] = field(default_factory=list)
    """Finished in this turn; marked done in the partition's progress once acknowledged."""


class Dispatcher(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, policy: ChannelPolicy, consumer: AIOKafkaConsumer, refetcher: Refetcher,
                 registry: RegistryStore, states: ThrottleStateStore, attempts: DeliveryAttempts,
                 publisher_factory: Callable[[], Publisher], settings: SenderSettings,
                 clock: Clock, repeats: RepeatedSends) -> None:
        self._policy = policy
        self._repeats = repeats
        self._consumer = consumer
        self._refetcher = refetcher
        self._registry = registry
        self._states = states
        self._attempts = attempts
        self._publisher_factory = publisher_factory
        self._settings = settings
        self._clock = clock
        self._connections: dict[ConnectionKey, _Connection] = {}
        self._progress: dict[int, PartitionProgress] = {}
        self._committed: dict[int, int] = {}
        self._due: list[tuple[float, int, ConnectionKey]] = []
        self._sequence = itertools.count()
        self._wake = asyncio.Event()
        self._turns: set[asyncio.Task[None]] = set()
        self._arrivals_to_announce: list[tuple[EmailRouted, float, int]] = []
        self._refusals: list[tuple[ConsumerRecord[bytes, bytes], Unusable]] = []
        self._repeated: list[tuple[ConsumerRecord[bytes, bytes], EmailRouted, Original]] = []
        self._reading_paused = False
        self._assignment_settled = asyncio.Event()
        self._failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Clear while partitions change hands: no turn starts before the state is caught up."""

    # --- the loops -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`; then the turns under way finish and their offsets are committed."""
        loops = [asyncio.create_task(coro) for coro in
                 (self._read(stop), self._dispatch(stop), self._commit_periodically(stop))]
        stopped = asyncio.create_task(stop.wait())
        watched: set[asyncio.Future[Any]] = {*loops, stopped, self._failure}
        try:
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopped:
                    task.result()  # a loop that ended on its own, or a failure: raise it
        finally:
            for task in (*loops, stopped):
                task.cancel()
            await asyncio.gather(*loops, stopped, return_exceptions=True)
            await self._finish_turns()
            await self._commit()

    async def _read(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            fetched = await self._consumer.getmany(timeout_ms=200)
            assigned = self._consumer.assignment()
            for tp, records in fetched.items():
                if tp in assigned:  # else revoked while fetching
                    for record in records:
                        self._accept(record)
            await self._settle_unqueued()
            await self._announce_arrivals()
            self._apply_backpressure()

    async def _dispatch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # No turn starts while partitions change hands: a connection being revoked must not
            # send what its next owner will send.
            await self._assignment_settled.wait()
            now_s = self._clock().timestamp()
            while self._due and self._due[0][0] <= now_s:
                _, _, key = heapq.heappop(self._due)
                connection = self._connections.get(key)
                if connection is not None and not connection.in_turn and len(connection.queue):
                    connection.in_turn = True
                    task = asyncio.create_task(self._turn(connection))
                    self._turns.add(task)
                    task.add_done_callback(self._turns.discard)
            self._wake.clear()
            wait_s = self._due[0][0] - now_s if self._due else 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(max(wait_s, 0.0), 1.0))

    async def _commit_periodically(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self._settings.commit_interval_s)
            await self._commit()
            # Send ids past the deduplication window, a bounded slice at a time.
            self._repeats.expire(self._now_ms(), max_entries=10_000)

    def _schedule(self, connection: _Connection, at_s: float) -> None:
        heapq.heappush(self._due, (at_s, next(self._sequence), connection.key))
        self._wake.set()

    def registry_changed(self, record: RegistryRecord) -> None:
        """New throttle settings, credentials or health: the tenant's queued connections look
        again now instead of at their next scheduled check."""
        if isinstance(record, ThrottleConfigured | ConnectionConfigured | ConnectionHealthChanged):
            now_s = self._clock().timestamp()
            for connection in self._connections.values():
                if connection.key[0] == record.tenant_id and len(connection.queue):
                    self._schedule(connection, now_s)

    # --- reading -------------------------------------------------------------------------

    def _accept(self, record: ConsumerRecord[bytes, bytes]) -> None:
        progress = self._progress.setdefault(record.partition, PartitionProgress())
        progress.consumed(record.offset)
        try:
            routed = decode(EmailRouted, record.value or b"")
        except ValidationError as error:
            self._refusals.append((record, unusable_for(record.value, error)))
            return
        mismatch = self._mismatch(record, routed)
        if mismatch is not None:
            self._refusals.append((record, Unusable(Refused.MISMATCHED, mismatch)))
            return
        original = self._repeats.original_of(record.partition, record.offset, routed.send_id,
                                             self._now_ms())
        if original is not None:
            self._repeated.append((record, routed, original))
            return
        connection = self._connection(routed, record.partition)
        connection.queue.push(record.offset, routed)
        now_s = self._clock().timestamp()
        if connection.in_turn:
            connection.arrived_in_turn.append((record.offset, routed))
        elif connection.waiting_until_s is not None and connection.waiting_until_s > now_s:
            # It joins a queue that is waiting: say so now, even if it stays only a reference.
            connection.announced.add(record.offset)
            self._arrivals_to_announce.append((routed, connection.waiting_until_s, len(connection.queue)))
        if len(connection.queue) == 1 and not connection.in_turn:
            self._schedule(connection, self._clock().timestamp())

    def _mismatch(self, record: ConsumerRecord[bytes, bytes], routed: EmailRouted) -> str | None:
        """Why a routed email cannot be trusted where it was found, or None. A connection's
        queue re-reads its backlog by offset from one partition and sends it with that
        connection's credentials, so its mail must be on that partition under its own key."""
        tenant_id, connection_id = routed.request.tenant_id, routed.connection_id
        if record.key != connection_key(tenant_id, connection_id):
            return f"the key does not name the email's connection {tenant_id}/{connection_id}"
        if routed.channel not in self._policy.kinds:
            return (f"a {routed.channel} email on {record.topic}, which carries "
                    f"{', '.join(sorted(self._policy.kinds))} mail")
        if routed.send_id != routed.request.send_id:
            return "the send id is not the one the request's tenant and idempotency key give"
        queued = self._connections.get((tenant_id, connection_id))
        if queued is not None and queued.queue.partition != record.partition:
            return (f"connection {tenant_id}/{connection_id} is queued from partition "
                    f"{queued.queue.partition}, not {record.partition}")
        return None

    async def _settle_unqueued(self) -> None:
        """What `_accept` did not queue: refused records are dead-lettered, repeats of finished
        sends get their `duplicate` event; their offsets count as done once that is stored."""
        refusals, self._refusals = self._refusals, []
        repeated, self._repeated = self._repeated, []
        if not refusals and not repeated:
            return
        publisher = self._publisher_factory()
        now = self._clock()
        for record, unusable in refusals:
            stage_dead_letter(publisher, record, unusable, consumer=self._policy.service, now=now)
        for _, routed, original in repeated:
            self._emit(publisher, routed, DeliveryStatus.DUPLICATE, None, **self._duplicate_of(original))
        await publisher.confirm()
        for record in [*(r for r, _ in refusals), *(r for r, _, _ in repeated)]:
            self._progress.setdefault(record.partition, PartitionProgress()).finished(record.offset)

    def _duplicate_of(self, original: Original) -> dict[str, object]:
        """The outcome of a repeated send: the `duplicate` event points at the original."""
        where = original.describe(self._policy.topic.name)
        return {"duplicate_of": where,
                "reason": f"the same tenant and idempotency key as the email at {where}, which was "
                          f"{original.status}; not sent again"}

    def _now_ms(self) -> int:
        return int(self._clock().timestamp() * 1000)

    def _connection(self, routed: EmailRouted, partition: int) -> _Connection:
        key = (routed.request.tenant_id, routed.connection_id)
        connection = self._connections.get(key)
        if connection is None:
            connection = _Connection(key, routed.channel, ConnectionQueue(
                partition, loaded_limit=self._settings.loaded_per_connection))
            self._connections[key] = connection
        return connection

    def _apply_backpressure(self) -> None:
        """Stop reading while too much is queued: offsets cost little, but not nothing."""
        queued = sum(len(c.queue) for c in self._connections.values())
        assigned = list(self._consumer.assignment())
        if queued > self._settings.max_queued_messages and not self._reading_paused:
            self._consumer.pause(*assigned)
            self._reading_paused = True
        elif queued <= self._settings.max_queued_messages // 2 and self._reading_paused:
            self._consumer.resume(*assigned)
            self._reading_paused = False
        for kind in self._policy.kinds:
            queue_depth.labels(kind.value).set(
                sum(len(c.queue) for c in self._connections.values() if c.kind is kind))

    async def committed_offset(self, tp: TopicPartition) -> int | None:
        """Where this replica's work on a partition is done: queued mail still counts as lag."""
        return self._committed.get(tp.partition)

    def queue_depths(self, top: int = 50) -> dict[str, int]:
        """The deepest connection queues, for /healthz (a label per connection would not scale)."""
        deepest = sorted(self._connections.values(), key=lambda c: len(c.queue), reverse=True)
        return {f"{c.key[0]}/{c.key[1]}": len(c.queue) for c in deepest[:top] if len(c.queue)}

    # --- turns ---------------------------------------------------------------------------

    async def _turn(self, connection: _Connection) -> None:
        if not self._assignment_settled.is_set() or self._connections.get(connection.key) is not connection:
            # Started just before a rebalance: looked at again once it settles, if still owned.
            connection.in_turn = False
            if self._connections.get(connection.key) is connection:
                self._schedule(connection, self._clock().timestamp())
            return
        publisher = self._publisher_factory()
        next_s: float | None = None
        try:
            await self._load_head(connection)
            record = await self._connection_record(connection)
            book = self._book(connection, record)
            self._skip_finished(connection, book)
            if record is None:
                await self._drain(connection, publisher, None,
                                  f"connection {connection.key[1]} no longer exists; nothing was sent")
            elif (broken := self._registry.view.broken_reason(*connection.key)) is not None:
                await self._drain(connection, publisher, broken, None)
            else:
                next_s = await self._send_turn(connection, record, publisher)
            # The next turn's mail is read while this turn's outcomes are being stored.
            await asyncio.gather(self._confirm(connection, publisher), self._load_head(connection))
            connection.failed_turns = 0
        except Exception:
            log.exception("turn failed; the connection backs off", connection=connection.key[1])
            with contextlib.suppress(Exception):  # a failure to store them ends `run` (_fail)
                await self._confirm(connection, publisher)  # the outcomes decided before it
            connection.failed_turns += 1
            now_s = self._clock().timestamp()
            if connection.book is not None:
                connection.book.throttle.back_off(now_s, jitter=random.random())
            else:  # failed before its book was known (its throttle policy): back off all the same
                connection.retry_at_s = now_s + backoff_s(
                    connection.failed_turns, base_s=self._settings.retry_backoff_base_s,
                    max_s=self._settings.retry_backoff_max_s, jitter=random.random())
        finally:
            connection.in_turn = False
            if len(connection.queue):
                now_s = self._clock().timestamp()
                retry_s = (connection.book.throttle.retry_at_s if connection.book
                           else connection.retry_at_s)
                due_s = next_s if next_s is not None else max(now_s, retry_s or now_s)
                connection.waiting_until_s = due_s if due_s > now_s else None
                if connection.waiting_until_s is not None:
                    for offset, routed in connection.arrived_in_turn:
                        if offset not in connection.announced:
                            connection.announced.add(offset)
                            self._arrivals_to_announce.append((routed, due_s, len(connection.queue)))
                self._schedule(connection, due_s)
            elif self._connections.get(connection.key) is connection:
                del self._connections[connection.key]
            connection.arrived_in_turn.clear()

    async def _confirm(self, connection: _Connection, publisher: Publisher) -> None:
        """The turn's events (and its finished send ids) acknowledged, then its offsets done:
        never committed before. If the broker does not take them, the sender stops and starts
        again from its committed offsets (at-least-once), rather than commit past them."""
        try:
            await publisher.confirm()
        except Exception as error:
            connection.done_offsets.clear()  # not stored: read again after the restart
            self._fail(error)
            raise
        progress = self._progress_for(connection)
        for offset in connection.done_offsets:
            progress.finished(offset)
        connection.done_offsets.clear()

    def _fail(self, error: BaseException) -> None:
        """A failure the loop cannot confine (the bus, a rebalance): `run` raises it."""
        if not self._failure.done():
            self._failure.set_exception(error)

    def _book(self, connection: _Connection, record: ConnectionConfigured | None) -> ConnectionBook:
        policy = policy_for(record, self._registry.view) if record is not None else _UNTHROTTLED
        connection.book = self._states.book(connection.key, policy)
        return connection.book

    def _skip_finished(self, connection: _Connection, book: ConnectionBook) -> None:
        """Messages read again after a restart or a rebalance that were already done."""
        while (head := connection.queue.head()) is not None and head.offset in book.finished:
            if head.routed is None:
                connection.queue.drop_references({head.offset})
            else:
                connection.queue.pop()
            self._progress_for(connection).finished(head.offset)

    async def _send_turn(self, connection: _Connection, record: ConnectionConfigured,
                         publisher: Publisher) -> float | None:
        """Send what the limits allow now; returns when the connection may send again."""
        book = connection.book
        assert book is not None
        now = self._clock()
        now_s = now.timestamp()
        batch: list[Queued] = []
        sends: dict[int, int] = {}
        planner = book.planner()
        limit = self._attempts.sessions_per_connection() * self._settings.messages_per_session_turn
        in_batch: set[uuid.UUID] = set()
        while len(batch) < limit and (head := connection.queue.head()) is not None:
            if head.routed is None:
                break  # loaded at the start of the next turn
            recipients = len(head.routed.request.recipients)
            if head.offset in book.finished:
                self._skip_finished(connection, book)
                continue
            send_id = head.routed.send_id
            if send_id in in_batch:
                break  # a copy of a send in this turn: checked again once that one is finished
            original = self._repeats.original_of(connection.queue.partition, head.offset, send_id,
                                                 int(now_s * 1000))
            if original is not None:
                self._finish(connection, connection.queue.pop(), publisher, DeliveryStatus.DUPLICATE,
                             None, **self._duplicate_of(original))
                continue
            try:
                due_s = planner.next_attempt_s(recipients, now_s)
            except NeverFits as error:
                self._finish(connection, connection.queue.pop(), publisher,
                             DeliveryStatus.FAILED, reason=error.reason)
                continue
            if due_s > now_s:
                if not batch:
                    self._announce_wait(connection, publisher, due_s)
                    return due_s
                break
            planner.sent(now_s, recipients)
            batch.append(connection.queue.pop())
            in_batch.add(send_id)
            sends[head.offset] = recipients
        if not batch:
            await self._save(connection, now, publisher)
            return now_s if len(connection.queue) else None
        book.begin(sends, now_s)
        if book.throttle.policy.limits:
            # Stored before sending: these sends count, whatever follows. (Without limits
            # there is nothing for them to count against; what was finished before this turn
            # is already stored.)
            await self._save(connection, now)
        results = await asyncio.gather(*(self._attempt(item, record) for item in batch))
        done_s = self._clock().timestamp()
        retry = [item for item, attempted in zip(batch, results, strict=True)
                 if not await self._record_outcome(connection, record, item, attempted, publisher, done_s)]
        for item in reversed(retry):
            connection.queue.push_front(item)
        await self._save(connection, self._clock(), publisher)
        return None

    async def _record_outcome(self, connection: _Connection, record: ConnectionConfigured,
                              item: Queued, attempted: Attempted, publisher: Publisher,
                              now_s: float) -> bool:
        """Publish what came of one attempt; False if the message must be tried again."""
        assert item.routed is not None
        book = connection.book
        assert book is not None
        throttle = book.throttle
        match attempted.result:
            case Result.SENT:
                assert attempted.reply is not None
                book.sent(item.offset, now_s)
                refused = "; ".join(f"{a}: {c} {t}" for a, (c, t) in attempted.reply.refused.items())
                self._finish(connection, item, publisher, DeliveryStatus.SENT,
                             message_id=message_id_for(item.routed),
                             reply_code=attempted.reply.code, reply_text=attempted.reply.text,
                             reason=f"refused recipients: {refused}" if refused else None)
            case Result.FAILED:
                self._finish(connection, item, publisher, DeliveryStatus.FAILED, attempted)
            case Result.BROKEN:
                await self._mark_broken(record, attempted.reason or "credentials refused", publisher)
                await self._hold(connection, item, publisher, attempted.reason or "", attempted)
            case Result.PAUSE | Result.RETRY:
                if attempted.result is Result.PAUSE:
                    throttle.pause(now_s, attempted.reason or "quota reached")
                else:
                    throttle.back_off(now_s, jitter=random.random())
                book.release(item.offset)
                resume_s = throttle.next_attempt_s(len(item.routed.request.recipients), now_s)
                self._emit(publisher, item.routed, DeliveryStatus.DEFERRED, attempted,
                           next_attempt_at=datetime.fromtimestamp(resume_s, UTC))
                return False
        return True

    async def _attempt(self, item: Queued, record: ConnectionConfigured) -> Attempted:
        assert item.routed is not None
        started_s = asyncio.get_running_loop().time()
        attempted = await self._attempts.attempt(item.routed, record, self._clock())
        smtp_send_duration.labels(item.routed.channel.value).observe(
            asyncio.get_running_loop().time() - started_s)
        return attempted

    async def _announce_arrivals(self) -> None:
        arrivals, self._arrivals_to_announce = self._arrivals_to_announce, []
        if not arrivals:
            return
        publisher = self._publisher_factory()
        for routed, due_s, position in arrivals:
            self._emit(publisher, routed, DeliveryStatus.DEFERRED,
                       next_attempt_at=datetime.fromtimestamp(due_s, UTC),
                       reason=f"waiting for the connection's sending limits; "
                              f"number {position} in its queue")
        await publisher.send_staged()

    def _announce_wait(self, connection: _Connection, publisher: Publisher, due_s: float) -> None:
        """A `deferred` event, once, for each loaded message that has to wait for the limits."""
        at = datetime.fromtimestamp(due_s, UTC)
        for item in connection.queue.loaded_items():
            if item.offset in connection.announced:
                continue
            assert item.routed is not None
            connection.announced.add(item.offset)
            self._emit(publisher, item.routed, DeliveryStatus.DEFERRED, next_attempt_at=at,
                       reason=f"waiting for the connection's sending limits; "
                              f"{len(connection.queue)} queued, next slot at {at:%H:%M:%S}")

    async def _load_head(self, connection: _Connection) -> None:
        """Reads references again once fewer are loaded than a turn can send, and then as
        many as there is room for: a read is a broker round trip, not one per turn."""
        turn = self._attempts.sessions_per_connection() * self._settings.messages_per_session_turn
        if connection.queue.loaded >= turn:
            return
        offsets = connection.queue.references_to_load()
        if not offsets:
            return
        raw = await self._refetcher.read(connection.queue.partition, offsets)
        loaded: dict[int, EmailRouted] = {}
        for offset, value in raw.items():
            with contextlib.suppress(ValidationError):
                loaded[offset] = decode(EmailRouted, value)
        connection.queue.load(loaded)
        missing = {o for o in offsets if o not in loaded}
        if missing:
            # Gone from the log (retention) or unreadable before their turn: nothing can be sent,
            # and the dead-letter entry says which (their offsets are done once it is stored).
            log.error("queued messages no longer readable", connection=connection.key[1],
                      count=len(missing), offsets=sorted(missing)[:10])
            connection.queue.drop_references(missing)
            for offset in sorted(missing):
                gone = ConsumerRecord(self._policy.topic.name, connection.queue.partition, offset, 0, 0,
                                      connection_key(*connection.key), raw.get(offset, b""), None, 0, 0, ())
                self._refusals.append((gone, Unusable(
                    Refused.HANDLING_FAILED, f"queued for {connection.key[0]}/{connection.key[1]}, but no "
                    "longer readable when its turn came (past the topic's retention?); not sent")))

    async def _connection_record(self, connection: _Connection) -> ConnectionConfigured | None:
        record = self._registry.view.connection(*connection.key)
        if record is None:
            await self._registry.refresh()
            record = self._registry.view.connection(*connection.key)
        return record if record is not None and record.kind in self._policy.kinds else None

    # --- outcomes ------------------------------------------------------------------------

    def _finish(self, connection: _Connection, item: Queued, publisher: Publisher,
                status: DeliveryStatus, attempted: Attempted | None = None,
                **outcome: object) -> None:
        assert item.routed is not None
        if connection.book is not None:
            connection.book.finish(item.offset)
        connection.announced.discard(item.offset)
        connection.done_offsets.append(item.offset)  # done once its event is acknowledged
        self._repeats.finished(connection.queue.partition, item.offset, item.routed.send_id, status,
                               self._now_ms(), publisher)
        self._emit(publisher, item.routed, status, attempted, **outcome)

    async def _drain(self, connection: _Connection, publisher: Publisher, broken: str | None,
                     failure: str | None) -> None:
        """Every loaded message: held (a broken connection) or failed (a removed one)."""
        while (head := connection.queue.head()) is not None and head.routed is not None:
            item = connection.queue.pop()
            if broken is not None:
                await self._hold(connection, item, publisher, broken)
            else:
                self._finish(connection, item, publisher, DeliveryStatus.FAILED, reason=failure)
        await self._save(connection, self._clock(), publisher)

    async def _hold(self, connection: _Connection, item: Queued, publisher: Publisher, reason: str,
                    attempted: Attempted | None = None) -> None:
        """The connection is broken: the mail waits on the held topic until the user reconnects."""
        assert item.routed is not None
        await publisher.publish(HELD, item.routed, key=connection_key(*connection.key))
        self._finish(connection, item, publisher, DeliveryStatus.DEFERRED, attempted,
                     reason=f"held until the user reconnects {connection.key[1]}: {reason}")

    async def _mark_broken(self, record: ConnectionConfigured, reason: str, publisher: Publisher) -> None:
        health = ConnectionHealthChanged(tenant_id=record.tenant_id, connection_id=record.connection_id,
                                         healthy=False, reason=reason, changed_at=self._clock())
        self._registry.view.apply(registry_key(health), health)  # the rest of the queue waits too
        await publisher.publish(REGISTRY, health, key=registry_key(health).encode())
        log.warning("connection broken", tenant=record.tenant_id, connection=record.connection_id,
                    reason=reason)

    def _emit(self, publisher: Publisher, routed: EmailRouted, status: DeliveryStatus,
              attempted: Attempted | None = None, **outcome: object) -> None:
        """Staged on the turn's publisher, which sends a turn's events together."""
        if attempted is not None and attempted.error is not None:
            outcome.setdefault("reason", attempted.error.reason)
            outcome.setdefault("reply_code", attempted.error.reply_code)
            outcome.setdefault("reply_text", attempted.error.reply_text)
        event = DeliveryEvent.for_routed(routed, status, self._clock(), **outcome)
        publisher.stage(DELIVERY, event, key=str(routed.send_id).encode())
        emails_delivered.labels(routed.channel.value, status.value).inc()

    # --- offsets and rebalancing ---------------------------------------------------------

    def _progress_for(self, connection: _Connection) -> PartitionProgress:
        return self._progress.setdefault(connection.queue.partition, PartitionProgress())

    async def _save(self, connection: _Connection, now: datetime,
                    publisher: Publisher | None = None) -> None:
        """Stores the connection's book: at once, or with `publisher`'s events, which the turn
        confirms before it ends (the finished offsets are stored before the next turn, in
        one round trip with the turn's events instead of one more of their own)."""
        # Offsets below the last *committed* one will not be read again, even after a crash.
        committed = self._committed.get(connection.queue.partition, 0)
        if connection.book is None:
            return
        if publisher is None:
            await self._states.save(connection.book, committed, now)
        else:
            await self._states.save_with(publisher, connection.book, committed, now)

    async def _commit(self) -> None:
        offsets = {
            TopicPartition(self._policy.topic.name, partition): committable
            for partition, progress in self._progress.items()
            if (committable := progress.committable()) is not None
            and committable != self._committed.get(partition)
        }
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError):
            return  # a rebalance is under way; the revocation commits
        for tp, offset in offsets.items():
            self._committed[tp.partition] = offset

    async def _finish_turns(self) -> None:
        if self._turns:
            await asyncio.gather(*self._turns, return_exceptions=True)

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Let running turns finish, commit, and forget what the next owner will read again."""
        self._assignment_settled.clear()
        await self._finish_turns()
        await self._commit()
        partitions = {tp.partition for tp in revoked}
        for key, connection in list(self._connections.items()):
            if connection.queue.partition in partitions:
                del self._connections[key]
                self._states.forget(key)
        for partition in partitions:
            self._progress.pop(partition, None)
            self._committed.pop(partition, None)
        self._repeats.revoke(partitions)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """aiokafka only logs what a listener raises: a failure here would leave every turn
        waiting for an assignment that never settles, so it ends `run` instead."""
        try:
            # The previous owner's last reservations must be known before this one sends.
            for tp in assigned:
                self._progress.setdefault(tp.partition, PartitionProgress())
                committed = await self._consumer.committed(tp)
                if committed is not None:
                    self._committed[tp.partition] = committed
            await self._states.caught_up()
            # The send ids finished from these partitions, before any of their mail is read.
            await self._repeats.assign({tp.partition for tp in assigned})
        except Exception as error:
            log.exception("taking over partitions failed; the sender starts again")
            self._fail(error)
            return
        self._assignment_settled.set()
