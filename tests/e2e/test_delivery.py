"""Send requests through the router and each sender to the sandbox's servers."""

from __future__ import annotations

import base64
from dataclasses import replace

from sendrail.events import ChannelKind, DeliveryStatus, Source
from sendrail.mail.headers import SEND_ID_HEADER
from sendrail.sandbox.mail_sandbox import MailSandbox
from sendrail.topics import REQUESTS
from support.accounts import Accounts
from support.delivery import final_event, received_message
from support.event_log import EventLog

XOAUTH2_KINDS = {ChannelKind.GMAIL, ChannelKind.EXCHANGE_ONLINE}


async def test_each_channel_delivers_with_its_own_authentication(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox
) -> None:
    legacy_tenant = f"{tenant}-legacy"
    await accounts.tenant(legacy_tenant, legacy=True)
    users = {kind: await accounts.user(tenant, kind.value.replace("_", "-"), kind)
             for kind in (ChannelKind.GMAIL, ChannelKind.EXCHANGE_ONLINE,
                          ChannelKind.EXCHANGE_ONPREM, ChannelKind.CUSTOM_SMTP)}
    team = await accounts.connect(tenant, None, ChannelKind.TEAM_SMTP)
    await accounts.tenant(tenant, team_connection_id=team.connection_id)
    await accounts.identity(tenant, "erin", f"erin@{tenant}.example.com")
    users[ChannelKind.TEAM_SMTP] = replace(team, user_id="erin", address=f"erin@{tenant}.example.com")
    legacy = await accounts.connect(legacy_tenant, None, ChannelKind.LEGACY)
    await accounts.identity(legacy_tenant, "frank", f"frank@{legacy_tenant}.example.com")
    await accounts.assign(legacy_tenant, "frank", f"frank@{legacy_tenant}.example.com",
                          legacy.connection_id)
    users[ChannelKind.LEGACY] = replace(legacy, user_id="frank",
                                            address=f"frank@{legacy_tenant}.example.com")

    requests = {kind: await send(u.tenant_id, u.user_id, u.address) for kind, u in users.items()}

    for kind, request in requests.items():
        sent = await final_event(events, request.send_id)
        assert sent.status is DeliveryStatus.SENT, sent.reason
        assert sent.channel is kind
        assert sent.connection_id == users[kind].connection_id
        envelope, message = received_message(mail, kind, request.send_id)
        if kind in XOAUTH2_KINDS:
            assert envelope.auth_mechanism == "XOAUTH2"
        else:
            assert envelope.auth_mechanism in {"PLAIN", "LOGIN"}
        assert envelope.mail_from == request.identity
        assert message["From"] == request.identity
        assert message["Message-ID"] == sent.message_id
        assert message["Message-ID"].endswith(f"@{request.identity.split('@')[1]}>")
        assert message[SEND_ID_HEADER] == str(request.send_id)


async def test_addon_mail_goes_through_the_users_gmail_whatever_the_assignment(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox
) -> None:
    gmail = await accounts.user(tenant, "gina", ChannelKind.GMAIL)
    custom = await accounts.connect(tenant, "gina", ChannelKind.CUSTOM_SMTP)
    await accounts.assign(tenant, "gina", gmail.address, custom.connection_id)

    web = await send(tenant, "gina", gmail.address, source=Source.WEB)
    addon = await send(tenant, "gina", gmail.address, source=Source.GMAIL_ADDON)

    assert (await final_event(events, web.send_id)).connection_id == custom.connection_id
    from_addon = await final_event(events, addon.send_id)
    assert from_addon.status is DeliveryStatus.SENT
    assert from_addon.connection_id == gmail.connection_id
    received_message(mail, ChannelKind.GMAIL, addon.send_id)


async def test_legacy_servers_are_refused_to_other_tenants(
    tenant: str, accounts: Accounts, send, events: EventLog
) -> None:
    legacy = await accounts.connect(tenant, None, ChannelKind.LEGACY)
    await accounts.tenant(tenant, legacy=False)
    await accounts.identity(tenant, "hal", f"hal@{tenant}.example.com")
    await accounts.assign(tenant, "hal", f"hal@{tenant}.example.com", legacy.connection_id)

    request = await send(tenant, "hal", f"hal@{tenant}.example.com")

    refused = await final_event(events, request.send_id)
    assert refused.status is DeliveryStatus.FAILED
    assert "legacy" in (refused.reason or "")


async def test_an_unverified_identity_sends_nothing(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox
) -> None:
    account = await accounts.connect(tenant, "ivy", ChannelKind.CUSTOM_SMTP)
    await accounts.identity(tenant, "ivy", account.address, verified=False)

    request = await send(tenant, "ivy", account.address)

    refused = await final_event(events, request.send_id)
    assert refused.status is DeliveryStatus.FAILED
    assert "not verified" in (refused.reason or "")
    assert not any(e.mail_from == account.address for e in mail.received("custom_smtp"))


async def test_malformed_requests_land_in_the_dead_letter_topic(
    producer, services, events: EventLog
) -> None:
    injected = (b'{"idempotency_key": "k1", "tenant_id": "acme", "user_id": "u", '
                b'"identity": "u@acme.example.com", "source": "api", "to": ["x@example.org"], '
                b'"subject": "hi\\r\\nBcc: all@example.org", "text": "t", '
                b'"requested_at": "2026-11-28T10:00:00+00:00"}')
    garbage = b"\x00not json at all"
    for raw in (injected, garbage):
        await producer.send_and_wait(REQUESTS.name, raw, key=b"acme/u")

    for raw, reason in ((injected, "line break"), (garbage, "invalid")):
        letter = await events.wait_for(
            events.dead_letters, lambda d, raw=raw: base64.b64decode(d.value_b64) == raw,
            what=f"dead letter of {raw[:20]!r}")
        assert letter.source_topic == REQUESTS.name
        assert reason in letter.reason.lower()
    assert any(e.status is DeliveryStatus.DEAD_LETTERED and e.tenant_id == "acme"
               for e in events.delivery)

