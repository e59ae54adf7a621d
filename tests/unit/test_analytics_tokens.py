"""Analytics tokens: their shape, that only a hash is kept, and which tenant each one opens."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from sendrail.analytics_tokens import (
    TOKEN_BYTES,
    IssuedToken,
    Verdict,
    check,
    digest,
    issue,
    revoked,
    token_id_of,
)
from sendrail.bus.codec import decode_registry, encode
from sendrail.events import AnalyticsTokenIssued, registry_key
from sendrail.registry.view import RegistryView

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def fixed(seed: int) -> IssuedToken:
    """A token made from known bytes, so each test knows what it holds."""
    return issue("acme" if seed < 100 else "globex", T0, random_bytes=lambda n: bytes([seed]) * n)


def book(*records: AnalyticsTokenIssued) -> dict[tuple[str, str], AnalyticsTokenIssued]:
    view = RegistryView()
    for record in records:
        view.apply(registry_key(record), record)
    return view.analytics_tokens


def test_a_token_carries_its_id_and_32_random_bytes_and_only_its_hash_is_kept() -> None:
    issued = issue("acme", T0)
    prefix, token_id, secret = issued.token.split("_", 2)
    assert (prefix, token_id) == ("srat", issued.record.token_id)
    assert len(token_id) == 16 and len(secret) == 43  # 32 bytes, base64url without padding
    assert TOKEN_BYTES == 32
    assert issued.record.sha256 == hashlib.sha256(issued.token.encode()).hexdigest() == digest(issued.token)
    written = encode(issued.record)
    assert issued.token.encode() not in written and secret.encode() not in written
    assert decode_registry(written) == issued.record
    assert (issued.record.tenant_id, issued.record.created_at, issued.record.revoked_at) == ("acme", T0, None)


def test_tokens_differ_every_time() -> None:
    tokens = {issue("acme", T0).token for _ in range(50)}
    assert len(tokens) == 50


def test_the_token_stays_out_of_its_repr() -> None:
    issued = issue("acme", T0)
    assert issued.token not in repr(issued) and issued.token not in str(issued)
    assert issued.record.token_id in repr(issued)


@pytest.mark.parametrize(("text", "found"), [
    ("srat_0101010101010101_" + "A" * 43, "0101010101010101"),
    ("srat_0101010101010101_" + "-_" * 21 + "a", "0101010101010101"),
    ("srat_0101010101010101_" + "A" * 42, None),
    ("srat_0101010101010101_" + "A" * 44, None),
    ("srat_010101010101010_" + "A" * 44, None),
    ("srat_01010101010101AB_" + "A" * 43, None),  # ids are lowercase hex
    ("srat_0101010101010101_" + "A" * 42 + "=", None),
    ("sendrail_0101010101010101_" + "A" * 43, None),
    (" srat_0101010101010101_" + "A" * 43, None),
    ("srat_0101010101010101_" + "A" * 43 + "\n", None),
    ("", None),
    ("Bearer srat_0101010101010101_" + "A" * 43, None),
])
def test_the_id_is_read_only_from_a_well_formed_token(text: str, found: str | None) -> None:
    assert token_id_of(text) == found


def test_check_opens_only_the_tokens_own_tenant() -> None:
    acme, globex = fixed(1), fixed(200)
    tokens = book(acme.record, globex.record)
    assert check(acme.token, "acme", tokens) is Verdict.ALLOWED
    assert check(globex.token, "globex", tokens) is Verdict.ALLOWED
    # A valid token of another tenant: forbidden, whatever the other tenant is called.
    assert check(globex.token, "acme", tokens) is Verdict.FORBIDDEN
    assert check(acme.token, "globex", tokens) is Verdict.FORBIDDEN
    assert check(acme.token, "nobody-at-all", tokens) is Verdict.FORBIDDEN


@pytest.mark.parametrize("presented", [
    None, "", "srat", "not a token",
    "srat_0101010101010101_" + "B" * 43,  # acme's id, another secret
    "srat_0202020202020202_" + "A" * 43,  # well-formed, unknown id
], ids=["none", "empty", "prefix only", "garbage", "right id, wrong secret", "unknown id"])
def test_check_refuses_anything_but_a_known_token(presented: str | None) -> None:
    tokens = book(fixed(1).record)
    assert check(presented, "acme", tokens) is Verdict.UNAUTHENTICATED
    assert check(presented, "globex", tokens) is Verdict.UNAUTHENTICATED


def test_another_tenants_id_with_a_wrong_secret_is_unauthenticated_not_forbidden() -> None:
    """A 403 is given only to a token that proves itself: guessing ids tells nothing."""
    globex = fixed(200)
    forged = globex.token[:-1] + ("A" if globex.token[-1] != "A" else "B")
    assert check(forged, "acme", book(globex.record)) is Verdict.UNAUTHENTICATED


def test_a_revoked_token_opens_nothing_and_keeps_its_first_revocation_time() -> None:
    acme = fixed(1)
    gone = revoked(acme.record, T0 + timedelta(hours=1))
    assert gone.revoked_at == T0 + timedelta(hours=1)
    assert revoked(gone, T0 + timedelta(hours=2)) == gone
    assert registry_key(gone) == registry_key(acme.record)
    tokens = book(acme.record, gone)  # the later record wins, as in the compacted topic
    assert check(acme.token, "acme", tokens) is Verdict.UNAUTHENTICATED
    assert check(acme.token, "globex", tokens) is Verdict.UNAUTHENTICATED


def test_the_registry_keys_tokens_by_tenant_and_id_and_a_tombstone_deletes_one() -> None:
    acme, other_acme, globex = fixed(1), fixed(2), fixed(200)
    assert registry_key(acme.record) == f"analytics_token/acme/{acme.record.token_id}"
    view = RegistryView()
    for record in (acme.record, other_acme.record, globex.record):
        view.apply(registry_key(record), record)
    view.apply(registry_key(acme.record), None)
    assert set(view.analytics_tokens) == {("acme", other_acme.record.token_id),
                                          ("globex", globex.record.token_id)}


@pytest.mark.parametrize("fields", [
    {"token_id": "short"}, {"token_id": "0101010101010101X"}, {"sha256": "ab" * 31},
    {"sha256": "AB" * 32}, {"tenant_id": "has space"},
])
def test_a_malformed_record_is_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        AnalyticsTokenIssued.model_validate({**fixed(1).record.model_dump(), **fields})
