"""`sendrail suppression list/add/remove`: the addresses a tenant no longer sends to."""

from __future__ import annotations

import argparse

from sendrail.bus.codec import encode
from sendrail.cli.common import ADDRESS, ID, Subcommands, one_line, producer_for
from sendrail.clock import system_clock
from sendrail.errors import ConfigurationError
from sendrail.events import AddressSuppressed
from sendrail.settings import Settings
from sendrail.suppression.store import SuppressionList
from sendrail.topics import SUPPRESSION, suppression_key
from sendrail.validation import normalize_address

MAX_REASON_CHARS = 500
"""An admin's reason is a sentence, listed on one line."""


async def suppression(args: argparse.Namespace) -> int:
    settings = Settings.load()
    if args.action == "list":
        entries = SuppressionList(settings.kafka, client_id="sendrail-cli")
        await entries.start()
        try:
            rows = entries.of_tenant(args.tenant)
        finally:
            await entries.stop()
        for entry in rows:
            print(f"{entry.address:<40} {entry.source:<12} {entry.suppressed_at:%Y-%m-%d %H:%M}  "
                  f"{entry.reason}")
        if not rows:
            print(f"tenant {args.tenant} suppresses no address")
        return 0
    try:
        address = normalize_address(args.address)
    except ValueError as error:
        raise ConfigurationError(str(error)) from None
    key = suppression_key(args.tenant, address)  # the same for every spelling of the address
    if args.action == "add":
        entry = AddressSuppressed(tenant_id=args.tenant, address=address, source="admin",
                                  reason=args.reason, suppressed_at=system_clock())
        async with producer_for(settings) as producer:
            await producer.send_and_wait(SUPPRESSION.name, encode(entry), key=key)
        print(f"{address} suppressed for tenant {args.tenant}")
        return 0
    # Records written under another spelling of the same mailbox count too: lift them all.
    entries = SuppressionList(settings.kafka, client_id="sendrail-cli")
    await entries.start()
    try:
        keys = {key, *entries.record_keys(args.tenant, address)}
    finally:
        await entries.stop()
    async with producer_for(settings) as producer:
        for each in sorted(keys):
            await producer.send_and_wait(SUPPRESSION.name, None, key=each)  # a tombstone lifts it
    print(f"{address} no longer suppressed for tenant {args.tenant}")
    return 0


def register(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "suppression", help="the addresses a tenant no longer sends to",
        description="Hard bounces add addresses automatically; the router refuses sends to "
                    "them with a `suppressed` delivery event.")
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the tenant's suppressed addresses")
    listing.add_argument("--tenant", required=True, type=ID)
    add = actions.add_parser("add", help="suppress an address")
    add.add_argument("--tenant", required=True, type=ID)
    add.add_argument("--address", required=True, type=ADDRESS)
    add.add_argument("--reason", type=one_line(MAX_REASON_CHARS), default="added by an admin",
                     help=f"shown in `suppression list`: one line, at most {MAX_REASON_CHARS} characters")
    remove = actions.add_parser("remove", help="lift a suppression")
    remove.add_argument("--tenant", required=True, type=ID)
    remove.add_argument("--address", required=True, type=ADDRESS)
    parser.set_defaults(handler=suppression)
