"""The sandbox's admin API client, for processes using a sandbox another process started."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Literal

import aiohttp

from sendrail.sandbox.mail_sandbox import SandboxInfo


class SandboxAdminClient:
    """Manages sandbox users over HTTP; use as `async with SandboxAdminClient(info) as admin:`."""

    def __init__(self, info: SandboxInfo, *, timeout_s: float = 10.0) -> None:
        self._admin_url = info.admin_url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SandboxAdminClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, path: str, body: dict[str, str]) -> Any:
        if self._session is None:
            raise RuntimeError("use SandboxAdminClient as an async context manager")
        async with self._session.post(f"{self._admin_url}/{path}", json=body) as response:
            response.raise_for_status()
            if response.status == 204:
                return None
            return await response.json()

    async def add_oauth_user(self, provider: Literal["google", "microsoft"], address: str) -> str:
        """Consent for `address` at `provider`; returns the refresh token."""
        document = await self._post("oauth-users", {"provider": provider, "address": address})
        refresh_token: str = document["refresh_token"]
        return refresh_token

    async def add_password_user(self, server: str, username: str, password: str) -> None:
        """Register a user on one password SMTP server of the sandbox."""
        await self._post(
            "password-users", {"server": server, "username": username, "password": password}
        )

    async def revoke(self, address: str) -> None:
        """As if the user revoked access or changed password: every token of `address` dies."""
        await self._post("revoke", {"address": address})

    async def expire_access(self, address: str) -> int:
        """Expire every access token of `address` (as after an hour); returns how many."""
        document = await self._post("expire-access", {"address": address})
        expired: int = document["expired"]
        return expired
