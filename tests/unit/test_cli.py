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
from sendrail.cli.main import build_parser, main
from sendrail.cli.messages import MAX_REQUEST_FILE_BYTES, request_from_args
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


def test_an_invalid_request_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="invalid request: a request needs a text or an html body"):
        request_from_args(send_args(without=("--text",)))


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


# --- refused input: status 2, one line, before any work ---------------------------------


def request_json(**changes: Any) -> str:
    fields: dict[str, Any] = {
        "idempotency_key": "order-7", "tenant_id": "acme", "user_id": "ann",
        "identity": "ann@acme.example", "source": "api", "to": ["lead@customer.example"],
        "subject": "Hi", "text": "Hello",
    }
    fields.update(changes)
    return json.dumps(fields)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """Files the table below names as {files}/...: none of them a valid input."""
    (tmp_path / "big.json").write_text(request_json(text="x" * MAX_REQUEST_FILE_BYTES))
    (tmp_path / "not-json.json").write_text("{'tenant_id': 'acme'}")
    (tmp_path / "latin1.json").write_bytes(b'{"subject": "caf\xe9"}')
    (tmp_path / "array.json").write_text(json.dumps([json.loads(request_json())]))
    (tmp_path / "same-header-twice.json").write_text(request_json(
        headers={"orig-date": "Wed, 1 May 2024 12:00:00 +0000", "Orig-Date": "Wed, 1 May 2024 12:00:01 +0000"}))
    (tmp_path / "request.json").write_text(request_json())
    (tmp_path / "folder").mkdir()
    (tmp_path / "a-file").write_text("")
    return tmp_path


THROTTLE = ["throttle", "set", "--tenant", "acme"]
CONNECT = ["connect", "custom-smtp", "--tenant", "acme", "--connection", "c1", "--user", "ann",
           "--host", "smtp.example", "--username", "ann"]
REFUSED = [
    # throttle settings: the bounds of ThrottleConfigured, the senders' own rule
    ([*THROTTLE, "--batch-size", "25", "--batch-wait-s", "0.0005"],
     "argument --batch-wait-s: Input should be greater than or equal to 1 (got '0.0005')"),
    ([*THROTTLE, "--batch-size", "25", "--batch-wait-s", "inf"],
     "argument --batch-wait-s: Input should be a finite number (got 'inf')"),
    ([*THROTTLE, "--batch-size", "25", "--batch-wait-s", "nan"],
     "argument --batch-wait-s: Input should be a finite number (got 'nan')"),
    ([*THROTTLE, "--batch-size", "25", "--batch-wait-s", "-1"],
     "argument --batch-wait-s: Input should be greater than or equal to 1 (got '-1')"),
    ([*THROTTLE, "--batch-wait-s", "86401"], "argument --batch-wait-s: Input should be less than or equal to 86400"),
    ([*THROTTLE, "--batch-wait-s", "1.0005"], "argument --batch-wait-s: the batch wait must be a whole number "
                                               "of milliseconds"),
    ([*THROTTLE, "--batch-wait-s", "soon"], "argument --batch-wait-s: Input should be a valid number"),
    ([*THROTTLE, "--batch-size", "0"], "argument --batch-size: Input should be greater than or equal to 1"),
    ([*THROTTLE, "--batch-size", "10001"], "argument --batch-size: Input should be less than or equal to 10000"),
    ([*THROTTLE, "--batch-size", "2.5"], "argument --batch-size: Input should be a valid integer"),
    ([*THROTTLE, "--daily-messages", "50001"], "argument --daily-messages: Input should be less than or equal to"),
    ([*THROTTLE, "--daily-recipients", "1e9"], "argument --daily-recipients: Input should be a valid integer"),
    ([*THROTTLE, "--per-minute-messages", "0"], "argument --per-minute-messages: Input should be greater"),
    ([*THROTTLE, "--max-recipients-per-message", "1001"],
     "argument --max-recipients-per-message: Input should be less than or equal to 1000"),
    ([*THROTTLE, "--gmail-plan", "free"], "argument --gmail-plan: invalid choice: 'free'"),
    (THROTTLE, "throttle set needs a setting to change"),
    (["throttle", "set", "--tenant", "acme corp", "--batch-size", "5"], "argument --tenant: expected an id"),
    (["throttle", "show", "--tenant", "acme/../x"], "argument --tenant: expected an id"),
    (["throttle", "set", "--tenant", "acme", "--connection", "", "--off"], "argument --connection: expected an id"),
    # connections: ports, hosts, addresses, ids, the record as a whole
    ([*CONNECT, "--port", "0"], "argument --port: Input should be greater than or equal to 1 (got '0')"),
    ([*CONNECT, "--port", "65536"], "argument --port: Input should be less than or equal to 65535"),
    ([*CONNECT, "--port", "smtp"], "argument --port: Input should be a valid integer"),
    ([*CONNECT, "--host", "smtp.example\r\nRCPT TO:<x@y.example>"], "argument --host: expected a host name"),
    ([*CONNECT, "--host", "x" * 254], "argument --host: expected a host name"),
    ([*CONNECT, "--imap-port", "99999"], "argument --imap-port: Input should be less than or equal to 65535"),
    ([*CONNECT, "--address", "ann"], "argument --address: invalid address 'ann'"),
    ([*CONNECT, "--username", "ann\x07"], "argument --username: expected printable characters"),
    ([*CONNECT, "--username", "a" * 256], "argument --username: expected 1 to 255 bytes"),
    ([*CONNECT, "--max-message-bytes", "0"], "argument --max-message-bytes: Input should be greater than 0"),
    ([*CONNECT, "--microsoft-tenant", "my tenant"], "argument --microsoft-tenant: expected a Microsoft Entra"),
    ([*CONNECT, "--tls", "none"], "argument --tls: invalid choice: 'none'"),
    (["connect", "custom-smtp", "--tenant", "acme", "--connection", "c1", "--user", "ann"],
     "a custom-smtp connection needs --host"),
    (["connect", "team-smtp", "--tenant", "acme", "--connection", "team", "--host", "smtp.example"],
     "a team-smtp connection needs --username"),
    (["connect", "gmail", "--tenant", "acme", "--connection", "g1", "--user", "ann"],
     "a gmail connection needs an OAuth grant and an address"),
    ([*CONNECT[:-4], "--host", "smtp.gmail.com", "--username", "ann"], "connect the mailbox with OAuth"),
    (["connect", "fax", "--tenant", "acme", "--connection", "c1"], "argument kind: invalid choice: 'fax'"),
    # identities, assignments, tenant
    (["assign", "--tenant", "acme", "--user", "ann", "--identity", "ann@", "--connection", "c1"],
     "argument --identity: invalid address 'ann@'"),
    (["assign", "--tenant", "acme", "--user", "ann", "--identity", "ann@acme.example", "--connection", "c 1"],
     "argument --connection: expected an id"),
    (["identities", "add", "--tenant", "acme", "--user", "_ann", "--address", "ann@acme.example"],
     "argument --user: expected an id"),
    (["identities", "verify", "--tenant", "acme", "--address", "ann@acme.example\nBcc: x@y.example"],
     "argument --address: address contains a line break"),
    (["identities", "list", "--tenant", "a" * 129], "argument --tenant: expected an id"),
    (["tenant", "--tenant", "acme", "--team-connection", "team smtp"], "argument --team-connection: expected an id"),
    # send: each flag by the request's own rule, a file as a request
    ([*SEND_FLAGS, "--to", "not-an-address"], "argument --to: invalid address 'not-an-address'"),
    ([*SEND_FLAGS, "--cc", "a@b@c.example"], "argument --cc: invalid address"),
    ([*SEND_FLAGS, "--subject", "a\nBcc: spy@evil.example"], "argument --subject: header value contains a line break"),
    ([*SEND_FLAGS, "--subject", "s" * 999], "argument --subject: header value longer than 998 characters"),
    ([*SEND_FLAGS, "--tenant", "acme corp"], "argument --tenant: expected an id"),
    ([*SEND_FLAGS, "--campaign", "spring sale"], "argument --campaign: expected an id"),
    ([*SEND_FLAGS, "--idempotency-key", "order 1"], "argument --idempotency-key: expected 1 to 200 printable"),
    ([*SEND_FLAGS, "--idempotency-key", "k" * 201], "argument --idempotency-key: expected 1 to 200 printable"),
    (["send", "--tenant", "acme"], "missing --user, --identity, --subject, --to"),
    (["send", "--file", "{files}/missing.json"], "argument --file: {files}/missing.json: No such file or directory"),
    (["send", "--file", "{files}/folder"], "argument --file: {files}/folder: not a regular file"),
    (["send", "--file", "{files}/big.json"], "{files}/big.json: 1,048,7"),
    (["send", "--file", "{files}/not-json.json"], "{files}/not-json.json: not JSON: Expecting property name"),
    (["send", "--file", "{files}/latin1.json"], "{files}/latin1.json: not UTF-8 text"),
    (["send", "--file", "{files}/array.json"], "{files}/array.json: a request is a JSON object, not list"),
    (["send", "--file", "{files}/same-header-twice.json"],
     "invalid request: headers: headers 'orig-date' and 'Orig-Date': a message carries orig-date at most once"),
    (["send", "--file", "{files}/request.json", "--tenant", "globex"],
     "--file holds the whole request: leave out --tenant"),
    # tail, suppression, bounce parse
    (["tail", "deliveries"], "argument topic: unknown topic 'deliveries'; one of: sendrail."),
    (["tail", "delivery", "--count", "0"], "argument --count: Input should be greater than or equal to 1"),
    (["suppression", "add", "--tenant", "acme", "--address", "lee"], "argument --address: invalid address 'lee'"),
    (["analytics", "token", "create", "--tenant", "a b"], "argument --tenant: expected an id"),
    (["analytics", "token", "revoke", "--tenant", "acme", "--id", "xyz"], "argument --id: expected a token id"),
    (["suppression", "add", "--tenant", "acme", "--address", "lee@example.org", "--reason", "a\nb"],
     "argument --reason: expected one line of printable text"),
    (["suppression", "add", "--tenant", "acme", "--address", "lee@example.org", "--reason", "r" * 501],
     "argument --reason: at most 500 characters, not 501"),
    (["suppression", "remove", "--tenant", "", "--address", "lee@example.org"], "argument --tenant: expected an id"),
    (["bounce", "parse", "{files}/missing.eml"], "argument PATH: {files}/missing.eml: No such file or directory"),
    (["bounce", "parse", "{files}/folder"], "argument PATH: {files}/folder: not a regular file"),
    # running, benchmarks, schemas
    (["service", "mailer"], "argument name: invalid choice: 'mailer'"),
    (["demo", "--deadline-s", "inf"], "argument --deadline-s: Input should be a finite number"),
    (["demo", "--deadline-s", "0"], "argument --deadline-s: Input should be greater than or equal to 1"),
    (["bench", "router", "--replicas", "7"], "argument --replicas: Input should be less than or equal to 6"),
    (["bench", "smtp", "--sessions", "0"], "argument --sessions: Input should be greater than or equal to 1"),
    (["bench", "router", "--messages", "-5"], "argument --messages: Input should be greater than or equal to 1"),
    (["bench", "memory", "--backlog", "many"], "argument --backlog: Input should be a valid integer"),
    (["bench", "throttle", "--out", "{files}/folder"], "argument --out: {files}/folder: is a folder"),
    (["schema", "--out", "{files}/a-file"], "argument --out: {files}/a-file: exists and is not a folder"),
]


@pytest.mark.parametrize(("argv", "words"), REFUSED, ids=[" ".join(argv)[:90] for argv, _ in REFUSED])
def test_bad_input_is_refused_in_one_line_with_status_2(argv: list[str], words: str, files: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused before any work: nothing here reaches Kafka, a secret prompt or the disk."""
    monkeypatch.delenv("SENDRAIL_CONNECT_SECRET", raising=False)
    with pytest.raises(SystemExit) as exited:
        main([arg.replace("{files}", str(files)) for arg in argv])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert re.match(r"sendrail( [a-z -]+)?: error: ", lines[0]), lines[0]
    assert words.replace("{files}", str(files)) in lines[0]


@pytest.mark.parametrize(("flag", "text", "value"), [
    ("--batch-wait-s", "45", 45.0), ("--batch-wait-s", "1", 1.0), ("--batch-wait-s", "86400", 86_400.0),
    ("--batch-wait-s", "1.5", 1.5), ("--batch-size", "10000", 10_000), ("--daily-messages", "50000", 50_000),
    ("--max-recipients-per-message", "1000", 1_000),
])
def test_throttle_values_in_range_are_taken(flag: str, text: str, value: float) -> None:
    args = build_parser().parse_args([*THROTTLE, flag, text])
    assert getattr(args, flag.removeprefix("--").replace("-", "_")) == value


def test_checked_flags_arrive_normalised() -> None:
    args = build_parser().parse_args(["assign", "--tenant", "acme", "--user", "ann",
                                      "--identity", "Ann@ACME.Example", "--connection", "c1"])
    assert args.identity == "Ann@acme.example"
    args = build_parser().parse_args(["tail", "delivery"])
    assert args.topic == "sendrail.delivery"
    args = build_parser().parse_args(["tenant", "--tenant", "acme", "--team-connection", ""])
    assert args.team_connection == ""


def test_a_long_bounce_message_is_read_as_far_as_the_parser_reads(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    notice = tmp_path / "huge.eml"
    notice.write_bytes(b"From: someone@example.org\r\nSubject: hello\r\n\r\n" + b"x" * (8 * 1024 * 1024))
    with pytest.raises(SystemExit) as exited:
        main(["bounce", "parse", str(notice)])
    assert exited.value.code == 0
    assert json.loads(capsys.readouterr().out) == {"path": str(notice), "is_bounce": False, "recipients": []}


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
        "connection", "connection_health", "identity", "assignment", "tenant", "throttle",
        "analytics_token"}


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
