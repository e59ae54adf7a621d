"""A read-only IMAP view of one user's INBOX, where the bounce watcher finds bounces.

The mailbox belongs to the user: it is opened with EXAMINE (RFC 3501 section 6.3.2) and
read with BODY.PEEK[] (section 6.4.5), so no flag changes and nothing is expunged; the
adapter sends no STORE, EXPUNGE, MOVE or CLOSE.

Errors of aioimaplib, the socket and TLS are converted here into the tree below, with
the original kept as `__cause__`:

    ImapError
    ├── ImapAuthFailed       the token was rejected: the connection is broken
    ├── ImapConnectionLost   BYE, network or TLS error, timeout, server unavailable:
    │                        reconnect with backoff and resume from the last UID
    └── ImapCommandFailed    the server refused a command (NO/BAD)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final, TypeVar, cast

import aioimaplib
import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")

IDLE_RESTART_S: Final = 29 * 60.0
"""RFC 2177 section 3: a client re-issues IDLE at least every 29 minutes, before servers
drop it as inactive."""

_EXISTS = re.compile(rb"\* \d+ EXISTS\b")
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]")
_FETCH_START = re.compile(rb"\d+ FETCH \(")
_FETCH_UID = re.compile(rb"\bUID (\d+)")
_INTERNALDATE = re.compile(
    rb'\bINTERNALDATE "\s?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})"'
)
_MONTHS = {name: number for number, name in enumerate(
    (b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec"), 1)}


class ImapError(Exception):
    """Reading the mailbox failed."""


class ImapAuthFailed(ImapError):
    """The server rejected the access token: revoked, expired or not for this user."""


class ImapConnectionLost(ImapError):
    """The session ended or never came up for a transient reason; reconnecting may work."""


class ImapCommandFailed(ImapError):
    """The server answered NO or BAD to a command."""


@dataclass(frozen=True)
class MailboxState:
    """RFC 3501 section 2.3.1.1: UIDs stay valid as long as UIDVALIDITY does not change."""

    uidvalidity: int
    uidnext: int


@dataclass(frozen=True)
class FetchedMessage:
    """A message byte for byte as the mailbox holds it."""

    uid: int
    raw: bytes
    received_at: datetime | None = None
    """When the server took it in (INTERNALDATE, RFC 3501 section 2.3.3), if it said."""


def _text(lines: list[Any]) -> str:
    """The tagged response's text, for error messages."""
    last = lines[-1] if lines else b""
    return bytes(last).decode("utf-8", errors="replace")


def _decode_challenge(challenge: bytes) -> str:
    """A server's SASL challenge as text (the XOAUTH2 error is base64 JSON)."""
    try:
        return base64.b64decode(challenge, validate=True).decode("utf-8", errors="replace")
    except binascii.Error:
        return challenge.decode("ascii", errors="replace")


class _ReadOnlyProtocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]  # untyped library
    """aioimaplib's protocol plus what the watcher needs and aioimaplib 2.0.3 lacks: it
    answers the XOAUTH2 error challenge, notices EXISTS whichever command it came with, and
    tells when the connection is gone (aioimaplib leaves pending commands waiting)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.closed: asyncio.Future[Exception | None] = loop.create_future()
        self.mailbox_grew = asyncio.Event()
        self.sasl_response: str | None = None
        """Sent at the first SASL challenge when the server lacks SASL-IR (RFC 4959)."""
        self.auth_error: str | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.closed.done():
            self.closed.set_result(exc)

    def _untagged_response(self, line: bytes) -> Any:
        # RFC 3501 section 7.3.1: the server reports a new message count with any command's
        # response, not only during IDLE; aioimaplib drops those that no command expects.
        if _EXISTS.match(line):
            self.mailbox_grew.set()
        return super()._untagged_response(line)

    def _continuation(self, line: bytes) -> None:
        command = self.pending_sync_command
        if command is None or command.name != "AUTHENTICATE":
            super()._continuation(line)
        elif self.sasl_response is not None:
            self.send(self.sasl_response, scrub=self.sasl_response)
            self.sasl_response = None
        else:
            # Google's and Microsoft's XOAUTH2 documents, and Dovecot: a rejected token
            # comes back as a challenge carrying a base64 JSON error; the client answers
            # with an empty response to receive the tagged NO (RFC 3501 section 6.2.2).
            self.auth_error = _decode_challenge(line[2:])
            self.send("")


class ImapMailbox:
    """One authenticated, read-only view of one user's INBOX.

    `state` is the mailbox as EXAMINE found it. `supports_idle` says whether
    `wait_for_change()` uses IDLE (RFC 2177) or polls with NOOP; it comes from the
    server's capabilities and may be turned off. One operation at a time: IMAP commands
    on one connection are not interleaved here.
    """

    def __init__(self, protocol: _ReadOnlyProtocol, state: MailboxState, timeout_s: float) -> None:
        """Use `open()`."""
        self._protocol = protocol
        self._timeout_s = timeout_s
        self.state = state
        self.supports_idle = "IDLE" in protocol.capabilities

    @classmethod
    async def open(
        cls,
        *,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        user: str,
        access_token: str,
        timeout_s: float,
    ) -> ImapMailbox:
        """Connect with implicit TLS, AUTHENTICATE XOAUTH2 and EXAMINE INBOX.

        `timeout_s` bounds each step and each later command.
        """
        loop = asyncio.get_running_loop()
        protocol = _ReadOnlyProtocol(loop)
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: protocol, host, port, ssl=ssl_context), timeout_s
            )
        except (OSError, TimeoutError) as error:
            raise ImapConnectionLost(f"cannot connect to {host}:{port}: {error!r}") from error
        try:
            await _bounded(protocol, protocol.wait("AUTH|NONAUTH"), timeout_s, "greeting")
            await _authenticate(protocol, user, access_token, timeout_s)
            # RFC 3501 section 6.2.2: capabilities may change once authenticated.
            await _bounded(protocol, protocol.capability(), timeout_s, "CAPABILITY")
            state = await _examine_inbox(protocol, timeout_s)
        except BaseException:
            protocol.transport.abort()
            raise
        log.debug("imap.opened", host=host, port=port, uidvalidity=state.uidvalidity)
        return cls(protocol, state, timeout_s)

    async def fetch_since(self, last_uid: int, *, limit: int,
                          max_bytes: int | None = None) -> list[FetchedMessage]:
        """The oldest `limit` messages whose UID is above `last_uid`, in UID order; with
        `max_bytes`, only each message's first `max_bytes` (a partial fetch, RFC 3501 section
        6.4.5 `BODY[]<0.n>`), so a huge message costs no more memory than what is read of it.

        Fewer than `limit` means the mailbox holds no more for now.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._ensure_open()
        # RFC 3501 section 6.4.8: "N:*" always includes the highest UID, even below N,
        # hence the filter.
        search = await self._command(
            self._protocol.search("UID", f"{last_uid + 1}:*", charset=None, by_uid=True),
            "UID SEARCH",
        )
        found = sorted({int(uid) for line in search.lines[:-1] for uid in bytes(line).split()})
        uids = [uid for uid in found if uid > last_uid][:limit]
        if not uids:
            return []
        body = "BODY.PEEK[]" if max_bytes is None else f"BODY.PEEK[]<0.{max_bytes}>"
        fetch = await self._command(
            self._protocol.fetch(f"{uids[0]}:{uids[-1]}", f"(UID INTERNALDATE {body})", by_uid=True),
            "UID FETCH",
        )
        wanted = set(uids)
        return [m for m in _fetched_messages(fetch.lines[:-1]) if m.uid in wanted]

    async def wait_for_change(self, timeout_s: float) -> bool:
        """Wait until the server reports new mail or `timeout_s` passes.

        True when new mail may be there (including mail reported since the last call).
        """
        self._ensure_open()
        if not self._protocol.mailbox_grew.is_set():
            if self.supports_idle:
                await self._idle(min(timeout_s, IDLE_RESTART_S))
            else:
                await self._poll(timeout_s)
        grew = self._protocol.mailbox_grew.is_set()
        self._protocol.mailbox_grew.clear()
        return grew

    async def close(self) -> None:
        """LOGOUT (never CLOSE or EXPUNGE) and drop the connection; never raises.

        A session left in IDLE (its wait was cancelled) is simply dropped.
        """
        protocol = self._protocol
        if not protocol.closed.done() and not protocol.has_pending_idle_command():
            try:
                await self._command(protocol.logout(), "LOGOUT")
            except ImapError as error:
                log.debug("imap.logout_failed", error=repr(error))
        protocol.transport.close()

    async def _idle(self, timeout_s: float) -> None:
        """RFC 2177: IDLE until the server reports EXISTS or the time is up, then DONE."""
        protocol = self._protocol
        idle = asyncio.ensure_future(protocol.idle())
        try:
            started = asyncio.ensure_future(protocol.wait_for_idle_response())
            try:
                await _bounded(
                    protocol,
                    asyncio.wait({idle, started}, return_when=asyncio.FIRST_COMPLETED),
                    self._timeout_s,
                    "IDLE",
                )
            finally:
                started.cancel()
            if idle.done():
                await self._command(idle, "IDLE")  # raises: the server refused IDLE
                return
            grew: asyncio.Future[Any] = asyncio.ensure_future(protocol.mailbox_grew.wait())
            try:
                await asyncio.wait(
                    {grew, idle, protocol.closed},
                    timeout=timeout_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                grew.cancel()
            self._ensure_open()
            if not idle.done():  # a server may end IDLE itself; DONE would then be a command
                protocol.idle_done()
            await self._command(idle, "IDLE")
        finally:
            idle.cancel()
            # aioimaplib queues what arrived during IDLE for its own push API; not used here.
            while not protocol.idle_queue.empty():
                protocol.idle_queue.get_nowait()

    async def _poll(self, interval_s: float) -> None:
        """Without IDLE: wait, then NOOP (RFC 3501 section 6.1.2) to collect any EXISTS."""
        await asyncio.wait({self._protocol.closed}, timeout=interval_s)
        await self._command(self._protocol.simple_command("NOOP"), "NOOP")

    async def _command(self, operation: Awaitable[Any], name: str) -> Any:
        response = await _bounded(self._protocol, operation, self._timeout_s, name)
        if response.result != "OK":
            raise ImapCommandFailed(f"{name} refused: {response.result} {_text(response.lines)}")
        return response

    def _ensure_open(self) -> None:
        if self._protocol.closed.done():
            raise ImapConnectionLost(
                "the server closed the connection"
            ) from self._protocol.closed.result()


async def _bounded(
    protocol: _ReadOnlyProtocol, operation: Awaitable[T], timeout_s: float, name: str
) -> T:
    """Await an aioimaplib operation, ending early if the connection goes or time runs out.

    A session that timed out is dropped: its state on the wire is unknown.
    """
    task: asyncio.Future[T] = asyncio.ensure_future(operation)
    try:
        done, _ = await asyncio.wait(
            {cast("asyncio.Future[Any]", task), protocol.closed},
            timeout=timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if task in done:
            try:
                return task.result()
            except aioimaplib.AioImapException as error:
                raise ImapCommandFailed(f"{name}: {error}") from error
            except OSError as error:
                raise ImapConnectionLost(f"{name}: {error!r}") from error
        if protocol.closed.done():
            raise ImapConnectionLost(
                f"{name}: the server closed the connection"
            ) from protocol.closed.result()
        protocol.transport.abort()
        raise ImapConnectionLost(f"{name}: no answer within {timeout_s} s")
    finally:
        task.cancel()


async def _authenticate(
    protocol: _ReadOnlyProtocol, user: str, access_token: str, timeout_s: float
) -> None:
    """SASL XOAUTH2 (Google's and Microsoft's documents), answering the error challenge."""
    initial_response = base64.b64encode(
        f"user={user}\x01auth=Bearer {access_token}\x01\x01".encode()
    ).decode("ascii")
    # RFC 4959: with SASL-IR the initial response goes on the command line.
    inline = "SASL-IR" in protocol.capabilities
    protocol.sasl_response = None if inline else initial_response
    command = aioimaplib.Command(
        "AUTHENTICATE",
        protocol.new_tag(),
        "XOAUTH2",
        *([initial_response] if inline else []),
        loop=protocol.loop,
    )
    response = await _bounded(
        protocol, protocol.execute(command, scrub=initial_response), timeout_s, "AUTHENTICATE"
    )
    if response.result == "OK":
        protocol.state = aioimaplib.AUTH
        return
    text = _text(response.lines)
    detail = f"{response.result} {text}" + (
        f" {protocol.auth_error}" if protocol.auth_error else ""
    )
    if text.startswith("[UNAVAILABLE]"):
        # RFC 5530 section 3: the server could not check the token just now.
        raise ImapConnectionLost(f"AUTHENTICATE: {detail}")
    raise ImapAuthFailed(f"AUTHENTICATE XOAUTH2 for {user}: {detail}")


async def _examine_inbox(protocol: _ReadOnlyProtocol, timeout_s: float) -> MailboxState:
    response = await _bounded(
        protocol, protocol.simple_command("EXAMINE", "INBOX"), timeout_s, "EXAMINE"
    )
    if response.result != "OK":
        raise ImapCommandFailed(f"EXAMINE INBOX refused: {response.result} {_text(response.lines)}")
    # aioimaplib only records the selected state after SELECT; EXAMINE selects too.
    protocol.state = aioimaplib.SELECTED
    protocol.mailbox_grew.clear()
    text = b"\n".join(bytes(line) for line in response.lines)
    # RFC 3501 section 6.3.1: UIDVALIDITY and UIDNEXT are required in the response.
    uidvalidity, uidnext = _UIDVALIDITY.search(text), _UIDNEXT.search(text)
    if uidvalidity is None or uidnext is None:
        raise ImapCommandFailed("EXAMINE INBOX: no UIDVALIDITY or UIDNEXT in the response")
    return MailboxState(uidvalidity=int(uidvalidity.group(1)), uidnext=int(uidnext.group(1)))


def _fetched_messages(lines: list[Any]) -> list[FetchedMessage]:
    """Messages of a `UID FETCH (UID INTERNALDATE BODY.PEEK[])` response, in UID order.

    aioimaplib gives each `n FETCH (` line as bytes, the literal as a bytearray, then the
    rest of the item. Items without a body are flag updates the server may add
    (RFC 3501 section 7.4.2) and are skipped.
    """
    by_uid: dict[int, tuple[bytes, datetime | None]] = {}
    items: list[tuple[list[bytes], bytes | None]] = []
    for line in lines:
        if isinstance(line, bytearray):
            if items:
                items[-1] = (items[-1][0], bytes(line))
        elif _FETCH_START.match(line):
            items.append(([line], None))
        elif items:
            items[-1][0].append(line)
    for text_parts, body in items:
        text = b" ".join(text_parts)
        uid = _FETCH_UID.search(text)
        if uid is not None and body is not None:
            by_uid[int(uid.group(1))] = (body, _internal_date(text))
    return [FetchedMessage(uid=uid, raw=raw, received_at=received_at)
            for uid, (raw, received_at) in sorted(by_uid.items())]


def _internal_date(text: bytes) -> datetime | None:
    """RFC 3501 section 9 date-time: `"17-Jul-1996 02:44:25 -0700"` (day may be space-padded)."""
    found = _INTERNALDATE.search(text)
    if found is None:
        return None
    day, month, year, hour, minute, second, sign, zone_h, zone_m = found.groups()
    offset = timedelta(hours=int(zone_h), minutes=int(zone_m)) * (-1 if sign == b"-" else 1)
    try:
        return datetime(int(year), _MONTHS[month.lower()], int(day), int(hour), int(minute),
                        int(second), tzinfo=timezone(offset))
    except (KeyError, ValueError):  # a month or day that does not exist
        return None
