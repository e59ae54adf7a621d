"""A fast receiving SMTP server for `sendrail bench smtp`: a private Exim that accepts and discards.

Exim 4 (Debian's exim4-daemon-light) with a configuration of its own, on 127.0.0.1 only:
STARTTLS on a certificate of its own throwaway CA (clients verify it), AUTH PLAIN offered
only after STARTTLS and checked against its own password file, mail from anyone else
refused, and every recipient of an authenticated client accepted and discarded by the
RCPT ACL: each message is received, spooled and dropped, never delivered. It keeps its
configuration, spool and logs under its own `root_dir` and never reads /etc/exim4, so it
does not touch the system's Exim.

Why Exim: measured on this 2-core machine with 16 sessions of STARTTLS + AUTH PLAIN and
1.5 KB messages, its process tree spends about 0.2 ms of CPU per message; Postfix's smtpd
spent 0.7 ms in front of smtp-sink (a before-queue proxy) and 1.3 ms with its queue and the
discard transport, and Haraka 1.1 ms. Postfix's smtp-sink alone has no STARTTLS and answers
AUTH with 250, which clients take as a failed login.

Each accepted message is a `<=` line of its main log, stamped to the millisecond: that is
how the bench counts and times what the server accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import pwd
import re
import secrets
import shutil
import signal
from pathlib import Path
from types import TracebackType

import structlog

from sendrail.sandbox.ports import free_port
from sendrail.sandbox.tls import SandboxCertificates, create_certificates

log = structlog.get_logger(__name__)

EXIM_USER = "Debian-exim"
"""Debian's Exim drops to this user for each SMTP session; its spool and logs are its own."""

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
_PROBE_INTERVAL_S = 0.1
_PROBE_TIMEOUT_S = 1.0
_LOG_TAIL_CHARS = 4000
_MAX_SESSIONS = 1000
"""Concurrent SMTP sessions it accepts (Exim's own default is 20)."""

# A password file line is `"address": password` (Exim's lsearch); neither part may hold
# what would end or quote it.
_SAFE_ADDRESS = re.compile(r"^[^\s\"\\:]+$")
_SAFE_PASSWORD = re.compile(r"^[^\s\"\\]+$")


class EximFailed(Exception):
    """Exim could not be started; the message carries its own log."""


def _config_path(path: Path) -> str:
    text = str(path)
    # Exim expands its option values: `$` and `\` would start an expansion or an escape,
    # and whitespace or `:` would split the paths that lists take.
    if any(c.isspace() or c in "$\\:\"'" for c in text):
        raise ValueError(f"Exim cannot use a path containing whitespace, quotes, '$', '\\' or ':': {text}")
    return text


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
    except FileNotFoundError:
        return "(none)"


def process_tree_cpu_s(pid: int) -> float | None:
    """User plus system CPU seconds of `pid` and every descendant, living or reaped (the
    children a process has waited for count in its own cutime/cstime; proc(5)); None if
    `pid` is gone."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended while /proc was read
        process = int(stat_file.parent.name)
        # After the command name: state, ppid, ... utime (12th), stime, cutime, cstime.
        parents[process] = int(fields[1])
        times[process] = sum(int(f) for f in fields[11:15])
    if pid not in times:
        return None
    children: dict[int, list[int]] = {}
    for process, parent in parents.items():
        children.setdefault(parent, []).append(process)
    total, pending = 0, [pid]
    while pending:
        process = pending.pop()
        total += times[process]
        pending.extend(children.get(process, ()))
    return total / os.sysconf("SC_CLK_TCK")


async def _group_gone(group_id: int, timeout_s: float) -> None:
    """Until no process of the group is left: a killed process lingers until it is reaped."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                os.killpg(group_id, 0)
            except ProcessLookupError:
                return
            await asyncio.sleep(0.05)


class EximSink:
    """One Exim daemon in the foreground, owned by the caller; `async with` starts and stops it."""

    host = "127.0.0.1"

    def __init__(self, root_dir: Path, *, port: int | None = None) -> None:
        self._root_dir = root_dir.resolve()
        self.port = port if port is not None else free_port()
        self._process: asyncio.subprocess.Process | None = None
        self._certificates: SandboxCertificates | None = None
        self._users: dict[str, str] = {}
        self._log_offset = 0
        self._accepted_ms: list[int] = []
        self.version = ""

    @property
    def certificates(self) -> SandboxCertificates:
        """Its CA (what clients trust) and its certificate, for localhost and 127.0.0.1."""
        if self._certificates is None:
            raise RuntimeError("this Exim is not started")
        return self._certificates

    @property
    def pid(self) -> int | None:
        """The daemon's process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def _config_file(self) -> Path:
        return self._root_dir / "exim.conf"

    @property
    def _users_file(self) -> Path:
        return self._root_dir / "passwd"

    @property
    def _main_log(self) -> Path:
        return self._root_dir / "log" / "mainlog"

    @property
    def _console_file(self) -> Path:
        return self._root_dir / "log" / "console.log"

    async def __aenter__(self) -> EximSink:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.stop()

    def add_user(self, address: str, password: str) -> None:
        """Let `address` log in with `password` (AUTH PLAIN); at once, also while it runs."""
        if not _SAFE_ADDRESS.match(address) or not _SAFE_PASSWORD.match(password):
            raise ValueError("an Exim sink user needs an address and a password without "
                             "whitespace, quotes or backslashes (and no ':' in the address)")
        self._users[address] = password
        if self._certificates is not None:
            self._write_users()

    async def start(self) -> None:
        """Start Exim; return once it greets an SMTP client on 127.0.0.1:port."""
        if self._process is not None:
            raise RuntimeError("this Exim is already started")
        executable = shutil.which("exim4", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
        if executable is None:
            raise EximFailed("exim4 is not installed (Debian package exim4-daemon-light; "
                             "`make setup` installs it)")
        if os.geteuid() != 0:
            raise EximFailed("the bench's Exim runs as root, to listen and switch to its own user")
        self._prepare_directories()
        # A banner of this start's own tells its Exim from anything else on the port.
        banner = f"sendrail bench sink {secrets.token_hex(8)}"
        self._config_file.write_text(self._render_config(banner))
        self.version = await self._version(executable)
        with self._console_file.open("wb") as console:
            # A session of its own lets stop() reach every session process Exim forks.
            self._process = await asyncio.create_subprocess_exec(
                executable, "-C", str(self._config_file), "-bdf",
                "-oP", str(self._root_dir / "exim.pid"),
                stdin=asyncio.subprocess.DEVNULL, stdout=console, stderr=console,
                start_new_session=True)
        try:
            await asyncio.wait_for(self._until_banner(banner.encode()), START_TIMEOUT_S)
        except (TimeoutError, EximFailed) as error:
            await self.stop()
            reason = str(error) or f"no SMTP banner within {START_TIMEOUT_S:.0f} s"
            raise EximFailed(
                f"Exim on {self.host}:{self.port} did not start: {reason}\n"
                f"--- {self._console_file}\n{_tail(self._console_file)}\n"
                f"--- {self._main_log}\n{_tail(self._main_log)}\n"
                f"--- paniclog\n{_tail(self._main_log.with_name('paniclog'))}") from error
        log.info("exim_sink.started", port=self.port, root_dir=str(self._root_dir))

    async def stop(self) -> None:
        """Stop Exim and wait until none of its processes is left."""
        process, self._process = self._process, None
        if process is None:
            return
        # The whole group: sessions still open live in processes of their own.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # a session process that outlived the daemon
        await _group_gone(process.pid, STOP_TIMEOUT_S)
        log.info("exim_sink.stopped", port=self.port)

    def cpu_s(self) -> float | None:
        """CPU seconds the daemon and its session processes have used so far; None once gone."""
        return process_tree_cpu_s(self._process.pid) if self._process is not None else None

    def sessions(self) -> int:
        """SMTP sessions open now (Exim forks one process for each)."""
        if self._process is None:
            return 0
        count = 0
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat_file.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == self._process.pid and fields[0] != "Z":
                count += 1
        return count

    def accepted_ms(self) -> list[int]:
        """When each message accepted since the start was accepted (ms since the epoch, UTC),
        in log order, from the `<=` lines of its main log."""
        try:
            with self._main_log.open("rb") as main_log:
                main_log.seek(self._log_offset)
                chunk = main_log.read()
        except FileNotFoundError:
            return self._accepted_ms
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._log_offset += len(complete)
        for line in complete.splitlines():
            # `2026-12-02 07:53:28.123 1xYf9c-0005ID-39 <= sender H=...` (log_selector +millisec)
            parts = line.split(b" ", 4)
            if len(parts) == 5 and parts[3] == b"<=":
                stamp = datetime.datetime.strptime(f"{parts[0].decode()} {parts[1].decode()}",
                                                   "%Y-%m-%d %H:%M:%S.%f")
                self._accepted_ms.append(int(stamp.replace(tzinfo=datetime.UTC).timestamp() * 1000))
        return self._accepted_ms

    async def wait_accepted(self, count: int, timeout_s: float) -> None:
        """Until `count` messages in all were accepted since the start (its log is looked at
        every 0.2 s)."""
        async with asyncio.timeout(timeout_s):
            while len(self.accepted_ms()) < count:
                if self._process is None or self._process.returncode is not None:
                    raise EximFailed(f"Exim exited\n{_tail(self._main_log.with_name('paniclog'))}")
                await asyncio.sleep(0.2)

    async def wait_sessions_closed(self, timeout_s: float = 5.0) -> None:
        """Until every session process has ended and been reaped (its CPU then counts in the
        daemon's own); gives up quietly after `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self.sessions():  # noqa: ASYNC110
                    await asyncio.sleep(0.05)

    # --- setup ----------------------------------------------------------------------------

    def _prepare_directories(self) -> None:
        exim_user = pwd.getpwnam(EXIM_USER)
        self._root_dir.mkdir(parents=True, exist_ok=True)
        self._root_dir.chmod(0o755)  # its session processes must reach the spool and logs
        for name in ("spool", "log"):
            directory = self._root_dir / name
            directory.mkdir(exist_ok=True)
            os.chown(directory, exim_user.pw_uid, exim_user.pw_gid)
        self._certificates = create_certificates(self._root_dir / "tls",
                                                 now=datetime.datetime.now(datetime.UTC))
        # The session processes read the key after dropping to the Exim user.
        os.chown(self._certificates.key_file, exim_user.pw_uid, exim_user.pw_gid)
        self._certificates.key_file.chmod(0o600)
        self._write_users()

    def _write_users(self) -> None:
        exim_user = pwd.getpwnam(EXIM_USER)
        partial = self._users_file.with_suffix(".new")
        partial.write_text("".join(f'"{address}": {password}\n'
                                   for address, password in self._users.items()))
        os.chown(partial, exim_user.pw_uid, exim_user.pw_gid)
        partial.chmod(0o600)
        partial.replace(self._users_file)  # each session reads the file whole, old or new

    async def _version(self, executable: str) -> str:
        probe = await asyncio.create_subprocess_exec(
            executable, "-C", str(self._config_file), "-bV",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        output, _ = await probe.communicate()
        first = output.decode(errors="replace").splitlines()[:1]
        if probe.returncode != 0 or not first or not first[0].startswith("Exim version"):
            raise EximFailed(f"exim4 -bV refused its configuration:\n{output.decode(errors='replace')}")
        return first[0].removeprefix("Exim version ").split(" #")[0]

    async def _until_banner(self, banner: bytes) -> None:
        while self._process is not None and self._process.returncode is None:
            try:
                line = await asyncio.wait_for(self._read_banner(), _PROBE_TIMEOUT_S)
            except (OSError, TimeoutError):
                line = b""
            # RFC 5321 section 4.2: the server greets with 220.
            if line.startswith(b"220") and banner in line:
                return
            await asyncio.sleep(_PROBE_INTERVAL_S)
        raise EximFailed("the Exim daemon exited")

    async def _read_banner(self) -> bytes:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            line = await reader.readline()
            writer.write(b"QUIT\r\n")
            await writer.drain()
            return line
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _render_config(self, banner: str) -> str:
        root = _config_path(self._root_dir)
        certificates = self.certificates
        users = _config_path(self._users_file)
        return f"""\
# Written by sendrail.sandbox.exim_sink; nothing here is shared with the system's Exim.
keep_environment =
exim_user = {EXIM_USER}
exim_group = {EXIM_USER}
primary_hostname = localhost
qualify_domain = localhost
spool_directory = {root}/spool
log_file_path = {root}/log/%slog
# Millisecond timestamps in UTC: the bench times accepted messages by their `<=` lines.
log_selector = +millisec
timezone = UTC
message_logs = false
check_spool_space = 0
check_log_space = 0

daemon_smtp_ports = {self.port}
local_interfaces = {self.host}
smtp_banner = $primary_hostname ESMTP Exim $version_number {banner}
# No reverse DNS or ident lookups of the client.
host_lookup =
rfc1413_hosts =
# Sessions at once (Exim's default is 20); no limit on messages per session, and none
# of them set aside for a later queue run.
smtp_accept_max = {_MAX_SESSIONS}
smtp_accept_max_per_connection = 0
smtp_accept_queue_per_connection = 0
smtp_connect_backlog = 1024
message_size_limit = 30M

tls_advertise_hosts = *
tls_certificate = {_config_path(certificates.cert_file)}
tls_privatekey = {_config_path(certificates.key_file)}

acl_smtp_rcpt = acl_rcpt

begin acl

acl_rcpt:
  # RFC 4954 section 6: mail from a client that has not authenticated is refused.
  deny    !authenticated = *
          message = 530 5.7.0 Authentication required
  # Accepted, then dropped: received and spooled, never delivered.
  discard

begin authenticators

# RFC 4616: $auth2 is the user name, $auth3 the password; offered only under TLS.
plain:
  driver = plaintext
  public_name = PLAIN
  server_advertise_condition = ${{if def:tls_in_cipher}}
  server_prompts = :
  server_condition = ${{if and {{{{!eq{{$auth3}}{{}}}} \\
      {{eq{{$auth3}}{{${{lookup{{$auth2}}lsearch{{{users}}}{{$value}}{{}}}}}}}}}}}}
  server_set_id = $auth2
"""
