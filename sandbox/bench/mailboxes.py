"""`sendrail bench mailboxes`: one sender replica's resident memory with 10,000 connected mailboxes.

One broker, the mail sandbox (its custom SMTP server, aiosmtpd, receives), one router and
ONE `sender-smtp`. Every mailbox is a custom SMTP connection of its own (its own login on
the sandbox server) throttled to one message an hour, and ends the run with a backlog of
`queued_per_connection` emails in the sender. The registry records are written straight
to the registry topic, as `sendrail connect` and `sendrail throttle set` write them, but
all in one producer batch; the requests are published the same way.

Two steps, on the same sender:

1. `sending` mailboxes (1,000) get one email more than their backlog: the first goes
   now, through an SMTP session of its own (STARTTLS, AUTH), which the sender keeps
   open for the connection's next turn; the rest wait for the next hour.
2. The other mailboxes (9,000) sent their hourly email before this run: their throttle
   state (the compacted `sendrail.throttle-state` topic, as a previous sender replica
   left it) already holds that send, so all their mail waits and none opens a session.
   Sending 10,000 first emails through 10,000 fresh TLS sessions would take this
   two-core machine several minutes; step 1 measures what a session adds instead.

Done is read from the sender's own /metrics at each step: `sendrail_queue_depth` (all
connections) at the expected backlog and `sendrail_emails_total{outcome="sent"}` at
one per sending mailbox. Resident memory is VmRSS from /proc (Linux) of the sender and
its children, sampled every half second; the figure checked against the target is the
highest. The report also has the RSS added per mailbox in each step (with and without
an open session) and, if the run did not complete, the sender's errors from its log.

`SENDRAIL_BENCH_TRACEMALLOC=1` also starts the sender under tracemalloc (a
`sitecustomize` on its PYTHONPATH) and reports, at the end, where its live memory was
allocated and which types have the most objects. Tracing makes it slower and larger,
so its RSS is not the figure to quote then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from sendrail.bus.clients import make_producer
from sendrail.bus.codec import encode
from sendrail.events import (
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    EmailRequested,
    IdentityRegistered,
    RegistryRecord,
    SmtpServer,
    Source,
    ThrottleConfigured,
    ThrottleStateRecorded,
    registry_key,
)
from sendrail.sandbox.bench.router import BODY, bench_stack, pid_of, start_service
from sendrail.sandbox.stack import LocalStack, ServiceProcess
from sendrail.secrets import SecretBox
from sendrail.settings import KafkaSettings, SecretSettings
from sendrail.topics import REGISTRY, REQUESTS, THROTTLE_STATE, connection_key

PROFILE_VARIABLE = "SENDRAIL_BENCH_TRACEMALLOC"
_SAMPLE_S = 0.5


@dataclass(frozen=True)
class MailboxesBench:
    connections: int = 10_000
    queued_per_connection: int = 5
    """Left in each connection's queue at the end of the run."""
    sending: int = 1_000
    """Mailboxes whose first email is sent in this run, each through a session of its own;
    the others' hourly send is already in their throttle state."""
    per_tenant: int = 100
    batch_wait_s: float = 3600.0
    """One message per batch, a batch an hour: the backlog stays queued for the whole run."""
    target_rss_mb: float = 300.0
    deadline_s: float = 120.0
    """For both steps together, from the first request published: the whole run stays under
    three minutes, the broker's start and the stop included, even when it is not met."""


@dataclass(frozen=True)
class _Mailbox:
    tenant_id: str
    user_id: str
    connection_id: str
    address: str


@dataclass
class _Sampler:
    """The sender's resident memory every `_SAMPLE_S`, for its peak."""

    pid: int
    peak_mb: float = 0.0
    samples: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def sample(self) -> float:
        now = tree_rss_mb(self.pid)
        self.peak_mb = max(self.peak_mb, now)
        self.samples += 1
        return now

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(_SAMPLE_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def run_mailboxes_bench(bench: MailboxesBench) -> dict[str, Any]:
    started_s = time.monotonic()
    profiling = bool(os.environ.get(PROFILE_VARIABLE))
    with tempfile.TemporaryDirectory(prefix="sendrail-bench-") as run_dir:
        async with bench_stack(Path(run_dir)) as stack:
            kafka = KafkaSettings(bootstrap_servers=stack.broker.bootstrap_servers)
            mailboxes = _mailboxes(bench)
            registered_s = time.monotonic()
            await _register(stack, kafka, mailboxes, bench)
            registered_s = time.monotonic() - registered_s
            sender_env, snapshot = _profile_env(Path(run_dir)) if profiling else ({}, None)
            router = await start_service(stack, "router")
            sender = await start_service(stack, "sender-smtp", env=sender_env)
            try:
                result = await _measure(kafka, sender, mailboxes, bench)
                if snapshot is not None:
                    result["profile"] = await _profile(sender, snapshot)
            finally:
                await sender.stop()
                await router.stop()
            result.update(await asyncio.to_thread(_log_summary, sender.log_file))
    result["registration_s"] = round(registered_s, 1)
    result["run_s"] = round(time.monotonic() - started_s, 1)
    return {"mailboxes": result}


def _mailboxes(bench: MailboxesBench) -> list[_Mailbox]:
    run = secrets.token_hex(3)
    mailboxes = []
    for i in range(bench.connections):
        tenant_id = f"mbx-{run}-{i // bench.per_tenant:03d}"
        user_id = f"u{i:05d}"
        mailboxes.append(_Mailbox(tenant_id, user_id, f"{user_id}-smtp",
                                  f"{user_id}@{tenant_id}.example.com"))
    return mailboxes


async def _register(stack: LocalStack, kafka: KafkaSettings, mailboxes: list[_Mailbox],
                    bench: MailboxesBench) -> None:
    """Each mailbox a login on the sandbox's custom SMTP server, and its four registry records
    (connection, health, identity, throttle), all in one batch of the producer's."""
    box = SecretBox.from_settings(SecretSettings(secret_key_file=Path(stack.env["SENDRAIL_SECRET_KEY_FILE"])))
    endpoint = stack.info.smtp["custom_smtp"]
    server = SmtpServer(host=endpoint.host, port=endpoint.port)
    now = datetime.now(UTC)
    records: list[RegistryRecord] = []
    for mailbox in mailboxes:
        password = secrets.token_urlsafe(12)
        stack.sandbox.add_password_user("custom_smtp", mailbox.address, password)
        records += [
            ConnectionConfigured(tenant_id=mailbox.tenant_id, connection_id=mailbox.connection_id,
                                 kind=ChannelKind.CUSTOM_SMTP, owner_user_id=mailbox.user_id,
                                 smtp=server, username=mailbox.address, password=box.seal(password),
                                 connected_at=now, updated_at=now),
            ConnectionHealthChanged(tenant_id=mailbox.tenant_id, connection_id=mailbox.connection_id,
                                    healthy=True, changed_at=now),
            IdentityRegistered(tenant_id=mailbox.tenant_id, user_id=mailbox.user_id,
                               address=mailbox.address, verified=True, is_default=True, updated_at=now),
            ThrottleConfigured(tenant_id=mailbox.tenant_id, connection_id=mailbox.connection_id,
                               batch_size=1, batch_wait_s=bench.batch_wait_s, updated_at=now),
        ]
    await _publish(kafka, REGISTRY.name,
                   ((registry_key(r).encode(), encode(r)) for r in records))
    # The hourly send the mailboxes of step 2 made before this run, as a sender stores it.
    sent_ms = int(now.timestamp() * 1000) - 1000
    await _publish(kafka, THROTTLE_STATE.name, (
        (connection_key(m.tenant_id, m.connection_id), encode(ThrottleStateRecorded(
            tenant_id=m.tenant_id, connection_id=m.connection_id, sends_at_ms=[sent_ms],
            sends_recipients=[1], recorded_at=now)))
        for m in mailboxes[bench.sending:]))


async def _publish(kafka: KafkaSettings, topic: str, records: Any) -> int:
    """Every (key, value) handed to one producer, then all acknowledged together."""
    producer: AIOKafkaProducer = make_producer(kafka, client_id="sendrail-bench")
    await producer.start()
    try:
        pending = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return len(pending)


def _requests(mailboxes: list[_Mailbox], each: int) -> Any:
    for mailbox in mailboxes:
        key = f"{mailbox.tenant_id}/{mailbox.user_id}".encode()
        for n in range(each):
            request = EmailRequested(
                idempotency_key=f"{mailbox.connection_id}-{n}", tenant_id=mailbox.tenant_id,
                user_id=mailbox.user_id, identity=mailbox.address, source=Source.CAMPAIGN,
                to=[f"lead{n}@customer.example.org"], subject=f"Our spring offer, for you ({n})",
                text=BODY.format(name=f"Lead {n}"), requested_at=datetime.now(UTC))
            yield key, encode(request)


async def _measure(kafka: KafkaSettings, sender: ServiceProcess, mailboxes: list[_Mailbox],
                   bench: MailboxesBench) -> dict[str, Any]:
    pid = pid_of(sender)
    sampler = _Sampler(pid)
    idle_mb = sampler.sample()
    sampler.start()
    sending = min(bench.sending, len(mailboxes))
    queued = bench.queued_per_connection
    # (mailboxes, emails each, sent after the step, queued after the step)
    plan = [(mailboxes[:sending], queued + 1, sending, sending * queued),
            (mailboxes[sending:], queued, sending, len(mailboxes) * queued)]
    steps: list[dict[str, Any]] = []
    published = 0
    complete = True
    try:
        async with aiohttp.ClientSession() as session:
            deadline_s = time.monotonic() + bench.deadline_s
            for group, each, sent_after, queued_after in plan:
                if not group:
                    continue
                step_started_s = time.monotonic()
                before_mb = sampler.sample()
                published += await _publish(kafka, REQUESTS.name, _requests(group, each))
                reached = await _wait_until_queued(session, sender, sent=sent_after,
                                                   queued=queued_after, deadline_s=deadline_s)
                after_mb = sampler.sample()
                steps.append({
                    "mailboxes": len(group), "open_sessions": each > queued, **reached,
                    "rss_mb": after_mb,
                    "bytes_per_mailbox": round((after_mb - before_mb) * 1024 * 1024 / len(group)),
                    "step_s": round(time.monotonic() - step_started_s, 1)})
                complete = complete and reached["done"]
                if not complete:
                    break
            settled_mb = await _settled_rss(sampler)
            final = await _sender_metrics(session, sender)
    finally:
        await sampler.stop()
    rss_mb = max(sampler.peak_mb, settled_mb)
    result: dict[str, Any] = {
        "connections": len(mailboxes),
        "queued_messages": int(final["queued"]),
        "requests_published": published,
        "sent": int(final["sent"]),
        "deferred_events": int(final["deferred"]),
        "failed": int(final["failed"]),
        "complete": complete,
        "sender_rss_mb": rss_mb,
        "target_rss_mb": bench.target_rss_mb,
        "met": complete and rss_mb <= bench.target_rss_mb,
        "sender_rss_settled_mb": settled_mb,
        "sender_idle_rss_mb": idle_mb,
        "sender_open_sockets": _sockets(pid),
        "steps": steps,
        "measured": f"VmRSS of the sender and its children: the highest of the samples taken every "
                    f"{_SAMPLE_S} s from the first request to 2 s after the last was queued; idle is "
                    f"after start, with every mailbox registered",
    }
    if complete and len(steps) == 2:
        with_session, without = (step["bytes_per_mailbox"] for step in steps)
        result["bytes_per_open_session"] = with_session - without
        result["rss_if_every_mailbox_had_a_session_mb"] = round(
            rss_mb + (len(mailboxes) - sending) * (with_session - without) / 1024 / 1024, 1)
    return result


async def _wait_until_queued(session: aiohttp.ClientSession, sender: ServiceProcess, *, sent: int,
                             queued: int, deadline_s: float) -> dict[str, Any]:
    """Until the sender reports `sent` emails sent and `queued` held in its queues (every
    request consumed: each connection's first sent, the rest waiting), or the deadline."""
    metrics: dict[str, float] = {}
    started_s = time.monotonic()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, deadline_s - time.monotonic())):
            while True:
                metrics = await _sender_metrics(session, sender)
                if metrics["sent"] >= sent and metrics["queued"] == queued:
                    break
                if metrics["failed"]:
                    break  # failed emails never make the counts: say so rather than wait
                await asyncio.sleep(_SAMPLE_S)
    done = metrics.get("sent", 0) >= sent and metrics.get("queued", 0) == queued
    return {"done": done, "sent": int(metrics.get("sent", 0)), "queued": int(metrics.get("queued", 0)),
            "failed": int(metrics.get("failed", 0)), "wait_s": round(time.monotonic() - started_s, 1)}


async def _settled_rss(sampler: _Sampler, settle_s: float = 2.0) -> float:
    """The highest RSS over `settle_s` after the backlog is queued: the last turns' records stored."""
    highest = 0.0
    for _ in range(int(settle_s / _SAMPLE_S)):
        await asyncio.sleep(_SAMPLE_S)
        highest = max(highest, sampler.sample())
    return highest


async def _sender_metrics(session: aiohttp.ClientSession, sender: ServiceProcess) -> dict[str, float]:
    """Queued messages (all channels) and emails by outcome, from the sender's /metrics."""
    async with session.get(f"http://127.0.0.1:{sender.http_port}/metrics") as response:
        text = await response.text()
    found = {"queued": 0.0, "sent": 0.0, "deferred": 0.0, "failed": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sendrail_queue_depth":
                found["queued"] += sample.value
            elif sample.name == "sendrail_emails_total" and sample.labels.get("outcome") in found:
                found[sample.labels["outcome"]] += sample.value
    return found


# --- /proc ---------------------------------------------------------------------------------


def tree_rss_mb(pid: int) -> float:
    """VmRSS of a process and its descendants (Linux), in MiB."""
    total_kb = 0
    for each in _tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return round(total_kb / 1024, 1)


def _tree(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        each = pending.pop()
        found.append(each)
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for task in Path(f"/proc/{each}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(child) for child in children)
    return found


def _log_summary(log_file: Path, top: int = 5) -> dict[str, Any]:
    """The sender's errors by kind (event and exception), from its JSON log: why a run
    that did not complete did not."""
    errors: dict[str, int] = {}
    restarts = 0
    with log_file.open(errors="replace") as lines:
        for line in lines:
            if '"level": "error"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            event = str(entry.get("event"))
            restarts += event.startswith("service failed")
            exception = str(entry.get("exception", "")).strip().splitlines()
            kind = f"{event}: {exception[-1]}" if exception else event
            errors[kind] = errors.get(kind, 0) + 1
    worst = sorted(errors.items(), key=lambda item: -item[1])[:top]
    return {"sender_restarts": restarts, "sender_errors": dict(worst)}


def _sockets(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith("socket:")
    return count


# --- profiling (SENDRAIL_BENCH_TRACEMALLOC) ------------------------------------------------

_SITECUSTOMIZE = '''\
"""Started by `sendrail bench mailboxes` under SENDRAIL_BENCH_TRACEMALLOC: SIGUSR1 dumps the heap."""
import collections, gc, json, os, signal, sys, traceback, tracemalloc
tracemalloc.start(int(os.environ.get("SENDRAIL_BENCH_TRACEMALLOC_FRAMES", "1")))
def _dump(signum, frame):
    # Whatever this raises would be raised in the sender where the signal found it.
    path = os.environ["SENDRAIL_BENCH_SNAPSHOT"]
    try:
        gc.collect()
        counts, sizes = collections.Counter(), collections.Counter()
        for obj in gc.get_objects():
            counts[type(obj)] += 1
            sizes[type(obj)] += sys.getsizeof(obj)
        types = {f"{t.__module__}.{t.__qualname__}": [c, sizes[t]] for t, c in counts.most_common(60)}
        tracemalloc.take_snapshot().dump(path + ".tmp")
        with open(path + ".types", "w") as out:
            json.dump(types, out)
        os.replace(path + ".tmp", path)
    except BaseException:
        with open(path + ".error", "w") as out:
            out.write(traceback.format_exc())
signal.signal(signal.SIGUSR1, _dump)
'''


def _profile_env(run_dir: Path) -> tuple[dict[str, str], Path]:
    hook = run_dir / "tracemalloc-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    snapshot = run_dir / "sender.tracemalloc"
    python_path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": python_path, "SENDRAIL_BENCH_SNAPSHOT": str(snapshot)}, snapshot


async def _profile(sender: ServiceProcess, snapshot: Path, top: int = 25) -> dict[str, Any]:
    """The sender's live allocations by file and line, and its most numerous object types."""
    os.kill(pid_of(sender), signal.SIGUSR1)
    failed = Path(f"{snapshot}.error")
    async with asyncio.timeout(300):
        while not await asyncio.to_thread(snapshot.exists):
            if await asyncio.to_thread(failed.exists):
                return {"error": await asyncio.to_thread(failed.read_text)}
            await asyncio.sleep(0.5)
    taken = await asyncio.to_thread(tracemalloc.Snapshot.load, str(snapshot))
    by_line = taken.statistics("lineno")
    by_file = taken.statistics("filename")
    types = json.loads(await asyncio.to_thread(Path(f"{snapshot}.types").read_text))

    def where(stat: tracemalloc.Statistic) -> str:
        frame = stat.traceback[0]
        return f"{_short(frame.filename)}:{frame.lineno}"

    return {
        "traced_mb": round(sum(s.size for s in by_line) / 1024 / 1024, 1),
        "by_file_mb": {_short(s.traceback[0].filename): round(s.size / 1024 / 1024, 2)
                       for s in by_file[:top]},
        "by_line": [{"at": where(s), "mb": round(s.size / 1024 / 1024, 2), "blocks": s.count}
                    for s in by_line[:top]],
        "types": {name: {"objects": count, "shallow_mb": round(size / 1024 / 1024, 2)}
                  for name, (count, size) in list(types.items())[:top]},
    }


_CHECKOUT = f"{Path(__file__).resolve().parents[2]}/"


def _short(filename: str) -> str:
    """A file's name from its package or the checkout on."""
    for marker in ("site-packages/", _CHECKOUT):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename
