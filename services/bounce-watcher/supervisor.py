"""One watcher task per Gmail and Exchange Online connection, kept in step with the registry."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from sendrail.events import OAUTH_CHANNELS, ConnectionConfigured
from sendrail.mail.oauth import AccessTokenSource
from sendrail.metrics import mailbox_retries, watched_mailboxes
from sendrail.registry.view import RegistryView
from sendrail.services.bounce_watcher.mailbox_health import MailboxHealth, MailboxState
from sendrail.services.bounce_watcher.mailbox_watch import MailboxWatcher, WatchContext, describe

log = structlog.get_logger(__name__)

TokensFor = Callable[[ConnectionConfigured], AccessTokenSource]
StartWatcher = Callable[[ConnectionConfigured, AccessTokenSource, MailboxHealth, asyncio.Event],
                        Coroutine[Any, Any, None]]
"""Runs one mailbox's watcher until the event is set."""


@dataclass
class _Mailbox:
    connection: ConnectionConfigured
    tokens: AccessTokenSource
    """Kept across restarts of its watcher: a restart does not refresh a token by itself."""
    health: MailboxHealth
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class WatcherSupervisor:
    """Starts a watcher for each watched, healthy connection; restarts it when the user
    reconnects (new credentials) and stops it when the connection goes away.

    Each mailbox's health outlives its watcher: a watcher that crashes is started again
    only once its backoff has passed, and /healthz shows every mailbox's state.
    On-premises Exchange and SMTP channels are never watched (PRODUCT.md section 4).
    """

    def __init__(self, view: RegistryView, context: WatchContext, tokens_for: TokensFor, *,
                 start_watcher: StartWatcher | None = None) -> None:
        self._view = view
        self._context = context
        self._tokens_for = tokens_for
        self._start_watcher = start_watcher or self._watch
        self._mailboxes: dict[tuple[str, str], _Mailbox] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    async def _watch(self, connection: ConnectionConfigured, tokens: AccessTokenSource,
                     health: MailboxHealth, stop: asyncio.Event) -> None:
        await MailboxWatcher(connection, tokens, self._context, health).run(stop)

    @property
    def watching(self) -> int:
        return sum(1 for m in self._mailboxes.values() if m.health.state is MailboxState.WATCHING)

    def details(self) -> dict[str, object]:
        """For /healthz: each mailbox's state (watching, backing off until when and why, ...)."""
        return {"mailboxes": {f"{tenant}/{connection}": m.health.details()
                              for (tenant, connection), m in sorted(self._mailboxes.items())}}

    def reconcile(self) -> None:
        now = self._context.clock()
        wanted = {
            (c.tenant_id, c.connection_id): c for c in self._view.watched_connections()
            if self._view.is_healthy(c.tenant_id, c.connection_id)
        }
        for key in list(self._mailboxes):
            mailbox = self._mailboxes[key]
            want = wanted.get(key)
            if want is None or want.connected_at != mailbox.connection.connected_at:
                self._retire(mailbox)
                del self._mailboxes[key]
        for key, connection in wanted.items():
            if key not in self._mailboxes:
                self._mailboxes[key] = _Mailbox(connection, self._tokens_for(connection),
                                                MailboxHealth(since=now))
            mailbox = self._mailboxes[key]
            task = mailbox.task
            if task is not None and task.done():
                error = None if task.cancelled() else task.exception()
                if error is None:
                    continue  # it ended on purpose (broken credentials): the registry will say so
                retry_at = mailbox.health.failed(describe(error), self._context.retry_policy, now=now,
                                                 jitter=self._context.jitter(), logs_in_again=True)
                mailbox_retries.labels(connection.kind.value, "crash").inc()
                log.error("mailbox watcher crashed; restarting after backoff", tenant=key[0],
                          connection=key[1], error=type(error).__name__, until=retry_at.isoformat())
                mailbox.task = None
            if mailbox.task is None and (mailbox.health.retry_at is None or mailbox.health.retry_at <= now):
                mailbox.task = asyncio.create_task(
                    self._start_watcher(connection, mailbox.tokens, mailbox.health, mailbox.stop),
                    name=f"watch {key[1]}")
                log.info("watching mailbox", tenant=key[0], connection=key[1], kind=connection.kind.value)
        for kind in OAUTH_CHANNELS:
            watched_mailboxes.labels(kind.value).set(sum(
                1 for m in self._mailboxes.values()
                if m.connection.kind is kind and m.health.state is MailboxState.WATCHING))

    def _retire(self, mailbox: _Mailbox) -> None:
        mailbox.stop.set()
        if mailbox.task is not None:
            self._retiring.add(mailbox.task)
            mailbox.task.add_done_callback(self._retiring.discard)

    async def run(self, stop: asyncio.Event, *, interval_s: float = 0.5) -> None:
        try:
            while not stop.is_set():
                self.reconcile()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)
        finally:
            for mailbox in self._mailboxes.values():
                mailbox.stop.set()
            tasks = [*(m.task for m in self._mailboxes.values() if m.task is not None), *self._retiring]
            await asyncio.gather(*tasks, return_exceptions=True)
