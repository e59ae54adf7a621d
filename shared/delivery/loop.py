"""The sending loop's decisions: each connection its own queue, throttled, sent as soon as its
limits allow. Pure: state and `now_s` in, decisions and events out; the Kafka adapter
(`kafka_adapter.py`) does the reading, storing and sending.

A connection takes *turns*. `plan_turn` says what its limits let it send now, and what
finishes without sending (a repeat, an expired or unsendable message, a removed or broken
connection); the adapter stores the turn's book (the sends counted before they go), hands
the messages to the transport and gives the outcomes to `complete_turn`, which says what
each means for the message, the connection and its book. Each step's events, dead letters
and finished offsets are collected in an `Outbox`; its offsets count as done only when the
adapter has had all of it acknowledged (`acknowledge`), and a partition is committed up to
its lowest unfinished offset.
"""

from __future__ import annotations

import heapq
import itertools
import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sendrail.backoff import backoff_s
from sendrail.bus.dead_letter import Refused, Unusable
from sendrail.delivery.books import BookShelf, ConnectionBook, ConnectionKey
from sendrail.delivery.connection_queue import ConnectionQueue, DecodedBudget, Queued
from sendrail.delivery.outcome import Outcome, OutcomeKind
from sendrail.delivery.progress import PartitionProgress
from sendrail.delivery.repeats import FinishedSend, RepeatedSends
from sendrail.delivery.transport import OutgoingMessage
from sendrail.errors import DeliveryError
from sendrail.events import (
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    DeliveryEvent,
    DeliveryStatus,
    EmailRouted,
    ThrottleStateRecorded,
)
from sendrail.mail.message import build_message, message_id_for
from sendrail.throttle import NeverFits
from sendrail.throttle.policy import ThrottlePolicy
from sendrail.validation import is_identifier

UNTHROTTLED = ThrottlePolicy((), None)
Jitter = Callable[[], float]
"""A draw from [0, 1), to spread retries."""


@dataclass(frozen=True)
class LoopSettings:
    loaded_per_connection: int
    """Messages per connection kept decoded; the rest of a backlog stays in Kafka."""
    max_decoded_messages: int
    """Messages kept decoded by all connections together, give or take what running turns
    hold (see `DecodedBudget`). A connection's first record is decoded to be checked even
    past it, then kept as an offset; later ones past it are not decoded at all."""
    turn_size: int
    """At most this many messages per turn (sessions times messages per session)."""
    max_queued_age_s: float
    """A message still unsent this long after it was routed fails as expired."""
    max_queued_messages: int
    retry_backoff_base_s: float
    retry_backoff_max_s: float


@dataclass
class Outbox:
    """What one step decided: to be published together. Its `done` offsets are finished
    once all of it is acknowledged, never before."""

    events: list[DeliveryEvent] = field(default_factory=list)
    refused: list[tuple[int, int, Unusable]] = field(default_factory=list)
    """(partition, offset, why): dead-lettered with the record's original bytes."""
    finished: list[FinishedSend] = field(default_factory=list)
    held: list[EmailRouted] = field(default_factory=list)
    """For the held topic, until the user reconnects the connection."""
    health: list[ConnectionHealthChanged] = field(default_factory=list)
    states: list[ThrottleStateRecorded] = field(default_factory=list)
    """Books stored with the events (a pause the next owner must know)."""
    done: list[tuple[int, int]] = field(default_factory=list)

    def extend(self, other: Outbox) -> None:
        for name in ("events", "refused", "finished", "held", "health", "states", "done"):
            getattr(self, name).extend(getattr(other, name))

    def __bool__(self) -> bool:
        return bool(self.events or self.refused or self.finished or self.held or self.health
                    or self.states or self.done)


@dataclass
class Turn:
    key: ConnectionKey
    partition: int
    connection: ConnectionConfigured | None
    book: ConnectionBook
    sends: list[tuple[Queued, OutgoingMessage]] = field(default_factory=list)
    booked: ThrottleStateRecorded | None = None
    """The book with these sends in flight: stored and acknowledged before anything is sent."""
    outbox: Outbox = field(default_factory=Outbox)
    due_s: float | None = None
    """When the connection may take its next turn (None: as soon as it has mail)."""


@dataclass
class _Connection:
    key: ConnectionKey
    partition: int
    queue: ConnectionQueue
    kind: ChannelKind | None = None
    book: ConnectionBook | None = None
    """Taken from the shelf at the first turn, once the partition's state is caught up."""
    in_turn: bool = False
    waiting_until_s: float | None = None
    """Set while the connection waits for its limits, a pause or a backoff."""
    announced: set[int] = field(default_factory=set)
    """Offsets whose wait was already published, so a backlog is announced once."""
    arrived_in_turn: list[Queued] = field(default_factory=list)
    failed_turns: int = 0
    retry_at_s: float | None = None
    """When a connection whose turn failed before its book was known may try again."""


def parse_connection_key(key: bytes | None) -> ConnectionKey | None:
    """The (tenant, connection) an outbound record's key names, or None if it names none."""
    if key is None:
        return None
    try:
        tenant_id, _, connection_id = key.decode().partition("/")
    except UnicodeDecodeError:
        return None
    if is_identifier(tenant_id) and is_identifier(connection_id):
        return tenant_id, connection_id
    return None


class SendingLoop:
    def __init__(self, *, topic: str, kinds: frozenset[ChannelKind], books: BookShelf,
                 repeats: RepeatedSends, settings: LoopSettings, jitter: Jitter = random.random
                 ) -> None:
        self._topic = topic
        self._kinds = kinds
        self._books = books
        self._repeats = repeats
        self._settings = settings
        self._jitter = jitter
        self._connections: dict[ConnectionKey, _Connection] = {}
        self._progress: dict[int, PartitionProgress] = {}
        self._committed: dict[int, int] = {}
        self._due: list[tuple[float, int, ConnectionKey]] = []
        self._sequence = itertools.count()
        self._queued = 0
        self._decoded = DecodedBudget(limit=settings.max_decoded_messages)
        self._unsaved: dict[ConnectionKey, int] = {}
        """Connections (-> partition) whose book changed since it was last stored."""
        self.intake = Outbox()
        """What reading decided: taken and published by the adapter after each fetch."""

    # --- intake ----------------------------------------------------------------------

    def wants_decoded(self, key: ConnectionKey | None) -> bool:
        """False when the record would only be a reference: it is decoded once, when loaded."""
        connection = self._connections.get(key) if key is not None else None
        return connection is None or connection.queue.has_room_loaded()

    def accept(self, partition: int, offset: int, key: ConnectionKey | None,
               routed: EmailRouted | Unusable, now_s: float) -> None:
        """A record read from the topic: queued, or settled in `intake`."""
        self._progress_of(partition).consumed(offset)
        if isinstance(routed, Unusable):
            self._refuse(self.intake, partition, offset, routed)
            return
        mismatch = self._mismatch(partition, key, routed)
        if mismatch is not None:
            self._refuse(self.intake, partition, offset, Unusable(Refused.MISMATCHED, mismatch))
            return
        if self._settled_repeat(self.intake, partition, offset, routed, now_s):
            return
        assert key is not None  # no mismatch
        connection = self._connection(key, partition)
        connection.kind = routed.channel
        connection.queue.push(offset, routed)
        self._arrived(connection, Queued(offset, routed), now_s)

    def accept_reference(self, partition: int, offset: int, key: ConnectionKey, now_s: float) -> None:
        """A record queued behind its connection's loaded messages, not decoded yet."""
        self._progress_of(partition).consumed(offset)
        connection = self._connections.get(key)
        if connection is None or connection.partition != partition:
            self._refuse(self.intake, partition, offset, Unusable(
                Refused.MISMATCHED, f"connection {key[0]}/{key[1]} is queued from another partition"))
            return
        connection.queue.push_reference(offset)
        self._arrived(connection, Queued(offset, None), now_s)

    def _arrived(self, connection: _Connection, item: Queued, now_s: float) -> None:
        self._queued += 1
        if connection.in_turn:
            connection.arrived_in_turn.append(item)
        elif (connection.waiting_until_s is not None and connection.waiting_until_s > now_s
              and item.routed is not None):
            # It joins a queue that is waiting: say so now.
            connection.announced.add(item.offset)
            self.intake.events.append(self._waiting(item.routed, connection.waiting_until_s,
                                                    len(connection.queue), now_s))
        if len(connection.queue) == 1 and not connection.in_turn:
            self._schedule(connection, now_s)

    def _mismatch(self, partition: int, key: ConnectionKey | None, routed: EmailRouted) -> str | None:
        """Why a routed email cannot be trusted where it was found, or None. A connection's
        queue re-reads its backlog by offset from one partition and sends it with that
        connection's credentials, so its mail must be on that partition under its own key."""
        tenant_id, connection_id = routed.request.tenant_id, routed.connection_id
        if key != (tenant_id, connection_id):
            return f"the key does not name the email's connection {tenant_id}/{connection_id}"
        if routed.channel not in self._kinds:
            return (f"a {routed.channel} email on {self._topic}, which carries "
                    f"{', '.join(sorted(self._kinds))} mail")
        if routed.send_id != routed.request.send_id:
            return "the send id is not the one the request's tenant and idempotency key give"
        queued = self._connections.get(key)
        if queued is not None and queued.partition != partition:
            return (f"connection {tenant_id}/{connection_id} is queued from partition "
                    f"{queued.partition}, not {partition}")
        return None

    def _settled_repeat(self, outbox: Outbox, partition: int, offset: int, routed: EmailRouted,
                        now_s: float) -> bool:
        """True if the record needs no send: it was finished already (read again after a
        restart), or it repeats a send that was (a `duplicate` event names the original)."""
        finished = self._repeats.lookup(partition, routed.send_id, _ms(now_s))
        if finished is None:
            return False
        if finished.offset == offset:
            outbox.done.append((partition, offset))
            return True
        if not finished.remembered:
            return False  # held, and now back: the same send, not a repeat
        where = f"{self._topic}/{partition}/{finished.offset}"
        outbox.events.append(DeliveryEvent.for_routed(
            routed, DeliveryStatus.DUPLICATE, _at(now_s), duplicate_of=where,
            reason=f"the same tenant and idempotency key as the email at {where}, which was "
                   f"{finished.status}; not sent again"))
        outbox.done.append((partition, offset))
        return True

    def _refuse(self, outbox: Outbox, partition: int, offset: int, unusable: Unusable) -> None:
        outbox.refused.append((partition, offset, unusable))
        outbox.done.append((partition, offset))

    # --- loading references ----------------------------------------------------------

    def references_to_load(self, key: ConnectionKey) -> tuple[int, list[int]]:
        """(partition, offsets) to read again before the connection's turn: once fewer are
        loaded than a turn can send, as many as there is room for."""
        connection = self._connections[key]
        if connection.queue.loaded >= self._settings.turn_size:
            return connection.partition, []
        return connection.partition, connection.queue.references_to_load(
            at_least=self._settings.turn_size)

    def load(self, key: ConnectionKey, offsets: list[int],
             read: dict[int, EmailRouted | Unusable], now_s: float) -> Outbox:
        """What was read of `offsets`; what cannot be used is settled in the returned outbox."""
        outbox = Outbox()
        connection = self._connections.get(key)
        if connection is None:
            return outbox  # revoked meanwhile: its next owner reads them
        usable: dict[int, EmailRouted] = {}
        unusable: set[int] = set()
        for offset in offsets:
            routed = read.get(offset)
            if routed is None:
                # Gone from the log (retention) or unreadable before its turn: nothing can be
                # sent, and the dead-letter entry says which.
                routed = Unusable(Refused.HANDLING_FAILED, (
                    f"queued for {key[0]}/{key[1]}, but no longer readable when its turn came "
                    "(past the topic's retention?); not sent"))
            elif not isinstance(routed, Unusable):
                mismatch = self._mismatch(connection.partition, key, routed)
                if mismatch is not None:
                    routed = Unusable(Refused.MISMATCHED, mismatch)
                elif self._settled_repeat(outbox, connection.partition, offset, routed, now_s):
                    unusable.add(offset)
                    continue
            if isinstance(routed, Unusable):
                self._refuse(outbox, connection.partition, offset, routed)
                unusable.add(offset)
            else:
                usable[offset] = routed
        if unusable:
            connection.queue.drop_references(unusable)
            self._queued -= len(unusable)
        connection.queue.load(usable)
        return outbox

    # --- turns -----------------------------------------------------------------------

    def due(self, now_s: float, limit: int | None = None) -> list[ConnectionKey]:
        """Connections whose turn starts now, the longest due first and at most `limit` of
        them (the rest stay due); each is `in_turn` until `end_turn`."""
        starting: list[ConnectionKey] = []
        while self._due and self._due[0][0] <= now_s and (limit is None or len(starting) < limit):
            _, _, key = heapq.heappop(self._due)
            connection = self._connections.get(key)
            if connection is not None and not connection.in_turn and len(connection.queue):
                connection.in_turn = True
                starting.append(key)
        return starting

    def next_due_s(self) -> float | None:
        return self._due[0][0] if self._due else None

    def plan_turn(self, key: ConnectionKey, connection: ConnectionConfigured | None,
                  policy: ThrottlePolicy, broken_reason: str | None, now_s: float,
                  max_message_bytes: int) -> Turn:
        """What the connection sends now, and what finishes without being sent."""
        state = self._connections[key]
        book = state.book = self._books.book(key, policy if connection is not None else UNTHROTTLED)
        turn = Turn(key, state.partition, connection, book)
        if connection is None:
            self._drain(state, turn, now_s, held=None,
                        failure=f"connection {key[1]} no longer exists; nothing was sent")
            return turn
        if broken_reason is not None:
            self._drain(state, turn, now_s, held=broken_reason, failure=None)
            return turn
        planner = book.planner()
        in_turn: set[uuid.UUID] = set()
        sends: dict[int, int] = {}
        while len(turn.sends) < self._settings.turn_size and (head := state.queue.head()) is not None:
            routed = head.routed
            if routed is None:
                break  # loaded before the next turn
            if routed.send_id in in_turn:
                break  # a copy of a send in this turn: looked at again once that one is finished
            if self._settled_repeat(turn.outbox, state.partition, head.offset, routed, now_s):
                self._pop(state)
                continue
            if self._expired(routed, now_s):
                self._finish(state, turn.outbox, self._pop(state), DeliveryStatus.FAILED, now_s,
                             reason=self._expiry_reason(now_s, routed, head.last_try))
                continue
            recipients = len(routed.request.recipients)
            try:
                next_s = planner.next_attempt_s(recipients, now_s)
            except NeverFits as error:
                self._finish(state, turn.outbox, self._pop(state), DeliveryStatus.FAILED, now_s,
                             reason=error.reason)
                continue
            if next_s > now_s:
                if not turn.sends:
                    self._announce_wait(state, turn.outbox, next_s, now_s)
                    turn.due_s = next_s
                break
            message = _built(routed, now_s, max_message_bytes)
            if isinstance(message, Outcome):
                self._finish(state, turn.outbox, self._pop(state), DeliveryStatus.FAILED, now_s,
                             reason=message.reason)
                continue
            planner.sent(now_s, recipients)
            turn.sends.append((self._pop(state), message))
            in_turn.add(routed.send_id)
            sends[head.offset] = recipients
        if turn.sends:
            book.begin(sends, now_s)
            if book.throttle.policy.limits:
                # Stored before sending: these sends count, whatever follows. (Without limits
                # there is nothing for them to count against.) That is the turn's one write:
                # its outcomes are stored with the next turn's, or when the connection changes
                # hands (`books_to_store`); after a crash the in-flight sends are counted at
                # the latest moment they can have gone.
                turn.booked = book.snapshot(_at(now_s))
                self._unsaved.pop(key, None)
        return turn

    def complete_turn(self, turn: Turn, outcomes: list[Outcome], now_s: float) -> None:
        """What came of each send: for the message, the connection and its book."""
        state = self._connections.get(turn.key)
        book = turn.book
        throttle = book.throttle
        paused_before = throttle.paused_until_s
        retry: list[Queued] = []
        broken = False
        for (item, _), outcome in zip(turn.sends, outcomes, strict=True):
            routed = item.routed
            assert routed is not None
            match outcome.kind:
                case OutcomeKind.SENT:
                    book.sent(item.offset, now_s)
                    refused = "; ".join(f"{a}: {c} {t}" for a, (c, t) in outcome.refused.items())
                    self._finish(state, turn.outbox, item, DeliveryStatus.SENT, now_s, turn.partition,
                                 message_id=message_id_for(routed),
                                 reply_code=outcome.reply_code, reply_text=outcome.reply_text,
                                 reason=f"refused recipients: {refused}" if refused else None)
                case OutcomeKind.FAILED:
                    book.release(item.offset)
                    self._finish(state, turn.outbox, item, DeliveryStatus.FAILED, now_s, turn.partition,
                                 **_words(outcome))
                case OutcomeKind.BROKEN:
                    book.release(item.offset)
                    if not broken and turn.connection is not None:
                        broken = True
                        turn.outbox.health.append(ConnectionHealthChanged(
                            tenant_id=turn.key[0], connection_id=turn.key[1], healthy=False,
                            reason=outcome.reason or "credentials refused", changed_at=_at(now_s)))
                    self._hold(state, turn.outbox, item, outcome.reason or "", now_s, turn.partition, outcome)
                case OutcomeKind.PAUSE | OutcomeKind.RETRY:
                    book.release(item.offset)
                    if outcome.kind is OutcomeKind.PAUSE:
                        throttle.pause(now_s, outcome.reason or "quota reached")
                    else:
                        throttle.back_off(now_s, jitter=self._jitter())
                    if self._expired(routed, now_s):
                        self._finish(state, turn.outbox, item, DeliveryStatus.FAILED, now_s, turn.partition,
                                     **{**_words(outcome), "reason": self._expiry_reason(
                                         now_s, routed, outcome.reason)})
                        continue
                    resume_s = throttle.next_attempt_s(len(routed.request.recipients), now_s)
                    turn.outbox.events.append(DeliveryEvent.for_routed(
                        routed, DeliveryStatus.DEFERRED, _at(now_s), **_words(outcome),
                        next_attempt_at=_at(resume_s)))
                    item.last_try = outcome.reason
                    retry.append(item)
        if state is not None:
            for item in reversed(retry):
                state.queue.push_front(item)
            self._queued += len(retry)
        if broken:
            # The rest of the queue is held too: its turn sees the connection broken.
            turn.due_s = now_s
        if throttle.paused_until_s != paused_before and throttle.paused_until_s is not None:
            turn.outbox.states.append(book.snapshot(_at(now_s)))  # the next owner waits too
        elif book.throttle.policy.limits:
            self._unsaved[turn.key] = turn.partition

    def end_turn(self, key: ConnectionKey, now_s: float, *, due_s: float | None = None,
                 failed: bool = False) -> None:
        """The turn is over (its outbox handed on, or `failed` on the way): when does the
        connection look again? `due_s` is the turn's own answer (`Turn.due_s`)."""
        state = self._connections.get(key)
        if state is None:
            return  # revoked while its turn ran
        state.in_turn = False
        if failed:
            state.failed_turns += 1
            if state.book is not None:
                state.book.throttle.back_off(now_s, jitter=self._jitter())
            else:
                state.retry_at_s = now_s + backoff_s(
                    state.failed_turns, base_s=self._settings.retry_backoff_base_s,
                    max_s=self._settings.retry_backoff_max_s, jitter=self._jitter())
        else:
            state.failed_turns = 0
        arrived, state.arrived_in_turn = state.arrived_in_turn, []
        if not len(state.queue):
            del self._connections[key]
            return
        retry_s = state.book.throttle.retry_at_s if state.book is not None else state.retry_at_s
        if due_s is None or failed:
            due_s = max(now_s, retry_s or now_s)
        state.waiting_until_s = due_s if due_s > now_s else None
        if state.waiting_until_s is not None:
            for item in arrived:
                if item.offset not in state.announced and item.routed is not None:
                    state.announced.add(item.offset)
                    self.intake.events.append(self._waiting(item.routed, due_s, len(state.queue), now_s))
            state.queue.shed()  # what waits needs no decoding while memory is short
        self._schedule(state, due_s)

    def _drain(self, state: _Connection, turn: Turn, now_s: float, *, held: str | None,
               failure: str | None) -> None:
        """Every loaded message: held (a broken connection) or failed (a removed one)."""
        while (head := state.queue.head()) is not None and head.routed is not None:
            item = self._pop(state)
            if held is not None:
                self._hold(state, turn.outbox, item, held, now_s)
            else:
                self._finish(state, turn.outbox, item, DeliveryStatus.FAILED, now_s, reason=failure)

    def _hold(self, state: _Connection | None, outbox: Outbox, item: Queued, reason: str,
              now_s: float, partition: int | None = None, outcome: Outcome | None = None) -> None:
        """The connection is broken: the mail waits on the held topic until the user reconnects."""
        assert item.routed is not None
        outbox.held.append(item.routed)
        words = _words(outcome) if outcome is not None else {}
        self._finish(state, outbox, item, DeliveryStatus.DEFERRED, now_s, partition, **{
            **words, "reason": f"held until the user reconnects {item.routed.connection_id}: {reason}"})

    def _finish(self, state: _Connection | None, outbox: Outbox, item: Queued,
                status: DeliveryStatus, now_s: float, partition: int | None = None,
                **outcome: object) -> None:
        routed = item.routed
        assert routed is not None
        if state is not None:
            state.announced.discard(item.offset)
            partition = state.partition
        assert partition is not None
        outbox.finished.append(FinishedSend(partition, item.offset, routed.send_id, status))
        outbox.done.append((partition, item.offset))
        outbox.events.append(DeliveryEvent.for_routed(routed, status, _at(now_s), **outcome))

    def _pop(self, state: _Connection) -> Queued:
        self._queued -= 1
        return state.queue.pop()

    def _expired(self, routed: EmailRouted, now_s: float) -> bool:
        return now_s - routed.routed_at.timestamp() >= self._settings.max_queued_age_s

    def _expiry_reason(self, now_s: float, routed: EmailRouted, last: str | None = None) -> str:
        waited_h = (now_s - routed.routed_at.timestamp()) / 3600
        limit_h = self._settings.max_queued_age_s / 3600
        reason = f"expired: still unsent {waited_h:.1f} h after it was routed (the limit is {limit_h:g} h)"
        return f"{reason}; last try: {last}" if last else f"{reason}; nothing was sent"

    def _announce_wait(self, state: _Connection, outbox: Outbox, due_s: float, now_s: float) -> None:
        """A `deferred` event, once, for each loaded message that has to wait for the limits."""
        for item in state.queue.loaded_items():
            if item.offset not in state.announced:
                assert item.routed is not None
                state.announced.add(item.offset)
                outbox.events.append(self._waiting(item.routed, due_s, len(state.queue), now_s))

    @staticmethod
    def _waiting(routed: EmailRouted, due_s: float, queued: int, now_s: float) -> DeliveryEvent:
        at = _at(due_s)
        return DeliveryEvent.for_routed(
            routed, DeliveryStatus.DEFERRED, _at(now_s), next_attempt_at=at,
            reason=f"waiting for the connection's sending limits; {queued} queued, "
                   f"next slot at {at:%H:%M:%S}")

    # --- the registry ----------------------------------------------------------------

    def tenant_changed(self, tenant_id: str, now_s: float) -> None:
        """New throttle settings, credentials or health: the tenant's queued connections look
        again now instead of at their next scheduled check."""
        for connection in self._connections.values():
            if connection.key[0] == tenant_id and len(connection.queue):
                self._schedule(connection, now_s)

    # --- offsets and partitions ------------------------------------------------------

    def acknowledge(self, done: Iterable[tuple[int, int]]) -> None:
        """These offsets' events are stored: they no longer hold back the commit."""
        for partition, offset in done:
            progress = self._progress.get(partition)
            if progress is not None:
                progress.finished(offset)

    def committable(self) -> dict[int, int]:
        """Partition -> offset to commit, where it moved since the last commit."""
        return {partition: offset for partition, progress in self._progress.items()
                if (offset := progress.committable()) is not None
                and offset != self._committed.get(partition)}

    def committed(self, partition: int, offset: int) -> None:
        self._committed[partition] = offset

    def committed_offset(self, partition: int) -> int | None:
        return self._committed.get(partition)

    def books_to_store(self, partitions: set[int] | None, now_s: float) -> list[ThrottleStateRecorded]:
        """The books of these partitions (None: all) that changed since they were stored: for
        their next owner, when they change hands or the sender stops."""
        states = []
        for key, partition in list(self._unsaved.items()):
            book = self._books.kept(key)
            if (partitions is None or partition in partitions) and book is not None:
                states.append(book.snapshot(_at(now_s)))
                del self._unsaved[key]
        return states

    def assigned(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._progress.setdefault(partition, PartitionProgress())

    def revoked(self, partitions: set[int]) -> None:
        """Forget what the next owner will read again (its turns are over: the adapter waits)."""
        for key, connection in list(self._connections.items()):
            if connection.partition in partitions:
                self._queued -= len(connection.queue)
                connection.queue.release()
                del self._connections[key]
                self._books.forget(key)
        for key, partition in list(self._unsaved.items()):
            if partition in partitions:
                del self._unsaved[key]
                self._books.forget(key)
        for partition in partitions:
            self._progress.pop(partition, None)
            self._committed.pop(partition, None)

    # --- what it holds ---------------------------------------------------------------

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def decoded(self) -> int:
        """Queued messages held decoded (see `LoopSettings.max_decoded_messages`)."""
        return self._decoded.used

    def queued_by_kind(self) -> dict[ChannelKind, int]:
        counts = dict.fromkeys(self._kinds, 0)
        for connection in self._connections.values():
            if connection.kind is not None:
                counts[connection.kind] = counts.get(connection.kind, 0) + len(connection.queue)
        return counts

    def queue_depths(self, top: int = 50) -> dict[str, int]:
        """The deepest connection queues, for /healthz (a label per connection would not scale)."""
        deepest = heapq.nlargest(top, self._connections.values(), key=lambda c: len(c.queue))
        return {f"{c.key[0]}/{c.key[1]}": len(c.queue) for c in deepest if len(c.queue)}

    def _connection(self, key: ConnectionKey, partition: int) -> _Connection:
        connection = self._connections.get(key)
        if connection is None:
            connection = _Connection(key, partition, ConnectionQueue(
                loaded_limit=self._settings.loaded_per_connection, budget=self._decoded))
            self._connections[key] = connection
        return connection

    def _progress_of(self, partition: int) -> PartitionProgress:
        return self._progress.setdefault(partition, PartitionProgress())

    def _schedule(self, connection: _Connection, at_s: float) -> None:
        heapq.heappush(self._due, (at_s, next(self._sequence), connection.key))


def _built(routed: EmailRouted, now_s: float, max_bytes: int) -> OutgoingMessage | Outcome:
    """The message's bytes; whatever stops them from being built fails this message alone."""
    try:
        raw = build_message(routed, date=_at(now_s), max_bytes=max_bytes)
    except DeliveryError as error:
        return Outcome.failed(error.reason)
    except Exception as error:
        return Outcome.failed(f"the message could not be built: {type(error).__name__}: {error}")
    return OutgoingMessage(routed.request.identity, routed.request.recipients, raw)


def _words(outcome: Outcome) -> dict[str, object]:
    """The outcome's reason and the server's reply, for its delivery event."""
    return {"reason": outcome.reason, "reply_code": outcome.reply_code,
            "reply_text": outcome.reply_text}


def _at(at_s: float) -> datetime:
    return datetime.fromtimestamp(at_s, UTC)


def _ms(at_s: float) -> int:
    return int(at_s * 1000)
