"""The whole pipeline running: the six services on the test broker and the mail sandbox."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from sendrail.bus.clients import make_producer
from sendrail.bus.codec import encode
from sendrail.events import EmailRequested, Source
from sendrail.sandbox.mail_sandbox import MailSandbox
from sendrail.secrets import SecretBox
from sendrail.settings import KafkaSettings, Settings
from sendrail.topics import REQUESTS
from support.accounts import Accounts
from support.event_log import EventLog
from support.services import InProcessServices


@pytest.fixture(scope="session")
async def producer(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaProducer]:
    producer = make_producer(kafka, client_id="test-upstream")
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture(scope="session")
async def events(kafka: KafkaSettings) -> AsyncIterator[EventLog]:
    log = EventLog(kafka)
    await log.start()
    yield log
    await log.stop()


@pytest.fixture(scope="session")
def accounts(producer: AIOKafkaProducer, mail: MailSandbox, secret_box: SecretBox) -> Accounts:
    return Accounts(producer, mail, secret_box)


@pytest.fixture(scope="session")
async def services(settings: Settings) -> AsyncIterator[InProcessServices]:
    running = InProcessServices(settings)
    await running.start_all()
    yield running
    await running.stop_all()


@pytest.fixture
def tenant() -> str:
    """Each test its own tenant, so tests never see each other's data."""
    return f"t-{uuid.uuid4().hex[:10]}"


Send = Callable[..., Awaitable[EmailRequested]]


@pytest.fixture
def send(producer: AIOKafkaProducer, services: InProcessServices) -> Send:
    async def publish(tenant_id: str, user_id: str, identity: str, *, to: str = "lee@example.org",
                      source: Source = Source.API, campaign: str | None = None,
                      template: str | None = None, subject: str = "Hello") -> EmailRequested:
        request = EmailRequested(
            idempotency_key=uuid.uuid4().hex, tenant_id=tenant_id, user_id=user_id,
            identity=identity, source=source, campaign_id=campaign, template_id=template,
            to=[to], subject=subject, text="Hello there.", requested_at=datetime.now(UTC),
        )
        await producer.send_and_wait(REQUESTS.name, encode(request),
                                     key=f"{tenant_id}/{user_id}".encode())
        return request

    return publish
