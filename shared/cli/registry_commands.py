"""`sendrail connect`, `assign`, `identities`, `tenant`: the channel registry, managed by people.

Secrets are read from standard input or SENDRAIL_CONNECT_SECRET (never from the command
line, where other users and the shell history would see them), sealed with the
deployment's key, and never printed.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sendrail.cli.common import ADDRESS, ID, Subcommands, checked_by_model, field_of, producer_for
from sendrail.clock import system_clock
from sendrail.errors import ConfigurationError
from sendrail.events import (
    TEAM_WIDE,
    ChannelAssigned,
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    IdentityRegistered,
    ImapServer,
    OAuthGrant,
    RegistryRecord,
    SmtpServer,
    TenantConfigured,
    ThrottleConfigured,
)
from sendrail.registry.store import RegistryStore, publish_record
from sendrail.secrets import SecretBox
from sendrail.settings import Settings
from sendrail.throttle.policy import (
    MAX_BATCH_SIZE,
    MAX_BATCH_WAIT_S,
    MAX_RECIPIENTS_PER_MESSAGE,
    MAX_WINDOW_LIMIT,
    MIN_BATCH_WAIT_S,
)

PROVIDER_SMTP = {
    ChannelKind.GMAIL: SmtpServer(host="smtp.gmail.com", port=587),
    ChannelKind.EXCHANGE_ONLINE: SmtpServer(host="smtp.office365.com", port=587),
}
KIND_NAMES = {kind.value.replace("_", "-"): kind for kind in ChannelKind}

MAX_SECRET_CHARS = 16 * 1024
"""Refresh tokens and SMTP passwords are far shorter; the bound keeps a wrong file piped to
--secret-stdin from being read whole and sealed."""
HOST = "a host name or an IP address: at most 253 letters, digits, '.', '-', ':', '[' and ']'"
SEALED_STAND_IN = "sealed"
"""In place of a secret while a connection is checked, before the secret is asked for."""


def read_secret(args: argparse.Namespace, what: str) -> str:
    if args.secret_stdin:
        secret = sys.stdin.readline(MAX_SECRET_CHARS + 1).strip()
    elif os.environ.get("SENDRAIL_CONNECT_SECRET"):
        secret = os.environ["SENDRAIL_CONNECT_SECRET"]
    elif sys.stdin.isatty():
        secret = getpass.getpass(f"{what}: ")
    else:
        raise ConfigurationError(f"no {what}: pass --secret-stdin or set SENDRAIL_CONNECT_SECRET")
    if not secret:
        raise ConfigurationError(f"the {what} is empty")
    if len(secret) > MAX_SECRET_CHARS:
        raise ConfigurationError(f"the {what} is longer than {MAX_SECRET_CHARS:,} characters")
    return secret


def smtp_username(text: str) -> str:
    """RFC 4616 §2: the authentication identity is 1 to 255 octets of UTF-8 without NUL; a
    control character in it is a typing or pasting mistake."""
    if not text or len(text.encode("utf-8", "surrogatepass")) > 255:
        raise argparse.ArgumentTypeError("expected 1 to 255 bytes of UTF-8 (RFC 4616)")
    if not text.isprintable():
        raise argparse.ArgumentTypeError(f"expected printable characters, got {text!r}")
    return text


def team_connection(text: str) -> str:
    """A connection id, or '' to remove the team's connection."""
    result: str = text if text == "" else ID(text)
    return result


async def publish(settings: Settings, *records: RegistryRecord) -> None:
    async with producer_for(settings) as producer:
        for record in records:
            await publish_record(producer, record)


async def connect(args: argparse.Namespace) -> int:
    kind: ChannelKind = KIND_NAMES[args.kind]
    now = system_clock()
    default_smtp = PROVIDER_SMTP.get(kind)
    if args.host is None and default_smtp is None:
        raise ConfigurationError(f"a {args.kind} connection needs --host")
    smtp = SmtpServer(host=args.host or default_smtp.host,  # type: ignore[union-attr]
                      port=args.port or (default_smtp.port if default_smtp else 587), tls=args.tls)
    fields: dict[str, object] = {
        "tenant_id": args.tenant, "connection_id": args.connection, "kind": kind,
        "owner_user_id": args.user, "address": args.address, "smtp": smtp,
        "max_message_bytes": args.max_message_bytes, "connected_at": now, "updated_at": now,
    }
    secret_field, secret_name = ("oauth", "refresh token") if kind in PROVIDER_SMTP else (
        "password", "SMTP password")
    if kind in PROVIDER_SMTP:
        fields["oauth"] = OAuthGrant(refresh_token=SEALED_STAND_IN, microsoft_tenant=args.microsoft_tenant)
        if args.imap_host:
            fields["imap"] = ImapServer(host=args.imap_host, port=args.imap_port)
    else:
        fields["username"] = args.username or args.address
        if fields["username"] is None:
            raise ConfigurationError(f"a {args.kind} connection needs --username")
        fields["password"] = SEALED_STAND_IN
    ConnectionConfigured.model_validate(fields)  # the whole record is refused before the secret is asked
    settings = Settings.load()
    box = SecretBox.from_settings(settings.secrets)
    sealed = box.seal(read_secret(args, secret_name))
    fields[secret_field] = (OAuthGrant(refresh_token=sealed, microsoft_tenant=args.microsoft_tenant)
                            if secret_field == "oauth" else sealed)
    connection = ConnectionConfigured.model_validate(fields)
    health = ConnectionHealthChanged(tenant_id=args.tenant, connection_id=args.connection,
                                     healthy=True, reason="connected", changed_at=now)
    await publish(settings, connection, health)
    print(f"connected {args.kind} {args.connection} for tenant {args.tenant}"
          + (f", user {args.user}" if args.user else ""))
    return 0


async def assign(args: argparse.Namespace) -> int:
    record = ChannelAssigned(tenant_id=args.tenant, user_id=args.user, identity=args.identity,
                             connection_id=args.connection, updated_at=system_clock())
    await publish(Settings.load(), record)
    print(f"{record.identity} now sends through {args.connection}")
    return 0


async def identities(args: argparse.Namespace) -> int:
    settings = Settings.load()
    store = RegistryStore(settings.kafka, client_id="sendrail-cli")
    await store.start()
    try:
        view = store.view
        if args.action == "list":
            rows = [i for (t, _), i in sorted(view.identities.items()) if t == args.tenant
                    and (args.user is None or i.user_id == args.user)]
            for identity in rows:
                assigned = view.assignment(args.tenant, identity.address)
                print(f"{identity.user_id:<16} {identity.address:<36} "
                      f"{'verified' if identity.verified else 'UNVERIFIED':<10} "
                      f"{'default' if identity.is_default else '':<7} "
                      f"{assigned.connection_id if assigned else '-'}")
            if not rows:
                print(f"no identities for tenant {args.tenant}")
            return 0
        existing = view.identity(args.tenant, args.address)
        if args.action == "add":
            if existing is not None and existing.user_id != args.user:
                raise ConfigurationError(f"{args.address} already belongs to user {existing.user_id}")
            record = IdentityRegistered(tenant_id=args.tenant, user_id=args.user,
                                        address=args.address, verified=args.verified,
                                        is_default=args.default, updated_at=system_clock())
        else:
            if existing is None:
                raise ConfigurationError(f"{args.address} is not an identity of tenant {args.tenant}")
            record = existing.model_copy(update={"verified": True, "updated_at": system_clock()})
    finally:
        await store.stop()
    await publish(settings, record)
    print(f"{record.address}: {'verified' if record.verified else 'added, not verified yet'}")
    return 0


async def tenant(args: argparse.Namespace) -> int:
    """Changes only what the flags name; the rest of the tenant's settings stay."""
    settings = Settings.load()
    store = RegistryStore(settings.kafka, client_id="sendrail-cli")
    await store.start()
    try:
        current = store.view.tenant(args.tenant) or TenantConfigured(
            tenant_id=args.tenant, updated_at=system_clock())
    finally:
        await store.stop()
    changes: dict[str, object] = {"updated_at": system_clock()}
    if args.legacy is not None:
        changes["legacy"] = args.legacy
    if args.team_connection is not None:
        changes["team_connection_id"] = args.team_connection or None
    record = TenantConfigured.model_validate({**current.model_dump(), **changes})
    await publish(settings, record)
    print(f"tenant {args.tenant}: legacy={record.legacy} team SMTP={record.team_connection_id}")
    return 0


THROTTLE_FIELDS = ("enabled", "batch_size", "batch_wait_s", "daily_messages", "daily_recipients",
                   "per_minute_messages", "max_recipients_per_message", "gmail_plan")


def throttle_value(name: str) -> Callable[[str], Any]:
    """A `throttle set` flag checked by ThrottleConfigured itself, the rule every sender
    applies; a batch's other half is a valid stand-in, so only this flag is judged."""
    context: dict[str, object] = {"tenant_id": "stand-in", "updated_at": datetime.now(UTC)}
    if name == "batch_size":
        context["batch_wait_s"] = MIN_BATCH_WAIT_S
    elif name == "batch_wait_s":
        context["batch_size"] = 1
    return checked_by_model(ThrottleConfigured, name, context)


async def throttle(args: argparse.Namespace) -> int:
    """`set` changes only the settings it names; running senders apply it at their next turn."""
    if args.action == "set" and all(getattr(args, name) is None for name in THROTTLE_FIELDS):
        raise ConfigurationError("throttle set needs a setting to change (see --help)")
    settings = Settings.load()
    store = RegistryStore(settings.kafka, client_id="sendrail-cli")
    await store.start()
    try:
        view = store.view
        if args.action == "show":
            for (tenant_id, scope), record in sorted(view.throttles.items()):
                if tenant_id != args.tenant:
                    continue
                values = {f: getattr(record, f) for f in THROTTLE_FIELDS if getattr(record, f) is not None}
                label = "team" if scope == TEAM_WIDE else f"connection {scope}"
                print(f"{label:<28} " + " ".join(f"{k}={v}" for k, v in values.items()))
            if not any(t == args.tenant for t, _ in view.throttles):
                print(f"tenant {args.tenant} has no throttle settings: Gmail and Exchange "
                      "connections use the provider's limits and the default batch")
            return 0
        scope = args.connection or TEAM_WIDE
        current = view.throttles.get((args.tenant, scope))
        fields = current.model_dump() if current else {"tenant_id": args.tenant,
                                                       "connection_id": args.connection}
    finally:
        await store.stop()
    for name in THROTTLE_FIELDS:
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    fields["updated_at"] = system_clock()
    record = ThrottleConfigured.model_validate(fields)
    await publish(settings, record)
    print(f"throttle for {'the team' if scope == TEAM_WIDE else scope} of {args.tenant} set")
    return 0


def register(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "connect", help="connect a mailbox or SMTP server (a delivery channel)",
        description="Gmail and Exchange Online connect by OAuth2 (the refresh token of the "
                    "user's consent); the other kinds by SMTP AUTH. The secret is read from "
                    "stdin (--secret-stdin), SENDRAIL_CONNECT_SECRET, or a prompt.")
    parser.add_argument("kind", choices=sorted(KIND_NAMES))
    parser.add_argument("--tenant", required=True, type=ID)
    parser.add_argument("--connection", required=True, type=ID, help="an id for this connection")
    parser.add_argument("--user", type=ID, help="owner (not for team-smtp or legacy)")
    parser.add_argument("--address", type=ADDRESS,
                        help="mailbox address (required for gmail, exchange-online)")
    parser.add_argument("--host", type=field_of(SmtpServer, "host", expected=HOST),
                        help="SMTP host (default for gmail/exchange-online: the provider's)")
    parser.add_argument("--port", type=field_of(SmtpServer, "port"), help="1 to 65535")
    parser.add_argument("--tls", choices=["starttls", "implicit"], default="starttls")
    parser.add_argument("--username", type=smtp_username, help="SMTP AUTH user (default: --address)")
    parser.add_argument("--imap-host", type=field_of(ImapServer, "host", expected=HOST),
                        help="IMAP host for bounce watching (default: the provider's)")
    parser.add_argument("--imap-port", type=field_of(ImapServer, "port"), default=993)
    parser.add_argument("--microsoft-tenant", type=field_of(OAuthGrant, "microsoft_tenant", expected=(
        "a Microsoft Entra tenant: its id, a domain, 'common' or 'organizations'")), default="common")
    parser.add_argument("--max-message-bytes", type=field_of(ConnectionConfigured, "max_message_bytes"))
    parser.add_argument("--secret-stdin", action="store_true", help="read the secret from stdin")
    parser.set_defaults(handler=connect)

    parser = commands.add_parser("assign", help="send an identity's mail through a connection")
    parser.add_argument("--tenant", required=True, type=ID)
    parser.add_argument("--user", required=True, type=ID)
    parser.add_argument("--identity", required=True, type=ADDRESS, help="the from-address")
    parser.add_argument("--connection", required=True, type=ID)
    parser.set_defaults(handler=assign)

    parser = commands.add_parser("identities", help="add, verify and list from-addresses")
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add an identity (unverified unless --verified)")
    add.add_argument("--tenant", required=True, type=ID)
    add.add_argument("--user", required=True, type=ID)
    add.add_argument("--address", required=True, type=ADDRESS)
    add.add_argument("--verified", action="store_true",
                     help="the address is already verified (e.g. by the upstream system)")
    add.add_argument("--default", action="store_true", help="the user's default identity")
    verify = actions.add_parser("verify", help="mark an identity verified")
    verify.add_argument("--tenant", required=True, type=ID)
    verify.add_argument("--address", required=True, type=ADDRESS)
    listing = actions.add_parser("list", help="list a tenant's identities and assignments")
    listing.add_argument("--tenant", required=True, type=ID)
    listing.add_argument("--user", type=ID)
    parser.set_defaults(handler=identities)

    parser = commands.add_parser("tenant", help="team settings: team SMTP, legacy flag")
    parser.add_argument("--tenant", required=True, type=ID)
    parser.add_argument("--team-connection", type=team_connection,
                        help="the team SMTP connection, default channel of default identities "
                             "('' to remove it)")
    parser.add_argument("--legacy", action=argparse.BooleanOptionalAction, default=None,
                        help="a legacy tenant (may use legacy servers)")
    parser.set_defaults(handler=tenant)

    parser = commands.add_parser(
        "throttle", help="show or set sending limits (team-wide or per connection)",
        description="Gmail and Exchange Online connections always keep their provider's caps; "
                    "these settings add the team's batch (e.g. 25 every 45 s) and tighter caps. "
                    "Running senders apply a change at the connection's next turn.")
    actions = parser.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="the tenant's throttle settings")
    show.add_argument("--tenant", required=True, type=ID)
    change = actions.add_parser("set", help="change throttle settings")
    change.add_argument("--tenant", required=True, type=ID)
    change.add_argument("--connection", type=ID, help="only this connection (default: the whole team)")
    switch = change.add_mutually_exclusive_group()
    switch.add_argument("--on", dest="enabled", action="store_const", const=True, default=None,
                        help="apply the batch and caps set here (the default)")
    switch.add_argument("--off", dest="enabled", action="store_const", const=False,
                        help="ignore the batch and caps set here (provider caps always stay)")
    change.add_argument("--batch-size", type=throttle_value("batch_size"),
                        help=f"emails per batch, 1 to {MAX_BATCH_SIZE:,}")
    change.add_argument("--batch-wait-s", type=throttle_value("batch_wait_s"),
                        help=f"seconds between batches, {MIN_BATCH_WAIT_S:g} to {MAX_BATCH_WAIT_S:,g}")
    change.add_argument("--daily-messages", type=throttle_value("daily_messages"),
                        help=f"messages per rolling 24 h, at most {MAX_WINDOW_LIMIT:,}")
    change.add_argument("--daily-recipients", type=throttle_value("daily_recipients"),
                        help=f"recipients per rolling 24 h, at most {MAX_WINDOW_LIMIT:,}")
    change.add_argument("--per-minute-messages", type=throttle_value("per_minute_messages"),
                        help=f"messages per rolling minute, at most {MAX_WINDOW_LIMIT:,}")
    change.add_argument("--max-recipients-per-message", type=throttle_value("max_recipients_per_message"),
                        help=f"at most {MAX_RECIPIENTS_PER_MESSAGE:,}")
    change.add_argument("--gmail-plan", choices=["workspace", "workspace_trial", "consumer"])
    parser.set_defaults(handler=throttle)
