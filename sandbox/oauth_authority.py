"""The sandbox's OAuth2 authority: refresh tokens, access tokens and their revocation.

It plays Google's and Microsoft's token services for the local mail servers:
the token endpoint exchanges refresh tokens through it, and the SMTP servers and
Dovecot (through introspection) check access tokens against it. Microsoft hands out a
new refresh token on every use (the old one stays valid until revoked, as Microsoft's
do); Google keeps the one it gave.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

Provider = Literal["google", "microsoft"]


class InvalidGrant(Exception):
    """The refresh token is unknown or revoked: the user must connect again."""


@dataclass
class _Grant:
    provider: Provider
    address: str
    revoked: bool = False


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    expires_in_s: int
    refresh_token: str | None
    """Set when the provider rotates refresh tokens (Microsoft)."""


@dataclass(frozen=True)
class _Access:
    address: str
    provider: Provider
    expires_at_s: float


class OAuthAuthority:
    """Issues and checks tokens; time comes in as an argument."""

    def __init__(self, *, access_lifetime_s: int = 3600) -> None:
        self._access_lifetime_s = access_lifetime_s
        self._grants: dict[str, _Grant] = {}
        self._access: dict[str, _Access] = {}

    def add_user(self, provider: Provider, address: str) -> str:
        """Consent for `address` at `provider`; returns the refresh token."""
        token = f"{provider[0]}rt-{secrets.token_urlsafe(24)}"
        self._grants[token] = _Grant(provider, address.lower())
        return token

    def refresh(self, provider: Provider, refresh_token: str, *, now_s: float) -> IssuedTokens:
        grant = self._grants.get(refresh_token)
        if grant is None or grant.revoked or grant.provider != provider:
            raise InvalidGrant(refresh_token[:6])
        access = f"{provider[0]}at-{secrets.token_urlsafe(24)}"
        self._access[access] = _Access(grant.address, provider, now_s + self._access_lifetime_s)
        rotated: str | None = None
        if provider == "microsoft":
            rotated = f"mrt-{secrets.token_urlsafe(24)}"
            self._grants[rotated] = grant
        return IssuedTokens(access, self._access_lifetime_s, rotated)

    def check_access(self, access_token: str, *, now_s: float,
                     provider: Provider | None = None) -> str | None:
        """The address an access token stands for, or None if it is unknown, expired, revoked
        or (when `provider` is given) issued by the other provider."""
        access = self._access.get(access_token)
        if access is None or access.expires_at_s <= now_s:
            return None
        if provider is not None and access.provider != provider:
            return None
        return access.address

    def expire_access_tokens(self, address: str) -> int:
        """Make every access token of `address` expired (as after an hour); returns how many."""
        expired = [t for t, a in self._access.items() if a.address == address.lower()]
        for token in expired:
            self._access[token] = _Access(self._access[token].address, self._access[token].provider, 0.0)
        return len(expired)

    def revoke(self, address: str) -> None:
        """The user withdrew consent or changed password: every token of `address` dies."""
        for grant in self._grants.values():
            if grant.address == address.lower():
                grant.revoked = True
        self._access = {t: a for t, a in self._access.items() if a.address != address.lower()}
