"""Bearer tokens that read one tenant's analytics: made, hashed and checked; pure, no I/O.

A token is shown once, when it is made; the registry keeps only its SHA-256. Its secret part
is 32 random bytes (256 bits), so a token cannot be guessed and a fast hash is enough: a slow
KDF (scrypt, Argon2) protects low-entropy passwords from offline guessing, and would only add
work to every request here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sendrail.events import AnalyticsTokenIssued

TOKEN_BYTES = 32
TOKEN_ID_BYTES = 8
PREFIX = "srat"
"""Marks a string as a sendrail analytics token, for people and for secret scanners."""
_SECRET_CHARS = -(-TOKEN_BYTES * 4 // 3)  # unpadded base64url
_TOKEN = re.compile(rf"{PREFIX}_(?P<id>[0-9a-f]{{{TOKEN_ID_BYTES * 2}}})_[A-Za-z0-9_-]{{{_SECRET_CHARS}}}")

TokenRecords = Mapping[tuple[str, str], AnalyticsTokenIssued]
"""(tenant_id, token_id) → record, as the registry view keeps them."""


@dataclass(frozen=True, repr=False)
class IssuedToken:
    token: str
    """`srat_<token id>_<secret>`: shown once, never stored, logged or put in a URL."""
    record: AnalyticsTokenIssued

    def __repr__(self) -> str:  # keeps the token out of tracebacks and log lines
        return f"IssuedToken(tenant_id={self.record.tenant_id!r}, token_id={self.record.token_id!r})"


class Verdict(StrEnum):
    ALLOWED = "allowed"
    UNAUTHENTICATED = "unauthenticated"
    """No token, or a malformed, unknown or revoked one."""
    FORBIDDEN = "forbidden"
    """A valid token, of another tenant."""


def issue(tenant_id: str, now: datetime,
          random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> IssuedToken:
    token_id = random_bytes(TOKEN_ID_BYTES).hex()
    secret = base64.urlsafe_b64encode(random_bytes(TOKEN_BYTES)).rstrip(b"=").decode()
    token = f"{PREFIX}_{token_id}_{secret}"
    record = AnalyticsTokenIssued(tenant_id=tenant_id, token_id=token_id, sha256=digest(token),
                                  created_at=now)
    return IssuedToken(token, record)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id_of(token: str) -> str | None:
    """The id inside a well-formed token; None for anything else."""
    found = _TOKEN.fullmatch(token)
    return found["id"] if found else None


def revoked(record: AnalyticsTokenIssued, now: datetime) -> AnalyticsTokenIssued:
    """The record that revokes it; a token revoked already keeps its first revocation time."""
    return record if record.revoked_at is not None else record.model_copy(update={"revoked_at": now})


def _opens(token: str, record: AnalyticsTokenIssued) -> bool:
    # Constant-time comparison: the time taken says nothing about how much of the hash matched.
    return record.revoked_at is None and hmac.compare_digest(digest(token), record.sha256)


def check(token: str | None, tenant_id: str, tokens: TokenRecords) -> Verdict:
    """Whether `token` reads `tenant_id`'s analytics."""
    token_id = token_id_of(token) if token else None
    if token is None or token_id is None:
        return Verdict.UNAUTHENTICATED
    own = tokens.get((tenant_id, token_id))
    if own is not None:
        return Verdict.ALLOWED if _opens(token, own) else Verdict.UNAUTHENTICATED
    # Not this tenant's: forbidden only if it is another tenant's valid token. Records are
    # keyed by tenant first, so this looks through them; it happens only on a refusal.
    for (_, other_id), record in tokens.items():
        if other_id == token_id and _opens(token, record):
            return Verdict.FORBIDDEN
    return Verdict.UNAUTHENTICATED
