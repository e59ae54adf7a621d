"""Routing rules (PRODUCT.md section 1): which connection a request goes through, or why none;
and how the router describes a request it cannot read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from sendrail.bus.dead_letter import describe as _describe
from sendrail.events import (
    ChannelAssigned,
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    EmailRequested,
    IdentityRegistered,
    OAuthGrant,
    RegistryRecord,
    SmtpServer,
    Source,
    TenantConfigured,
    registry_key,
    send_id_for,
)
from sendrail.registry.view import RegistryView
from sendrail.services.router.routing import _identify
from sendrail.services.router.rules import Refusal, Route, choose_route

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TENANT, OTHER_TENANT = "acme", "globex"
ANN, BOB = "ann", "bob"
ANN_MAIN, ANN_ALIAS = "ann@acme.example", "ann.sales@acme.example"
BOB_MAIN = "bob@acme.example"

_SMTP_HOSTS = {
    ChannelKind.GMAIL: "smtp.gmail.com",
    ChannelKind.EXCHANGE_ONLINE: "smtp.office365.com",
    ChannelKind.EXCHANGE_ONPREM: "mail.acme.example",
    ChannelKind.CUSTOM_SMTP: "smtp.sparkpost.example",
    ChannelKind.TEAM_SMTP: "smtp.team.example",
    ChannelKind.LEGACY: "legacy-pool.sendrail.example",
}


def connection(connection_id: str, kind: ChannelKind, owner: str | None = ANN, *,
               tenant_id: str = TENANT) -> ConnectionConfigured:
    oauth = kind in {ChannelKind.GMAIL, ChannelKind.EXCHANGE_ONLINE}
    return ConnectionConfigured(
        tenant_id=tenant_id, connection_id=connection_id, kind=kind,
        owner_user_id=None if kind in {ChannelKind.TEAM_SMTP, ChannelKind.LEGACY} else owner,
        address=f"{owner or 'team'}@acme.example" if oauth else None,
        smtp=SmtpServer(host=_SMTP_HOSTS[kind], port=587),
        username=None if oauth else "user",
        password=None if oauth else "gAAAA-sealed",
        oauth=OAuthGrant(refresh_token="gAAAA-sealed") if oauth else None,
        connected_at=T0, updated_at=T0,
    )


def identity(address: str, user_id: str = ANN, *, verified: bool = True, default: bool = False,
             tenant_id: str = TENANT) -> IdentityRegistered:
    return IdentityRegistered(tenant_id=tenant_id, user_id=user_id, address=address,
                              verified=verified, is_default=default, updated_at=T0)


def assigned(address: str, connection_id: str, user_id: str = ANN, *,
             tenant_id: str = TENANT) -> ChannelAssigned:
    return ChannelAssigned(tenant_id=tenant_id, user_id=user_id, identity=address,
                           connection_id=connection_id, updated_at=T0)


def tenant(*, legacy: bool = False, team: str | None = None,
           tenant_id: str = TENANT) -> TenantConfigured:
    return TenantConfigured(tenant_id=tenant_id, legacy=legacy, team_connection_id=team,
                            updated_at=T0)


def broken(connection_id: str, reason: str | None = "token revoked", *,
           tenant_id: str = TENANT) -> ConnectionHealthChanged:
    return ConnectionHealthChanged(tenant_id=tenant_id, connection_id=connection_id,
                                   healthy=False, reason=reason, changed_at=T0)


def registry(*records: RegistryRecord) -> RegistryView:
    view = RegistryView()
    for record in records:
        view.apply(registry_key(record), record)
    return view


def request(identity_address: str = ANN_MAIN, user_id: str = ANN, *,
            source: Source = Source.API, tenant_id: str = TENANT) -> EmailRequested:
    return EmailRequested(
        idempotency_key="order-1", tenant_id=tenant_id, user_id=user_id,
        identity=identity_address, source=source, to=["lead@customer.example"],
        subject="Hello", text="Hi there", requested_at=T0,
    )


@dataclass(frozen=True)
class Case:
    name: str
    records: tuple[RegistryRecord, ...]
    request: EmailRequested
    connection_id: str | None
    """The expected connection; None when the request must be refused."""
    refusal_words: tuple[str, ...] = ()
    """Words the refusal must contain, so that a person knows what to do."""
    held: bool = False


GMAIL = connection("ann-gmail", ChannelKind.GMAIL)
EXO = connection("ann-exo", ChannelKind.EXCHANGE_ONLINE)
ONPREM = connection("ann-onprem", ChannelKind.EXCHANGE_ONPREM)
CUSTOM = connection("ann-sparkpost", ChannelKind.CUSTOM_SMTP)
BOB_GMAIL = connection("bob-gmail", ChannelKind.GMAIL, owner=BOB)
BOB_CUSTOM = connection("bob-smtp", ChannelKind.CUSTOM_SMTP, owner=BOB)
TEAM = connection("team", ChannelKind.TEAM_SMTP)
LEGACY = connection("legacy-pool", ChannelKind.LEGACY)

CASES = [
    # --- identity checks come first ------------------------------------------------------
    Case("unknown identity", (GMAIL,), request(), None, ("not an identity", "identities add")),
    Case("identity of another user",
         (identity(BOB_MAIN, BOB, default=True), GMAIL, BOB_GMAIL),
         request(BOB_MAIN, ANN), None, ("not an identity of user ann",)),
    Case("unverified identity", (identity(ANN_MAIN, verified=False, default=True), GMAIL),
         request(), None, ("not verified",)),
    Case("unverified identity from the Gmail add-on",
         (identity(ANN_MAIN, verified=False), GMAIL),
         request(source=Source.GMAIL_ADDON), None, ("not verified",)),
    # --- the add-ons force their provider, whatever the assignment --------------------------
    Case("Gmail add-on uses the Gmail connection over an explicit assignment",
         (identity(ANN_MAIN, default=True), GMAIL, CUSTOM, assigned(ANN_MAIN, CUSTOM.connection_id)),
         request(source=Source.GMAIL_ADDON), GMAIL.connection_id),
    Case("Gmail add-on uses the Gmail connection over the team SMTP",
         (identity(ANN_MAIN, default=True), GMAIL, EXO, TEAM, tenant(team=TEAM.connection_id)),
         request(source=Source.GMAIL_ADDON), GMAIL.connection_id),
    Case("Gmail add-on without a Gmail connection is refused",
         (identity(ANN_MAIN, default=True), EXO, CUSTOM),
         request(source=Source.GMAIL_ADDON), None, ("gmail", "connect")),
    Case("Gmail add-on never uses another user's Gmail connection",
         (identity(ANN_MAIN, default=True), BOB_GMAIL),
         request(source=Source.GMAIL_ADDON), None, ("gmail",)),
    Case("Outlook add-in uses Exchange Online over an explicit assignment",
         (identity(ANN_MAIN), GMAIL, EXO, assigned(ANN_MAIN, GMAIL.connection_id)),
         request(source=Source.OUTLOOK_ADDIN), EXO.connection_id),
    Case("Outlook add-in prefers Exchange Online to on-premises",
         (identity(ANN_MAIN), ONPREM, EXO), request(source=Source.OUTLOOK_ADDIN), EXO.connection_id),
    Case("Outlook add-in prefers Exchange Online to on-premises (either order)",
         (identity(ANN_MAIN), EXO, ONPREM), request(source=Source.OUTLOOK_ADDIN), EXO.connection_id),
    Case("Outlook add-in accepts on-premises Exchange",
         (identity(ANN_MAIN), GMAIL, ONPREM), request(source=Source.OUTLOOK_ADDIN),
         ONPREM.connection_id),
    Case("Outlook add-in without an Exchange connection is refused",
         (identity(ANN_MAIN, default=True), GMAIL, TEAM, tenant(team=TEAM.connection_id)),
         request(source=Source.OUTLOOK_ADDIN), None, ("exchange_online", "connect")),
    # --- explicit assignment, the only connection, the team SMTP ------------------------------
    Case("explicit assignment wins over the only-connection default",
         (identity(ANN_ALIAS), GMAIL, TEAM, assigned(ANN_ALIAS, TEAM.connection_id)),
         request(ANN_ALIAS), TEAM.connection_id),
    Case("explicit assignment wins over the team SMTP for the default identity",
         (identity(ANN_MAIN, default=True), GMAIL, CUSTOM, TEAM, tenant(team=TEAM.connection_id),
          assigned(ANN_MAIN, CUSTOM.connection_id)),
         request(), CUSTOM.connection_id),
    Case("assignment to a connection that no longer exists is refused",
         (identity(ANN_MAIN, default=True), GMAIL, assigned(ANN_MAIN, "gone")),
         request(), None, ("gone", "no longer exists")),
    Case("a user with exactly one connection uses it for the default identity",
         (identity(ANN_MAIN, default=True), CUSTOM), request(), CUSTOM.connection_id),
    Case("a user with exactly one connection uses it for every other identity",
         (identity(ANN_MAIN, default=True), identity(ANN_ALIAS), GMAIL),
         request(ANN_ALIAS), GMAIL.connection_id),
    Case("another user's connections do not count as the user's own",
         (identity(ANN_ALIAS), GMAIL, BOB_GMAIL, BOB_CUSTOM), request(ANN_ALIAS), GMAIL.connection_id),
    Case("team SMTP serves the default identity of a user without a connection",
         (identity(ANN_MAIN, default=True), TEAM, tenant(team=TEAM.connection_id)),
         request(), TEAM.connection_id),
    Case("team SMTP serves the default identity of a user with several connections",
         (identity(ANN_MAIN, default=True), GMAIL, CUSTOM, TEAM, tenant(team=TEAM.connection_id)),
         request(), TEAM.connection_id),
    Case("team SMTP is not the default of a non-default identity",
         (identity(ANN_MAIN, default=True), identity(ANN_ALIAS), TEAM,
          tenant(team=TEAM.connection_id)),
         request(ANN_ALIAS), None, ("no delivery channel",)),
    Case("a non-default identity with several connections and no assignment is refused",
         (identity(ANN_MAIN, default=True), identity(ANN_ALIAS), GMAIL, CUSTOM, TEAM,
          tenant(team=TEAM.connection_id)),
         request(ANN_ALIAS), None, ("2 connections", "sendrail assign")),
    Case("a user without any connection and no team SMTP is refused",
         (identity(ANN_MAIN, default=True), tenant()), request(), None, ("no delivery channel",)),
    Case("a team SMTP id naming no connection is not used",
         (identity(ANN_MAIN, default=True), tenant(team="missing")), request(), None,
         ("no delivery channel",)),
    Case("team SMTP may be assigned to any member's identity",
         (identity(BOB_MAIN, BOB), BOB_GMAIL, BOB_CUSTOM, TEAM, tenant(team=TEAM.connection_id),
          assigned(BOB_MAIN, TEAM.connection_id, BOB)),
         request(BOB_MAIN, BOB), TEAM.connection_id),
    # --- whose connection, and legacy servers ---------------------------------------------
    Case("an assignment to another user's connection is refused",
         (identity(ANN_MAIN), GMAIL, assigned(ANN_MAIN, BOB_GMAIL.connection_id), BOB_GMAIL),
         request(), None, ("belongs to another user",)),
    Case("a team SMTP id naming a user's own mailbox does not share it",
         (identity(ANN_MAIN, default=True), BOB_CUSTOM, tenant(team=BOB_CUSTOM.connection_id)),
         request(), None, ("belongs to another user",)),
    Case("legacy servers serve a legacy tenant",
         (identity(ANN_MAIN), LEGACY, tenant(legacy=True), assigned(ANN_MAIN, LEGACY.connection_id)),
         request(), LEGACY.connection_id),
    Case("legacy servers are refused to a tenant not flagged legacy",
         (identity(ANN_MAIN), LEGACY, tenant(legacy=False),
          assigned(ANN_MAIN, LEGACY.connection_id)),
         request(), None, ("legacy",)),
    Case("legacy servers are refused to a tenant without settings",
         (identity(ANN_MAIN), LEGACY, assigned(ANN_MAIN, LEGACY.connection_id)),
         request(), None, ("legacy",)),
    Case("legacy servers as the team SMTP of a tenant not flagged legacy are refused",
         (identity(ANN_MAIN, default=True), LEGACY, tenant(team=LEGACY.connection_id)),
         request(), None, ("legacy",)),
    # --- broken connections hold mail; they never reroute it -------------------------------
    Case("a broken assigned connection holds the mail",
         (identity(ANN_MAIN, default=True), GMAIL, CUSTOM, TEAM, tenant(team=TEAM.connection_id),
          assigned(ANN_MAIN, GMAIL.connection_id), broken(GMAIL.connection_id)),
         request(), GMAIL.connection_id, held=True),
    Case("a broken only connection holds the mail even with a team SMTP",
         (identity(ANN_MAIN, default=True), GMAIL, TEAM, tenant(team=TEAM.connection_id),
          broken(GMAIL.connection_id)),
         request(), GMAIL.connection_id, held=True),
    Case("a broken Gmail connection holds add-on mail",
         (identity(ANN_MAIN), GMAIL, CUSTOM, broken(GMAIL.connection_id)),
         request(source=Source.GMAIL_ADDON), GMAIL.connection_id, held=True),
    Case("a broken Exchange Online connection holds add-in mail, never on-premises",
         (identity(ANN_MAIN), EXO, ONPREM, broken(EXO.connection_id)),
         request(source=Source.OUTLOOK_ADDIN), EXO.connection_id, held=True),
    Case("a broken team SMTP holds the mail",
         (identity(ANN_MAIN, default=True), TEAM, tenant(team=TEAM.connection_id),
          broken(TEAM.connection_id)),
         request(), TEAM.connection_id, held=True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_choose_route(case: Case) -> None:
    decision = choose_route(case.request, registry(*case.records))
    if case.connection_id is None:
        assert isinstance(decision, Refusal), decision
        for words in case.refusal_words:
            assert words in decision.reason
    else:
        assert isinstance(decision, Route), decision
        assert decision.connection.connection_id == case.connection_id
        assert decision.connection.tenant_id == case.request.tenant_id
        assert (decision.held_reason is not None) is case.held


def test_a_broken_connection_route_says_why() -> None:
    view = registry(identity(ANN_MAIN, default=True), GMAIL, broken(GMAIL.connection_id, "revoked"))
    decision = choose_route(request(), view)
    assert isinstance(decision, Route)
    assert decision.held_reason == "revoked"


def test_a_broken_connection_without_a_reason_still_holds() -> None:
    view = registry(identity(ANN_MAIN, default=True), GMAIL, broken(GMAIL.connection_id, None))
    decision = choose_route(request(), view)
    assert isinstance(decision, Route)
    assert decision.held_reason


def test_a_reconnected_connection_routes_again() -> None:
    view = registry(identity(ANN_MAIN, default=True), GMAIL, broken(GMAIL.connection_id))
    healthy = ConnectionHealthChanged(tenant_id=TENANT, connection_id=GMAIL.connection_id,
                                      healthy=True, reason="connected", changed_at=T0)
    view.apply(registry_key(healthy), healthy)
    decision = choose_route(request(), view)
    assert isinstance(decision, Route)
    assert decision.held_reason is None


def test_the_request_identity_is_matched_after_normalisation() -> None:
    view = registry(identity(ANN_MAIN, default=True), GMAIL)
    decision = choose_route(request("ann@ACME.Example"), view)
    assert isinstance(decision, Route)
    assert decision.connection.connection_id == GMAIL.connection_id


# --- tenant isolation: records of another tenant never serve this one, even with equal ids --


def _mirror(record: RegistryRecord) -> RegistryRecord:
    return record.model_copy(update={"tenant_id": OTHER_TENANT})


ISOLATION_CASES: list[tuple[str, Source, tuple[RegistryRecord, ...], tuple[RegistryRecord, ...]]] = [
    # (name, source, records of this tenant, records of the other tenant with the same ids)
    ("identity only in the other tenant", Source.API, (GMAIL,), (identity(ANN_MAIN, default=True),)),
    ("connection only in the other tenant", Source.API, (identity(ANN_MAIN, default=True),),
     (GMAIL,)),
    ("assigned connection only in the other tenant", Source.API,
     (identity(ANN_MAIN), GMAIL, CUSTOM, assigned(ANN_MAIN, "shared-id")),
     (connection("shared-id", ChannelKind.CUSTOM_SMTP),)),
    ("assignment only in the other tenant", Source.API,
     (identity(ANN_MAIN), GMAIL, CUSTOM), (assigned(ANN_MAIN, GMAIL.connection_id),)),
    ("team SMTP only in the other tenant", Source.API,
     (identity(ANN_MAIN, default=True), tenant(team=TEAM.connection_id)), (TEAM,)),
    ("tenant settings only in the other tenant", Source.API,
     (identity(ANN_MAIN, default=True), TEAM), (tenant(team=TEAM.connection_id),)),
    ("legacy flag only in the other tenant", Source.API,
     (identity(ANN_MAIN), LEGACY, tenant(), assigned(ANN_MAIN, LEGACY.connection_id)),
     (tenant(legacy=True),)),
    ("Gmail connection for the add-on only in the other tenant", Source.GMAIL_ADDON,
     (identity(ANN_MAIN), EXO), (GMAIL,)),
    ("Exchange connection for the add-in only in the other tenant", Source.OUTLOOK_ADDIN,
     (identity(ANN_MAIN), GMAIL), (EXO, ONPREM)),
]


@pytest.mark.parametrize(("source", "own", "foreign"), [c[1:] for c in ISOLATION_CASES],
                         ids=[c[0] for c in ISOLATION_CASES])
def test_records_of_another_tenant_never_serve_this_one(
    source: Source, own: tuple[RegistryRecord, ...], foreign: tuple[RegistryRecord, ...]
) -> None:
    view = registry(*own, *(_mirror(r) for r in foreign))
    decision = choose_route(request(source=source), view)
    assert isinstance(decision, Refusal), decision
    # The same records in this tenant do serve it: the refusal is the tenant boundary.
    assert isinstance(choose_route(request(source=source), registry(*own, *foreign)), Route)


def test_other_tenant_health_does_not_hold_this_tenants_mail() -> None:
    view = registry(identity(ANN_MAIN, default=True), GMAIL, _mirror(broken(GMAIL.connection_id)))
    decision = choose_route(request(), view)
    assert isinstance(decision, Route)
    assert decision.held_reason is None


def test_each_tenant_gets_its_own_record_for_equal_ids() -> None:
    records = (identity(ANN_MAIN, default=True), GMAIL)
    view = registry(*records, *(_mirror(r) for r in records))
    for tenant_id in (TENANT, OTHER_TENANT):
        decision = choose_route(request(tenant_id=tenant_id), view)
        assert isinstance(decision, Route)
        assert decision.connection.tenant_id == tenant_id


def test_a_foreign_connection_reaching_the_rules_is_still_refused() -> None:
    """The per-tenant lookups already keep tenants apart; the rules guard it once more."""
    view = registry(identity(ANN_MAIN, default=True))
    smuggled = connection("smuggled", ChannelKind.CUSTOM_SMTP, tenant_id=OTHER_TENANT)
    view.connections[(TENANT, "smuggled")] = smuggled
    decision = choose_route(request(), view)
    assert isinstance(decision, Refusal)
    assert "another tenant" in decision.reason


def test_a_user_with_one_connection_and_a_team_smtp_keeps_using_the_own_connection() -> None:
    """PRODUCT.md section 1: a user's only connection is assigned to all their identities;
    the team SMTP is the default only where the user has none or several."""
    view = registry(identity(ANN_MAIN, default=True), GMAIL, TEAM, tenant(team=TEAM.connection_id))
    decision = choose_route(request(), view)
    assert isinstance(decision, Route)
    assert decision.connection.connection_id == GMAIL.connection_id


# --- the router's helpers for requests it cannot read -------------------------------------


@pytest.mark.parametrize(
    ("raw", "tenant_id", "key"),
    [
        (b'{"tenant_id": "acme", "idempotency_key": "order-1", "to": "not a list"}', "acme",
         "order-1"),
        (b'{"tenant_id": "acme", "idempotency_key": "order-1"', None, None),  # cut short
        (b'{"tenant_id": "acme"}', None, None),
        (b'{"tenant_id": 7, "idempotency_key": "order-1"}', None, None),
        (b'{"tenant_id": "acme", "idempotency_key": ["order-1"]}', None, None),
        (b'["acme", "order-1"]', None, None),
        (b'"acme"', None, None),
        (b"", None, None),
        (b"\xff\xfe not utf-8", None, None),
        (b"1" * 5000, None, None),  # beyond Python's integer parsing limit
        (b"[" * 100_000 + b"]" * 100_000, None, None),  # deeper than the JSON parser recurses
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, None, None),
    ],
    ids=["valid JSON, invalid request", "truncated", "no key", "tenant not a string",
         "key not a string", "array", "string", "empty", "not UTF-8", "huge number",
         "deeply nested array", "deeply nested object"],
)
def test_identify_names_what_a_malformed_request_still_says(
    raw: bytes, tenant_id: str | None, key: str | None
) -> None:
    expected_send_id = send_id_for(tenant_id, key) if tenant_id and key else None
    assert _identify(raw) == (tenant_id, expected_send_id)


@pytest.mark.parametrize("tenant_id", ["t" * 10_000, "\ud800", "acme corp", ""],
                         ids=["too long", "lone surrogate", "space", "empty"])
def test_identify_names_no_tenant_that_is_not_a_valid_id(tenant_id: str) -> None:
    """A lone surrogate once reached the send id's UTF-8 encoding and stopped the router."""
    raw = json.dumps({"tenant_id": tenant_id, "idempotency_key": "k"}).encode()
    assert _identify(raw) == (None, None)


def _validation_error(**changes: Any) -> ValidationError:
    fields = request().model_dump() | changes
    with pytest.raises(ValidationError) as raised:
        EmailRequested.model_validate(fields)
    return raised.value


def test_describe_names_the_field_and_the_problem() -> None:
    text = _describe(_validation_error(subject="a\nb"))
    assert text.startswith("subject: ")
    assert "line break" in text
    assert "more" not in text


def test_describe_names_a_whole_message_problem() -> None:
    assert _describe(_validation_error(text=None, html=None)).startswith("message: ")


def test_describe_shows_three_problems_and_counts_the_rest() -> None:
    error = _validation_error(tenant_id="a b", user_id="a b", subject="a\nb", to=[],
                              source="fax")
    text = _describe(error)
    assert error.error_count() == 5
    assert text.count("; ") == 2
    assert text.endswith("(and 2 more)")


def test_describe_names_nested_locations() -> None:
    text = _describe(_validation_error(to=["lead@customer.example", "broken"]))
    assert text.startswith("to.1: ")
