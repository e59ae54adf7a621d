"""Who may ask the analytics service what: the Host check, then a tenant's bearer token or the
authenticating proxy's tenant header; pure, no I/O.

The Host check stops DNS rebinding: a page on a name an attacker controls, once that name
resolves to this service's address, sends its own name as Host, never one of ours.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sendrail.analytics_tokens import TokenRecords, Verdict, check
from sendrail.errors import ConfigurationError
from sendrail.settings import AnalyticsSettings

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
ANY_HOST = "*"
"""As SENDRAIL_ANALYTICS_ALLOWED_HOSTS: no Host check (a proxy in front does it)."""
_WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "[::]"})
"""Bind addresses that name no host a client would ask for."""
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""A field name is an RFC 9110 §5.6.2 token."""
_REG_NAME = re.compile(r"[a-z0-9](?:[a-z0-9_.-]*[a-z0-9])?")
_IP_LITERAL = re.compile(r"\[[0-9a-f:.]+\]")
_PORT = re.compile(r"[0-9]{1,5}")

HostName = tuple[str, int | None]
"""A Host header value, lowercased and without a final dot: (name, port or None if absent)."""


class HostVerdict(StrEnum):
    SERVED = "served"
    MALFORMED = "malformed"
    """No Host, several, or one that is no host[:port] (RFC 9112 §3.2: 400)."""
    MISDIRECTED = "misdirected"
    """A name this service does not answer for (RFC 9110 §15.5.20: 421)."""


def parse_host(value: str) -> HostName | None:
    """`name`, `name:port`, `[v6]` or `[v6]:port` (RFC 9110 §7.2); None if it is none of those."""
    text = value.strip().lower()
    if text.startswith("["):
        end = text.find("]") + 1
        name, rest = text[:end], text[end:]
        if not end or not _IP_LITERAL.fullmatch(name):
            return None
    else:
        name, colon, port_text = text.partition(":")
        rest = colon + port_text
        name = name.removesuffix(".")
        if not _REG_NAME.fullmatch(name):
            return None
    if not rest:
        return name, None
    port_text = rest.removeprefix(":")
    if not rest.startswith(":") or not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        return None
    return name, int(port_text)


@dataclass(frozen=True)
class AllowedHosts:
    names: frozenset[HostName]
    any_host: bool = False

    @classmethod
    def parse(cls, configured: str | None, bind_host: str, port: int) -> AllowedHosts:
        """The configured list, or by default the loopback names and the bind address, each bare
        and with `port`. Raises ConfigurationError on an entry that is no host[:port]."""
        if configured is None or not configured.strip():
            bind = f"[{bind_host}]" if ":" in bind_host and not bind_host.startswith("[") else bind_host
            names = {n for n in (*LOOPBACK_HOSTS, bind.lower()) if n not in _WILDCARD_ADDRESSES}
            return cls(frozenset({(n, None) for n in names} | {(n, port) for n in names}))
        entries = [e.strip() for e in configured.split(",") if e.strip()]
        if ANY_HOST in entries:
            return cls(frozenset(), any_host=True)
        parsed = {entry: parse_host(entry) for entry in entries}
        wrong = [entry for entry, host in parsed.items() if host is None]
        if wrong:
            raise ConfigurationError(f"SENDRAIL_ANALYTICS_ALLOWED_HOSTS: {', '.join(wrong)} "
                                     "is no host or host:port")
        return cls(frozenset(host for host in parsed.values() if host is not None))

    def judge(self, host_headers: Sequence[str]) -> HostVerdict:
        """`host_headers`: every Host header of the request."""
        if len(host_headers) != 1:
            return HostVerdict.MALFORMED
        host = parse_host(host_headers[0])
        if host is None:
            return HostVerdict.MALFORMED
        return HostVerdict.SERVED if self.any_host or host in self.names else HostVerdict.MISDIRECTED

    def describe(self) -> str:
        return ANY_HOST if self.any_host else ",".join(
            sorted(name if port is None else f"{name}:{port}" for name, port in self.names))


def bearer_token(authorization_headers: Sequence[str]) -> str | None:
    """The token of the request's one `Authorization: Bearer` header (RFC 6750 §2.1; the scheme
    is case-insensitive, RFC 9110 §11.1), or None."""
    if len(authorization_headers) != 1:
        return None
    scheme, _, token = authorization_headers[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def proxy_verdict(tenant_headers: Sequence[str], tenant_id: str) -> Verdict:
    """Behind the authenticating proxy: the tenant it names in its header reads only its own data.
    A repeated header is refused: a proxy that appends rather than replaces it would let a
    client's own value through."""
    if len(tenant_headers) != 1 or not tenant_headers[0].strip():
        return Verdict.UNAUTHENTICATED
    return Verdict.ALLOWED if tenant_headers[0].strip() == tenant_id else Verdict.FORBIDDEN


@dataclass(frozen=True)
class AccessPolicy:
    hosts: AllowedHosts
    proxy_header: str | None = None
    """Set: the authenticating proxy names the tenant in this header; no bearer tokens."""

    @classmethod
    def from_settings(cls, settings: AnalyticsSettings) -> AccessPolicy:
        """Raises ConfigurationError on settings that make no sense."""
        header = settings.trust_proxy_header
        if header is not None and not _HEADER_NAME.fullmatch(header):
            raise ConfigurationError(f"the tenant header {header!r} is no HTTP header name")
        return cls(AllowedHosts.parse(settings.allowed_hosts, settings.host, settings.port), header)

    def verdict(self, tenant_id: str, *, authorization: Sequence[str], proxy_tenant: Sequence[str],
                tokens: TokenRecords) -> Verdict:
        """`authorization` and `proxy_tenant`: every value of those headers in the request."""
        if self.proxy_header is not None:
            return proxy_verdict(proxy_tenant, tenant_id)
        return check(bearer_token(authorization), tenant_id, tokens)
