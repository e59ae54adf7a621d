"""`sendrail schema`: the JSON Schemas of every event, for upstream systems in any language."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from sendrail import events
from sendrail.cli.common import Subcommands, output_folder
from sendrail.errors import ConfigurationError
from sendrail.store.entry import TableEntry
from sendrail.topics import ALL_TOPICS

SCHEMA_MODELS: dict[str, Any] = {
    "EmailRequested": events.EmailRequested,
    "EmailRouted": events.EmailRouted,
    "DeliveryEvent": events.DeliveryEvent,
    "RequestDeadLettered": events.RequestDeadLettered,
    "BounceDetected": events.BounceDetected,
    "AutoReplyDetected": events.AutoReplyDetected,
    "ComplaintDetected": events.ComplaintDetected,
    "AnalyticsEvent": events.AnalyticsEvent,
    "AddressSuppressed": events.AddressSuppressed,
    "WatcherCheckpoint": events.WatcherCheckpoint,
    "ThrottleStateRecorded": events.ThrottleStateRecorded,
    "RegistryRecord": events.RegistryRecord,
    "TableEntry": TableEntry,  # the send-id changelogs; binary on the wire (see its description)
}


def schemas() -> dict[str, dict[str, Any]]:
    return {name: TypeAdapter(model).json_schema() for name, model in SCHEMA_MODELS.items()}


def topics_document() -> list[dict[str, Any]]:
    return [
        {"topic": t.name, "event": t.event.__name__ if t.name != "sendrail.registry" else "RegistryRecord",
         "key": t.key, "partitions": t.partitions, "compacted": t.compacted, "purpose": t.purpose}
        for t in ALL_TOPICS
    ]


def write_schemas(args: argparse.Namespace) -> int:
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, schema in schemas().items():
            (out / f"{name}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
        (out / "topics.json").write_text(json.dumps(topics_document(), indent=2) + "\n")
    except OSError as error:
        raise ConfigurationError(f"cannot write the schemas to {out}/: {error.strerror}") from None
    print(f"wrote {len(SCHEMA_MODELS)} schemas and topics.json to {out}/")
    return 0


def register(commands: Subcommands) -> None:
    parser = commands.add_parser("schema", help="write the JSON Schemas of every event on the bus")
    parser.add_argument("--out", type=output_folder, default=Path("schemas"),
                        help="folder (default: schemas)")
    parser.set_defaults(handler=write_schemas)
