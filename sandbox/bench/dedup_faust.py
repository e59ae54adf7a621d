"""The Faust side of `sendrail bench dedup`: an agent over a RocksDB-backed `app.Table`.

Run as its own process (`python -m sendrail.sandbox.bench.dedup_faust SPEC_JSON`), so
Faust's worker owns its event loop, signals and logging as in a Faust deployment. Each
record's send id is checked in the table, set if new and the record forwarded to the
output topic, on the partition it came from. When every input record has been handled,
it probes the table from outside the agent, as a plain aiokafka consumer group would
use it, and writes what it saw to the result file.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import faust
from faust.types import StreamT


def build(spec: dict[str, Any]) -> faust.Worker:
    app = faust.App(
        "bench-dedup-faust",
        broker=f"kafka://{spec['bootstrap_servers']}",
        store="rocksdb://",
        datadir=spec["datadir"],
        topic_partitions=6,
        # The services' producer settings (shared/bus/clients.py): acks=all, 2 ms linger,
        # 256 KiB batches; 500 records per poll.
        producer_acks=-1,
        producer_linger=0.002,
        producer_max_batch_size=256 * 1024,
        broker_max_poll_records=500,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        table_cleanup_interval=3600.0,
    )
    source = app.topic(spec["input_topic"], key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    sink = app.topic(spec["output_topic"], key_type=bytes, value_type=bytes,
                     key_serializer="raw", value_serializer="raw")
    # bytes keys and values: Faust's "raw" serializer, no encoding on either side.
    table = app.Table("send-ids", key_type=bytes, value_type=bytes, partitions=6)
    hashed = app.Table("send-ids-hashed", key_type=bytes, value_type=bytes, partitions=6,
                       use_partitioner=True)
    expected = int(spec["messages"])
    counts = {"handled": 0, "forwarded": 0, "repeats": 0}
    seen: list[bytes] = []
    started = time.monotonic()

    def finish() -> None:
        result = {**counts, "wall_s_from_start": round(time.monotonic() - started, 2),
                  "outside_agent": probe_outside_agent(app, table, hashed, seen[0])}
        Path(spec["result_file"]).write_text(json.dumps(result))

    @app.agent(source)
    async def dedup(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            send_id = uuid.UUID(json.loads(event.value)["send_id"]).bytes
            if table.get(send_id) is None:
                table[send_id] = int(time.time() * 1000).to_bytes(8, "big")
                await sink.send(key=event.key, value=event.value, partition=event.message.partition)
                counts["forwarded"] += 1
            else:
                counts["repeats"] += 1
            counts["handled"] += 1
            if not seen:
                seen.append(send_id)
            if counts["handled"] == expected:
                # In a context of its own, as a plain consumer's loop would be: no Faust event.
                asyncio.get_running_loop().call_soon(finish, context=contextvars.Context())

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    # Below INFO, Faust's worker sets the root logger to DEBUG to spin its terminal spinner
    # on every record (faust/worker.py Worker._setup_spinner_handler): every `logger.debug`
    # on the send path would then build a record. Without the spinner it stays at WARNING.
    worker.spinner = None
    return worker


def probe_outside_agent(app: faust.App, table: Any, hashed: Any, known: bytes) -> dict[str, Any]:
    """What a plain aiokafka consumer's loop gets from Faust's tables: reads, writes, and
    whose assignment the table's partitions follow."""
    changelog = table.changelog_topic.get_topic_name()
    return {
        "get_known_key": _attempt(lambda: table.get(known) is not None),
        "set": _attempt(lambda: table.__setitem__(b"probe", b"x")),
        "set_with_use_partitioner": _attempt(lambda: hashed.__setitem__(b"probe", b"x")),
        "consumer_group": app.conf.id,
        "assignor": f"{type(app.assignor).__module__}.{type(app.assignor).__name__}",
        "table_partitions_assigned_by_faust": sorted(
            tp.partition for tp in app.assignor.assigned_actives() if tp.topic == changelog),
    }


def _attempt(action: Any) -> str:
    try:
        return f"ok: {action()}"
    except Exception as error:  # what happens is the finding, and where
        where = traceback.extract_tb(error.__traceback__)[-1]
        site = where.filename.split("site-packages/")[-1]
        return f"{type(error).__name__}: {error} ({site}:{where.lineno} in {where.name})"


if __name__ == "__main__":
    build(json.loads(sys.argv[1])).execute_from_commandline()
