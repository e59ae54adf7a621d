"""Who may put an address on the suppression list, how addresses compare, and mail that
cannot suppress anything never costs a mailbox its watcher."""

from __future__ import annotations

from pathlib import Path

from sendrail.events import ChannelKind, DeliveryStatus
from sendrail.sandbox.mail_sandbox import MailSandbox
from sendrail.settings import Settings
from sendrail.topics import suppression_key
from support.accounts import Account, Accounts
from support.cli import sendrail
from support.delivery import final_event
from support.event_log import EventLog
from support.notices import gmail_plain_notice
from support.services import InProcessServices
from support.waiting import wait_until


async def watched_user(accounts: Accounts, events: EventLog, tenant: str, user: str) -> Account:
    account = await accounts.user(tenant, user, ChannelKind.GMAIL)
    await events.wait_for(events.checkpoints, lambda c: c.connection_id == account.connection_id,
                          what=f"the watcher opening {account.address}")
    return account


def suppressed_keys(events: EventLog, tenant: str) -> set[bytes]:
    live: dict[bytes, bool] = {}
    for key, entry in events.suppressions:
        if key.startswith(f"{tenant}/".encode()):
            live[key] = entry is not None
    return {key for key, on in live.items() if on}


async def test_a_strangers_notice_is_published_uncorrelated_and_suppresses_nothing(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox,
) -> None:
    account = await watched_user(accounts, events, tenant, "rae")
    never_sent = "never-sent@customer.example"
    # Anyone can mail the rep a notice in Gmail's wording naming any address.
    mail.deliver(account.address, gmail_plain_notice(account.address, never_sent))
    # A recipient of a real email answers it with a notice naming somebody else.
    request = await send(tenant, "rae", account.address, to="lee@customer.example")
    sent = await final_event(events, request.send_id)
    assert sent.status is DeliveryStatus.SENT and sent.message_id
    mail.deliver(account.address, gmail_plain_notice(account.address, "ceo@customer.example",
                                                     in_reply_to=sent.message_id,
                                                     message_id="<forged-2@customer.example>"))
    # Then a real bounce of a real send: it suppresses.
    gone = f"gone@{mail.info.bounce_domain}"
    real = await send(tenant, "rae", account.address, to=gone)
    await events.wait_for(events.bounces, lambda b: b.send_id == real.send_id, what="the real bounce")
    await wait_until(lambda: suppression_key(tenant, gone) in suppressed_keys(events, tenant),
                     timeout_s=20, what="the bounced address suppressed")

    mine = {b.recipient: b for b in events.bounces if b.connection_id == account.connection_id}
    assert not mine[never_sent].correlated and mine[never_sent].send_id is None
    assert mine[never_sent].user_id == "rae"  # the mailbox owner sees it
    assert mine["ceo@customer.example"].send_id == request.send_id  # tied, but not its recipient
    # The watcher reads in order: by the real bounce's suppression, the others were decided.
    assert suppressed_keys(events, tenant) == {suppression_key(tenant, gone)}
    again = await send(tenant, "rae", account.address, to=never_sent)
    assert (await final_event(events, again.send_id)).status is DeliveryStatus.SENT


async def test_an_address_is_suppressed_in_every_spelling_of_its_mailbox(
    tenant: str, accounts: Accounts, send, events: EventLog, settings: Settings, tmp_path: Path,
) -> None:
    account = await accounts.user(tenant, "sam", ChannelKind.CUSTOM_SMTP)
    for address in ("bob@x.com", "bob.smith@gmail.com"):
        await sendrail(settings, tmp_path, "suppression", "add", "--tenant", tenant, "--address", address)
        await wait_until(lambda a=address: suppression_key(tenant, a) in suppressed_keys(events, tenant),
                         timeout_s=20, what=f"{address} suppressed")

    for spelled in ("Bob@x.com", "BOB@X.COM", "BobSmith@googlemail.com"):
        refused = await final_event(events, (await send(tenant, "sam", account.address, to=spelled)).send_id)
        assert refused.status is DeliveryStatus.SUPPRESSED, spelled
    tagged = await send(tenant, "sam", account.address, to="bob+news@x.com")  # another address
    assert (await final_event(events, tagged.send_id)).status is DeliveryStatus.SENT

    await sendrail(settings, tmp_path, "suppression", "remove", "--tenant", tenant, "--address", "Bob@X.com")
    await wait_until(lambda: suppression_key(tenant, "bob@x.com") not in suppressed_keys(events, tenant),
                     timeout_s=20, what="the suppression lifted")
    lifted = await send(tenant, "sam", account.address, to="Bob@x.com")
    assert (await final_event(events, lifted.send_id)).status is DeliveryStatus.SENT


async def test_a_notice_naming_an_unusable_address_does_not_restart_the_watcher(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox,
    services: InProcessServices,
) -> None:
    account = await watched_user(accounts, events, tenant, "uma")
    mailbox = f"{tenant}/{account.connection_id}"

    def health() -> dict[str, object]:
        shown = services.health("bounce-watcher")["mailboxes"]
        assert isinstance(shown, dict)
        return shown[mailbox]  # type: ignore[no-any-return]

    await wait_until(lambda: health()["state"] == "watching", timeout_s=20, what="the mailbox watched")
    logins = health()["logins"]
    request = await send(tenant, "uma", account.address, to="lee@customer.example")
    sent = await final_event(events, request.send_id)
    assert sent.message_id
    for unusable in ("bob@corp.local", "bob@example.invalid"):
        mail.deliver(account.address, gmail_plain_notice(
            account.address, unusable, in_reply_to=sent.message_id,
            message_id=f"<unusable-{len(unusable)}@customer.example>"))
    good = await send(tenant, "uma", account.address, to=f"after@{mail.info.bounce_domain}")

    await events.wait_for(events.bounces, lambda b: b.send_id == good.send_id,
                          what="the good bounce after the unusable ones")
    published = {b.recipient for b in events.bounces if b.connection_id == account.connection_id}
    assert {"bob@corp.local", "bob@example.invalid"} <= published
    shown = health()
    assert shown["state"] == "watching" and shown["logins"] == logins  # never logged in again
    assert shown["message_failures"] == 0
    await wait_until(lambda: suppression_key(tenant, f"after@{mail.info.bounce_domain}")
                     in suppressed_keys(events, tenant), timeout_s=20, what="the good bounce's suppression")
    assert suppressed_keys(events, tenant) == {suppression_key(tenant, f"after@{mail.info.bounce_domain}")}


async def test_a_notice_built_to_be_slow_to_parse_starves_no_other_mailbox(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox,
) -> None:
    """One line of spaces before `a@` once took minutes to parse on the watcher's only loop."""
    victim = await watched_user(accounts, events, tenant, "vic")
    other = await watched_user(accounts, events, tenant, "oli")
    forged = gmail_plain_notice(victim.address, "x@customer.example").replace(
        b"     x@customer.example", b" " * 120_000 + b"a@ x@customer.example")
    mail.deliver(victim.address, forged)
    real = await send(tenant, "oli", other.address, to=f"gone@{mail.info.bounce_domain}")
    await events.wait_for(events.bounces, lambda b: b.send_id == real.send_id, timeout_s=30,
                          what="the other mailbox's bounce, while the forged notice is read")
    await events.wait_for(events.checkpoints, lambda c: c.connection_id == victim.connection_id
                          and c.last_uid >= 1, timeout_s=30, what="the forged notice read and passed")
