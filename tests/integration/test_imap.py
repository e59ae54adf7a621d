"""The IMAP adapter against a real Dovecot: reading, IDLE, rejected tokens, lost servers."""

from __future__ import annotations

import asyncio
import datetime
import os
import secrets
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from sendrail.mail.imap import ImapAuthFailed, ImapConnectionLost, ImapMailbox
from sendrail.sandbox.dovecot import Dovecot, DovecotFailed, create_maildir
from sendrail.sandbox.tls import SandboxCertificates, create_certificates

OPEN_TIMEOUT_S = 10.0
AUTHORITY_DOWN_TOKEN = "at-while-the-authority-is-down"


@dataclass
class ImapSandbox:
    """A running Dovecot, its introspection endpoint's tokens and its Maildirs."""

    base_dir: Path
    port: int
    certificates: SandboxCertificates
    introspection_url: str
    ssl_context: ssl.SSLContext
    tokens: dict[str, str] = field(default_factory=dict)
    """access token -> address, as the introspection endpoint knows them."""

    @property
    def maildir_root(self) -> Path:
        return self.base_dir / "mail"

    def new_user(self, *, with_maildir: bool = True) -> tuple[str, str, Path]:
        """A fresh address, a valid token for it and its (empty) Maildir."""
        address = f"user-{secrets.token_hex(4)}@example.com"
        token = f"at-{secrets.token_urlsafe(16)}"
        self.tokens[token] = address
        maildir = self.maildir_root / address
        if with_maildir:
            create_maildir(maildir)
        return address, token, maildir

    async def open(self, address: str, token: str, *, port: int | None = None) -> ImapMailbox:
        return await ImapMailbox.open(
            host="127.0.0.1",
            port=port or self.port,
            ssl_context=self.ssl_context,
            user=address,
            access_token=token,
            timeout_s=OPEN_TIMEOUT_S,
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def deliver(maildir: Path, raw: bytes) -> None:
    """Deliver as an MTA does: write into tmp/, then rename into new/."""
    name = f"{time.time_ns()}.{secrets.token_hex(4)}.sendrail-test"
    (maildir / "tmp" / name).write_bytes(raw)
    os.rename(maildir / "tmp" / name, maildir / "new" / name)


def message(subject: str, body: bytes = b"hello\r\n") -> bytes:
    return f"From: MAILER-DAEMON@example.net\r\nSubject: {subject}\r\n\r\n".encode() + body


def _maildir_listing(maildir: Path) -> dict[str, list[str]]:
    return {entry.name: sorted(os.listdir(entry)) for entry in maildir.iterdir()}


def _is_idling(address: str) -> bool:
    """Whether Dovecot's mail process for `address` is in IDLE (its process title says so)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            title = cmdline.read_bytes()
        except OSError:
            continue
        if f"[{address} 127.0.0.1 IDLE]".encode() in title:
            return True
    return False


async def _until_idling(address: str, deadline_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not _is_idling(address):
        if loop.time() > end:
            raise AssertionError(f"Dovecot never reported {address} as idling")
        await asyncio.sleep(0.02)


def _sandbox_directory() -> Path:
    # Dovecot's mail processes run as `mail`: pytest's own temporary root (mode 0700)
    # would keep them out, so the sandbox lives in a directory of its own.
    base_dir = Path(tempfile.mkdtemp(prefix="sendrail-imap-"))
    base_dir.chmod(0o755)
    return base_dir


@pytest.fixture(scope="module")
async def imap_sandbox() -> AsyncIterator[ImapSandbox]:
    base_dir = _sandbox_directory()
    certificates = create_certificates(base_dir / "certs", now=datetime.datetime.now(datetime.UTC))
    tokens: dict[str, str] = {}

    async def introspect(request: web.Request) -> web.Response:
        token = str((await request.post()).get("token", ""))
        if token == AUTHORITY_DOWN_TOKEN:
            return web.Response(status=503)
        address = tokens.get(token)
        if address is None:
            return web.json_response({"active": False})
        return web.json_response({"active": True, "username": address})

    app = web.Application()
    app.router.add_post("/introspect", introspect)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    introspection_url = f"http://127.0.0.1:{runner.addresses[0][1]}/introspect"

    sandbox = ImapSandbox(
        base_dir=base_dir,
        port=_free_port(),
        certificates=certificates,
        introspection_url=introspection_url,
        ssl_context=ssl.create_default_context(cafile=str(certificates.ca_file)),
        tokens=tokens,
    )
    dovecot = Dovecot(
        root_dir=base_dir / "dovecot",
        port=sandbox.port,
        maildir_root=sandbox.maildir_root,
        certificates=certificates,
        introspection_url=introspection_url,
    )
    await dovecot.start()
    try:
        yield sandbox
    finally:
        await dovecot.stop()
        await runner.cleanup()
        shutil.rmtree(base_dir)


async def test_open_reports_the_mailbox_state(imap_sandbox: ImapSandbox) -> None:
    address, token, maildir = imap_sandbox.new_user()
    deliver(maildir, message("one"))
    deliver(maildir, message("two"))

    mailbox = await imap_sandbox.open(address, token)
    try:
        assert mailbox.state.uidvalidity > 0
        assert mailbox.state.uidnext == 3
        assert mailbox.supports_idle
    finally:
        await mailbox.close()


async def test_a_user_without_mail_yet_has_an_empty_inbox(imap_sandbox: ImapSandbox) -> None:
    address, token, _ = imap_sandbox.new_user(with_maildir=False)

    mailbox = await imap_sandbox.open(address, token)
    try:
        assert mailbox.state.uidnext == 1
        assert await mailbox.fetch_since(0, limit=10) == []
    finally:
        await mailbox.close()


async def test_fetch_returns_exact_bytes_in_uid_order_and_leaves_the_maildir_alone(
    imap_sandbox: ImapSandbox,
) -> None:
    address, token, maildir = imap_sandbox.new_user()
    # The large one spans many TLS records and reads.
    large_body = b"".join(b"line %d\r\n" % n for n in range(20_000))
    sent = [message("one"), message("two", large_body), message("three")]
    for raw in sent:
        deliver(maildir, raw)
    before = _maildir_listing(maildir)

    mailbox = await imap_sandbox.open(address, token)
    try:
        fetched = await mailbox.fetch_since(0, limit=10)
        again = await mailbox.fetch_since(0, limit=10)
    finally:
        await mailbox.close()

    # Dovecot numbers new Maildir files in the order of their names, that is of delivery.
    assert [m.uid for m in fetched] == [1, 2, 3]
    assert [m.raw for m in fetched] == sent
    assert again == fetched
    after = _maildir_listing(maildir)
    assert after == before
    assert sorted(after) == ["cur", "new", "tmp"]  # Dovecot's own files live elsewhere
    assert not any(":2," in name for names in after.values() for name in names)  # no \Seen


async def test_a_partial_fetch_reads_only_the_start_of_a_huge_message(imap_sandbox: ImapSandbox) -> None:
    """Anyone can mail a user 50 MB: the watcher holds no more of it than the parser reads."""
    address, token, maildir = imap_sandbox.new_user()
    huge = message("huge", b"x" * 3_000_000)
    deliver(maildir, huge)
    mailbox = await imap_sandbox.open(address, token)
    try:
        [partial] = await mailbox.fetch_since(0, limit=10, max_bytes=65_536)
    finally:
        await mailbox.close()
    assert partial.raw == huge[:65_536]


async def test_fetch_since_pages_by_uid_and_ignores_the_star_edge(
    imap_sandbox: ImapSandbox,
) -> None:
    address, token, maildir = imap_sandbox.new_user()
    for n in range(5):
        deliver(maildir, message(f"m{n}"))

    mailbox = await imap_sandbox.open(address, token)
    try:
        first = await mailbox.fetch_since(0, limit=2)
        rest = await mailbox.fetch_since(first[-1].uid, limit=10)
        highest = rest[-1].uid
        # "N:*" with N above the highest UID still names the last message (RFC 3501 6.4.8).
        beyond = await mailbox.fetch_since(highest, limit=10)
        far_beyond = await mailbox.fetch_since(highest + 100, limit=10)
    finally:
        await mailbox.close()

    assert [m.uid for m in first] == [1, 2]
    assert [m.uid for m in rest] == [3, 4, 5]
    assert [m.raw for m in first + rest] == [message(f"m{n}") for n in range(5)]
    assert beyond == [] and far_beyond == []


async def test_idle_wakes_when_mail_arrives(imap_sandbox: ImapSandbox) -> None:
    address, token, maildir = imap_sandbox.new_user()
    deliver(maildir, message("old"))
    mailbox = await imap_sandbox.open(address, token)
    try:
        waiting = asyncio.ensure_future(mailbox.wait_for_change(timeout_s=30))
        await _until_idling(address)
        assert not waiting.done()
        delivered_at = time.monotonic()
        deliver(maildir, message("bounce"))

        assert await asyncio.wait_for(waiting, timeout=5) is True
        assert time.monotonic() - delivered_at < 5
        new = await mailbox.fetch_since(1, limit=10)
        assert [m.raw for m in new] == [message("bounce")]
    finally:
        await mailbox.close()


async def test_wait_for_change_returns_false_at_its_timeout(imap_sandbox: ImapSandbox) -> None:
    address, token, maildir = imap_sandbox.new_user()
    deliver(maildir, message("old"))
    mailbox = await imap_sandbox.open(address, token)
    try:
        started = time.monotonic()
        assert await mailbox.wait_for_change(timeout_s=0.3) is False
        assert 0.3 <= time.monotonic() - started < 3
        # IDLE was ended cleanly: the session still answers.
        assert [m.uid for m in await mailbox.fetch_since(0, limit=10)] == [1]
    finally:
        await mailbox.close()


async def test_without_idle_a_noop_poll_reports_new_mail(imap_sandbox: ImapSandbox) -> None:
    address, token, maildir = imap_sandbox.new_user()
    mailbox = await imap_sandbox.open(address, token)
    try:
        mailbox.supports_idle = False
        assert await mailbox.wait_for_change(timeout_s=0.1) is False
        deliver(maildir, message("bounce"))
        assert await mailbox.wait_for_change(timeout_s=0.1) is True
    finally:
        await mailbox.close()


@pytest.mark.parametrize("whose_token", ["unknown", "another user's"])
async def test_a_rejected_token_fails_fast(imap_sandbox: ImapSandbox, whose_token: str) -> None:
    address, _, _ = imap_sandbox.new_user()
    _, other_token, _ = imap_sandbox.new_user()
    token = other_token if whose_token == "another user's" else "at-revoked"

    started = time.monotonic()
    with pytest.raises(ImapAuthFailed) as failure:
        await imap_sandbox.open(address, token)

    # aioimaplib alone would wait out the whole timeout on the error challenge.
    assert time.monotonic() - started < OPEN_TIMEOUT_S / 4
    assert '"status":"401"' in str(failure.value)  # the challenge's JSON, answered
    assert token not in str(failure.value)


async def test_a_token_the_server_cannot_check_now_is_transient(
    imap_sandbox: ImapSandbox,
) -> None:
    address, _, _ = imap_sandbox.new_user()

    with pytest.raises(ImapConnectionLost, match="UNAVAILABLE"):
        await imap_sandbox.open(address, AUTHORITY_DOWN_TOKEN)


async def test_a_server_that_never_answers_is_a_lost_connection(
    imap_sandbox: ImapSandbox,
) -> None:
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        started = time.monotonic()
        with pytest.raises(ImapConnectionLost):
            await ImapMailbox.open(
                host="127.0.0.1",
                port=int(mute.getsockname()[1]),
                ssl_context=imap_sandbox.ssl_context,
                user="nobody@example.com",
                access_token="at-unused",
                timeout_s=0.3,
            )
        assert time.monotonic() - started < 3


async def test_stopping_the_server_while_idling_is_a_lost_connection(
    imap_sandbox: ImapSandbox,
) -> None:
    # A second instance beside the module's, which goes on serving the other tests.
    port = _free_port()
    dovecot = Dovecot(
        root_dir=imap_sandbox.base_dir / f"dovecot-{port}",
        port=port,
        maildir_root=imap_sandbox.maildir_root,
        certificates=imap_sandbox.certificates,
        introspection_url=imap_sandbox.introspection_url,
    )
    await dovecot.start()
    try:
        address, token, maildir = imap_sandbox.new_user()
        deliver(maildir, message("old"))
        mailbox = await imap_sandbox.open(address, token, port=port)
        waiting = asyncio.ensure_future(mailbox.wait_for_change(timeout_s=30))
        await _until_idling(address)

        await dovecot.stop()

        with pytest.raises(ImapConnectionLost):
            await asyncio.wait_for(waiting, timeout=5)
        with pytest.raises(ImapConnectionLost):
            await mailbox.fetch_since(0, limit=10)
        await mailbox.close()
    finally:
        await dovecot.stop()
    # The module's instance was not disturbed.
    other_address, other_token, _ = imap_sandbox.new_user()
    survivor = await imap_sandbox.open(other_address, other_token)
    await survivor.close()


async def test_a_dovecot_that_cannot_start_says_why(imap_sandbox: ImapSandbox) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = int(squatter.getsockname()[1])
        dovecot = Dovecot(
            root_dir=imap_sandbox.base_dir / f"dovecot-{port}",
            port=port,
            maildir_root=imap_sandbox.maildir_root,
            certificates=imap_sandbox.certificates,
            introspection_url=imap_sandbox.introspection_url,
        )
        with pytest.raises(DovecotFailed, match="Address already in use"):
            await dovecot.start()
