"""OAuth2 access tokens for Gmail and Exchange Online, from the stored refresh token.

RFC 6749 §6 refresh grant against Google's or Microsoft's token endpoint. A refusal
with `invalid_grant` means the user revoked access or changed password: the
connection is broken, not something to retry. Microsoft returns a new refresh token
each time; it is handed to `on_rotated` to be stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import aiohttp
import structlog

from sendrail.errors import ConnectionBroken, TransientError
from sendrail.metrics import oauth_refreshes
from sendrail.settings import OAuthSettings

log = structlog.get_logger(__name__)

Provider = Literal["google", "microsoft"]

SCOPES: dict[Provider, str] = {
    "google": "https://mail.google.com/",
    "microsoft": "https://outlook.office.com/SMTP.Send "
                 "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
}

EXPIRY_MARGIN_S = 60.0
"""Refresh a little before the provider's expiry, so a token never dies mid-session."""


@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at_s: float

    def __repr__(self) -> str:
        return f"AccessToken(<hidden>, expires_at_s={self.expires_at_s})"


class TokenEndpoint:
    """One HTTP client for the providers' token endpoints."""

    def __init__(self, settings: OAuthSettings, session: aiohttp.ClientSession) -> None:
        self._settings = settings
        self._session = session

    async def refresh(self, provider: Provider, refresh_token: str, *, microsoft_tenant: str,
                      now_s: float) -> tuple[AccessToken, str | None]:
        """Exchange a refresh token; returns the access token and a rotated refresh token."""
        s = self._settings
        if provider == "google":
            url = s.google_token_url
            form = {"client_id": s.google_client_id,
                    "client_secret": s.google_client_secret.get_secret_value()}
        else:
            url = s.microsoft_token_url.replace("{tenant}", microsoft_tenant)
            form = {"client_id": s.microsoft_client_id,
                    "client_secret": s.microsoft_client_secret.get_secret_value(),
                    "scope": SCOPES["microsoft"]}
        form.update(grant_type="refresh_token", refresh_token=refresh_token)
        try:
            async with self._session.post(
                url, data=form, timeout=aiohttp.ClientTimeout(total=s.token_timeout_s)
            ) as response:
                body = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            oauth_refreshes.labels(provider, "error").inc()
            raise TransientError(f"{provider} token endpoint unreachable: {type(error).__name__}") from error
        if status == 200 and isinstance(body, dict) and "access_token" in body:
            oauth_refreshes.labels(provider, "ok").inc()
            token = AccessToken(str(body["access_token"]), now_s + float(body.get("expires_in", 3600)))
            rotated = body.get("refresh_token")
            return token, str(rotated) if rotated and rotated != refresh_token else None
        error_code = body.get("error") if isinstance(body, dict) else None
        if error_code in {"invalid_grant", "unauthorized_client", "invalid_client"}:
            oauth_refreshes.labels(provider, "revoked").inc()
            raise ConnectionBroken(
                f"{provider} refused the stored authorization ({error_code}): the user must "
                "connect the mailbox again"
            )
        oauth_refreshes.labels(provider, "error").inc()
        raise TransientError(f"{provider} token endpoint answered HTTP {status} ({error_code})")


RotatedTokenSink = Callable[[str], Awaitable[None]]


class AccessTokenSource:
    """The current access token of one mailbox, refreshed when it is about to expire."""

    def __init__(self, endpoint: TokenEndpoint, provider: Provider, refresh_token: str, *,
                 microsoft_tenant: str, clock_s: Callable[[], float],
                 on_rotated: RotatedTokenSink | None = None) -> None:
        self._endpoint = endpoint
        self._provider = provider
        self._refresh_token = refresh_token
        self._microsoft_tenant = microsoft_tenant
        self._clock_s = clock_s
        self._on_rotated = on_rotated
        self._token: AccessToken | None = None

    async def get(self) -> str:
        now_s = self._clock_s()
        if self._token is None or self._token.expires_at_s - EXPIRY_MARGIN_S <= now_s:
            await self._refresh(now_s)
        assert self._token is not None
        return self._token.value

    def invalidate(self) -> bool:
        """Forget the cached token (the server refused it); True if there was one."""
        had = self._token is not None
        self._token = None
        return had

    async def _refresh(self, now_s: float) -> None:
        self._token, rotated = await self._endpoint.refresh(
            self._provider, self._refresh_token, microsoft_tenant=self._microsoft_tenant,
            now_s=now_s,
        )
        if rotated is not None:
            self._refresh_token = rotated
            if self._on_rotated is not None:
                await self._on_rotated(rotated)

    def __repr__(self) -> str:
        return f"AccessTokenSource({self._provider}, <tokens hidden>)"
