"""The bench's receiving server: a private Exim that takes mail over STARTTLS + AUTH and drops it."""

from __future__ import annotations

import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from sendrail.sandbox.exim_sink import EximSink

_MESSAGE = b"From: lee@example.com\r\nTo: kim@example.org\r\nSubject: Hello\r\n\r\nHello.\r\n"


@pytest.fixture(scope="module")
async def sink() -> AsyncIterator[EximSink]:
    # Not pytest's tmp_path: Exim's session processes run as its own user, which must be able
    # to reach the spool (pytest's temporary root is 0700).
    with tempfile.TemporaryDirectory(prefix="sendrail-exim-test-") as root:
        async with EximSink(Path(root)) as started:
            started.add_user("lee@example.com", "s3cret-pass")
            yield started


def _client(sink: EximSink, **options: object) -> aiosmtplib.SMTP:
    context = ssl.create_default_context(cafile=str(sink.certificates.ca_file))
    return aiosmtplib.SMTP(hostname=sink.host, port=sink.port, tls_context=context, timeout=10,
                           **options)  # type: ignore[arg-type]


async def test_it_accepts_a_message_over_starttls_after_auth_plain(sink: EximSink) -> None:
    before = len(sink.accepted_ms())
    client = _client(sink, start_tls=True)
    await client.connect()
    await client.login("lee@example.com", "s3cret-pass")
    _, reply = await client.sendmail("lee@example.com", ["kim@example.org"], _MESSAGE)
    await client.quit()

    assert reply.startswith("OK")
    await sink.wait_accepted(before + 1, timeout_s=5)
    accepted_ms = sink.accepted_ms()[before]
    assert abs(accepted_ms - time.time() * 1000) < 5000
    cpu_s = sink.cpu_s()  # in clock ticks (10 ms): one message may not show
    assert cpu_s is not None and cpu_s >= 0


async def test_a_wrong_password_and_mail_without_login_are_refused(sink: EximSink) -> None:
    client = _client(sink, start_tls=True)
    await client.connect()
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
        await client.login("lee@example.com", "wrong")
    assert refused.value.code == 535
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as no_login:
        await client.sendmail("lee@example.com", ["kim@example.org"], _MESSAGE)
    assert no_login.value.recipients[0].code == 530
    await client.quit()


async def test_auth_is_offered_only_after_starttls(sink: EximSink) -> None:
    client = _client(sink, start_tls=False)
    await client.connect()
    await client.ehlo()
    assert client.supports_extension("starttls")
    assert not client.supports_extension("auth")
    await client.starttls()
    await client.ehlo()
    assert client.server_auth_methods == ["plain"]
    await client.quit()


async def test_it_stops_with_all_its_processes() -> None:
    with tempfile.TemporaryDirectory(prefix="sendrail-exim-test-") as root:
        sink = EximSink(Path(root))
        await sink.start()
        pid = sink.pid
        assert pid is not None
        await sink.stop()
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)  # no process of its group is left
        assert sink.cpu_s() is None
