"""One watcher task per Gmail and Exchange Online connection, kept in step with the registry."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from sendrail.events import OAUTH_CHANNELS, ChannelKind, ConnectionConfigured
from sendrail.mail.oauth import AccessTokenSource
from sendrail.metrics import watched_mailboxes
from sendrail.registry.view import RegistryView
from sendrail.services.bounce_watcher.mailbox_watch import MailboxWatcher, WatchContext

log = structlog.get_logger(__name__)

TokensFor = Callable[[ConnectionConfigured], AccessTokenSource]


@dataclass
class _Running:
    kind: ChannelKind
    connected_at: datetime
    task: asyncio.Task[None]
    stop: asyncio.Event


class WatcherSupervisor:
    """Starts a watcher for each watched, healthy connection; restarts it when the user
    reconnects (new credentials) and stops it when the connection goes away.

    On-premises Exchange and SMTP channels are never watched (PRODUCT.md section 4).
    """

    def __init__(self, view: RegistryView, context: WatchContext, tokens_for: TokensFor) -> None:
        self._view = view
        self._context = context
        self._tokens_for = tokens_for
        self._running: dict[tuple[str, str], _Running] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def watching(self) -> int:
        return sum(1 for r in self._running.values() if not r.task.done())

    def reconcile(self) -> None:
        wanted = {
            (c.tenant_id, c.connection_id): c for c in self._view.watched_connections()
            if self._view.is_healthy(c.tenant_id, c.connection_id)
        }
        for key in list(self._running):
            running = self._running[key]
            want = wanted.get(key)
            if want is None or want.connected_at != running.connected_at:
                running.stop.set()
                self._retiring.add(running.task)
                running.task.add_done_callback(self._retiring.discard)
                del self._running[key]
            elif running.task.done() and not running.task.cancelled() and running.task.exception():
                log.error("mailbox watcher crashed; restarting", connection=key[1],
                          error=repr(running.task.exception()))
                del self._running[key]
        for key, connection in wanted.items():
            if key in self._running:
                continue
            stop = asyncio.Event()
            watcher = MailboxWatcher(connection, self._tokens_for(connection), self._context)
            task = asyncio.create_task(watcher.run(stop), name=f"watch {key[1]}")
            self._running[key] = _Running(connection.kind, connection.connected_at, task, stop)
            log.info("watching mailbox", tenant=key[0], connection=key[1], kind=connection.kind.value)
        for kind in OAUTH_CHANNELS:
            watched_mailboxes.labels(kind.value).set(sum(
                1 for r in self._running.values() if r.kind is kind and not r.task.done()))

    async def run(self, stop: asyncio.Event, *, interval_s: float = 0.5) -> None:
        try:
            while not stop.is_set():
                self.reconcile()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)
        finally:
            for running in self._running.values():
                running.stop.set()
            tasks = [*(r.task for r in self._running.values()), *self._retiring]
            await asyncio.gather(*tasks, return_exceptions=True)
