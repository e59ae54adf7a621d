"""The sending loop on Kafka: reads a channel topic, runs each connection's turns, commits.

The decisions are `SendingLoop`'s; this module does what they need done: decode records
once, read a backlog's references again when their turn comes, store a turn's book before
its sends (acknowledged, so a crash or a rebalance never lets a connection burst over its
limits), hand the messages to the transports, publish each step's outbox and only then
count its offsets as done, and commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeAlias

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from sendrail.bus.codec import decode
from sendrail.bus.dead_letter import Unusable, stage_dead_letter, unusable_for
from sendrail.bus.publisher import Acknowledgements, Publisher, acknowledged
from sendrail.bus.refetch import Refetcher
from sendrail.delivery.loop import (
    UNTHROTTLED,
    LoopSettings,
    Outbox,
    SendingLoop,
    parse_connection_key,
)
from sendrail.delivery.outcome import Outcome
from sendrail.delivery.policy import ChannelPolicy
from sendrail.delivery.repeats import RepeatedSends
from sendrail.delivery.throttle_state import ThrottleStateStore
from sendrail.delivery.throttling import policy_for
from sendrail.delivery.transport import OutgoingMessage, Transport, Transports
from sendrail.events import (
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    EmailRouted,
    RegistryRecord,
    ThrottleConfigured,
    registry_key,
)
from sendrail.metrics import emails_delivered, queue_depth, smtp_send_duration
from sendrail.registry.store import RegistryStore
from sendrail.settings import SenderSettings
from sendrail.topics import DELIVERY, HELD, REGISTRY, connection_key

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
RawRecord: TypeAlias = "ConsumerRecord[bytes, bytes]"


def loop_settings(settings: SenderSettings, sessions_per_connection: int) -> LoopSettings:
    return LoopSettings(
        loaded_per_connection=settings.loaded_per_connection,
        max_decoded_messages=settings.max_decoded_messages,
        turn_size=sessions_per_connection * settings.messages_per_session_turn,
        max_queued_age_s=settings.max_queued_age_s,
        max_queued_messages=settings.max_queued_messages,
        retry_backoff_base_s=settings.retry_backoff_base_s,
        retry_backoff_max_s=settings.retry_backoff_max_s)


class KafkaSendingLoop(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, policy: ChannelPolicy, consumer: AIOKafkaConsumer, refetcher: Refetcher,
                 registry: RegistryStore, states: ThrottleStateStore, transports: Transports,
                 publisher_factory: Callable[[], Publisher], settings: SenderSettings,
                 clock: Clock, repeats: RepeatedSends) -> None:
        self._policy = policy
        self._consumer = consumer
        self._refetcher = refetcher
        self._registry = registry
        self._states = states
        self._transports = transports
        self._publisher_factory = publisher_factory
        self._settings = settings
        self._clock = clock
        self._repeats = repeats
        self.loop = SendingLoop(
            topic=policy.topic.name, kinds=policy.kinds, books=states.books, repeats=repeats,
            settings=loop_settings(settings, transports.sessions_per_connection()))
        self._wake = asyncio.Event()
        self._turns: set[asyncio.Task[None]] = set()
        self._confirming: set[asyncio.Task[None]] = set()
        """Outboxes handed to the producer whose acknowledgements are awaited."""
        self._reading_paused = False
        self._assignment_settled = asyncio.Event()
        """Clear while partitions change hands: no turn starts before the state is caught up."""
        self._failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for kind in policy.kinds:  # counted when scraped, not on every fetch
            queue_depth.labels(kind.value).set_function(functools.partial(self._queued_of, kind))

    # --- the loops -------------------------------------------------------------------

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
            await self._store_books(None)
            await self._commit()

    async def _read(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            fetched = await self._consumer.getmany(timeout_ms=200)
            assigned = self._consumer.assignment()
            now_s = self._now_s()
            records: dict[tuple[int, int], RawRecord] = {}
            for tp, batch in fetched.items():
                if tp not in assigned:
                    continue  # revoked while fetching
                for record in batch:
                    records[(record.partition, record.offset)] = record
                    self._accept(record, now_s)
            intake, self.loop.intake = self.loop.intake, Outbox()
            if intake:
                await self._publish(intake, records.get)
            self._apply_backpressure()
            self._wake.set()

    def _accept(self, record: RawRecord, now_s: float) -> None:
        key = parse_connection_key(record.key)
        if not self.loop.wants_decoded(key):
            assert key is not None
            self.loop.accept_reference(record.partition, record.offset, key, now_s)
            return
        self.loop.accept(record.partition, record.offset, key, _decoded(record.value), now_s)

    async def _dispatch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # No turn starts while partitions change hands: a connection being revoked must not
            # send what its next owner will send.
            await self._assignment_settled.wait()
            now_s = self._now_s()
            room = self._settings.max_concurrent_turns - len(self._turns)
            for key in self.loop.due(now_s, limit=room):
                task = asyncio.create_task(self._turn(key))
                self._turns.add(task)
                task.add_done_callback(self._turns.discard)
            self._wake.clear()
            next_s = self.loop.next_due_s()
            wait_s = next_s - now_s if next_s is not None else 1.0
            if len(self._turns) >= self._settings.max_concurrent_turns:
                wait_s = 1.0  # the end of a running turn wakes this loop
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(max(wait_s, 0.0), 1.0))

    async def _commit_periodically(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self._settings.commit_interval_s)
            await self._commit()
            # Send ids past the deduplication window, a bounded slice at a time.
            self._repeats.expire(int(self._now_s() * 1000), max_entries=10_000)
            await self._transports.close_idle()

    def registry_changed(self, record: RegistryRecord) -> None:
        if isinstance(record, ThrottleConfigured | ConnectionConfigured | ConnectionHealthChanged):
            self.loop.tenant_changed(record.tenant_id, self._now_s())
            self._wake.set()

    # --- a turn ----------------------------------------------------------------------

    async def _turn(self, key: tuple[str, str]) -> None:
        due_s: float | None = None
        failed = False
        reading: asyncio.Task[dict[int, bytes]] | None = None
        try:
            partition, offsets = self.loop.references_to_load(key)
            raw = await self._refetcher.read(partition, offsets)
            loaded = self._load(key, offsets, raw)
            record = await self._connection_record(key)
            view = self._registry.view
            policy = policy_for(record, view) if record is not None else UNTHROTTLED
            max_bytes = min(self._policy.max_message_bytes,
                            (record.max_message_bytes if record else None) or self._policy.max_message_bytes)
            turn = self.loop.plan_turn(key, record, policy, view.broken_reason(*key), self._now_s(),
                                       max_bytes)
            due_s = turn.due_s
            if turn.sends:
                assert record is not None
                if turn.booked is not None:
                    await self._states.save(turn.booked)  # these sends count, whatever follows
                # The next turn's references are read while this one sends, not after it.
                _, ahead = self.loop.references_to_load(key)
                if ahead:
                    reading = asyncio.create_task(self._refetcher.read(partition, ahead))
                outcomes = await self._send_all(record, [message for _, message in turn.sends])
                self.loop.complete_turn(turn, outcomes, self._now_s())
                due_s = turn.due_s
            loaded.extend(turn.outbox)
            await self._publish(loaded, lambda at: _refetched(self._policy.topic.name, key, at, raw))
        except Exception:
            log.exception("turn failed; the connection backs off", connection=key[1])
            failed = True
        finally:
            if reading is not None:
                await self._read_ahead(key, partition, ahead, reading, cancel=failed)
            self.loop.end_turn(key, self._now_s(), due_s=due_s, failed=failed)
            self._turns.discard(asyncio.current_task())  # room for the next
            self._wake.set()

    async def _read_ahead(self, key: tuple[str, str], partition: int, offsets: list[int],
                          reading: asyncio.Task[dict[int, bytes]], *, cancel: bool) -> None:
        """Loads what was read while the turn sent, once the turn's own outbox is published.
        Never raises: if the read failed, the references stay unloaded and the next turn
        reads them; the turn's sends are settled either way."""
        if cancel:
            reading.cancel()
        try:
            raw = await reading
            outbox = self._load(key, offsets, raw)
            if outbox:
                await self._publish(outbox,
                                    lambda at: _refetched(self._policy.topic.name, key, at, raw))
        except asyncio.CancelledError:
            if not cancel:
                raise
        except Exception:
            log.warning("reading the next turn's messages failed; the next turn reads them",
                        connection=key[1], partition=partition, exc_info=True)

    def _load(self, key: tuple[str, str], offsets: list[int], raw: dict[int, bytes]) -> Outbox:
        return self.loop.load(key, offsets, {o: _decoded(v) for o, v in raw.items()}, self._now_s())

    async def _send_all(self, record: ConnectionConfigured, messages: list[OutgoingMessage]) -> list[Outcome]:
        transport = self._transports.for_connection(record)
        if isinstance(transport, Outcome):
            return [transport] * len(messages)
        return list(await asyncio.gather(*(self._send(transport, m) for m in messages)))

    async def _send(self, transport: Transport, message: OutgoingMessage) -> Outcome:
        """Never raises: an unexpected failure fails this message alone (retried, it could block
        its queue for good, and it may have reached the server already)."""
        started_s = asyncio.get_running_loop().time()
        try:
            outcome = await transport.send(message)
        except Exception as error:
            log.exception("unexpected failure while sending")
            outcome = Outcome.failed(f"unexpected failure while sending: {type(error).__name__}: {error}")
        smtp_send_duration.labels(self._policy.service).observe(
            asyncio.get_running_loop().time() - started_s)
        return outcome

    async def _connection_record(self, key: tuple[str, str]) -> ConnectionConfigured | None:
        record = self._registry.view.connection(*key)
        if record is None:
            await self._registry.refresh()
            record = self._registry.view.connection(*key)
        return record if record is not None and record.kind in self._policy.kinds else None

    # --- publishing an outbox --------------------------------------------------------

    async def _publish(self, outbox: Outbox,
                       record_at: Callable[[tuple[int, int]], RawRecord | None]) -> None:
        """Everything the step decided, handed to the producer; its offsets are done once the
        broker has acknowledged all of it, which the next turn does not wait for (the commit
        does). If the broker does not take it, the sender stops and starts again from its
        committed offsets (at-least-once), rather than commit past it."""
        publisher = self._publisher_factory()
        now = self._clock()
        now_ms = int(now.timestamp() * 1000)
        for partition, offset, unusable in outbox.refused:
            record = record_at((partition, offset)) or _refetched(
                self._policy.topic.name, None, (partition, offset), {})
            stage_dead_letter(publisher, record, unusable, consumer=self._policy.service, now=now)
        for health in outbox.health:  # before the held mail: the router must see it broken
            self._registry.view.apply(registry_key(health), health)  # the rest of the queue waits too
            publisher.stage(REGISTRY, health, key=registry_key(health).encode())
            log.warning("connection broken", tenant=health.tenant_id,
                        connection=health.connection_id, reason=health.reason)
        for routed in outbox.held:
            publisher.stage(HELD, routed, key=connection_key(routed.request.tenant_id,
                                                             routed.connection_id))
        for state in outbox.states:
            self._states.save_with(publisher, state)
        for finished in outbox.finished:
            self._repeats.record(finished, now_ms, publisher)
        for event in outbox.events:
            publisher.stage(DELIVERY, event, key=str(event.send_id).encode())
            emails_delivered.labels(str(event.channel), event.status.value).inc()
        try:
            pending = await publisher.take_acknowledgements()
        except Exception as error:
            self._fail(error)  # not handed over: what it covers must be done again
            raise
        confirming = asyncio.create_task(self._acknowledge(pending, outbox.done))
        self._confirming.add(confirming)
        confirming.add_done_callback(self._confirming.discard)

    async def _acknowledge(self, pending: Acknowledgements, done: list[tuple[int, int]]) -> None:
        try:
            await acknowledged(pending)
        except Exception as error:
            self._fail(error)
            return
        self.loop.acknowledge(done)

    # --- offsets and rebalancing -----------------------------------------------------

    def _apply_backpressure(self) -> None:
        """Stop reading while too much is queued: offsets cost little, but not nothing."""
        queued = self.loop.queued
        assigned = list(self._consumer.assignment())
        if queued > self._settings.max_queued_messages and not self._reading_paused:
            self._consumer.pause(*assigned)
            self._reading_paused = True
        elif queued <= self._settings.max_queued_messages // 2 and self._reading_paused:
            self._consumer.resume(*assigned)
            self._reading_paused = False

    def _queued_of(self, kind: ChannelKind) -> int:
        return self.loop.queued_by_kind().get(kind, 0)

    async def committed_offset(self, tp: TopicPartition) -> int | None:
        """Where this replica's work on a partition is done: queued mail still counts as lag."""
        return self.loop.committed_offset(tp.partition)

    def queue_depths(self) -> dict[str, int]:
        return self.loop.queue_depths()

    async def _commit(self) -> None:
        committable = self.loop.committable()
        if not committable:
            return
        topic = self._policy.topic.name
        try:
            await self._consumer.commit({TopicPartition(topic, p): o for p, o in committable.items()})
        except (CommitFailedError, IllegalStateError):
            return  # a rebalance is under way; the revocation commits
        for partition, offset in committable.items():
            self.loop.committed(partition, offset)

    async def _store_books(self, partitions: set[int] | None) -> None:
        """What the last turns changed, for the next owner: best effort (if the broker does not
        take it, the next owner counts the in-flight sends at the latest they can have gone)."""
        states = self.loop.books_to_store(partitions, self._now_s())
        if states:
            publisher = self._publisher_factory()
            for state in states:
                self._states.save_with(publisher, state)
            try:
                await publisher.confirm()
            except Exception:
                log.exception("the connections' books could not be stored", count=len(states))

    async def _finish_turns(self) -> None:
        """The turns under way, and the acknowledgements of what they published."""
        if self._turns:
            await asyncio.gather(*self._turns, return_exceptions=True)
        if self._confirming:
            await asyncio.gather(*self._confirming, return_exceptions=True)

    def _fail(self, error: BaseException) -> None:
        """A failure the loop cannot confine (the bus, a rebalance): `run` raises it."""
        if not self._failure.done():
            self._failure.set_exception(error)

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Let running turns finish, commit, and forget what the next owner will read again."""
        self._assignment_settled.clear()
        await self._finish_turns()
        partitions = {tp.partition for tp in revoked}
        await self._store_books(partitions)
        await self._commit()
        self.loop.revoked(partitions)
        self._repeats.revoke(partitions)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """aiokafka only logs what a listener raises: a failure here would leave every turn
        waiting for an assignment that never settles, so it ends `run` instead."""
        try:
            partitions = {tp.partition for tp in assigned}
            self.loop.assigned(partitions)
            for tp in assigned:
                committed = await self._consumer.committed(tp)
                if committed is not None:
                    self.loop.committed(tp.partition, committed)
            # The previous owner's last reservations must be known before this one sends,
            await self._states.caught_up()
            # and the send ids finished from these partitions, before any of their mail is read.
            await self._repeats.assign(partitions)
        except Exception as error:
            log.exception("taking over partitions failed; the sender starts again")
            self._fail(error)
            return
        self._assignment_settled.set()

    def _now_s(self) -> float:
        return self._clock().timestamp()


def _decoded(value: bytes | None) -> EmailRouted | Unusable:
    """Whatever a hostile record makes decoding raise, it is that record's failure."""
    try:
        return decode(EmailRouted, value or b"")
    except Exception as error:
        return unusable_for(value, error)


def _refetched(topic: str, key: tuple[str, str] | None, at: tuple[int, int],
               raw: dict[int, bytes]) -> RawRecord:
    """A record read again by offset, as the dead-letter entry wants it."""
    partition, offset = at
    record: RawRecord = ConsumerRecord(topic, partition, offset, 0, 0,
                                       connection_key(*key) if key else None,
                                       raw.get(offset, b""), None, 0, 0, ())
    return record

