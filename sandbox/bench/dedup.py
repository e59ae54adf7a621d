"""`sendrail bench dedup`: remembering finished send ids, Faust's table against sendrail's store.

On one local broker, the same input (50,000 records of about 1.5 KB, keyed by
tenant/connection, a tenth of them repeating an earlier send id on its partition) goes
through two deduplicating forwarders, one after the other:

- **Faust**: an agent over the topic with a RocksDB-backed `app.Table` (`rocksdb://`):
  check the send id, set it, forward the record (`dedup_faust.py`, its own process).
- **aiokafka + RocksTable**: a plain consumer group, the same check in
  `sendrail.store.RocksTable`, the changelog record staged with the forwarded record,
  acknowledged, then offsets committed: the services' loop.

Rates are timed on the broker's clock (LogAppendTime on the output topics), first to
last forwarded record. Whether Faust's table can serve a plain consumer group at all is
probed in the Faust process, from outside its agent. Then the store's resident memory
while it remembers 10 million send ids (local writes, no broker, in a process of its
own), and the rate at which it recovers 1 million from its changelog. Resident memory
is VmRSS from /proc (Linux).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from pydantic import BaseModel

from sendrail.bus.clients import ensure_topics, make_consumer, make_producer, wait_for_broker
from sendrail.bus.publisher import Publisher
from sendrail.sandbox.bench.memory import rss_mb
from sendrail.sandbox.bench.router import (
    count_since,
    cpu_s,
    end_offsets,
    log_append_time,
    publish,
    rate,
    read_range,
    wait_for_count,
)
from sendrail.sandbox.kafka_broker import KafkaBroker
from sendrail.sandbox.ports import free_port
from sendrail.sandbox.processes import stop_process
from sendrail.service import configure_logging
from sendrail.settings import KafkaSettings
from sendrail.store.changelog import KafkaChangelogReader, MemoryChangelog
from sendrail.store.entry import TableEntry, encode_entry
from sendrail.store.rocks import RocksTable
from sendrail.topics import OUTBOUND_SMTP_SEND_IDS, SEND_ID_RETENTION_MS, Topic

INPUT = Topic("bench.dedup-in", BaseModel, "tenant_id/connection_id", "The forwarders' input.")
OUT_FAUST = Topic("bench.dedup-out-faust", BaseModel, "tenant_id/connection_id", "Faust's output.")
OUT_LOOP = Topic("bench.dedup-out-loop", BaseModel, "tenant_id/connection_id", "The loop's output.")
LOOP_SEND_IDS = Topic("bench.dedup-in.send-ids", TableEntry, "send_id", "The loop's changelog.",
                      compacted=True, configs=OUTBOUND_SMTP_SEND_IDS.configs)
RECOVERY_SEND_IDS = Topic("bench.recovery.send-ids", TableEntry, "send_id", "Recovery's changelog.",
                          compacted=True, configs=OUTBOUND_SMTP_SEND_IDS.configs)

BODY = ("Hello {name},\n\nThank you for your interest in our spring offer. " * 19
        + "\n\nBest regards,\nThe sales team\n")

FAUST_SOURCES = {
    "writes_need_an_agent_event": "faust/tables/base.py Collection.partition_for_key: outside "
        "stream iteration a write raises TypeError; the changelog partition is the current "
        "event's (event.message.partition)",
    "rocksdb_store_needs_an_agent_event": "faust/stores/rocksdb.py Store._set: `assert event is "
        "not None` on current_event(), so even use_partitioner=True cannot write from outside",
    "own_consumer_group": "faust/transport/drivers/aiokafka.py Consumer._create_worker_consumer: "
        "group_id=app.conf.id, partition_assignment_strategy=[app.assignor] whenever the app "
        "has changelog tables",
    "own_assignor": "faust/assignor/partition_assignor.py PartitionAssignor: changelog topics "
        "are co-partitioned with the topics the app's own agents subscribe to",
    "recovery_follows_faust_assignment": "faust/app/base.py App._on_partitions_assigned -> "
        "faust/tables/manager.py TableManager.on_rebalance -> faust/tables/recovery.py "
        "Recovery.on_rebalance, which takes the table's partitions from "
        "app.assignor.assigned_actives()",
    "windowed_expiry_in_memory": "faust/tables/base.py Collection._maybe_set_key_ttl: a windowed "
        "table keeps every key of every open window in _partition_timestamp_keys (a Python "
        "dict of sets), so its memory grows with the keys remembered",
}


@dataclass(frozen=True)
class DedupBench:
    messages: int = 50_000
    repeat_every: int = 10
    """One record in this many repeats an earlier send id (of its partition)."""
    remembered: int = 10_000_000
    recovered: int = 1_000_000
    deadline_s: float = 300.0


def progress(message: str) -> None:
    print(f"[bench dedup] {message}", file=sys.stderr, flush=True)


async def run_dedup_bench(bench: DedupBench) -> dict[str, Any]:
    began_s = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sendrail-bench-") as tmp:
        run_dir = Path(tmp)
        broker = KafkaBroker(run_dir / "kafka", port=free_port())
        progress("starting the broker")
        await broker.start()
        try:
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
            await wait_for_broker(kafka, timeout_s=30)
            await ensure_topics(kafka, [INPUT, OUT_FAUST, OUT_LOOP, LOOP_SEND_IDS, RECOVERY_SEND_IDS])
            await log_append_time(kafka, [OUT_FAUST.name, OUT_LOOP.name])
            records = _records(bench)
            await publish(kafka, INPUT.name, records)
            unique = len({json.loads(value)["send_id"] for _, value in records})
            progress(f"published {len(records)} records ({unique} send ids)")
            loop = await _aiokafka_loop(kafka, run_dir, bench, unique)
            progress(f"aiokafka + RocksTable: {loop['messages_per_s']}/s")
            faust = await _faust_agent(kafka, run_dir, bench, unique)
            progress(f"Faust agent + table: {faust['messages_per_s']}/s")
            memory = await _remembered_memory_in_own_process(run_dir, bench)
            recovery = await _recovery(kafka, run_dir, bench)
        finally:
            await broker.stop()
    message_bytes = round(sum(len(value) for _, value in records) / len(records))
    return {"dedup": {
        "messages": bench.messages, "message_bytes": message_bytes, "send_ids": unique,
        "faust_agent_table_per_s": faust["messages_per_s"],
        "aiokafka_rocks_table_per_s": loop["messages_per_s"],
        "ratio": round(loop["messages_per_s"] / faust["messages_per_s"], 2),
        "faust": faust, "aiokafka_loop": loop,
        "faust_table_from_plain_consumer_group": {
            "usable": False, "observed": faust.pop("outside_agent"), "source": FAUST_SOURCES},
        **memory, **recovery,
        "bench_s": round(time.monotonic() - began_s, 1),
    }}


def _records(bench: DedupBench) -> list[tuple[bytes, bytes]]:
    """Fresh sends, and every `repeat_every`-th record an earlier one again (same key, so
    the same partition: what an upstream system publishing a request twice produces)."""
    rng = random.Random(7)
    records: list[tuple[bytes, bytes]] = []
    for n in range(bench.messages):
        if n % bench.repeat_every == bench.repeat_every - 1:
            records.append(records[rng.randrange(len(records))])
            continue
        connection = n % 60
        value = {"send_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                 "tenant_id": "acme", "connection_id": f"conn-{connection}",
                 "to": [f"lead{n}@customer{n % 97}.example.org"],
                 "subject": f"Our spring offer, for you ({n})", "text": BODY.format(name=f"Lead {n}")}
        records.append((f"acme/conn-{connection}".encode(), json.dumps(value).encode()))
    return records


# --- aiokafka + RocksTable --------------------------------------------------------------


class _TableFollowsGroup(ConsumerRebalanceListener):  # type: ignore[misc]
    """The table's partitions are the consumer's. aiokafka runs this listener beside the
    caller's `getmany`, which can return records of a new partition while its recovery is
    still under way: the loop waits for `settled` before it handles what it fetched."""

    def __init__(self, table: RocksTable) -> None:
        self.table = table
        self.settled = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.settled.clear()
        self.table.revoke({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.table.assign({tp.partition for tp in assigned})
        self.settled.set()


async def _aiokafka_loop(kafka: KafkaSettings, run_dir: Path, bench: DedupBench,
                         unique: int) -> dict[str, Any]:
    """consume → check → put + forward → confirm → commit, with the services' client settings."""
    start = await end_offsets(kafka, [OUT_LOOP])
    reader = KafkaChangelogReader(kafka, LOOP_SEND_IDS.name, client_id="bench-dedup-loop")
    table = RocksTable(changelog_topic=LOOP_SEND_IDS.name, reader=reader,
                       retention_ms=SEND_ID_RETENTION_MS, state_dir=run_dir / "state")
    consumer: AIOKafkaConsumer = make_consumer(kafka, group_id="bench-dedup-loop",
                                               client_id="bench-dedup-loop")
    producer = make_producer(kafka, client_id="bench-dedup-loop")
    publisher = Publisher(producer)
    await table.start()
    await producer.start()
    follow = _TableFollowsGroup(table)
    consumer.subscribe([INPUT.name], listener=follow)
    await consumer.start()
    handled = forwarded = 0
    cpu_before = time.process_time()
    try:
        async with asyncio.timeout(bench.deadline_s):
            while handled < bench.messages:
                fetched = await consumer.getmany(timeout_ms=200)
                await follow.settled.wait()
                assigned = consumer.assignment()
                now_ms = int(time.time() * 1000)
                for tp, batch in fetched.items():
                    if tp not in assigned:
                        continue  # revoked meanwhile: its next owner reads it again
                    for record in batch:
                        send_id = uuid.UUID(json.loads(record.value)["send_id"]).bytes
                        if table.get(tp.partition, send_id, now_ms) is None:
                            publisher.stage_at(OUT_LOOP.name, tp.partition, record.key, record.value)
                            table.put(tp.partition, send_id, b"", now_ms, publisher)
                            forwarded += 1
                        handled += 1
                await publisher.confirm()
                await consumer.commit()
    finally:
        cpu = time.process_time() - cpu_before
        await consumer.stop()
        await producer.stop()
        await table.stop()
    output = await read_range(kafka, start, await end_offsets(kafka, [OUT_LOOP]))
    return {**rate([r.timestamp for r in output]), "forwarded": forwarded,
            "repeats_dropped": handled - forwarded, "duplicates_forwarded": len(output) - unique,
            "cpu_us_per_message": round(cpu / bench.messages * 1e6, 1)}


# --- Faust ------------------------------------------------------------------------------


async def _faust_agent(kafka: KafkaSettings, run_dir: Path, bench: DedupBench, unique: int) -> dict[str, Any]:
    start = await end_offsets(kafka, [OUT_FAUST])
    result_file = run_dir / "faust-result.json"
    spec = {"bootstrap_servers": kafka.bootstrap_servers, "datadir": str(run_dir / "faust"),
            "input_topic": INPUT.name, "output_topic": OUT_FAUST.name, "messages": bench.messages,
            "result_file": str(result_file)}
    log = (run_dir / "faust.log").open("ab")
    began_s = time.monotonic()
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sendrail.sandbox.bench.dedup_faust", json.dumps(spec),
        stdout=log, stderr=log, start_new_session=True)
    log.close()
    try:
        async with asyncio.timeout(bench.deadline_s):
            # CPU from the first forwarded record on: Faust's start-up is not what is compared.
            while count_since(start, await end_offsets(kafka, [OUT_FAUST])) == 0:
                _check_running(worker, run_dir)
                await asyncio.sleep(0.1)
            first_output_s = time.monotonic() - began_s
            cpu_before = cpu_s(worker.pid)
            while not result_file.exists():
                _check_running(worker, run_dir)
                await asyncio.sleep(0.1)
        cpu = cpu_s(worker.pid) - cpu_before
        rss = rss_mb(worker.pid)
        await wait_for_count(kafka, [OUT_FAUST], start, unique, 60)
    finally:
        await stop_process(worker, timeout_s=30)
    result = json.loads(result_file.read_text())
    output = await read_range(kafka, start, await end_offsets(kafka, [OUT_FAUST]))
    return {**rate([r.timestamp for r in output]), "forwarded": result["forwarded"],
            "repeats_dropped": result["repeats"], "duplicates_forwarded": len(output) - unique,
            "cpu_us_per_message": round(cpu / bench.messages * 1e6, 1),
            "start_to_first_output_s": round(first_output_s, 1), "rss_mb": rss,
            "outside_agent": result["outside_agent"]}


def _check_running(worker: asyncio.subprocess.Process, run_dir: Path) -> None:
    if worker.returncode is not None:
        raise RuntimeError(f"the Faust worker exited ({worker.returncode}); see its log:\n"
                           + (run_dir / "faust.log").read_text(errors="replace")[-3000:])


# --- the store's memory and recovery ----------------------------------------------------


class _Discard:
    """A changelog sink that keeps nothing: the memory figure is the table's alone."""

    def stage_at(self, topic_name: str, partition: int, key: bytes, value: bytes) -> None:
        pass


async def _remembered_memory_in_own_process(run_dir: Path, bench: DedupBench) -> dict[str, Any]:
    """In a fresh process, so that its resident memory is sendrail's libraries and the table,
    not this process's input records and clients."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sendrail.sandbox.bench.dedup", "remember", str(bench.remembered),
        str(run_dir / "state"), stdout=asyncio.subprocess.PIPE)
    async with asyncio.timeout(bench.deadline_s):
        out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the memory measurement failed ({process.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


async def _remembered_memory(state_dir: Path, remembered: int) -> dict[str, Any]:
    """`remembered` send ids put into six partitions, one a millisecond apart; then point
    lookups of send ids it holds and of ones it never saw (what each new send asks)."""
    topic_name = "bench.memory.send-ids"
    table = RocksTable(changelog_topic=topic_name, reader=MemoryChangelog(topic_name),
                       retention_ms=SEND_ID_RETENTION_MS, state_dir=state_dir)
    await table.start()
    await table.assign(set(range(6)))
    sink = _Discard()
    pid = os.getpid()
    rss: dict[int, float] = {0: rss_mb(pid)}
    cached: dict[int, float] = {}
    now_ms = 1_780_000_000_000
    began_s = time.monotonic()
    try:
        for n in range(1, remembered + 1):
            table.put(n % 6, _send_id(n), b"", now_ms + n, sink)
            if n % 1_000_000 == 0:
                rss[n] = rss_mb(pid)
                cached[n] = round(table.cached_bytes / 1024 / 1024, 1)
                progress(f"{n:,} send ids remembered, {rss[n]} MB resident, {cached[n]} MB cached")
        put_s = time.monotonic() - began_s
        lookups = _lookup_us(table, remembered, now_ms + remembered)
        rss_end = rss_mb(pid)
        disk_bytes = sum(f.stat().st_size for f in table.path.rglob("*") if f.is_file())
    finally:
        await table.stop()
    return {
        "rss_mb_empty": rss[0],
        "rss_mb_at_1m": rss.get(1_000_000),
        "rss_mb_at_10m": rss.get(10_000_000),
        "rss_mb_by_million": {f"{n // 1_000_000}m": mb for n, mb in rss.items() if n},
        "block_cache_mb_by_million": {f"{n // 1_000_000}m": mb for n, mb in cached.items()},
        "rss_mb_after_lookups": rss_end,
        "remembered": remembered,
        "put_us": round(put_s / remembered * 1e6, 2),
        **lookups,
        "disk_mb": round(disk_bytes / 1024 / 1024),
    }


def _send_id(n: int) -> bytes:
    """The n-th send id: random-looking (as uuid4s are), and found again without storing it."""
    return hashlib.blake2b(n.to_bytes(8, "big"), digest_size=16).digest()


def _lookup_us(table: RocksTable, remembered: int, now_ms: int, count: int = 100_000) -> dict[str, Any]:
    rng = random.Random(17)
    known = [rng.randrange(1, remembered + 1) for _ in range(count)]
    began_s = time.monotonic()
    hits = sum(table.get(n % 6, _send_id(n), now_ms) is not None for n in known)
    hit_s = time.monotonic() - began_s
    unknown = [rng.randbytes(16) for _ in range(count)]
    began_s = time.monotonic()
    false_hits = sum(table.get(n % 6, key, now_ms) is not None for n, key in enumerate(unknown))
    miss_s = time.monotonic() - began_s
    if hits != count or false_hits:
        raise RuntimeError(f"lookups found {hits}/{count} known and {false_hits} unknown send ids")
    return {"get_known_us": round(hit_s / count * 1e6, 1), "get_unknown_us": round(miss_s / count * 1e6, 1)}


async def _recovery(kafka: KafkaSettings, run_dir: Path, bench: DedupBench) -> dict[str, Any]:
    """`recovered` entries written to the changelog (six partitions), then read back by a new
    table assigned every partition, as a new owner after a restart would."""
    progress(f"writing {bench.recovered:,} changelog records")
    producer = make_producer(kafka, client_id="bench-dedup-recovery")
    await producer.start()
    rng = random.Random(13)
    try:
        publisher = Publisher(producer)
        for n in range(bench.recovered):
            entry = encode_entry(b"", 1_780_000_000_000 + n)
            publisher.stage_at(RECOVERY_SEND_IDS.name, n % 6, rng.randbytes(16), entry)
            if n % 50_000 == 49_999:
                await publisher.confirm()
        await publisher.confirm()
    finally:
        await producer.stop()
    reader = KafkaChangelogReader(kafka, RECOVERY_SEND_IDS.name, client_id="bench-dedup-recovery")
    table = RocksTable(changelog_topic=RECOVERY_SEND_IDS.name, reader=reader,
                       retention_ms=SEND_ID_RETENTION_MS, state_dir=run_dir / "state")
    await table.start()
    try:
        progress("recovering them")
        began_s = time.monotonic()
        await table.assign(set(range(6)))
        recovery_s = time.monotonic() - began_s
    finally:
        await table.stop()
    return {"recovery_records": bench.recovered, "recovery_s": round(recovery_s, 2),
            "recovery_records_per_s": round(bench.recovered / recovery_s)}


if __name__ == "__main__":  # the memory measurement's own process
    if sys.argv[1:2] == ["remember"]:
        configure_logging(json=False, level=logging.WARNING)  # stdout carries the result
        print(json.dumps(asyncio.run(_remembered_memory(Path(sys.argv[3]), int(sys.argv[2])))))
