"""`sendrail bench smtp`: the SMTP sender process against plain aiosmtplib, to the same server.

Both deliver the same messages (about 1.5 KB, as `build_message` writes them) over the
same number of concurrent SMTP sessions, each side from a process of its own, to one
receiving server that is not itself the bottleneck: a private Exim (`EximSink`:
STARTTLS on a certificate its clients verify, AUTH PLAIN checked against its password
file, every message accepted and discarded), whose process tree's CPU per message is
reported beside the clients'.

- raw: `sessions` aiosmtplib clients, each logged in as one of the connections' users,
  sending its share of the pre-built messages one after another;
- sender: `sender-smtp` with `sessions / sessions_per_connection` unthrottled custom SMTP
  connections (SENDRAIL_SENDER_CONNECTIONS_PER_SERVER = sessions_per_connection), the
  routed emails pre-filled on its topic: it reads them, builds each message, sends it and
  publishes its `sent` delivery event.

Rates are timed at the server (its log's millisecond stamps), from the first to the last
message accepted; the sender's rate through its last `sent` event is reported too. CPU
per message: the raw clients' process, the sender service's process (/proc/<pid>/stat)
and the server's process tree, each over its own run.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtplib

from sendrail.bus.clients import make_producer
from sendrail.bus.codec import encode
from sendrail.events import (
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    EmailRequested,
    EmailRouted,
    RegistryRecord,
    SmtpServer,
    Source,
)
from sendrail.mail.message import build_message
from sendrail.registry.store import publish_record
from sendrail.sandbox.bench.router import (
    BODY,
    bench_stack,
    cpu_s,
    end_offsets,
    log_append_time,
    pid_of,
    rate,
    read_range,
    start_service,
    wait_for_count,
)
from sendrail.sandbox.exim_sink import EximSink
from sendrail.sandbox.stack import LocalStack, ServiceProcess
from sendrail.secrets import SecretBox
from sendrail.settings import KafkaSettings, SecretSettings
from sendrail.topics import DELIVERY, OUTBOUND_SMTP, connection_key

_MAX_BYTES = 25 * 1024 * 1024
_MEMORY_DIR = Path("/dev/shm")
"""Where the server's spool goes when there is such a directory: Exim syncs each message's
spool file, which on tmpfs costs no disk wait that would slow both sides alike."""


@dataclass(frozen=True)
class SmtpBench:
    messages: int = 20_000
    sessions: int = 16
    sessions_per_connection: int = 4
    deadline_s: float = 300.0

    @property
    def connections(self) -> int:
        return max(1, self.sessions // self.sessions_per_connection)


@dataclass(frozen=True)
class Account:
    tenant_id: str
    connection_id: str
    address: str
    password: str


@dataclass(frozen=True)
class RawClients:
    """What the raw client process needs: where to send, as whom, and how much."""

    host: str
    port: int
    ca_file: str
    accounts: list[Account]
    sessions: int
    messages: int
    first: int


async def run_smtp_bench(bench: SmtpBench) -> dict[str, Any]:
    memory = _memory_dir()
    with (tempfile.TemporaryDirectory(prefix="sendrail-bench-") as run_dir,
          tempfile.TemporaryDirectory(prefix="sendrail-bench-exim-", dir=memory) as sink_dir):
        async with bench_stack(Path(run_dir)) as stack, EximSink(Path(sink_dir)) as sink:
            kafka = KafkaSettings(bootstrap_servers=stack.broker.bootstrap_servers)
            await log_append_time(kafka, [DELIVERY.name])
            accounts = await _register(stack, kafka, sink, bench)
            raw = await _raw_rate(sink, accounts, bench)
            sender = await _sender_rate(stack, kafka, sink, accounts, bench)
            version = sink.version
    server_cpu = {"raw": raw["server_cpu_us_per_message"],
                  "sender": sender["server_cpu_us_per_message"]}
    return {"smtp": {
        "messages": bench.messages,
        "message_bytes": raw.pop("message_bytes"),
        "sessions": bench.sessions,
        "compared": (f"{bench.sessions} concurrent SMTP sessions (STARTTLS, AUTH PLAIN) to one "
                     f"Exim {version} on loopback: raw = {bench.sessions} aiosmtplib clients "
                     f"with pre-built messages; sender = sender-smtp with {bench.connections} "
                     f"unthrottled connections x {bench.sessions_per_connection} sessions, from "
                     "its topic, building each message and publishing its delivery event"),
        "raw_per_s": raw["messages_per_s"],
        "sender_per_s": sender["messages_per_s"],
        "ratio": round(sender["messages_per_s"] / raw["messages_per_s"], 3),
        "raw_client_cpu_us_per_message": raw["client_cpu_us_per_message"],
        "sender_cpu_us_per_message": sender["cpu_us_per_message"],
        "server_cpu_us_per_message": server_cpu,
        "server": {
            "software": f"Exim {version} (Debian exim4-daemon-light), configuration of its own",
            "tls": "STARTTLS, certificate verified by the clients",
            "auth": "AUTH PLAIN, checked against its password file (one login per session)",
            "mail": ("received, spooled (tmpfs) and discarded by its RCPT ACL, never delivered"
                     if memory is not None else
                     "received, spooled and discarded by its RCPT ACL, never delivered"),
            "cpu": "its daemon and session processes, living and reaped (/proc)",
        },
        "raw": raw,
        "sender": sender,
    }}


def _memory_dir() -> Path | None:
    return _MEMORY_DIR if _MEMORY_DIR.is_dir() else None


async def _register(stack: LocalStack, kafka: KafkaSettings, sink: EximSink,
                    bench: SmtpBench) -> list[Account]:
    tenant = f"bench-{secrets.token_hex(3)}"
    box = SecretBox.from_settings(SecretSettings(secret_key_file=Path(stack.env["SENDRAIL_SECRET_KEY_FILE"])))
    now = datetime.now(UTC)
    accounts: list[Account] = []
    records: list[RegistryRecord] = []
    for i in range(bench.connections):
        account = Account(tenant, f"c{i:02d}", f"c{i:02d}@{tenant}.example.com", secrets.token_urlsafe(12))
        accounts.append(account)
        sink.add_user(account.address, account.password)
        records += [
            ConnectionConfigured(tenant_id=tenant, connection_id=account.connection_id,
                                 kind=ChannelKind.CUSTOM_SMTP, owner_user_id=account.connection_id,
                                 smtp=SmtpServer(host=sink.host, port=sink.port),
                                 username=account.address, password=box.seal(account.password),
                                 connected_at=now, updated_at=now),
            ConnectionHealthChanged(tenant_id=tenant, connection_id=account.connection_id,
                                    healthy=True, changed_at=now),
        ]
    producer = make_producer(kafka, client_id="sendrail-bench")
    await producer.start()
    try:
        for record in records:
            await publish_record(producer, record)
    finally:
        await producer.stop()
    return accounts


def routed_email(n: int, account: Account) -> EmailRouted:
    request = EmailRequested(
        idempotency_key=f"smtp-bench-{n}", tenant_id=account.tenant_id,
        user_id=account.connection_id, identity=account.address, source=Source.CAMPAIGN,
        campaign_id="spring", template_id="intro", to=[f"lead{n}@customer{n % 97}.example.org"],
        subject=f"Our spring offer, for you ({n})", text=BODY.format(name=f"Lead {n}"),
        headers={"X-Campaign-Step": "1"}, requested_at=datetime.now(UTC))
    return EmailRouted(send_id=request.send_id, channel=ChannelKind.CUSTOM_SMTP,
                       connection_id=account.connection_id, request=request,
                       routed_at=datetime.now(UTC))


# --- raw aiosmtplib, in a process of its own ----------------------------------------------


async def _raw_rate(sink: EximSink, accounts: list[Account], bench: SmtpBench) -> dict[str, Any]:
    spec = RawClients(sink.host, sink.port, str(sink.certificates.ca_file), accounts,
                      bench.sessions, bench.messages, first=0)
    before = len(sink.accepted_ms())
    load = _Load(sink)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sendrail.sandbox.bench.smtp", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(child.communicate(json.dumps(asdict(spec)).encode()),
                                    bench.deadline_s)
    if child.returncode != 0:
        raise RuntimeError(f"the raw SMTP clients failed ({child.returncode})")
    await sink.wait_sessions_closed()  # their processes' CPU, reaped, is the daemon's
    client: dict[str, Any] = json.loads(out)
    accepted = sink.accepted_ms()[before:]
    return {**rate(accepted), "accepted": len(accepted),
            "client_cpu_us_per_message": client["cpu_us_per_message"],
            **load.per_message(bench.messages), "message_bytes": client["message_bytes"]}


def machine_busy_s() -> float:
    """CPU seconds spent busy on all cores since boot, from /proc/stat (Linux)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class _Load:
    """What a run cost, from its start to `per_message`: the machine (every core's busy time,
    whoever used it: others' work on a shared machine shows here) and the server (its
    process tree)."""

    def __init__(self, sink: EximSink) -> None:
        self._sink = sink
        self._wall_s = time.monotonic()
        self._machine_s = machine_busy_s()
        self._server_s = sink.cpu_s()

    def per_message(self, messages: int) -> dict[str, float | None]:
        machine_s = machine_busy_s() - self._machine_s
        cores_s = (time.monotonic() - self._wall_s) * (os.cpu_count() or 1)
        return {"machine_cpu_us_per_message": _per_message(machine_s, messages),
                "machine_busy_share": round(machine_s / cores_s, 2) if cores_s > 0 else None,
                "server_cpu_us_per_message": _per_message(_since(self._sink.cpu_s, self._server_s),
                                                          messages)}


def _since(now: Callable[[], float | None], before: float | None) -> float | None:
    after = now()
    return None if after is None or before is None else after - before


def _per_message(cpu_s: float | None, messages: int) -> float | None:
    return None if cpu_s is None or messages <= 0 else round(cpu_s / messages * 1e6, 1)


async def _raw_clients(spec: RawClients) -> dict[str, Any]:
    """Session s logs in as account s // (sessions per account), as the sender's sessions do,
    and sends every `sessions`-th message."""
    context = ssl.create_default_context(cafile=spec.ca_file)
    per_account = max(1, spec.sessions // len(spec.accounts))
    work: list[tuple[Account, list[tuple[str, bytes]]]] = []
    for s in range(spec.sessions):
        account = spec.accounts[s // per_account % len(spec.accounts)]
        emails = [routed_email(n, account) for n in range(spec.first + s, spec.first + spec.messages,
                                                           spec.sessions)]
        work.append((account, [(e.request.to[0], build_message(e, date=datetime.now(UTC),
                                                               max_bytes=_MAX_BYTES))
                               for e in emails]))
    started = time.process_time()

    async def session(account: Account, messages: list[tuple[str, bytes]]) -> None:
        client = aiosmtplib.SMTP(hostname=spec.host, port=spec.port, start_tls=True,
                                 tls_context=context, timeout=30)
        await client.connect()
        await client.login(account.address, account.password)
        for recipient, message in messages:
            await client.sendmail(account.address, [recipient], message)
        await client.quit()

    await asyncio.gather(*(session(account, messages) for account, messages in work if messages))
    sizes = [len(message) for _, messages in work for _, message in messages]
    return {"cpu_us_per_message": round((time.process_time() - started) / spec.messages * 1e6, 1),
            "message_bytes": round(sum(sizes) / len(sizes))}


# --- the sender ---------------------------------------------------------------------------


async def _sender_rate(stack: LocalStack, kafka: KafkaSettings, sink: EximSink,
                       accounts: list[Account], bench: SmtpBench) -> dict[str, Any]:
    first = bench.messages  # numbers the raw run did not use: new send ids
    routed = [routed_email(n, accounts[(n - first) % len(accounts)])
              for n in range(first, first + bench.messages)]
    producer = make_producer(kafka, client_id="sendrail-bench")
    await producer.start()
    try:
        pending = [await producer.send(OUTBOUND_SMTP.name, encode(r),
                                       key=connection_key(r.request.tenant_id, r.connection_id))
                   for r in routed]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    start = await end_offsets(kafka, [DELIVERY])
    before = len(sink.accepted_ms())
    load = _Load(sink)
    sender = await start_service(stack, "sender-smtp", env={
        "SENDRAIL_SENDER_CONNECTIONS_PER_SERVER": str(bench.sessions_per_connection),
        "SENDRAIL_TLS_CA_FILE": str(sink.certificates.ca_file)})
    try:
        # From the moment it is ready: its start (imports, the broker, the registry) is not
        # sending. What it accepted before that is left out of its CPU per message.
        cpu_before = _service_cpu_s(sender)
        accepted_before = len(sink.accepted_ms()) - before
        await sink.wait_accepted(before + bench.messages, bench.deadline_s)
        figures = load.per_message(bench.messages)
        # Each message has its `sent` event after it was accepted (and no other event here).
        await wait_for_count(kafka, [DELIVERY], start, bench.messages, bench.deadline_s)
        cpu = _since(lambda: _service_cpu_s(sender), cpu_before)
    finally:
        await sender.stop()
    accepted = sink.accepted_ms()[before:]
    events = await read_range(kafka, start, await end_offsets(kafka, [DELIVERY]))
    sent = [r.timestamp for r in events if r.value is not None
            and json.loads(r.value)["status"] == "sent"]
    through_events_s = (max(sent) - min(accepted)) / 1000
    return {**rate(accepted), "accepted": len(accepted), "sent_events": len(sent),
            "through_last_event_per_s": round((len(sent) - 1) / through_events_s),
            "cpu_us_per_message": _per_message(cpu, bench.messages - accepted_before),
            "accepted_before_ready": accepted_before, **figures}


def _service_cpu_s(service: ServiceProcess) -> float | None:
    """The service process's CPU seconds (/proc/<pid>/stat), None once it is gone."""
    if service.process is None or service.process.returncode is not None:
        return None
    try:
        return cpu_s(pid_of(service))
    except OSError:  # it ended between the two looks
        return None


def main() -> None:
    """The raw client process: a `RawClients` as JSON on stdin, its figures on stdout."""
    document = json.loads(sys.stdin.read())
    document["accounts"] = [Account(**a) for a in document["accounts"]]
    print(json.dumps(asyncio.run(_raw_clients(RawClients(**document)))))


if __name__ == "__main__":
    main()
