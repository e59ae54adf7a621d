"""The `sendrail` command line: its parser, `send` flags to a request, and the published schemas."""

from __future__ import annotations

import argparse
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sendrail import events
from sendrail.bus.codec import encode
from sendrail.cli.main import build_parser
from sendrail.cli.messages import request_from_args
from sendrail.cli.schema import SCHEMA_MODELS, schemas, topics_document
from sendrail.errors import ConfigurationError
from sendrail.events import EmailRequested, Source, send_id_for
from sendrail.topics import ALL_TOPICS

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

SEND_FLAGS = ["send", "--tenant", "acme", "--user", "ann", "--identity", "ann@acme.example",
              "--to", "lead@customer.example", "--subject", "Hello", "--text", "Hi there"]


def subcommands(parser: argparse.ArgumentParser, path: str = "") -> Iterator[tuple[str, str | None]]:
    """(command path, help) for every command and sub-command, however deep."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                full = f"{path} {name}".strip()
                yield full, helps.get(name)
                yield from subcommands(child, full)


def test_every_command_has_help() -> None:
    found = dict(subcommands(build_parser()))
    assert {"send", "tail", "schema", "connect", "assign", "identities", "identities add",
            "identities verify", "identities list", "tenant", "service", "run"} <= set(found)
    missing = [name for name, text in found.items() if not text or not text.strip()]
    assert missing == []


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for name, _ in subcommands(build_parser()):
        assert name.split()[0] in out


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([])
    assert exited.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


# --- sendrail send ---------------------------------------------------------------------


def send_args(*extra: str, without: tuple[str, ...] = ()) -> argparse.Namespace:
    flags = list(SEND_FLAGS)
    for flag in without:
        index = flags.index(flag)
        del flags[index:index + 2]
    return build_parser().parse_args([*flags, *extra])


def test_send_flags_build_a_request() -> None:
    request = request_from_args(send_args(
        "--cc", "c1@customer.example", "--cc", "c2@customer.example", "--to", "b@customer.example",
        "--html", "<p>Hi</p>", "--campaign", "spring", "--template", "intro",
        "--idempotency-key", "order-1", "--source", "gmail_addon",
    ))
    assert isinstance(request, EmailRequested)
    assert (request.tenant_id, request.user_id, request.identity) == ("acme", "ann",
                                                                      "ann@acme.example")
    assert request.to == ["lead@customer.example", "b@customer.example"]
    assert request.cc == ["c1@customer.example", "c2@customer.example"]
    assert (request.subject, request.text, request.html) == ("Hello", "Hi there", "<p>Hi</p>")
    assert (request.campaign_id, request.template_id) == ("spring", "intro")
    assert request.source is Source.GMAIL_ADDON
    assert request.send_id == send_id_for("acme", "order-1")
    assert request.requested_at.tzinfo is not None


def test_send_defaults() -> None:
    first, second = request_from_args(send_args()), request_from_args(send_args())
    assert first.source is Source.API
    assert first.cc == [] and first.bcc == [] and first.html is None
    uuid.UUID(first.idempotency_key)  # a fresh UUID per invocation: two sends, not one
    assert first.send_id != second.send_id


@pytest.mark.parametrize("flag", ["--tenant", "--user", "--identity", "--subject", "--to"])
def test_a_missing_flag_is_named(flag: str) -> None:
    with pytest.raises(ConfigurationError, match=f"missing .*{flag}"):
        request_from_args(send_args(without=(flag,)))


def test_to_does_not_carry_over_between_invocations() -> None:
    request_from_args(send_args("--to", "extra@customer.example"))
    with pytest.raises(ConfigurationError, match="--to"):
        request_from_args(send_args(without=("--to",)))


@pytest.mark.parametrize(
    ("extra", "without"),
    [((), ("--text",)), (("--to", "not-an-address"), ()), (("--subject", "a\nBcc: x@y.example"), ()),
     (("--tenant", "acme corp"), ())],
    ids=["no body", "bad recipient", "subject with a newline", "tenant with a space"],
)
def test_an_invalid_request_is_a_configuration_error(extra: tuple[str, ...],
                                                     without: tuple[str, ...]) -> None:
    with pytest.raises(ConfigurationError, match="invalid request"):
        request_from_args(send_args(*extra, without=without))


def test_an_unknown_source_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        send_args("--source", "fax")
    assert "fax" in capsys.readouterr().err


def test_send_from_a_file(tmp_path: Path) -> None:
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps({
        "idempotency_key": "order-7", "tenant_id": "acme", "user_id": "ann",
        "identity": "ann@acme.example", "source": "campaign", "to": ["lead@customer.example"],
        "subject": "From a file", "html": "<p>Hi</p>", "headers": {"X-Campaign": "spring"},
    }))
    request = request_from_args(build_parser().parse_args(["send", "--file", str(request_file)]))
    assert request.send_id == send_id_for("acme", "order-7")
    assert request.headers == {"X-Campaign": "spring"}
    assert request.requested_at.tzinfo is not None


def test_an_invalid_file_is_a_configuration_error(tmp_path: Path) -> None:
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps({"tenant_id": "acme"}))
    with pytest.raises(ConfigurationError, match="invalid request"):
        request_from_args(build_parser().parse_args(["send", "--file", str(request_file)]))


# --- sendrail schema -------------------------------------------------------------------

JSON_TYPES = {"object", "array", "string", "integer", "number", "boolean", "null"}


def check_schema(node: Any, root: dict[str, Any], where: str = "#") -> None:
    """Structural checks of a JSON Schema (draft 2020-12 keywords pydantic emits): every
    reference resolves, every keyword has the shape the specification gives it."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            check_schema(item, root, f"{where}/{i}")
        return
    if not isinstance(node, dict):
        return
    if "$ref" in node:
        match = re.fullmatch(r"#/\$defs/(.+)", node["$ref"])
        assert match and match.group(1) in root.get("$defs", {}), f"{where}: {node['$ref']}"
    if "type" in node:
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        assert set(types) <= JSON_TYPES, where
    if "properties" in node:
        assert node.get("type") == "object", where
        assert isinstance(node["properties"], dict)
    if "required" in node:
        assert len(set(node["required"])) == len(node["required"]), where
        assert set(node["required"]) <= set(node.get("properties", {})), where
    if "pattern" in node:
        re.compile(node["pattern"])
    if "enum" in node:
        assert isinstance(node["enum"], list) and node["enum"], where
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            assert isinstance(node[key], list) and node[key], where
    if "discriminator" in node:
        mapping = node["discriminator"]["mapping"]
        refs = {option["$ref"] for option in node["oneOf"]}
        assert set(mapping.values()) == refs, where
    if "additionalProperties" in node:
        assert isinstance(node["additionalProperties"], bool | dict), where
    for key, value in node.items():
        if key not in {"enum", "const", "default", "examples", "required"}:
            check_schema(value, root, f"{where}/{key}")


@pytest.mark.parametrize("name", sorted(SCHEMA_MODELS))
def test_each_schema_is_well_formed_json_schema(name: str) -> None:
    schema = schemas()[name]
    assert json.loads(json.dumps(schema)) == schema
    check_schema(schema, schema)
    assert schema.get("title") or schema.get("oneOf")


def test_there_is_a_schema_for_every_event_on_the_bus() -> None:
    assert set(schemas()) == set(SCHEMA_MODELS)
    event_names = {d["event"] for d in topics_document()}
    assert event_names <= set(schemas())


def test_the_request_schema_states_the_contract() -> None:
    schema = schemas()["EmailRequested"]
    # Fields may be added within a version: readers ignore what they do not know.
    assert schema.get("additionalProperties", True) is not False
    assert schema["properties"]["schema_version"]["const"] == 1
    assert {"idempotency_key", "tenant_id", "user_id", "identity", "source", "to", "subject",
            "requested_at"} <= set(schema["required"])
    key = schema["properties"]["idempotency_key"]
    assert (key["maxLength"], key["pattern"]) == (200, "^[!-~]+$")
    assert schema["properties"]["requested_at"]["format"] == "date-time"
    assert set(schema["$defs"]["Source"]["enum"]) == {s.value for s in Source}


def test_the_registry_schema_is_one_of_its_records_by_their_record_field() -> None:
    schema = schemas()["RegistryRecord"]
    assert schema["discriminator"]["propertyName"] == "record"
    assert set(schema["discriminator"]["mapping"]) == {
        "connection", "connection_health", "identity", "assignment", "tenant", "throttle"}


def sample_events() -> dict[str, events._Event]:
    request = EmailRequested(idempotency_key="k", tenant_id="acme", user_id="ann",
                             identity="ann@acme.example", source=Source.API,
                             to=["lead@customer.example"], subject="s", text="t", requested_at=T0)
    routed = events.EmailRouted(send_id=request.send_id, channel=events.ChannelKind.GMAIL,
                                connection_id="c1", request=request, routed_at=T0)
    return {
        "EmailRequested": request,
        "EmailRouted": routed,
        "DeliveryEvent": events.DeliveryEvent.for_routed(routed, events.DeliveryStatus.SENT, T0),
        "WatcherCheckpoint": events.WatcherCheckpoint(tenant_id="acme", connection_id="c1",
                                                      uidvalidity=1, last_uid=9),
        "RegistryRecord": events.TenantConfigured(tenant_id="acme", updated_at=T0),
    }


@pytest.mark.parametrize("name", sorted(sample_events()))
def test_encoded_events_fit_their_schema(name: str) -> None:
    """What sendrail itself writes has every required field and no field the schema lacks."""
    schema = schemas()[name]
    instance = json.loads(encode(sample_events()[name]))
    if "oneOf" in schema:
        target = schema["discriminator"]["mapping"][instance["record"]].rsplit("/", 1)[1]
        schema = schema["$defs"][target]
    assert set(schema["required"]) <= set(instance)
    assert set(instance) <= set(schema["properties"])


def test_topics_document_names_every_topic_once() -> None:
    document = topics_document()
    names = [d["topic"] for d in document]
    assert len(names) == len(set(names))
    assert set(names) == {t.name for t in ALL_TOPICS}
    for entry in document:
        assert set(entry) == {"topic", "event", "key", "partitions", "compacted", "purpose"}
        assert entry["purpose"] and entry["key"] and entry["partitions"] >= 1
    registry = next(d for d in document if d["topic"] == "sendrail.registry")
    assert registry["event"] == "RegistryRecord" and registry["compacted"]
    json.dumps(document)
