"""The sending loop's decisions, driven by hand: a fake transport, a clock that moves only
when a test moves it, the in-memory store. Each case runs in milliseconds."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from sendrail.bus.codec import encode
from sendrail.bus.dead_letter import Refused, Unusable
from sendrail.delivery.books import BookShelf
from sendrail.delivery.loop import LoopSettings, Outbox, SendingLoop
from sendrail.delivery.outcome import Outcome, OutcomeKind
from sendrail.delivery.repeats import RepeatedSends
from sendrail.delivery.transport import MemoryTransports, OutgoingMessage, Script, accept_all
from sendrail.events import (
    ChannelKind,
    ConnectionConfigured,
    DeliveryEvent,
    DeliveryStatus,
    EmailRequested,
    EmailRouted,
    SmtpServer,
    Source,
)
from sendrail.store.changelog import MemoryChangelog
from sendrail.store.memory import MemoryTable
from sendrail.throttle.policy import BatchSetting, LimitOverrides, ThrottlePolicy
from sendrail.throttle.pushback import PushbackSettings

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC).timestamp()
DAY_S = 24 * 3600.0
KEY = ("acme", "ann-smtp")
UNTHROTTLED = ThrottlePolicy((), None)
SETTINGS = LoopSettings(loaded_per_connection=50, max_decoded_messages=10_000, turn_size=8,
                        max_queued_age_s=3 * DAY_S, max_queued_messages=1_000_000, retry_backoff_base_s=1.0,
                        retry_backoff_max_s=60.0)


def batch(size: int, wait_s: float) -> ThrottlePolicy:
    return ThrottlePolicy.compose(provider=None, batch=BatchSetting(size, wait_s))


def daily(messages: int) -> ThrottlePolicy:
    return ThrottlePolicy.compose(provider=None, overrides=LimitOverrides(daily_messages=messages))


def email(n: int, *, routed_at_s: float = T0, connection_id: str = KEY[1],
          key: str | None = None) -> EmailRouted:
    request = EmailRequested(idempotency_key=key or f"k{n}", tenant_id=KEY[0], user_id="ann",
                             identity="ann@acme.example", source=Source.API,
                             to=[f"r{n}@example.org"], subject=f"Hello {n}", text="Hi",
                             requested_at=datetime.fromtimestamp(routed_at_s, UTC))
    return EmailRouted(send_id=request.send_id, channel=ChannelKind.CUSTOM_SMTP,
                       connection_id=connection_id, request=request,
                       routed_at=datetime.fromtimestamp(routed_at_s, UTC))


def connection_record() -> ConnectionConfigured:
    at = datetime.fromtimestamp(T0, UTC)
    return ConnectionConfigured(tenant_id=KEY[0], connection_id=KEY[1], kind=ChannelKind.CUSTOM_SMTP,
                                owner_user_id="ann", smtp=SmtpServer(host="127.0.0.1", port=2525),
                                username="ann", password="sealed", connected_at=at, updated_at=at)


class Sender:
    """One replica's loop with what the Kafka adapter would do around it, by hand."""

    def __init__(self, policy: ThrottlePolicy = UNTHROTTLED, script: Script = accept_all, *,
                 settings: LoopSettings = SETTINGS, changelog: MemoryChangelog | None = None,
                 books: BookShelf | None = None) -> None:
        self.now_s = T0
        self.policy = policy
        self.broken: str | None = None
        self.record: ConnectionConfigured | None = connection_record()
        self.changelog = changelog or MemoryChangelog("sendrail.outbound.smtp.send-ids")
        self.table = MemoryTable(changelog_topic=self.changelog.topic_name, reader=self.changelog,
                                 retention_ms=7 * 24 * 3600 * 1000)
        self.repeats = RepeatedSends(self.table)
        self.books = books or BookShelf(PushbackSettings(), smtp_timeout_s=30.0)
        self.transports = MemoryTransports(script)
        self.loop = SendingLoop(topic="sendrail.outbound.smtp", kinds=frozenset({ChannelKind.CUSTOM_SMTP}),
                                books=self.books, repeats=self.repeats, settings=settings,
                                jitter=lambda: 0.0)
        self.events: list[DeliveryEvent] = []
        self.outboxes: list[Outbox] = []
        self.booked: list[object] = []
        self.log: dict[int, EmailRouted] = {}
        self.next_offset = 0

    async def start(self) -> Sender:
        await self.table.start()
        await self.table.assign({0})
        self.loop.assigned({0})
        return self

    @property
    def sent(self) -> list[OutgoingMessage]:
        return self.transports.transport(KEY[1]).accepted

    def publish(self, *emails: EmailRouted, partition: int = 0) -> None:
        for routed in emails:
            offset = self.next_offset
            self.next_offset += 1
            self.log[offset] = routed
            key = (routed.request.tenant_id, routed.connection_id)
            if self.loop.wants_decoded(key):
                self.loop.accept(partition, offset, key, routed, self.now_s)
            else:
                self.loop.accept_reference(partition, offset, key, self.now_s)
        self._settle(self.loop.intake)
        self.loop.intake = Outbox()

    async def run_until(self, until_s: float) -> None:
        """Every turn due until `until_s`, the clock jumping to each."""
        while True:
            self.now_s = max(self.now_s, self.loop.next_due_s() or until_s)
            if self.now_s > until_s:
                self.now_s = until_s
                return
            keys = self.loop.due(self.now_s)
            if not keys and (self.loop.next_due_s() or until_s + 1) > until_s:
                return
            for key in keys:
                await self.turn(key)

    async def turn(self, key: tuple[str, str], *, before_sending: Callable[[], None] | None = None) -> None:
        _, offsets = self.loop.references_to_load(key)
        loaded = self.loop.load(key, offsets, {o: self.log[o] for o in offsets}, self.now_s)
        turn = self.loop.plan_turn(key, self.record, self.policy, self.broken, self.now_s, 10_000_000)
        if turn.booked is not None:
            self.booked.append(turn.booked)
        if before_sending is not None:
            before_sending()
        if turn.sends:
            transport = self.transports.transport(key[1])
            outcomes = [await transport.send(message) for _, message in turn.sends]
            self.loop.complete_turn(turn, outcomes, self.now_s)
        loaded.extend(turn.outbox)
        self._settle(loaded)
        self.loop.end_turn(key, self.now_s, due_s=turn.due_s)

    def _settle(self, outbox: Outbox) -> None:
        """As if the broker acknowledged everything at once."""
        for finished in outbox.finished:
            self.repeats.record(finished, int(self.now_s * 1000), self.changelog)
        self.events.extend(outbox.events)
        self.outboxes.append(outbox)
        self.loop.acknowledge(outbox.done)

    def statuses(self, status: DeliveryStatus) -> list[DeliveryEvent]:
        return [e for e in self.events if e.status is status]


def windows_hold(times_s: list[float], limit: int, window_s: float) -> bool:
    """No `window_s` span holds more than `limit` of the sends."""
    ordered = sorted(times_s)
    return all(ordered[i + limit] - ordered[i] >= window_s for i in range(len(ordered) - limit))


async def test_a_batch_setting_releases_25_then_waits_45_seconds() -> None:
    sender = await Sender(batch(25, 45.0), settings=LoopSettings(**{**SETTINGS.__dict__, "turn_size": 100})).start()
    sent_at: list[float] = []
    sender.transports.script = lambda m: (sent_at.append(sender.now_s), accept_all(m))[1]
    sender.publish(*(email(n) for n in range(60)))

    await sender.run_until(T0 + 200)

    assert len(sent_at) == 60
    assert sent_at.count(T0) == 25
    assert windows_hold(sent_at, 25, 45.0)
    assert min(t for t in sent_at if t > T0) == pytest.approx(T0 + 45.0, abs=0.01)
    waiting = {e.send_id for e in sender.statuses(DeliveryStatus.DEFERRED)}
    assert len(waiting) == 35  # each message that had to wait is announced once


async def test_a_rolling_daily_window_holds_over_two_days() -> None:
    sender = await Sender(daily(3)).start()
    sent_at: list[float] = []
    sender.transports.script = lambda m: (sent_at.append(sender.now_s), accept_all(m))[1]
    sender.publish(*(email(n) for n in range(3)))
    await sender.run_until(T0 + 3600)
    sender.publish(*(email(n) for n in range(3, 8)))

    await sender.run_until(T0 + 3 * DAY_S)

    assert len(sent_at) == 8
    assert windows_hold(sent_at, 3, DAY_S)
    # The second day's first slot opens when the first day's sends leave the window.
    assert sorted(sent_at)[3] == pytest.approx(T0 + DAY_S, abs=1.0)


async def test_a_temporary_reply_defers_with_backoff_then_sends() -> None:
    replies = iter([Outcome(OutcomeKind.RETRY, "Gmail asks to try again later", 421, "4.7.0 Try later")])
    sender = await Sender(script=lambda m: next(replies, accept_all(m))).start()
    sender.publish(email(1))

    await sender.run_until(T0 + 0.1)
    deferred = sender.statuses(DeliveryStatus.DEFERRED)
    assert [e.reply_code for e in deferred] == [421]
    retry_at = deferred[0].next_attempt_at
    assert retry_at is not None and T0 < retry_at.timestamp() <= T0 + 1.0
    assert not sender.sent

    await sender.run_until(T0 + 0.4)
    assert not sender.sent  # not before the backoff
    await sender.run_until(T0 + 2)
    assert len(sender.sent) == 1 and len(sender.statuses(DeliveryStatus.SENT)) == 1


async def test_a_quota_reply_pauses_the_connection_until_the_probe() -> None:
    quota = Outcome(OutcomeKind.PAUSE, "daily quota", 550, "5.4.5 Daily user sending quota exceeded")
    sender = await Sender(daily(100)).start()
    attempts: list[float] = []
    sender.transports.script = lambda m: (attempts.append(sender.now_s),
                                          quota if sender.now_s < T0 + 3600 else accept_all(m))[1]
    sender.publish(email(1), email(2))

    await sender.run_until(T0 + 3599)
    assert attempts == [T0, T0] and not sender.sent  # one try, then the connection waits
    assert sender.outboxes and any(o.states for o in sender.outboxes)  # stored for the next owner

    await sender.run_until(T0 + 3601)
    assert len(sender.sent) == 2


async def test_a_broken_connection_holds_its_whole_queue() -> None:
    refused = Outcome(OutcomeKind.BROKEN, "the server refused the credentials", 535, "5.7.8 bad")
    sender = await Sender(script=lambda m: refused,
                          settings=LoopSettings(**{**SETTINGS.__dict__, "turn_size": 1})).start()
    sender.publish(*(email(n) for n in range(3)))

    assert sender.loop.due(sender.now_s) == [KEY]
    await sender.turn(KEY)
    health = [h for o in sender.outboxes for h in o.health]
    assert [h.healthy for h in health] == [False]
    sender.broken = health[0].reason  # as the registry now says
    await sender.run_until(T0 + 1)

    held = [r.request.idempotency_key for o in sender.outboxes for r in o.held]
    assert held == ["k0", "k1", "k2"]  # in order
    assert len(sender.statuses(DeliveryStatus.DEFERRED)) == 3
    assert sender.loop.committable() == {0: 3}


async def test_a_crash_between_booking_and_sending_still_counts_the_booked_sends() -> None:
    first = await Sender(daily(3)).start()
    first.publish(*(email(n) for n in range(5)))
    crashed = Exception("kill -9")

    def crash() -> None:
        raise crashed

    (key,) = first.loop.due(first.now_s)
    with pytest.raises(Exception, match="kill -9"):
        await first.turn(key, before_sending=crash)
    assert first.booked, "the sends were stored before they could go"

    # The next owner: the same log, the stored book, nothing acknowledged by the first.
    books = BookShelf(PushbackSettings(), smtp_timeout_s=30.0)
    books.stored(KEY, encode(first.booked[-1]))  # type: ignore[arg-type]
    second = await Sender(daily(3), books=books).start()
    second.publish(*(first.log[o] for o in sorted(first.log)))
    await second.run_until(T0 + DAY_S - 60)

    # The 3 booked sends may have gone: the window has no room today, whatever happened.
    assert not second.sent
    await second.run_until(T0 + 3 * DAY_S)
    assert len(second.sent) == 5  # the in-flight ones again (the bound on duplicates), then the rest


async def test_a_rebalance_mid_turn_publishes_what_was_sent_and_forgets_the_rest() -> None:
    sender = await Sender(settings=LoopSettings(**{**SETTINGS.__dict__, "turn_size": 2})).start()
    sender.publish(*(email(n) for n in range(5)))
    (key,) = sender.loop.due(sender.now_s)
    turn = sender.loop.plan_turn(key, sender.record, UNTHROTTLED, None, sender.now_s, 10_000_000)

    sender.loop.revoked({0})  # partitions change hands while the sends are out
    sender.loop.complete_turn(turn, [accept_all(m) for _, m in turn.sends], sender.now_s)
    sender.loop.end_turn(key, sender.now_s, due_s=turn.due_s)

    assert [e.status for e in turn.outbox.events] == [DeliveryStatus.SENT] * 2
    assert sender.loop.committable() == {}  # not this replica's to commit any more
    assert sender.loop.due(sender.now_s + 10) == []  # and nothing of it is sent here again
    assert sender.loop.queued == 0


async def test_a_message_that_cannot_be_built_fails_alone() -> None:
    sender = await Sender().start()
    too_big = email(2)
    sender.publish(email(1), too_big, email(3))
    (key,) = sender.loop.due(sender.now_s)
    turn = sender.loop.plan_turn(key, sender.record, UNTHROTTLED, None, sender.now_s,
                                 max_message_bytes=len(_raw(sender, too_big)) - 1)
    failed = [e for e in turn.outbox.events if e.status is DeliveryStatus.FAILED]
    assert failed and all(e.reason and "bytes" in e.reason for e in failed)
    assert len(turn.sends) + len(failed) == 3


def _raw(sender: Sender, routed: EmailRouted) -> bytes:
    from sendrail.mail.message import build_message
    return build_message(routed, date=datetime.fromtimestamp(sender.now_s, UTC), max_bytes=10**9)


async def test_transient_failures_give_up_after_the_age_limit() -> None:
    sender = await Sender(script=lambda m: Outcome.retry("connection to smtp.example lost")).start()
    sender.publish(email(1))

    await sender.run_until(T0 + 3 * DAY_S + 120)

    failed = sender.statuses(DeliveryStatus.FAILED)
    assert len(failed) == 1 and failed[0].reason is not None
    assert failed[0].reason.startswith("expired")
    assert failed[0].reason.endswith("last try: connection to smtp.example lost")
    assert sender.loop.queued == 0 and sender.loop.committable() == {0: 1}


async def test_a_backlog_older_than_the_age_limit_fails_before_kafka_forgets_it() -> None:
    sender = await Sender(daily(1)).start()
    sender.publish(*(email(n) for n in range(6)))

    await sender.run_until(T0 + 4 * DAY_S + 1)

    assert len(sender.sent) == 3  # one a day while they were younger than three days
    expired = sender.statuses(DeliveryStatus.FAILED)
    assert len(expired) == 3 and all(e.reason and e.reason.startswith("expired") for e in expired)


async def test_offsets_are_done_only_when_acknowledged() -> None:
    sender = await Sender().start()
    sender.publish(email(1), email(2))
    (key,) = sender.loop.due(sender.now_s)
    turn = sender.loop.plan_turn(key, sender.record, UNTHROTTLED, None, sender.now_s, 10_000_000)
    sender.loop.complete_turn(turn, [accept_all(m) for _, m in turn.sends], sender.now_s)

    assert sender.loop.committable() == {0: 0}  # events not acknowledged yet
    sender.loop.acknowledge(turn.outbox.done)
    assert sender.loop.committable() == {0: 2}


async def test_a_repeat_gets_a_duplicate_event_and_a_reread_is_skipped() -> None:
    sender = await Sender().start()
    first = email(1)
    sender.publish(first)
    await sender.run_until(T0 + 1)

    sender.publish(email(1))  # the upstream system retried: the same send
    sender.loop.accept(0, 0, KEY, first, sender.now_s)  # and the first read again after a restart
    await sender.run_until(T0 + 2)

    assert len(sender.sent) == 1
    (duplicate,) = sender.statuses(DeliveryStatus.DUPLICATE)
    assert duplicate.duplicate_of == "sendrail.outbound.smtp/0/0"


async def test_copies_in_one_queue_never_share_a_turn() -> None:
    sender = await Sender().start()
    sender.publish(email(1), email(1))
    await sender.run_until(T0 + 1)
    assert len(sender.sent) == 1 and len(sender.statuses(DeliveryStatus.DUPLICATE)) == 1


async def test_a_record_under_another_connections_key_is_dead_lettered() -> None:
    sender = await Sender().start()
    sender.loop.accept(0, 0, ("acme", "someone-else"), email(1), T0)
    sender.loop.accept(0, 1, KEY, Unusable(Refused.INVALID, "not an email"), T0)
    refused = sender.loop.intake.refused
    assert [(o, u.kind) for _, o, u in refused] == [(0, Refused.MISMATCHED), (1, Refused.INVALID)]
    assert sender.loop.due(T0) == []


async def test_a_backlog_beyond_the_loaded_limit_is_read_again_in_order() -> None:
    sender = await Sender(settings=LoopSettings(**{**SETTINGS.__dict__, "loaded_per_connection": 2,
                                                   "turn_size": 2})).start()
    sender.publish(*(email(n) for n in range(7)))
    await sender.run_until(T0 + 1)
    subjects = [m.raw.split(b"Subject: ")[1].split(b"\r\n")[0] for m in sender.sent]
    assert subjects == [f"Hello {n}".encode() for n in range(7)]


async def test_a_removed_connection_fails_its_mail() -> None:
    sender = await Sender().start()
    sender.record = None
    sender.publish(email(1))
    await sender.run_until(T0 + 1)
    (failed,) = sender.statuses(DeliveryStatus.FAILED)
    assert failed.reason and "no longer exists" in failed.reason and not sender.sent



async def test_turns_start_at_most_a_limit_at_a_time_the_longest_due_first() -> None:
    sender = await Sender().start()
    for n, connection_id in enumerate(("c-first", "c-second", "c-third")):
        sender.now_s = T0 + n
        sender.publish(email(n, connection_id=connection_id))

    now_s = T0 + 10
    assert sender.loop.due(now_s, limit=2) == [("acme", "c-first"), ("acme", "c-second")]
    assert sender.loop.next_due_s() == T0 + 2  # the third still waits, first in line
    assert sender.loop.due(now_s, limit=2) == [("acme", "c-third")]


async def test_all_connections_together_keep_a_bounded_number_decoded_and_still_send_it_all() -> None:
    settings = LoopSettings(**{**SETTINGS.__dict__, "max_decoded_messages": 6, "turn_size": 2})
    sender = await Sender(settings=settings).start()
    connections = [f"c{n}" for n in range(5)]
    sender.publish(*(email(10 * c + n, connection_id=connection)
                     for c, connection in enumerate(connections) for n in range(10)))

    assert sender.loop.decoded == 6  # the rest waits in Kafka, read when its turn comes

    await sender.run_until(T0 + 60)

    assert [len(sender.transports.transport(c).accepted) for c in connections] == [10] * 5
    assert sender.loop.queued == 0 and sender.loop.decoded == 0


async def test_connections_that_wait_give_back_what_they_decoded_past_the_budget() -> None:
    settings = LoopSettings(**{**SETTINGS.__dict__, "max_decoded_messages": 6, "turn_size": 4})
    sender = await Sender(daily(1), settings=settings).start()
    connections = [f"c{n}" for n in range(5)]
    sender.publish(*(email(10 * c + n, connection_id=connection)
                     for c, connection in enumerate(connections) for n in range(10)))

    await sender.run_until(T0 + 60)  # each sends its one of the day, then waits

    assert [len(sender.transports.transport(c).accepted) for c in connections] == [1] * 5
    assert sender.loop.decoded <= 6 and sender.loop.queued == 45
