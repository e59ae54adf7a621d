"""The local mail sandbox: token endpoint, the six providers' SMTP servers and Dovecot, on loopback.

sendrail cannot reach Gmail, Microsoft or SendGrid from a developer machine or CI,
so `make run`, `make demo` and the tests send through real servers that play
them. Everything lives under one root directory and listens on free ports of
127.0.0.1; `sandbox.json` in that directory tells other processes where.
"""

from __future__ import annotations

import datetime
import email.message
import json
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from sendrail.sandbox.dovecot import Dovecot
from sendrail.sandbox.maildir import MaildirStore, mail_user_owner
from sendrail.sandbox.oauth_authority import OAuthAuthority
from sendrail.sandbox.ports import free_port
from sendrail.sandbox.smtp_servers import (
    PROFILES,
    SERVER_KINDS,
    ReceivedEnvelope,
    SandboxSmtpServer,
)
from sendrail.sandbox.tls import create_certificates
from sendrail.sandbox.token_endpoint import TokenEndpoint

log = structlog.get_logger(__name__)

INFO_FILE_NAME = "sandbox.json"


@dataclass(frozen=True)
class SmtpEndpoint:
    """One provider's submission server: STARTTLS on this port, then XOAUTH2 or a password."""

    host: str
    port: int
    auth: Literal["xoauth2", "password"]


@dataclass(frozen=True)
class SandboxInfo:
    """Where a running sandbox listens: what a process needs to use one another process started."""

    root_dir: Path
    ca_file: Path
    token_url_google: str
    token_url_microsoft: str
    """Keeps the literal `{tenant}` placeholder, like the real endpoint's template."""
    admin_url: str
    smtp: dict[str, SmtpEndpoint]
    """By server kind: gmail, exchange_online, exchange_onprem, custom_smtp, team_smtp, legacy."""
    imap_host: str
    imap_port: int
    """Dovecot, implicit TLS."""
    maildir_root: Path
    bounce_domain: str

    def save(self, path: Path) -> None:
        document = asdict(self)
        for name in ("root_dir", "ca_file", "maildir_root"):
            document[name] = str(document[name])
        staged = path.with_name(path.name + ".tmp")
        staged.write_text(json.dumps(document, indent=2) + "\n")
        staged.replace(path)

    @classmethod
    def load(cls, path: Path) -> SandboxInfo:
        document: dict[str, Any] = json.loads(path.read_text())
        return cls(
            root_dir=Path(document["root_dir"]),
            ca_file=Path(document["ca_file"]),
            token_url_google=document["token_url_google"],
            token_url_microsoft=document["token_url_microsoft"],
            admin_url=document["admin_url"],
            smtp={kind: SmtpEndpoint(**endpoint) for kind, endpoint in document["smtp"].items()},
            imap_host=document["imap_host"],
            imap_port=document["imap_port"],
            maildir_root=Path(document["maildir_root"]),
            bounce_domain=document["bounce_domain"],
        )


class MailSandbox:
    """Starts and stops the whole mail side of the sandbox; an async context manager."""

    def __init__(self, root_dir: Path, *, bounce_domain: str = "nowhere.example.net") -> None:
        self.root_dir = root_dir
        self.bounce_domain = bounce_domain
        self.authority = OAuthAuthority()
        self._servers: dict[str, SandboxSmtpServer] = {}
        self._maildirs: MaildirStore | None = None
        self._info: SandboxInfo | None = None
        self._stack = AsyncExitStack()

        self._dovecot: Dovecot | None = None
    @property
    def info(self) -> SandboxInfo:
        if self._info is None:
            raise RuntimeError("the mail sandbox is not running")
        return self._info

    async def __aenter__(self) -> MailSandbox:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._info = None
        await self._stack.aclose()
        log.info("mail_sandbox.stopped", root_dir=str(self.root_dir))

    async def _start(self) -> None:
        self.root_dir.mkdir(parents=True, exist_ok=True)
        certificates = create_certificates(
            self.root_dir / "tls", now=datetime.datetime.now(datetime.UTC)
        )
        # Dovecot's mail processes run as the `mail` user: when running as root the
        # Maildirs belong to that user (as a mail server's virtual mail uid owns its
        # mail store), and the sandbox root only needs to let it pass through.
        owner = mail_user_owner()
        if owner is not None:
            self.root_dir.chmod(0o711)
        maildirs = MaildirStore(self.root_dir / "maildirs", owner=owner)
        self._maildirs = maildirs

        for kind in SERVER_KINDS:
            server = SandboxSmtpServer(
                PROFILES[kind],
                certificates=certificates,
                authority=self.authority,
                maildirs=maildirs,
                bounce_domain=self.bounce_domain,
            )
            await server.start()
            self._stack.push_async_callback(server.stop)
            self._servers[kind] = server

        token_endpoint = TokenEndpoint(
            self.authority, register_password_user=self.add_password_user
        )
        await token_endpoint.start()
        self._stack.push_async_callback(token_endpoint.stop)

        imap_port = free_port()
        dovecot = Dovecot(
            root_dir=self.root_dir / "dovecot",
            port=imap_port,
            maildir_root=maildirs.root,
            certificates=certificates,
            introspection_url=f"{token_endpoint.base_url}/introspect",
        )
        await dovecot.start()
        self._stack.push_async_callback(dovecot.stop)
        self._dovecot = dovecot

        self._info = SandboxInfo(
            root_dir=self.root_dir,
            ca_file=certificates.ca_file,
            token_url_google=f"{token_endpoint.base_url}/google/token",
            token_url_microsoft=f"{token_endpoint.base_url}/microsoft/{{tenant}}/oauth2/v2.0/token",
            admin_url=f"{token_endpoint.base_url}/admin",
            smtp={
                kind: SmtpEndpoint(server.host, server.port, server.profile.auth)
                for kind, server in self._servers.items()
            },
            imap_host="127.0.0.1",
            imap_port=imap_port,
            maildir_root=maildirs.root,
            bounce_domain=self.bounce_domain,
        )
        self._info.save(self.root_dir / INFO_FILE_NAME)
        log.info("mail_sandbox.started", root_dir=str(self.root_dir))

    def add_oauth_user(self, provider: Literal["google", "microsoft"], address: str) -> str:
        """Consent for `address` at `provider`; returns the refresh token a connection uses."""
        return self.authority.add_user(provider, address)

    def add_password_user(self, server: str, username: str, password: str) -> None:
        """Register a user on a password server: exchange_onprem, custom_smtp, team_smtp, legacy."""
        self._servers[server].add_password_user(username, password)

    def script_mail_replies(self, server: str, mail_from: str, replies: list[str]) -> None:
        """The next MAIL FROMs of `mail_from` on `server` get these replies, in order
        (e.g. Gmail's quota reply), instead of being accepted."""
        self._servers[server].script_mail_replies(mail_from, replies)

    def refuse_recipient(self, server: str, address: str, reply: str) -> None:
        """Every RCPT TO of `address` on `server` gets `reply` (e.g. 550 5.1.1)."""
        self._servers[server].refuse_recipient(address, reply)

    def received(self, server: str) -> list[ReceivedEnvelope]:
        """What that server accepted so far, oldest first."""
        return self._servers[server].received

    async def kick_imap(self, address: str) -> bool:
        """Close every IMAP session of `address` from the server's side (BYE); False if
        it had none."""
        if self._dovecot is None:
            raise RuntimeError("the mail sandbox is not running")
        return await self._dovecot.kick(address)

    def deliver(self, address: str, message: bytes, *, return_path: str = "") -> None:
        """Put `message` in the Maildir of `address`, as mail arriving from elsewhere would
        (an auto-reply, a complaint, another system's bounce)."""
        if self._maildirs is None:
            raise RuntimeError("the mail sandbox is not running")
        self._maildirs.deliver(address, message, return_path=return_path, now_s=time.time())

    def mailbox(self, address: str) -> list[email.message.EmailMessage]:
        """The messages in the Maildir of `address`, oldest first (empty if it has none)."""
        if self._maildirs is None:
            raise RuntimeError("the mail sandbox is not running")
        return self._maildirs.messages(address)
