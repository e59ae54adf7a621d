"""Fixtures over real parts: one Kafka broker and one mail sandbox for the whole run.

Both are started by the project's own code on loopback ports and stopped at the end;
a missing part fails the run with the reason, it is never skipped.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from sendrail.bus.clients import ensure_topics, wait_for_broker
from sendrail.sandbox.kafka_broker import KafkaBroker
from sendrail.sandbox.mail_sandbox import MailSandbox
from sendrail.sandbox.ports import free_port
from sendrail.secrets import SecretBox
from sendrail.settings import (
    AnalyticsSettings,
    HttpSettings,
    KafkaSettings,
    OAuthSettings,
    SecretSettings,
    SenderSettings,
    Settings,
    TlsSettings,
    WatcherSettings,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
async def kafka() -> AsyncIterator[KafkaSettings]:
    data_dir = Path(tempfile.mkdtemp(prefix="sendrail-test-kafka-"))
    broker = KafkaBroker(data_dir, port=free_port(), jars_dir=REPO / ".cache/kafka/libs")
    await broker.start()
    try:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        await wait_for_broker(settings, timeout_s=30)
        await ensure_topics(settings)
        yield settings
    finally:
        await broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def mail() -> AsyncIterator[MailSandbox]:
    # Not pytest's tmp_path: Dovecot's `mail` user must be able to enter the directory.
    root = Path(tempfile.mkdtemp(prefix="sendrail-test-mail-"))
    try:
        async with MailSandbox(root) as sandbox:
            yield sandbox
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def secret_key() -> bytes:
    return SecretBox.generate_key()


@pytest.fixture(scope="session")
def secret_box(secret_key: bytes) -> SecretBox:
    return SecretBox(secret_key)


@pytest.fixture(scope="session")
def settings(kafka: KafkaSettings, mail: MailSandbox, secret_key: bytes) -> Settings:
    """What a deployment against the sandbox sets, with short waits so tests stay quick."""
    info = mail.info
    return Settings(
        kafka=kafka,
        secrets=SecretSettings(secret_key=SecretStr(secret_key.decode())),
        tls=TlsSettings(ca_file=info.ca_file),
        oauth=OAuthSettings(google_token_url=info.token_url_google,
                            microsoft_token_url=info.token_url_microsoft),
        http=HttpSettings(port=0),
        sender=SenderSettings(session_idle_s=0.0, retry_backoff_base_s=0.05,
                              retry_backoff_max_s=0.2, held_recheck_s=0.3, quota_probe_s=1.0,
                              commit_interval_s=0.2, loaded_per_connection=20),
        watcher=WatcherSettings(idle_timeout_s=30.0, poll_interval_s=1.0, connect_timeout_s=5.0,
                                reconnect_backoff_base_s=0.5, reconnect_backoff_max_s=1.0,
                                login_interval_s=1.0),
        analytics=AnalyticsSettings(port=free_port()),
    )
