"""The supervisor restarts a crashed mailbox watcher only after its backoff, and shows why."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sendrail.clock import ManualClock
from sendrail.events import ChannelKind, ConnectionConfigured, OAuthGrant, SmtpServer
from sendrail.services.bounce_watcher.mailbox_health import RetryPolicy
from sendrail.services.bounce_watcher.supervisor import WatcherSupervisor

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def connection(connection_id: str = "ann-gmail", *, connected_at: datetime = T0) -> ConnectionConfigured:
    return ConnectionConfigured(
        tenant_id="acme", connection_id=connection_id, kind=ChannelKind.GMAIL, owner_user_id="ann",
        address="ann@acme.example", smtp=SmtpServer(host="smtp.gmail.com", port=587),
        oauth=OAuthGrant(refresh_token="sealed"), connected_at=connected_at, updated_at=connected_at)


@dataclass
class FakeView:
    connections: list[ConnectionConfigured]
    unhealthy: set[str] = field(default_factory=set)

    def watched_connections(self) -> list[ConnectionConfigured]:
        return self.connections

    def is_healthy(self, tenant_id: str, connection_id: str) -> bool:
        return connection_id not in self.unhealthy


POLICY = RetryPolicy(base_s=1.0, max_s=300.0, login_interval_s=60.0)


@dataclass
class FakeContext:
    clock: ManualClock
    retry_policy: RetryPolicy = POLICY

    @staticmethod
    def jitter() -> float:
        return 0.5


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_watcher_that_keeps_crashing_is_restarted_no_more_than_once_a_minute() -> None:
    clock = ManualClock(T0)
    starts: list[datetime] = []

    async def crashing(connection, tokens, health, stop):
        health.logging_in(clock())
        starts.append(clock())
        raise ValueError("a fault in the watcher")

    supervisor = WatcherSupervisor(FakeView([connection()]), FakeContext(clock),  # type: ignore[arg-type]
                                   lambda c: object(), start_watcher=crashing)  # type: ignore[arg-type,return-value]
    for _ in range(2 * 600):  # ten minutes of reconciling every half second
        supervisor.reconcile()
        await settle()
        clock.advance(0.5)

    gaps_s = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert starts[0] == T0 and 4 <= len(starts) <= 11
    assert min(gaps_s) >= 60.0
    shown = supervisor.details()["mailboxes"]["acme/ann-gmail"]  # type: ignore[index]
    assert shown["state"] == "backing_off"
    assert shown["last_error"] == "ValueError: a fault in the watcher"
    assert datetime.fromisoformat(shown["until"]) > clock()


async def test_watchers_follow_the_registry() -> None:
    clock = ManualClock(T0)
    running: dict[str, asyncio.Event] = {}

    async def watching(connection, tokens, health, stop):
        running[connection.connection_id] = stop
        health.caught_up(clock())
        await stop.wait()

    view = FakeView([connection("a"), connection("b")])
    supervisor = WatcherSupervisor(view, FakeContext(clock), lambda c: object(),  # type: ignore[arg-type,return-value]
                                   start_watcher=watching)
    supervisor.reconcile()
    await settle()
    assert set(running) == {"a", "b"} and supervisor.watching == 2

    view.unhealthy.add("a")  # broken: stopped
    view.connections[1] = connection("b", connected_at=T0 + timedelta(hours=1))  # reconnected: restarted
    stopped_b = running["b"]
    supervisor.reconcile()
    await settle()
    assert running["a"].is_set() and stopped_b.is_set()
    assert not running["b"].is_set() and running["b"] is not stopped_b
    assert list(supervisor.details()["mailboxes"]) == ["acme/b"]  # type: ignore[call-overload]

    stop = asyncio.Event()
    stop.set()
    await supervisor.run(stop)
    assert running["b"].is_set()
