"""`sendrail analytics token create/list/revoke`: the bearer tokens that read a tenant's analytics.

A new token is printed once, alone on standard output (so `TOKEN=$(sendrail analytics token
create --tenant acme)` works); the registry keeps only its hash, so it cannot be shown again.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from sendrail import analytics_tokens
from sendrail.cli.common import ID, Subcommands, checked, producer_for
from sendrail.clock import system_clock
from sendrail.errors import ConfigurationError
from sendrail.events import AnalyticsTokenIssued, TokenId
from sendrail.registry.store import RegistryStore, publish_record
from sendrail.settings import Settings


async def _tenant_tokens(settings: Settings, tenant_id: str) -> dict[str, AnalyticsTokenIssued]:
    store = RegistryStore(settings.kafka, client_id="sendrail-cli")
    await store.start()
    try:
        return {token_id: record for (tenant, token_id), record in store.view.analytics_tokens.items()
                if tenant == tenant_id}
    finally:
        await store.stop()


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def token(args: argparse.Namespace) -> int:
    settings = Settings.load()
    if args.action == "create":
        issued = analytics_tokens.issue(args.tenant, system_clock())
        async with producer_for(settings) as producer:
            await publish_record(producer, issued.record)
        print(f"token {issued.record.token_id} reads tenant {args.tenant}'s analytics; it is shown "
              "only now, keep it secret:", file=sys.stderr)
        print(issued.token)
        return 0
    tokens = await _tenant_tokens(settings, args.tenant)
    if args.action == "list":
        for record in sorted(tokens.values(), key=lambda r: r.created_at):
            state = f"revoked {_utc(record.revoked_at)}" if record.revoked_at else "active"
            print(f"{record.token_id}  created {_utc(record.created_at)}  {state}")
        if not tokens:
            print(f"tenant {args.tenant} has no analytics tokens")
        return 0
    existing = tokens.get(args.id)
    if existing is None:
        raise ConfigurationError(f"tenant {args.tenant} has no analytics token {args.id}")
    if existing.revoked_at is not None:
        print(f"token {args.id} was revoked already")
        return 0
    async with producer_for(settings) as producer:
        await publish_record(producer, analytics_tokens.revoked(existing, system_clock()))
    print(f"token {args.id} of tenant {args.tenant} revoked")
    return 0


TOKEN_ID = checked(TokenId, expected="a token id: 16 hexadecimal digits, as `list` shows it")


def register(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "analytics", help="access to the analytics API and page",
        description="The analytics service answers a tenant's data only for a bearer token of "
                    "that tenant (unless it runs behind an authenticating proxy, --trust-proxy).")
    areas = parser.add_subparsers(dest="area", required=True)
    tokens = areas.add_parser("token", help="create, list and revoke a tenant's bearer tokens")
    actions = tokens.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a token and print it, once")
    create.add_argument("--tenant", required=True, type=ID)
    listing = actions.add_parser("list", help="the tenant's tokens: ids and times, never the tokens")
    listing.add_argument("--tenant", required=True, type=ID)
    revoke = actions.add_parser("revoke", help="revoke a token: it is refused from then on")
    revoke.add_argument("--tenant", required=True, type=ID)
    revoke.add_argument("--id", required=True, type=TOKEN_ID, help="the token id, as `list` shows it")
    tokens.set_defaults(handler=token)
