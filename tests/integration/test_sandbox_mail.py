"""The local mail sandbox against real clients: aiohttp, aiosmtplib and aioimaplib."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from email.message import EmailMessage, Message
from pathlib import Path

import aiohttp
import aioimaplib
import aiosmtplib
import pytest

from sendrail.mail.headers import SEND_ID_HEADER
from sendrail.sandbox.admin_client import SandboxAdminClient
from sendrail.sandbox.mail_sandbox import INFO_FILE_NAME, MailSandbox, SandboxInfo

WAIT_S = 5.0


@pytest.fixture(scope="module")
def sandbox_root() -> Iterator[Path]:
    # Not pytest's tmp_path: its base directory is private to root (mode 0700), and
    # Dovecot's mail processes (the `mail` user) must pass through to the Maildirs.
    root = Path(tempfile.mkdtemp(prefix="sendrail-sandbox-"))
    yield root
    shutil.rmtree(root)


@pytest.fixture(scope="module")
async def sandbox(sandbox_root: Path) -> AsyncIterator[MailSandbox]:
    async with MailSandbox(sandbox_root) as started:
        yield started


@pytest.fixture(scope="module")
def tls_context(sandbox: MailSandbox) -> ssl.SSLContext:
    """Verification on, trusting only the sandbox CA."""
    return ssl.create_default_context(cafile=str(sandbox.info.ca_file))


@pytest.fixture(scope="module")
async def admin(sandbox: MailSandbox) -> AsyncIterator[SandboxAdminClient]:
    async with SandboxAdminClient(sandbox.info) as client:
        yield client


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def google_access_token(
    http: aiohttp.ClientSession, info: SandboxInfo, refresh_token: str
) -> str:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": "sendrail-test.apps.googleusercontent.com",
        "client_secret": "test-secret",
    }
    async with http.post(info.token_url_google, data=form) as response:
        assert response.status == 200, await response.text()
        document = await response.json()
    assert document["token_type"] == "Bearer"
    assert document["scope"] == "https://mail.google.com/"
    assert "refresh_token" not in document, "Google keeps the refresh token it gave"
    token: str = document["access_token"]
    return token


async def microsoft_tokens(
    http: aiohttp.ClientSession, info: SandboxInfo, refresh_token: str
) -> tuple[int, dict[str, object]]:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": "00000000-0000-0000-0000-000000000001",
        "scope": "https://outlook.office.com/SMTP.Send offline_access",
    }
    url = info.token_url_microsoft.format(tenant="common")
    async with http.post(url, data=form) as response:
        return response.status, await response.json()


def smtp_client(info: SandboxInfo, kind: str, tls_context: ssl.SSLContext) -> aiosmtplib.SMTP:
    endpoint = info.smtp[kind]
    return aiosmtplib.SMTP(
        hostname=endpoint.host,
        port=endpoint.port,
        start_tls=True,
        tls_context=tls_context,
        timeout=WAIT_S,
    )


@asynccontextmanager
async def smtp_session(
    info: SandboxInfo, kind: str, tls_context: ssl.SSLContext
) -> AsyncIterator[aiosmtplib.SMTP]:
    """Connected, past STARTTLS, and greeted again over TLS (RFC 3207 section 4.2)."""
    async with smtp_client(info, kind, tls_context) as smtp:
        await smtp.ehlo()
        yield smtp


def message(
    sender: str, recipients: list[str], *, send_id: str, subject: str = "Quick question"
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{send_id}@sendrail.test>"
    msg[SEND_ID_HEADER] = send_id
    msg.set_content("Hello from the sandbox.\n")
    return msg


def attached(part: Message) -> list[Message]:
    """The header blocks of a delivery-status part, or the message of a message/rfc822 part."""
    payload = part.get_payload()
    assert isinstance(payload, list)
    return [item for item in payload if isinstance(item, Message)]


def xoauth2_initial_response(address: str, token: str) -> bytes:
    return base64.b64encode(f"user={address}\x01auth=Bearer {token}\x01\x01".encode())


async def test_sandbox_info_is_saved_for_other_processes(sandbox: MailSandbox) -> None:
    loaded = SandboxInfo.load(sandbox.root_dir / INFO_FILE_NAME)

    assert loaded == sandbox.info
    assert set(loaded.smtp) == {
        "gmail",
        "exchange_online",
        "exchange_onprem",
        "custom_smtp",
        "team_smtp",
        "legacy",
    }
    assert "{tenant}" in loaded.token_url_microsoft


async def test_gmail_accepts_xoauth2_with_a_token_from_the_token_endpoint(
    sandbox: MailSandbox, http: aiohttp.ClientSession, tls_context: ssl.SSLContext
) -> None:
    address = "ann@gmail-user.test"
    token = await google_access_token(http, sandbox.info, sandbox.add_oauth_user("google", address))

    async with smtp_session(sandbox.info, "gmail", tls_context) as smtp:
        auth = await smtp.auth_xoauth2(address, token)
        assert smtp.esmtp_extensions["size"] == "35882577"
        assert smtp.server_auth_methods == ["xoauth2"]
        _, reply = await smtp.send_message(
            message(address, ["bob@example.test"], send_id="s-gmail-ok")
        )

    assert auth.code == 235
    assert reply.startswith("2.0.0 OK") and reply.endswith(" - gsmtp")
    accepted = sandbox.received("gmail")[-1]
    assert (accepted.auth_mechanism, accepted.identity) == ("XOAUTH2", address)
    assert (accepted.mail_from, accepted.rcpt_tos) == (address, ("bob@example.test",))
    assert b"X-Sendrail-Send-Id: s-gmail-ok" in accepted.content


async def test_a_bad_xoauth2_token_gets_a_json_challenge_then_535(
    sandbox: MailSandbox, tls_context: ssl.SSLContext
) -> None:
    address = "carl@gmail-user.test"
    sandbox.add_oauth_user("google", address)

    async with smtp_session(sandbox.info, "gmail", tls_context) as smtp:
        challenge = await smtp.execute_command(
            b"AUTH", b"XOAUTH2", xoauth2_initial_response(address, "not-a-token")
        )
        final = await smtp.execute_command(b"")

    assert challenge.code == 334
    assert json.loads(base64.b64decode(challenge.message)) == {
        "status": "401",
        "schemes": "bearer",
        "scope": "https://mail.google.com/",
    }
    assert final.code == 535
    assert "5.7.8 Username and Password not accepted" in final.message
    assert final.message.endswith(" - gsmtp")


async def test_aiosmtplib_gets_exchanges_535_after_the_challenge(
    sandbox: MailSandbox, tls_context: ssl.SSLContext
) -> None:
    async with smtp_session(sandbox.info, "exchange_online", tls_context) as smtp:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
            await smtp.auth_xoauth2("dora@contoso.test", "not-a-token")

    assert refused.value.code == 535
    assert refused.value.message.startswith("5.7.3 Authentication unsuccessful")


async def test_an_expired_access_token_is_refused(
    sandbox: MailSandbox,
    http: aiohttp.ClientSession,
    admin: SandboxAdminClient,
    tls_context: ssl.SSLContext,
) -> None:
    address = "erin@gmail-user.test"
    token = await google_access_token(
        http, sandbox.info, await admin.add_oauth_user("google", address)
    )

    assert await admin.expire_access(address) == 1
    async with smtp_session(sandbox.info, "gmail", tls_context) as smtp:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
            await smtp.auth_xoauth2(address, token)

    assert refused.value.code == 535


async def test_a_token_for_another_address_is_refused(
    sandbox: MailSandbox, http: aiohttp.ClientSession, tls_context: ssl.SSLContext
) -> None:
    token = await google_access_token(
        http, sandbox.info, sandbox.add_oauth_user("google", "fay@gmail-user.test")
    )

    async with smtp_session(sandbox.info, "gmail", tls_context) as smtp:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await smtp.auth_xoauth2("someone-else@gmail-user.test", token)


async def test_a_revoked_refresh_token_gets_invalid_grant(
    sandbox: MailSandbox, http: aiohttp.ClientSession, admin: SandboxAdminClient
) -> None:
    google_refresh = await admin.add_oauth_user("google", "gus@gmail-user.test")
    microsoft_refresh = await admin.add_oauth_user("microsoft", "gus@contoso.test")
    await admin.revoke("gus@gmail-user.test")
    await admin.revoke("gus@contoso.test")

    form = {
        "grant_type": "refresh_token",
        "refresh_token": google_refresh,
        "client_id": "c",
        "client_secret": "s",
    }
    async with http.post(sandbox.info.token_url_google, data=form) as response:
        google_status, google_error = response.status, await response.json()
    microsoft_status, microsoft_error = await microsoft_tokens(
        http, sandbox.info, microsoft_refresh
    )

    assert (google_status, google_error) == (
        400,
        {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
    )
    assert microsoft_status == 400
    assert microsoft_error["error"] == "invalid_grant"
    assert str(microsoft_error["error_description"]).startswith("AADSTS70008:")


async def test_introspection_tells_dovecot_who_a_token_belongs_to(
    sandbox: MailSandbox, http: aiohttp.ClientSession
) -> None:
    address = "uma@gmail-user.test"
    token = await google_access_token(http, sandbox.info, sandbox.add_oauth_user("google", address))
    introspect_url = sandbox.info.admin_url.removesuffix("/admin") + "/introspect"

    answers = []
    for candidate in (token, "not-a-token"):
        async with http.post(introspect_url, data={"token": candidate}) as response:
            answers.append(await response.json())

    assert answers == [{"active": True, "username": address}, {"active": False}]


async def test_password_users_only_exist_on_password_servers(admin: SandboxAdminClient) -> None:
    with pytest.raises(aiohttp.ClientResponseError) as oauth_server:
        await admin.add_password_user("gmail", "vic@gmail-user.test", "pw")
    with pytest.raises(aiohttp.ClientResponseError) as unknown_server:
        await admin.add_password_user("sendgrid", "apikey", "pw")

    assert (oauth_server.value.status, unknown_server.value.status) == (400, 404)


async def test_microsoft_rotates_the_refresh_token(
    sandbox: MailSandbox, http: aiohttp.ClientSession, tls_context: ssl.SSLContext
) -> None:
    address = "hana@contoso.test"
    first_refresh = sandbox.add_oauth_user("microsoft", address)

    status, issued = await microsoft_tokens(http, sandbox.info, first_refresh)
    rotated_status, reissued = await microsoft_tokens(
        http, sandbox.info, str(issued["refresh_token"])
    )

    assert status == 200
    assert (
        issued["token_type"] == "Bearer"
        and issued["scope"] == "https://outlook.office.com/SMTP.Send"
    )
    assert issued["refresh_token"] not in (None, first_refresh)
    assert rotated_status == 200
    assert reissued["refresh_token"] not in (None, first_refresh, issued["refresh_token"])
    async with smtp_session(sandbox.info, "exchange_online", tls_context) as smtp:
        assert (await smtp.auth_xoauth2(address, str(issued["access_token"]))).code == 235


async def test_auth_and_mail_before_starttls_are_refused(
    sandbox: MailSandbox, tls_context: ssl.SSLContext
) -> None:
    endpoint = sandbox.info.smtp["gmail"]
    async with aiosmtplib.SMTP(
        hostname=endpoint.host, port=endpoint.port, start_tls=False, timeout=WAIT_S
    ) as smtp:
        await smtp.ehlo()
        advertised = dict(smtp.esmtp_extensions)
        auth = await smtp.execute_command(
            b"AUTH", b"XOAUTH2", xoauth2_initial_response("ivy@gmail.test", "t")
        )
        mail = await smtp.execute_command(b"MAIL", b"FROM:<ivy@gmail.test>")

    assert "starttls" in advertised and "auth" not in advertised
    assert auth.code == 530 and auth.message.startswith("5.7.0 Must issue a STARTTLS command first")
    assert mail.code == 530


async def test_password_servers_accept_plain_and_login(
    sandbox: MailSandbox, admin: SandboxAdminClient, tls_context: ssl.SSLContext
) -> None:
    await admin.add_password_user("custom_smtp", "apikey", "s3cret-value")

    async with smtp_session(sandbox.info, "custom_smtp", tls_context) as smtp:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
            await smtp.auth_plain("apikey", "wrong")
        assert smtp.esmtp_extensions["size"] == str(25 * 1024 * 1024)
        assert sorted(smtp.server_auth_methods) == ["login", "plain"]
        assert (await smtp.auth_login("apikey", "s3cret-value")).code == 235
        await smtp.send_message(message("jo@acme.test", ["kim@example.test"], send_id="s-custom"))
    async with smtp_session(sandbox.info, "custom_smtp", tls_context) as smtp:
        assert (await smtp.auth_plain("apikey", "s3cret-value")).code == 235

    assert (refused.value.code, refused.value.message) == (
        535,
        "5.7.8 Authentication credentials invalid",
    )
    accepted = sandbox.received("custom_smtp")[-1]
    assert (accepted.auth_mechanism, accepted.identity, accepted.mail_from) == (
        "LOGIN",
        "apikey",
        "jo@acme.test",
    )


async def test_accepted_mail_lands_in_the_recipients_maildir(
    sandbox: MailSandbox, http: aiohttp.ClientSession, tls_context: ssl.SSLContext
) -> None:
    address = "lea@gmail-user.test"
    token = await google_access_token(http, sandbox.info, sandbox.add_oauth_user("google", address))

    async with smtp_session(sandbox.info, "gmail", tls_context) as smtp:
        await smtp.auth_xoauth2(address, token)
        await smtp.send_message(
            message(address, ["Max@Example.test", "ned@example.test"], send_id="s-deliver")
        )

    for recipient in ("max@example.test", "ned@example.test"):
        [delivered] = sandbox.mailbox(recipient)
        assert delivered["Return-Path"] == f"<{address}>"
        assert delivered["Delivered-To"] == recipient
        assert delivered[SEND_ID_HEADER] == "s-deliver"
        assert delivered.get_content() == "Hello from the sandbox.\n"
    [stored] = (sandbox.info.maildir_root / "max@example.test" / "new").iterdir()
    assert not list((sandbox.info.maildir_root / "max@example.test" / "tmp").iterdir())
    assert stored.name.split(".")[0].isdigit()


async def test_a_bounce_domain_recipient_gets_a_gmail_dsn_into_the_senders_maildir(
    sandbox: MailSandbox, http: aiohttp.ClientSession, tls_context: ssl.SSLContext
) -> None:
    address = "mia@gmail-user.test"
    unknown = f"nobody@{sandbox.info.bounce_domain}"
    token = await google_access_token(http, sandbox.info, sandbox.add_oauth_user("google", address))

    async with smtp_session(sandbox.info, "gmail", tls_context) as smtp:
        await smtp.auth_xoauth2(address, token)
        rejected, _ = await smtp.send_message(message(address, [unknown], send_id="s-bounce"))

    assert rejected == {}
    assert sandbox.mailbox(unknown) == []
    [bounce] = sandbox.mailbox(address)
    assert bounce["From"] == "Mail Delivery Subsystem <mailer-daemon@googlemail.com>"
    assert bounce["Subject"] == "Delivery Status Notification (Failure)"
    assert bounce["X-Failed-Recipients"] == unknown
    assert bounce["In-Reply-To"] == bounce["References"] == "<s-bounce@sendrail.test>"
    assert bounce["Return-Path"] == "<>"
    assert bounce.get_content_type() == "multipart/report"
    assert bounce.get_param("report-type") == "delivery-status"
    parts = {part.get_content_type(): part for part in bounce.iter_parts()}
    per_message, per_recipient = attached(parts["message/delivery-status"])
    assert per_message["Reporting-MTA"] == "dns; googlemail.com"
    assert per_recipient["Final-Recipient"] == f"rfc822; {unknown}"
    assert (per_recipient["Action"], per_recipient["Status"]) == ("failed", "5.1.1")
    assert per_recipient["Diagnostic-Code"].startswith("smtp; 550-5.1.1 The email account")
    [original] = attached(parts["message/rfc822"])
    assert original["Message-ID"] == "<s-bounce@sendrail.test>"
    assert original[SEND_ID_HEADER] == "s-bounce"


@pytest.mark.parametrize(
    ("kind", "subject", "status"),
    [
        ("exchange_online", "Undeliverable: Pricing", "5.1.10"),
        ("team_smtp", "Undelivered Mail Returned to Sender", "5.1.2"),
    ],
)
async def test_other_servers_bounce_in_their_own_style(
    sandbox: MailSandbox,
    http: aiohttp.ClientSession,
    tls_context: ssl.SSLContext,
    kind: str,
    subject: str,
    status: str,
) -> None:
    address = f"olga-{kind.replace('_', '-')}@contoso.test"
    unknown = f"gone@{sandbox.info.bounce_domain}"
    async with smtp_session(sandbox.info, kind, tls_context) as smtp:
        if kind == "exchange_online":
            _, issued = await microsoft_tokens(
                http, sandbox.info, sandbox.add_oauth_user("microsoft", address)
            )
            await smtp.auth_xoauth2(address, str(issued["access_token"]))
        else:
            sandbox.add_password_user(kind, address, "pw")
            await smtp.auth_plain(address, "pw")
        await smtp.send_message(message(address, [unknown], send_id=f"s-{kind}", subject="Pricing"))

    [bounce] = sandbox.mailbox(address)
    assert bounce["Subject"] == subject
    parts = {part.get_content_type(): part for part in bounce.iter_parts()}
    _, per_recipient = attached(parts["message/delivery-status"])
    assert (per_recipient["Action"], per_recipient["Status"]) == ("failed", status)
    returned = parts.get("message/rfc822") or parts["text/rfc822-headers"]
    assert f"{SEND_ID_HEADER}: s-{kind}" in returned.as_string()
    if kind == "exchange_online":
        assert "X-MS-Exchange-Message-Is-Ndr" in bounce
        assert bounce["From"].addresses[0].domain == "contoso.onmicrosoft.com"
        assert (
            "Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound"
            in parts["text/plain"].get_content()
        )


async def test_exchange_refuses_to_send_as_another_address(
    sandbox: MailSandbox, http: aiohttp.ClientSession, tls_context: ssl.SSLContext
) -> None:
    address = "paul@contoso.test"
    _, issued = await microsoft_tokens(
        http, sandbox.info, sandbox.add_oauth_user("microsoft", address)
    )

    async with smtp_session(sandbox.info, "exchange_online", tls_context) as smtp:
        await smtp.auth_xoauth2(address, str(issued["access_token"]))
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await smtp.sendmail(
                "ceo@contoso.test", ["x@example.test"], b"Subject: hi\r\n\r\nhi\r\n"
            )

    assert refused.value.code == 550
    assert refused.value.message.startswith(
        "5.7.60 SMTP; Client does not have permissions to send as this sender"
    )


async def test_exchange_refuses_a_fourth_concurrent_session_per_mailbox(
    sandbox: MailSandbox, http: aiohttp.ClientSession, tls_context: ssl.SSLContext
) -> None:
    address = "quinn@contoso.test"
    _, issued = await microsoft_tokens(
        http, sandbox.info, sandbox.add_oauth_user("microsoft", address)
    )
    token = str(issued["access_token"])
    sessions = [smtp_client(sandbox.info, "exchange_online", tls_context) for _ in range(4)]
    for smtp in sessions:
        await smtp.connect()
        await smtp.auth_xoauth2(address, token)

    replies = [await smtp.mail(address) for smtp in sessions[:3]]
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await sessions[3].mail(address)
    await sessions[0].quit()
    retried = await _retry_mail_until_accepted(sessions[3], address)
    for smtp in sessions[1:]:
        await smtp.quit()

    assert [reply.code for reply in replies] == [250, 250, 250]
    assert refused.value.code == 432
    assert refused.value.message.startswith("4.3.2 Concurrent connections limit exceeded")
    assert retried.code == 250


async def _retry_mail_until_accepted(
    smtp: aiosmtplib.SMTP, address: str
) -> aiosmtplib.SMTPResponse:
    """The server frees a slot once it sees the other connection close: wait for that."""
    async with asyncio.timeout(WAIT_S):
        while True:
            try:
                return await smtp.mail(address)
            except aiosmtplib.SMTPSenderRefused:
                await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("kind", "limit", "reply"),
    [
        ("gmail", 100, "4.5.3 Your message has too many recipients"),
        ("exchange_online", 500, "4.5.3 Too many recipients"),
    ],
)
async def test_recipients_beyond_the_provider_limit_are_refused(
    sandbox: MailSandbox,
    http: aiohttp.ClientSession,
    tls_context: ssl.SSLContext,
    kind: str,
    limit: int,
    reply: str,
) -> None:
    if kind == "gmail":
        address = "rose@gmail-user.test"
        token = await google_access_token(
            http, sandbox.info, sandbox.add_oauth_user("google", address)
        )
    else:
        address = "rose@contoso.test"
        _, issued = await microsoft_tokens(
            http, sandbox.info, sandbox.add_oauth_user("microsoft", address)
        )
        token = str(issued["access_token"])
    recipients = [f"r{number}@many.test" for number in range(limit + 1)]

    async with smtp_session(sandbox.info, kind, tls_context) as smtp:
        await smtp.auth_xoauth2(address, token)
        refused, _ = await smtp.sendmail(address, recipients, b"Subject: many\r\n\r\nhi\r\n")

    assert list(refused) == [recipients[-1]]
    assert refused[recipients[-1]].code == 452
    assert refused[recipients[-1]].message.startswith(reply)
    assert len(sandbox.received(kind)[-1].rcpt_tos) == limit


async def test_imap_xoauth2_login_sees_a_delivered_message(
    sandbox: MailSandbox, http: aiohttp.ClientSession, tls_context: ssl.SSLContext
) -> None:
    sender, reader = "sam@gmail-user.test", "tess@gmail-user.test"
    sender_token = await google_access_token(
        http, sandbox.info, sandbox.add_oauth_user("google", sender)
    )
    reader_token = await google_access_token(
        http, sandbox.info, sandbox.add_oauth_user("google", reader)
    )
    async with smtp_session(sandbox.info, "gmail", tls_context) as smtp:
        await smtp.auth_xoauth2(sender, sender_token)
        await smtp.send_message(message(sender, [reader], send_id="s-imap"))

    imap = aioimaplib.IMAP4_SSL(
        host=sandbox.info.imap_host,
        port=sandbox.info.imap_port,
        ssl_context=tls_context,
        timeout=WAIT_S,
    )
    await imap.wait_hello_from_server()
    login = await imap.xoauth2(reader, reader_token)
    selected = await imap.select("INBOX")
    found = await imap.search("ALL")
    fetched = await imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (X-SENDRAIL-SEND-ID)])")
    await imap.logout()

    assert login.result == "OK", login.lines
    assert selected.result == "OK"
    assert found.result == "OK" and found.lines[0].split() == [b"1"]
    assert b"X-Sendrail-Send-Id: s-imap" in b"".join(
        line for line in fetched.lines if isinstance(line, (bytes, bytearray))
    )
