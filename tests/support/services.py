"""The six services, run in the test's own event loop so a test can stop and restart one."""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass

from sendrail.cli.local import SERVICES
from sendrail.service import ServiceState
from sendrail.settings import Settings
from support.waiting import wait_until


@dataclass
class _Running:
    task: asyncio.Task[None]
    stop: asyncio.Event
    state: ServiceState


class InProcessServices:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._running: dict[str, _Running] = {}

    async def start(self, name: str) -> None:
        module = importlib.import_module(SERVICES[name])
        stop, state = asyncio.Event(), ServiceState(name)
        task = asyncio.create_task(module.run(self._settings, stop, state), name=name)
        self._running[name] = _Running(task, stop, state)
        await wait_until(lambda: state.ready or task.done(), timeout_s=30, what=f"{name} ready")
        if task.done():
            task.result()  # raises what stopped it

    async def stop(self, name: str) -> None:
        """A clean stop, as on SIGTERM: the batch in hand is finished and committed."""
        running = self._running.pop(name)
        running.stop.set()
        await asyncio.wait_for(running.task, 30)

    def crashed(self) -> list[str]:
        """The services whose run ended on its own: a record must never do that."""
        return [name for name, running in self._running.items() if running.task.done()]

    def health(self, name: str) -> dict[str, object]:
        """What the service's /healthz would answer now."""
        state = self._running[name].state
        return {"service": state.name, "ready": state.ready, **state.details()}

    async def start_all(self) -> None:
        for name in SERVICES:
            await self.start(name)

    async def stop_all(self) -> None:
        for name in list(self._running):
            await self.stop(name)


def environment(settings: Settings) -> dict[str, str]:
    """The settings as the SENDRAIL_* variables a service process reads."""
    assert settings.secrets.secret_key is not None and settings.tls.ca_file is not None
    sender = settings.sender
    return {
        "SENDRAIL_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "SENDRAIL_SECRET_KEY": settings.secrets.secret_key.get_secret_value(),
        "SENDRAIL_TLS_CA_FILE": str(settings.tls.ca_file),
        "SENDRAIL_OAUTH_GOOGLE_TOKEN_URL": settings.oauth.google_token_url,
        "SENDRAIL_OAUTH_MICROSOFT_TOKEN_URL": settings.oauth.microsoft_token_url,
        "SENDRAIL_SENDER_SESSION_IDLE_S": str(sender.session_idle_s),
        "SENDRAIL_SENDER_COMMIT_INTERVAL_S": str(sender.commit_interval_s),
        "SENDRAIL_SENDER_RETRY_BACKOFF_BASE_S": str(sender.retry_backoff_base_s),
        "SENDRAIL_SENDER_RETRY_BACKOFF_MAX_S": str(sender.retry_backoff_max_s),
    }
