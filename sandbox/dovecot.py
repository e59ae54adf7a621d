"""The sandbox's IMAP server: a private Dovecot 2.3 that plays the providers' mailboxes.

Each instance keeps its configuration, sockets, state, logs and mail indexes under its
own `root_dir`, listens with implicit TLS (IMAPS) on 127.0.0.1 only, and never reads
/etc/dovecot or touches the system's Dovecot, so several can run at once.

Logins use SASL XOAUTH2 or OAUTHBEARER: Dovecot's `oauth2` passdb POSTs the access
token to the sandbox's introspection endpoint (RFC 7662), which answers
`{"active": true, "username": "<address>"}` or `{"active": false}`.

Maildirs: the user name is the full address and INBOX is the Maildir
`<maildir_root>/<address>`. Dovecot's mail processes run as the `mail` user, so whoever
writes mail there must leave it usable by that user:
- every directory from `/` down to `maildir_root` searchable by `mail` (mode o+x),
  which pytest's own temporary root (mode 0700) is not;
- `maildir_root` owned by `mail` (`start()` sees to it), so that Dovecot can create the
  Maildir of a user who has no mail yet;
- each Maildir complete (`new/`, `cur/`, `tmp/`: Dovecot cannot add a missing one to a
  directory it may not write) and best owned by `mail`, as `create_maildir()` makes it;
- message files readable by `mail` (0644 is enough).
Dovecot's index and control files live under `root_dir`, not in the Maildir, and a
read-only session (EXAMINE) leaves the Maildir's files and names as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import ssl
import stat
from pathlib import Path

import structlog

from sendrail.sandbox.tls import SandboxCertificates

log = structlog.get_logger(__name__)

MAIL_USER = "mail"
"""Dovecot refuses to access mail as root; its mail processes run as this user."""

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
_PROBE_INTERVAL_S = 0.1
_PROBE_TIMEOUT_S = 1.0
_LOG_TAIL_CHARS = 4000

# Dovecot's longest socket under base_dir is "token-login/imap-urlauth"; a Unix socket
# path holds at most 107 bytes on Linux (sun_path).
_MAX_BASE_DIR_CHARS = 107 - len("/token-login/imap-urlauth")


class DovecotFailed(Exception):
    """Dovecot could not be started; the message carries its own log."""


def create_maildir(maildir: Path) -> None:
    """Make `maildir` a Maildir (new/, cur/, tmp/) that Dovecot's mail processes may use."""
    mail_user = pwd.getpwnam(MAIL_USER)
    for directory in (maildir, maildir / "new", maildir / "cur", maildir / "tmp"):
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, mail_user.pw_uid, mail_user.pw_gid)


def _unsearchable_directory(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory on the way to `path` that `uid`/`gid` may not enter, if any."""
    for directory in (*reversed(path.parents), path):
        status = directory.stat()
        if status.st_uid == uid:
            search_bit = stat.S_IXUSR
        elif status.st_gid == gid:
            search_bit = stat.S_IXGRP
        else:
            search_bit = stat.S_IXOTH
        if not status.st_mode & search_bit:
            return directory
    return None


def _group_is_running(group_id: int) -> bool:
    """Whether a process of the group still runs; zombies (left for init to reap) hold nothing."""
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat_file.read_text()
        except OSError:
            continue
        # proc(5): after the parenthesised command name come the state, ppid and pgrp.
        state, _ppid, pgrp = text.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == group_id and state != "Z":
            return True
    return False


def _config_path(path: Path) -> str:
    """`path` as it may appear in dovecot.conf and in `mail_location`."""
    text = str(path)
    # Whitespace and quotes break the config syntax, ':' separates mail_location's
    # parts and '%' starts one of Dovecot's variables.
    if any(c.isspace() or c in "\"':%" for c in text):
        raise ValueError(
            f"Dovecot cannot use a path containing whitespace, quotes, ':' or '%': {text}"
        )
    return text


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
    except FileNotFoundError:
        return "(none)"


class Dovecot:
    """One Dovecot master process in the foreground, owned by the caller."""

    def __init__(
        self,
        *,
        root_dir: Path,
        port: int,
        maildir_root: Path,
        certificates: SandboxCertificates,
        introspection_url: str,
    ) -> None:
        self._root_dir = root_dir.resolve()
        self._port = port
        self._maildir_root = maildir_root.resolve()
        self._certificates = certificates
        self._introspection_url = introspection_url
        self._process: asyncio.subprocess.Process | None = None

    @property
    def _config_file(self) -> Path:
        return self._root_dir / "dovecot.conf"

    @property
    def _log_file(self) -> Path:
        return self._root_dir / "log" / "dovecot.log"

    @property
    def _console_file(self) -> Path:
        """The master's own stderr: what it says before its log process is up."""
        return self._root_dir / "log" / "console.log"

    async def start(self) -> None:
        """Start Dovecot; return once it greets an IMAPS client on 127.0.0.1:port."""
        if self._process is not None:
            raise RuntimeError("this Dovecot is already started")
        executable = shutil.which("dovecot", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
        if executable is None:
            raise DovecotFailed("dovecot is not installed (Debian package dovecot-imapd)")
        if os.geteuid() != 0:
            raise DovecotFailed("the sandbox's Dovecot runs as root, to switch to the mail user")
        self._prepare_directories()
        # A greeting of this start's own tells its Dovecot from anything else on the port.
        greeting = f"sendrail sandbox {secrets.token_hex(8)} ready."
        self._config_file.write_text(self._render_config(greeting))
        oauth2_file = self._root_dir / "oauth2.conf.ext"
        oauth2_file.write_text(self._render_oauth2_config())

        with self._console_file.open("wb") as console:
            # A session of its own lets stop() reach every process Dovecot forks.
            self._process = await asyncio.create_subprocess_exec(
                executable,
                "-F",
                "-c",
                str(self._config_file),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=console,
                stderr=console,
                start_new_session=True,
            )
        try:
            await asyncio.wait_for(self._until_greeting(greeting.encode()), START_TIMEOUT_S)
        except (TimeoutError, DovecotFailed) as error:
            await self.stop()
            reason = str(error) or f"no IMAPS greeting within {START_TIMEOUT_S:.0f} s"
            raise DovecotFailed(
                f"Dovecot on 127.0.0.1:{self._port} did not start: {reason}\n"
                f"--- {self._console_file}\n{_tail(self._console_file)}\n"
                f"--- {self._log_file}\n{_tail(self._log_file)}"
            ) from error
        log.info("dovecot.started", port=self._port, root_dir=str(self._root_dir))

    async def kick(self, user: str) -> bool:
        """Disconnect every IMAP session of `user` (the server says BYE), as a provider does
        when it restarts or recycles connections; False if `user` had none."""
        process = await asyncio.create_subprocess_exec(
            "doveadm", "-c", str(self._config_file), "kick", user,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await process.communicate()
        if process.returncode not in (0, 68):  # 68: nobody of that name was connected
            raise DovecotFailed(f"doveadm kick {user} failed: {output.decode(errors='replace')}")
        return process.returncode == 0

    async def stop(self) -> None:
        """Stop Dovecot and wait until none of its processes is left."""
        process, self._process = self._process, None
        if process is None:
            return
        # The whole group at once: after the master alone, Dovecot's mail processes keep
        # their clients connected for some ten seconds more.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self._until_gone(process), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        log.info("dovecot.stopped", port=self._port)

    async def _until_gone(self, process: asyncio.subprocess.Process) -> None:
        await process.wait()
        # The master's children may outlive it for a moment, as orphans no event reports
        # on: poll /proc.
        while True:
            if not _group_is_running(process.pid):
                return
            await asyncio.sleep(_PROBE_INTERVAL_S)

    async def _until_greeting(self, greeting: bytes) -> None:
        context = ssl.create_default_context(cafile=str(self._certificates.ca_file))
        while self._process is not None and self._process.returncode is None:
            try:
                line = await asyncio.wait_for(self._read_greeting(context), _PROBE_TIMEOUT_S)
            except (OSError, TimeoutError):
                line = b""
            # RFC 3501 section 7.1.1: the server greets with an untagged OK.
            if line.startswith(b"* OK") and greeting in line:
                return
            await asyncio.sleep(_PROBE_INTERVAL_S)
        raise DovecotFailed("the Dovecot master exited")

    async def _read_greeting(self, context: ssl.SSLContext) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self._port, ssl=context)
        try:
            return await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _prepare_directories(self) -> None:
        mail_user = pwd.getpwnam(MAIL_USER)
        run_dir = self._root_dir / "run"
        if len(str(run_dir)) > _MAX_BASE_DIR_CHARS:
            raise ValueError(
                f"root_dir is too long for Dovecot's Unix sockets (at most "
                f"{_MAX_BASE_DIR_CHARS - len('/run')} characters): {self._root_dir}"
            )
        for directory in (run_dir, self._root_dir / "state", self._root_dir / "log"):
            directory.mkdir(parents=True, exist_ok=True)
        self._root_dir.chmod(0o755)
        index_dir = self._root_dir / "mail-index"
        index_dir.mkdir(exist_ok=True)
        os.chown(index_dir, mail_user.pw_uid, mail_user.pw_gid)
        self._maildir_root.mkdir(parents=True, exist_ok=True)
        os.chown(self._maildir_root, mail_user.pw_uid, mail_user.pw_gid)
        for path in (index_dir, self._maildir_root):
            blocked = _unsearchable_directory(path, mail_user.pw_uid, mail_user.pw_gid)
            if blocked is not None:
                raise DovecotFailed(
                    f"the {MAIL_USER} user cannot enter {blocked} on the way to {path}: "
                    f"use a directory whose parents are searchable by others (o+x)"
                )

    def _render_config(self, greeting: str) -> str:
        root = _config_path(self._root_dir)
        maildir_root = _config_path(self._maildir_root)
        mail_uid = pwd.getpwnam(MAIL_USER).pw_uid
        return f"""\
# Written by sendrail.sandbox.dovecot; nothing here is shared with the system's Dovecot.
base_dir = {root}/run
state_dir = {root}/state
instance_name = sendrail-imap-{self._port}
login_greeting = {greeting}
log_path = {root}/log/dovecot.log
auth_verbose = yes
# Process titles show each session's user and command (IDLE included).
verbose_proctitle = yes
# Hundreds of watched mailboxes at once: one TLS proxy (imap-login) and one imap process
# per session.
default_process_limit = 2000
default_client_limit = 8000
# IDLE learns of new mail through inotify; where the kernel's inotify instances run out
# (128 per user by default), Dovecot checks the mailbox this often instead.
mailbox_idle_check_interval = 1 secs

protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{_config_path(self._certificates.cert_file)}
ssl_key = <{_config_path(self._certificates.key_file)}

# XOAUTH2 as Google and Microsoft offer it, OAUTHBEARER as RFC 7628 defines it.
auth_mechanisms = xoauth2 oauthbearer
# Providers answer a revoked token at once; Dovecot's brute-force delays would only make
# the sandbox slower than they are.
auth_failure_delay = 0
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {root}/oauth2.conf.ext
}}
userdb {{
  driver = static
  args = uid={MAIL_USER} gid={MAIL_USER}
}}

mail_uid = {MAIL_USER}
mail_gid = {MAIL_USER}
first_valid_uid = {mail_uid}
mail_location = maildir:{maildir_root}/%u:INDEX={root}/mail-index/%u:CONTROL={root}/mail-index/%u

service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self._port}
    ssl = yes
  }}
}}
service anvil {{
  # No authentication penalty per client IP (see auth_failure_delay above).
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""

    def _render_oauth2_config(self) -> str:
        if any(c.isspace() for c in self._introspection_url):
            raise ValueError(f"invalid introspection URL: {self._introspection_url!r}")
        # RFC 7662 section 2: the token is POSTed as `token=...`; `active` says whether it
        # is valid and `username` must equal the user of the XOAUTH2 request.
        return f"""\
introspection_mode = post
introspection_url = {self._introspection_url}
username_attribute = username
active_attribute = active
active_value = true
"""
