"""Maildir mailboxes: the sandbox's final delivery, and reading a mailbox back.

Layout and delivery follow the Maildir convention (https://cr.yp.to/proto/maildir.html):
one directory per address with `tmp/`, `new/` and `cur/`; a message is written
under a unique name in `tmp/` and renamed into `new/`, so a reader (Dovecot) never
sees half a message. Files hold Unix line endings, as local mail stores do.
"""

from __future__ import annotations

import email.message
import email.policy
import itertools
import os
import pwd
import socket
from dataclasses import dataclass
from email.parser import BytesParser
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

_SUBDIRS = ("tmp", "new", "cur")
_delivery_counter = itertools.count(1)


@dataclass(frozen=True)
class MaildirOwner:
    """Who owns the mailboxes, so that the IMAP server's mail processes can use them."""

    uid: int
    gid: int


def mail_user_owner() -> MaildirOwner | None:
    """The system `mail` user when running as root (Dovecot's mail processes run as it), else None.

    Without root the IMAP server cannot switch users either, so files stay with
    the current user.
    """
    if os.geteuid() != 0:
        return None
    mail_user = pwd.getpwnam("mail")
    return MaildirOwner(mail_user.pw_uid, mail_user.pw_gid)


def _host_part() -> str:
    # Maildir: "/" and ":" in the host name are written as \057 and \072.
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072")


def _delivery_order(path: Path) -> tuple[int, str]:
    seconds, _, rest = path.name.partition(".")
    return (int(seconds) if seconds.isdigit() else 0, rest)


class MaildirStore:
    """The mailboxes under one root: `<root>/<lowercased address>/{tmp,new,cur}`."""

    def __init__(self, root: Path, *, owner: MaildirOwner | None) -> None:
        self.root = root
        self._owner = owner
        self._make_dir(root)

    def _make_dir(self, path: Path) -> None:
        path.mkdir(mode=0o700, exist_ok=True)
        if self._owner is not None:
            os.chown(path, self._owner.uid, self._owner.gid)

    def path(self, address: str) -> Path:
        """The Maildir of `address` (not necessarily created yet)."""
        name = address.strip().lower()
        if "@" not in name or "/" in name or name.startswith("."):
            raise ValueError(f"not a mailbox address: {address!r}")
        return self.root / name

    def ensure(self, address: str) -> Path:
        """Create the Maildir of `address` if it does not exist yet."""
        maildir = self.path(address)
        self._make_dir(maildir)
        for subdir in _SUBDIRS:
            self._make_dir(maildir / subdir)
        return maildir

    def deliver(self, address: str, message: bytes, *, return_path: str, now_s: float) -> Path:
        """Deliver `message` into the Maildir of `address`; returns the file in `new/`.

        RFC 5321 section 4.4: the delivering server adds `Return-Path` with the
        envelope sender (empty for a bounce); `Delivered-To` names the mailbox.
        """
        maildir = self.ensure(address)
        trace = f"Return-Path: <{return_path}>\nDelivered-To: {address.lower()}\n".encode()
        content = trace + message.replace(b"\r\n", b"\n")
        seconds, fraction = divmod(now_s, 1)
        unique = (
            f"{int(seconds)}.M{int(fraction * 1_000_000):06d}P{os.getpid()}"
            f"Q{next(_delivery_counter)}.{_host_part()},S={len(content)}"
        )
        staged = maildir / "tmp" / unique
        # No fsync before the rename, unlike a production MTA: the sandbox needs no crash safety.
        with open(staged, "xb") as file:
            file.write(content)
        staged.chmod(0o600)
        if self._owner is not None:
            os.chown(staged, self._owner.uid, self._owner.gid)
        delivered = maildir / "new" / unique
        staged.rename(delivered)
        log.info("maildir.delivered", mailbox=address.lower(), file=unique)
        return delivered

    def messages(self, address: str) -> list[email.message.EmailMessage]:
        """Every message in the Maildir of `address`, oldest first, parsed.

        Reads `new/` and `cur/`: an IMAP server moves messages from one to the
        other (renaming them with flags) once a client has seen them.
        """
        maildir = self.path(address)
        while True:
            files = [
                path
                for subdir in ("new", "cur")
                if (maildir / subdir).is_dir()
                for path in (maildir / subdir).iterdir()
            ]
            # Unique names start with the delivery time: seconds, then zero-padded microseconds.
            files.sort(key=_delivery_order)
            try:
                contents = [path.read_bytes() for path in files]
            except FileNotFoundError:
                # Moved from new/ to cur/ by the IMAP server while being read: list again.
                continue
            parser = BytesParser(policy=email.policy.default)
            return [parser.parsebytes(content) for content in contents]
