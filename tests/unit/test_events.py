"""The wire contract: what a send request and a connection record may carry, and what not."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from sendrail.delivery.throttling import policy_for
from sendrail.events import (
    ChannelKind,
    ConnectionConfigured,
    DeliveryEvent,
    DeliveryStatus,
    EmailRequested,
    EmailRouted,
    ThrottleConfigured,
    send_id_for,
)
from sendrail.registry.view import RegistryView
from sendrail.validation import (
    AT_MOST_ONCE_HEADERS,
    MAX_EXTRA_HEADERS,
    MAX_EXTRA_HEADERS_BYTES,
    RESERVED_HEADERS,
    normalize_address,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

# Characters that end a line for Python's str.splitlines, which the email package uses when
# it writes headers: it refuses a header value that contains any of them.
LINE_ENDS = ["\r", "\n", "\r\n", "\x00", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85",
             "\u2028", "\u2029"]


def request_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "idempotency_key": "order-1", "tenant_id": "acme", "user_id": "ann",
        "identity": "ann@acme.example", "source": "api", "to": ["lead@customer.example"],
        "subject": "Hello", "text": "Hi there", "requested_at": T0,
    }
    fields.update(changes)
    return fields


def make_request(**changes: Any) -> EmailRequested:
    return EmailRequested.model_validate(request_fields(**changes))


def test_a_minimal_request_is_valid() -> None:
    request = make_request()
    assert request.identity == "ann@acme.example"
    assert request.cc == [] and request.bcc == [] and request.headers == {}


# --- send ids ------------------------------------------------------------------------


def test_send_id_is_stable_per_tenant_and_key() -> None:
    first = make_request(subject="one", to=["a@customer.example"])
    again = make_request(subject="two", to=["b@customer.example"], requested_at=datetime.now(UTC))
    assert first.send_id == again.send_id == send_id_for("acme", "order-1")
    assert first.send_id.version == 5


@pytest.mark.parametrize(("tenant_id", "key"), [("globex", "order-1"), ("acme", "order-2"),
                                                ("acme/order", "1"), ("acme", "Order-1")])
def test_send_id_differs_across_tenants_and_keys(tenant_id: str, key: str) -> None:
    assert send_id_for(tenant_id, key) != send_id_for("acme", "order-1")


def test_same_key_in_two_tenants_gives_two_sends() -> None:
    assert make_request(tenant_id="acme").send_id != make_request(tenant_id="globex").send_id


@pytest.mark.parametrize("key", ["k", "order:42/retry#1", "!~", "x" * 200])
def test_idempotency_key_accepted(key: str) -> None:
    assert make_request(idempotency_key=key).idempotency_key == key


@pytest.mark.parametrize("key", ["", " ", "a b", "k\n", "k\r", "\tk", "clé", "x" * 201, "k\x00"])
def test_idempotency_key_refused(key: str) -> None:
    with pytest.raises(ValidationError):
        make_request(idempotency_key=key)


# --- bodies, recipients, shape -----------------------------------------------------


@pytest.mark.parametrize("bodies", [{"text": "t", "html": None}, {"text": None, "html": "<p>h</p>"},
                                    {"text": "t", "html": "<p>h</p>"}])
def test_a_request_with_a_body_is_valid(bodies: dict[str, str | None]) -> None:
    request = make_request(**bodies)
    assert (request.text, request.html) == (bodies["text"], bodies["html"])


def test_a_request_needs_a_text_or_html_body() -> None:
    with pytest.raises(ValidationError, match="text or an html body"):
        make_request(text=None, html=None)


def test_recipients_are_to_cc_and_bcc() -> None:
    request = make_request(to=["a@x.example"], cc=["b@x.example"], bcc=["c@x.example"])
    assert request.recipients == ["a@x.example", "b@x.example", "c@x.example"]


@pytest.mark.parametrize(
    "changes",
    [
        {"to": []},
        {"to": ["a@x.example"] * 1001},
        {"requested_at": datetime(2024, 5, 1, 12, 0)},  # naive: whose noon?
        {"source": "fax"},
        {"tenant_id": "acme corp"},
        {"tenant_id": ""},
        {"user_id": "a" * 129},
        {"campaign_id": "spring\nsale"},
        {"schema_version": 2},
    ],
    ids=["no recipient", "too many recipients", "naive time", "unknown source",
         "tenant with space", "empty tenant", "long user id", "campaign id with newline",
         "future schema"],
)
def test_malformed_requests_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        make_request(**changes)


def test_a_field_added_within_the_version_is_ignored() -> None:
    """README, "Events": fields may be added within a version; readers ignore them."""
    fields = make_request().model_dump(mode="json")
    fields["priority"] = "high"
    assert EmailRequested.model_validate_json(json.dumps(fields)) == make_request(**{})


def test_a_request_is_immutable() -> None:
    request = make_request()
    with pytest.raises(ValidationError):
        request.subject = "changed"  # type: ignore[misc]


# --- header injection ----------------------------------------------------------------


@pytest.mark.parametrize("line_end", LINE_ENDS, ids=repr)
def test_subject_with_a_line_end_is_refused(line_end: str) -> None:
    with pytest.raises(ValidationError):
        make_request(subject=f"Hello{line_end}Bcc: spy@evil.example")


@pytest.mark.parametrize("line_end", LINE_ENDS, ids=repr)
def test_header_value_with_a_line_end_is_refused(line_end: str) -> None:
    with pytest.raises(ValidationError):
        make_request(headers={"X-Campaign": f"spring{line_end}Bcc: spy@evil.example"})


@pytest.mark.parametrize(
    "name",
    ["X-Evil\n", "X-Evil\r\n", "\nX-Evil", "X-\rEvil", "X-Evil\x00", "Bcc: spy@evil.example\nX-A",
     "X Evil", "X-Evil:", "", "X" * 77, "X-Évil", "X-Evil\t"],
    ids=repr,
)
def test_malformed_header_name_is_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        make_request(headers={name: "value"})


@pytest.mark.parametrize("field", ["identity", "to", "cc", "bcc"])
@pytest.mark.parametrize("line_end", ["\r", "\n", "\r\n", "\x00"], ids=repr)
def test_address_with_a_line_end_is_refused(field: str, line_end: str) -> None:
    address = f"ann@acme.example{line_end}Bcc: spy@evil.example"
    value: str | list[str] = address if field == "identity" else [address]
    with pytest.raises(ValidationError):
        make_request(**{field: value})


@pytest.mark.parametrize("name", sorted(RESERVED_HEADERS))
def test_reserved_headers_are_refused(name: str) -> None:
    for spelling in (name, name.upper(), name.title()):
        with pytest.raises(ValidationError, match="set by sendrail"):
            make_request(headers={spelling: "x"})


def test_the_reserved_headers_cover_what_sendrail_sets() -> None:
    assert {"from", "to", "cc", "bcc", "subject", "date", "message-id", "mime-version",
            "content-type", "content-transfer-encoding", "sender", "reply-to",
            "return-path"} <= RESERVED_HEADERS


@pytest.mark.parametrize("name", ["X-Sendrail-Send-Id", "x-sendrail-send-id", "X-SENDRAIL-Tenant",
                                  "X-Sendrail-"])
def test_sendrail_headers_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="set by sendrail"):
        make_request(headers={name: "forged"})


@pytest.mark.parametrize("name", ["List-Unsubscribe", "In-Reply-To", "References", "X-Campaign",
                                  "X-Sendrailway", "Content-Language"])
def test_ordinary_extra_headers_are_accepted(name: str) -> None:
    assert make_request(headers={name: "value"}).headers == {name: "value"}


def test_header_value_length_is_bounded_by_rfc_5322() -> None:
    assert make_request(headers={"X-Long": "v" * 998}).headers["X-Long"] == "v" * 998
    with pytest.raises(ValidationError):
        make_request(headers={"X-Long": "v" * 999})
    with pytest.raises(ValidationError):
        make_request(subject="s" * 999)


def test_a_tab_is_allowed_in_a_header_value() -> None:
    """Horizontal tab is whitespace within a header line (RFC 5322 §2.2), not a line end."""
    assert make_request(subject="a\tb").subject == "a\tb"


# RFC 5322 field names are case-insensitive: two spellings are one field twice.
HEADER_REFUSALS = [
    ({"orig-date": "Wed, 1 May 2024 12:00:00 +0000", "Orig-Date": "Wed, 1 May 2024 12:00:01 +0000"},
     "at most once"),
    ({"In-Reply-To": "<a@acme.example>", "in-reply-to": "<b@acme.example>"}, "at most once"),
    ({"References": "<a@acme.example>", "REFERENCES": "<b@acme.example>"}, "at most once"),
    ({"X-Campaign": "spring", "x-campaign": "autumn"}, "case-insensitive"),
    ({"List-Unsubscribe": "<mailto:u@acme.example>", "LIST-UNSUBSCRIBE": "<mailto:v@acme.example>"},
     "case-insensitive"),
    ({f"X-Tag-{i}": "v" for i in range(MAX_EXTRA_HEADERS + 1)}, f"at most {MAX_EXTRA_HEADERS}"),
    ({f"X-Long-{i}": "v" * 990 for i in range(34)}, "at most 32,768"),
]


@pytest.mark.parametrize(("headers", "words"), HEADER_REFUSALS,
                         ids=["orig-date twice", "in-reply-to twice", "references twice",
                              "x-campaign twice", "list-unsubscribe twice", "too many", "too large"])
def test_header_sets_that_cannot_be_written_are_refused(headers: dict[str, str], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        make_request(headers=headers)


def test_the_at_most_once_headers_are_rfc_5322_s_and_those_sendrail_sets_are_among_them() -> None:
    assert {"date", "from", "sender", "reply-to", "to", "cc", "bcc", "message-id", "in-reply-to",
            "references", "subject"} <= AT_MOST_ONCE_HEADERS
    assert AT_MOST_ONCE_HEADERS - RESERVED_HEADERS == {"orig-date", "in-reply-to", "references"}


@pytest.mark.parametrize("headers", [
    {f"X-Tag-{i}": "v" for i in range(MAX_EXTRA_HEADERS)},
    {f"X-Long-{i}": "v" * 990 for i in range(32)},
    {"In-Reply-To": "<a@acme.example>", "References": "<a@acme.example>", "X-Campaign": "spring"},
], ids=["the most headers", "nearly the most bytes", "threading"])
def test_header_sets_within_the_bounds_are_accepted(headers: dict[str, str]) -> None:
    assert sum(len(n) + len(v) + 4 for n, v in headers.items()) <= MAX_EXTRA_HEADERS_BYTES
    assert make_request(headers=headers).headers == headers


def test_the_header_bounds_are_in_the_schema() -> None:
    assert EmailRequested.model_json_schema()["properties"]["headers"]["maxProperties"] == MAX_EXTRA_HEADERS


# --- addresses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [("ann@acme.example", "ann@acme.example"), ("Ann@ACME.Example", "Ann@acme.example"),
     ("sales/emea@acme.example", "sales/emea@acme.example")],
)
def test_address_normalisation(raw: str, normal: str) -> None:
    assert normalize_address(raw) == normal


@pytest.mark.parametrize("raw", ["ann", "ann@", "@acme.example", "ann@acme", "ann@@acme.example",
                                 "Ann <ann@acme.example>", "ann@acme.example>", "a..b@acme.example",
                                 "ann@acme.example, bob@acme.example", " "])
def test_invalid_addresses_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_address(raw)


# --- connections ---------------------------------------------------------------------


def connection_fields(kind: str, **changes: Any) -> dict[str, Any]:
    oauth_kind = kind in {"gmail", "exchange_online"}
    hosts = {"gmail": "smtp.gmail.com", "exchange_online": "smtp.office365.com"}
    fields: dict[str, Any] = {
        "tenant_id": "acme", "connection_id": "c1", "kind": kind,
        "owner_user_id": None if kind in {"team_smtp", "legacy"} else "ann",
        "address": "ann@acme.example" if oauth_kind else None,
        "smtp": {"host": hosts.get(kind, "smtp.sparkpost.example"), "port": 587},
        "username": None if oauth_kind else "apikey",
        "password": None if oauth_kind else "gAAAA-sealed",
        "oauth": {"refresh_token": "gAAAA-sealed"} if oauth_kind else None,
        "connected_at": T0, "updated_at": T0,
    }
    fields.update(changes)
    return fields


ALL_KINDS = [k.value for k in ChannelKind]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_well_formed_connection_of_each_kind_is_valid(kind: str) -> None:
    record = ConnectionConfigured.model_validate(connection_fields(kind))
    assert record.kind == kind


CONNECTION_REFUSALS = [
    ("gmail", {"oauth": None}, "OAuth grant"),
    ("gmail", {"address": None}, "OAuth grant"),
    ("gmail", {"password": "gAAAA-sealed"}, "not with SMTP credentials"),
    ("gmail", {"owner_user_id": None}, "owner_user_id"),
    ("exchange_online", {"oauth": None}, "OAuth grant"),
    ("exchange_online", {"address": None}, "OAuth grant"),
    ("exchange_online", {"password": "gAAAA-sealed"}, "not with SMTP credentials"),
    ("custom_smtp", {"oauth": {"refresh_token": "x"}}, "not OAuth"),
    ("team_smtp", {"oauth": {"refresh_token": "x"}}, "not OAuth"),
    ("custom_smtp", {"smtp": {"host": "smtp.gmail.com", "port": 587}}, "OAuth"),
    ("custom_smtp", {"smtp": {"host": "SMTP.Gmail.COM", "port": 465}}, "OAuth"),
    ("custom_smtp", {"smtp": {"host": "smtp.gmail.com.", "port": 587}}, "OAuth"),
    ("custom_smtp", {"smtp": {"host": "smtp.googlemail.com", "port": 587}}, "OAuth"),
    ("custom_smtp", {"smtp": {"host": "smtp.office365.com", "port": 587}}, "OAuth"),
    ("custom_smtp", {"smtp": {"host": "smtp-mail.outlook.com", "port": 587}}, "OAuth"),
    ("exchange_onprem", {"smtp": {"host": "smtp.office365.com", "port": 587}}, "OAuth"),
    ("team_smtp", {"smtp": {"host": "smtp.office365.com", "port": 587}}, "OAuth"),
    ("team_smtp", {"owner_user_id": "ann"}, "belongs to the team"),
    ("legacy", {"owner_user_id": "ann"}, "belongs to the team"),
    ("custom_smtp", {"owner_user_id": None}, "owner_user_id"),
    ("exchange_onprem", {"owner_user_id": None}, "owner_user_id"),
    ("custom_smtp", {"smtp": {"host": "smtp.example", "port": 0}}, "port"),
    ("custom_smtp", {"smtp": {"host": "smtp.example", "port": 65536}}, "port"),
    ("custom_smtp", {"smtp": {"host": "smtp.example\r\nRCPT", "port": 25}}, "host"),
    ("custom_smtp", {"smtp": {"host": "smtp.example", "port": 25, "tls": "none"}}, "tls"),
    ("custom_smtp", {"max_message_bytes": 0}, "max_message_bytes"),
]


@pytest.mark.parametrize(("kind", "changes", "words"), CONNECTION_REFUSALS,
                         ids=[f"{k} {c}" for k, c, _ in CONNECTION_REFUSALS])
def test_connection_refusals(kind: str, changes: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        ConnectionConfigured.model_validate(connection_fields(kind, **changes))


# --- throttle settings ---------------------------------------------------------------


def throttle_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"tenant_id": "acme", "updated_at": T0}
    fields.update(changes)
    return fields


THROTTLE_REFUSALS = [
    ({"batch_size": 25, "batch_wait_s": 0.0005}, "greater than or equal to 1"),
    ({"batch_size": 25, "batch_wait_s": 0.999}, "greater than or equal to 1"),
    ({"batch_size": 25, "batch_wait_s": 0.0}, "greater than or equal to 1"),
    ({"batch_size": 25, "batch_wait_s": -1.0}, "greater than or equal to 1"),
    ({"batch_size": 25, "batch_wait_s": float("inf")}, "finite"),
    ({"batch_size": 25, "batch_wait_s": float("nan")}, "finite"),
    ({"batch_size": 25, "batch_wait_s": 86_400.001}, "less than or equal to 86400"),
    ({"batch_size": 25, "batch_wait_s": 1.0005}, "whole number of milliseconds"),
    ({"batch_size": 0, "batch_wait_s": 45.0}, "greater than or equal to 1"),
    ({"batch_size": 10_001, "batch_wait_s": 45.0}, "less than or equal to 10000"),
    ({"batch_size": 25}, "both batch_size and batch_wait_s"),
    ({"batch_wait_s": 45.0}, "both batch_size and batch_wait_s"),
    ({"daily_messages": 0}, "greater than or equal to 1"),
    ({"daily_messages": 50_001}, "less than or equal to 50000"),
    ({"daily_recipients": 10**9}, "less than or equal to 50000"),
    ({"per_minute_messages": 50_001}, "less than or equal to 50000"),
    ({"max_recipients_per_message": 1_001}, "less than or equal to 1000"),
    ({"max_recipients_per_message": 0}, "greater than or equal to 1"),
    ({"daily_messages": 2.5}, "integer"),
]


@pytest.mark.parametrize(("changes", "words"), THROTTLE_REFUSALS, ids=[repr(c) for c, _ in THROTTLE_REFUSALS])
def test_throttle_settings_out_of_range_are_refused(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        ThrottleConfigured.model_validate(throttle_fields(**changes))


def test_a_non_finite_wait_is_refused_in_json_too() -> None:
    """JSON has no NaN or Infinity, but Python's json writes them and pydantic reads them."""
    raw = json.dumps(throttle_fields(batch_size=25, batch_wait_s=float("nan"), updated_at=T0.isoformat()))
    with pytest.raises(ValidationError, match="finite"):
        ThrottleConfigured.model_validate_json(raw)


@pytest.mark.parametrize("changes", [
    {"batch_size": 25, "batch_wait_s": 45.0},
    {"batch_size": 1, "batch_wait_s": 1.0},
    {"batch_size": 10_000, "batch_wait_s": 86_400.0},
    {"batch_size": 3, "batch_wait_s": 1.5},
    {"daily_messages": 50_000, "daily_recipients": 50_000, "per_minute_messages": 50_000,
     "max_recipients_per_message": 1_000},
    {"daily_messages": 1, "per_minute_messages": 1, "max_recipients_per_message": 1},
    {"enabled": False},
], ids=repr)
def test_throttle_settings_in_range_build_a_policy(changes: dict[str, Any]) -> None:
    """What the registry accepts, the senders can use: policy_for never refuses it."""
    record = ThrottleConfigured.model_validate(throttle_fields(connection_id="c1", **changes))
    connection = ConnectionConfigured.model_validate(connection_fields("custom_smtp"))
    view = RegistryView()
    view.apply("connection/acme/c1", connection)
    view.apply("throttle/acme/c1", record)
    policy = policy_for(connection, view)
    assert all(window.window_s >= 1.0 for window in policy.limits)
    if "batch_size" in changes:
        batch = next(window for window in policy.limits if window.name == "batch")
        assert (batch.limit, batch.window_s) == (changes["batch_size"], changes["batch_wait_s"])


def test_the_throttle_bounds_are_in_the_schema() -> None:
    properties = ThrottleConfigured.model_json_schema()["properties"]
    wait = next(option for option in properties["batch_wait_s"]["anyOf"] if option.get("type") == "number")
    assert (wait["minimum"], wait["maximum"]) == (1.0, 86_400.0)


# --- delivery events -----------------------------------------------------------------


def test_a_delivery_event_for_a_routed_email_carries_its_request() -> None:
    request = make_request(campaign_id="spring", template_id="intro", cc=["c@x.example"])
    routed = EmailRouted(send_id=request.send_id, channel=ChannelKind.GMAIL, connection_id="c1",
                         request=request, routed_at=T0)
    event = DeliveryEvent.for_routed(routed, DeliveryStatus.SENT, T0, reply_code=250,
                                     message_id="<m@acme.example>")
    assert event.send_id == request.send_id
    assert (event.tenant_id, event.user_id, event.identity) == ("acme", "ann", "ann@acme.example")
    assert (event.campaign_id, event.template_id) == ("spring", "intro")
    assert (event.channel, event.connection_id) == (ChannelKind.GMAIL, "c1")
    assert event.recipients == request.recipients
    assert (event.reply_code, event.message_id, event.occurred_at) == (250, "<m@acme.example>", T0)
    assert isinstance(event.event_id, uuid.UUID)
    assert DeliveryEvent.for_routed(routed, DeliveryStatus.SENT, T0).event_id != event.event_id
