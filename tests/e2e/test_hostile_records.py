"""No record stops the line: each hostile record is dead-lettered with its reason, and a good
request published after it is still delivered, by services that never stopped.

One test per case, against the real broker and the services running in this process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from sendrail.bus.codec import encode
from sendrail.events import (
    ChannelKind,
    DeliveryStatus,
    EmailRequested,
    EmailRouted,
    RequestDeadLettered,
    Source,
)
from sendrail.sandbox.mail_sandbox import MailSandbox
from sendrail.topics import (
    BOUNCES,
    DELIVERY,
    HELD,
    OUTBOUND_SMTP,
    REGISTRY,
    REQUESTS,
    SUPPRESSION,
    THROTTLE_STATE,
    WATCHER_CHECKPOINTS,
    connection_key,
)
from support.accounts import Account, Accounts
from support.delivery import final_event, received_message
from support.event_log import EventLog
from support.services import InProcessServices
from support.waiting import wait_until


def _request(account: Account, **changes: Any) -> EmailRequested:
    fields: dict[str, Any] = {
        "idempotency_key": uuid.uuid4().hex, "tenant_id": account.tenant_id,
        "user_id": account.user_id, "identity": account.address, "source": Source.API,
        "to": ["lee@example.org"], "subject": "Hello", "text": "Hello there.",
        "requested_at": datetime.now(UTC),
    }
    return EmailRequested.model_validate(fields | changes)


async def _dead_letter_of(events: EventLog, topic: str, raw: bytes, *, what: str) -> RequestDeadLettered:
    digest = hashlib.sha256(raw).hexdigest()
    return await events.wait_for(
        events.dead_letters, lambda d: d.source_topic == topic and d.original_sha256 == digest,
        what=what)


async def _still_delivers(producer: AIOKafkaProducer, events: EventLog, mail: MailSandbox,
                          services: InProcessServices, account: Account) -> None:
    """A good request after the hostile record reaches the server, and no service stopped."""
    request = _request(account)
    await producer.send_and_wait(REQUESTS.name, encode(request),
                                 key=f"{account.tenant_id}/{account.user_id}".encode())
    sent = await final_event(events, request.send_id, timeout_s=30)
    assert sent.status is DeliveryStatus.SENT, sent.reason
    received_message(mail, account.kind, request.send_id)
    assert services.crashed() == []


@pytest.fixture
async def dave(tenant: str, accounts: Accounts) -> Account:
    return await accounts.user(tenant, "dave", ChannelKind.CUSTOM_SMTP)


# --- requests --------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b'{"tenant_id": "\\ud800", "idempotency_key": "k"}',  # a lone surrogate: stopped the router
    b"\xff\xfe\x00 not UTF-8",
    b"[" * 50_000,
    b'{"idempotency_key": ' + b'"k' * 1000 + b'"',
    b"null",
], ids=["lone surrogate", "not UTF-8", "deep nesting", "cut short", "null"])
async def test_a_request_that_cannot_be_read_is_dead_lettered_and_routing_goes_on(
    raw: bytes, producer: AIOKafkaProducer, events: EventLog, mail: MailSandbox,
    services: InProcessServices, dave: Account,
) -> None:
    await producer.send_and_wait(REQUESTS.name, raw, key=b"hostile")
    entry = await _dead_letter_of(events, REQUESTS.name, raw, what="the unreadable request dead-lettered")
    assert entry.kind in {"undecodable", "invalid"} and entry.consumer == "sendrail-router"
    await _still_delivers(producer, events, mail, services, dave)


async def test_a_huge_invalid_request_is_dead_lettered_truncated_not_crashing_the_router(
    producer: AIOKafkaProducer, events: EventLog, mail: MailSandbox, services: InProcessServices,
    dave: Account,
) -> None:
    raw = json.dumps({"tenant_id": dave.tenant_id, "text": "x" * 800_000}).encode()
    await producer.send_and_wait(REQUESTS.name, raw, key=b"huge")
    entry = await _dead_letter_of(events, REQUESTS.name, raw, what="the 800 KB request dead-lettered")
    assert entry.truncated and entry.original_bytes == len(raw)
    await _still_delivers(producer, events, mail, services, dave)


async def test_an_oversized_request_fails_before_anything_is_built(
    producer: AIOKafkaProducer, events: EventLog, mail: MailSandbox, services: InProcessServices,
    dave: Account,
) -> None:
    request = _request(dave, text="y" * 950_000)  # over the router's 900 KiB cap
    await producer.send_and_wait(REQUESTS.name, encode(request), key=b"large")
    failed = await final_event(events, request.send_id)
    assert failed.status is DeliveryStatus.FAILED and "at most" in (failed.reason or "")
    assert not [e for e in mail.received(dave.kind.value) if str(request.send_id).encode() in e.content]
    await _still_delivers(producer, events, mail, services, dave)


async def test_a_request_with_a_header_twice_in_different_case_is_dead_lettered(
    producer: AIOKafkaProducer, events: EventLog, mail: MailSandbox, services: InProcessServices,
    dave: Account,
) -> None:
    """Once it passed validation and raised while its message was built, ending the whole turn."""
    fields = _request(dave).model_dump(mode="json")
    fields["headers"] = {"orig-date": "Mon, 1 Dec 2026 10:00:00 +0000",
                         "Orig-Date": "Tue, 2 Dec 2026 10:00:00 +0000"}
    raw = json.dumps(fields).encode()
    await producer.send_and_wait(REQUESTS.name, raw, key=b"headers")
    entry = await _dead_letter_of(events, REQUESTS.name, raw, what="the request with a header twice")
    assert entry.kind == "invalid" and "orig-date" in entry.reason.lower()
    await _still_delivers(producer, events, mail, services, dave)


async def test_a_request_with_a_field_added_within_its_version_is_delivered(
    producer: AIOKafkaProducer, events: EventLog, mail: MailSandbox, dave: Account,
) -> None:
    fields = _request(dave).model_dump(mode="json") | {"priority": "high"}
    request = EmailRequested.model_validate(fields)
    await producer.send_and_wait(REQUESTS.name, json.dumps(fields).encode(), key=b"acme/dave")
    sent = await final_event(events, request.send_id)
    assert sent.status is DeliveryStatus.SENT, sent.reason


async def test_a_request_of_a_newer_schema_version_is_dead_lettered_with_that_reason(
    producer: AIOKafkaProducer, events: EventLog, mail: MailSandbox, services: InProcessServices,
    dave: Account,
) -> None:
    raw = json.dumps(_request(dave).model_dump(mode="json") | {"schema_version": 2}).encode()
    await producer.send_and_wait(REQUESTS.name, raw, key=b"v2")
    entry = await _dead_letter_of(events, REQUESTS.name, raw, what="the version 2 request dead-lettered")
    assert entry.kind == "newer_schema" and "schema_version 2" in entry.reason
    await _still_delivers(producer, events, mail, services, dave)


# --- the senders' topics ---------------------------------------------------------------------


async def test_a_routed_email_under_another_connections_key_is_dead_lettered_not_sent(
    producer: AIOKafkaProducer, events: EventLog, mail: MailSandbox, services: InProcessServices,
    dave: Account, accounts: Accounts, tenant: str,
) -> None:
    """Its key would put it in another connection's queue, sent with that connection's login."""
    other = await accounts.user(tenant, "olga", ChannelKind.CUSTOM_SMTP)
    request = _request(dave)
    routed = EmailRouted(send_id=request.send_id, channel=ChannelKind.CUSTOM_SMTP,
                         connection_id=dave.connection_id, request=request, routed_at=datetime.now(UTC))
    raw = encode(routed)
    await producer.send_and_wait(OUTBOUND_SMTP.name, raw, key=connection_key(tenant, other.connection_id))
    entry = await _dead_letter_of(events, OUTBOUND_SMTP.name, raw, what="the mismatched email dead-lettered")
    assert entry.kind == "mismatched" and entry.consumer == "sendrail-sender-smtp"
    assert not [e for e in mail.received("custom_smtp") if str(request.send_id).encode() in e.content]
    await _still_delivers(producer, events, mail, services, dave)


@pytest.mark.parametrize("topic", [OUTBOUND_SMTP, HELD], ids=lambda t: t.name)
async def test_garbage_on_a_senders_topic_is_dead_lettered(
    topic: Any, producer: AIOKafkaProducer, events: EventLog, mail: MailSandbox,
    services: InProcessServices, dave: Account,
) -> None:
    raw = b'{"send_id": "not a uuid", "garbage": "' + uuid.uuid4().hex.encode() + b'"}'
    await producer.send_and_wait(topic.name, raw, key=connection_key(dave.tenant_id, dave.connection_id))
    entry = await _dead_letter_of(events, topic.name, raw, what=f"garbage on {topic.name} dead-lettered")
    assert entry.kind == "invalid"
    await _still_delivers(producer, events, mail, services, dave)


# --- followed tables -------------------------------------------------------------------------


@pytest.mark.parametrize("topic", [REGISTRY, SUPPRESSION, WATCHER_CHECKPOINTS, THROTTLE_STATE,
                                   DELIVERY, BOUNCES], ids=lambda t: t.name)
async def test_a_bad_record_on_a_followed_topic_is_dead_lettered_and_services_go_on(
    topic: Any, producer: AIOKafkaProducer, events: EventLog, mail: MailSandbox,
    services: InProcessServices, dave: Account,
) -> None:
    """Records that are not valid UTF-8 in their key, or not a valid value, once killed the
    topic's followers, and on a compacted topic for good."""
    raw = b'{"record": "connection", "tenant_id": 42, "n": "' + uuid.uuid4().hex.encode() + b'"}'
    await producer.send_and_wait(topic.name, raw, key=b"\xff\xfe" + uuid.uuid4().bytes)
    entry = await _dead_letter_of(events, topic.name, raw, what=f"the bad {topic.name} record dead-lettered")
    assert entry.kind in {"undecodable", "invalid"}
    await _still_delivers(producer, events, mail, services, dave)


async def test_a_throttle_setting_no_sender_can_keep_is_dead_lettered_at_the_consumer(
    producer: AIOKafkaProducer, events: EventLog, mail: MailSandbox, services: InProcessServices,
    dave: Account,
) -> None:
    """The CLI refuses it too; a hand-written record must not reach the sending loop."""
    raw = json.dumps({"record": "throttle", "tenant_id": dave.tenant_id, "batch_size": 1,
                      "batch_wait_s": 0.0005, "updated_at": datetime.now(UTC).isoformat()}).encode()
    await producer.send_and_wait(REGISTRY.name, raw, key=f"throttle/{dave.tenant_id}/*".encode())
    entry = await _dead_letter_of(events, REGISTRY.name, raw, what="the sub-millisecond batch dead-lettered")
    assert "batch_wait_s" in entry.reason
    await _still_delivers(producer, events, mail, services, dave)


async def test_a_refused_registry_record_is_dead_lettered_once_by_each_consumer(
    producer: AIOKafkaProducer, events: EventLog, services: InProcessServices, mail: MailSandbox,
    dave: Account,
) -> None:
    raw = b"not json " + uuid.uuid4().hex.encode()
    await producer.send_and_wait(REGISTRY.name, raw, key=b"connection/x/y")

    def entries() -> list[RequestDeadLettered]:
        return [d for d in events.dead_letters
                if d.source_topic == REGISTRY.name and base64.b64decode(d.value_b64) == raw]

    await wait_until(lambda: any(e.consumer == "sendrail-router-registry" for e in entries()),
                     timeout_s=20, what="the router's registry follower to dead-letter the record")
    before = [e.consumer for e in entries()]
    await services.stop("router")
    await services.start("router")  # reads the compacted topic from its beginning again
    await _still_delivers(producer, events, mail, services, dave)
    assert [e.consumer for e in entries()].count("sendrail-router-registry") == 1
    assert sorted(before) == sorted(set(before))  # once per consumer, none twice


# --- repeated requests -----------------------------------------------------------------------


def _copies_received(mail: MailSandbox, send_id: uuid.UUID) -> int:
    return sum(1 for e in mail.received("custom_smtp") if str(send_id).encode() in e.content)


async def _duplicate_event(events: EventLog, send_id: uuid.UUID) -> Any:
    return await events.wait_for(
        events.delivery, lambda e: e.send_id == send_id and e.status is DeliveryStatus.DUPLICATE,
        what=f"the duplicate event of {send_id}")


async def test_a_request_published_again_after_it_was_sent_is_not_sent_again(
    producer: AIOKafkaProducer, events: EventLog, mail: MailSandbox, dave: Account,
) -> None:
    request = _request(dave)
    key = f"{dave.tenant_id}/{dave.user_id}".encode()
    await producer.send_and_wait(REQUESTS.name, encode(request), key=key)
    assert (await final_event(events, request.send_id)).status is DeliveryStatus.SENT
    await producer.send_and_wait(REQUESTS.name, encode(request), key=key)  # the upstream retry
    duplicate = await _duplicate_event(events, request.send_id)
    assert duplicate.duplicate_of and duplicate.duplicate_of.startswith(OUTBOUND_SMTP.name)
    assert "sent" in (duplicate.reason or "")
    assert _copies_received(mail, request.send_id) == 1


async def test_copies_published_together_are_sent_once(
    producer: AIOKafkaProducer, events: EventLog, mail: MailSandbox, dave: Account,
) -> None:
    request = _request(dave)
    key = f"{dave.tenant_id}/{dave.user_id}".encode()
    for _ in range(3):
        await producer.send(REQUESTS.name, encode(request), key=key)
    await producer.flush()
    await wait_until(lambda: sum(1 for e in events.delivery if e.send_id == request.send_id
                                 and e.status is DeliveryStatus.DUPLICATE) == 2,
                     timeout_s=20, what="two duplicate events")
    assert _copies_received(mail, request.send_id) == 1
    assert [e.status for e in events.delivery if e.send_id == request.send_id].count(DeliveryStatus.SENT) == 1


async def test_a_restarted_sender_still_knows_what_it_sent(
    producer: AIOKafkaProducer, events: EventLog, mail: MailSandbox, services: InProcessServices,
    dave: Account,
) -> None:
    """The table of finished send ids is recovered from its changelog, not kept in memory."""
    request = _request(dave)
    key = f"{dave.tenant_id}/{dave.user_id}".encode()
    await producer.send_and_wait(REQUESTS.name, encode(request), key=key)
    assert (await final_event(events, request.send_id)).status is DeliveryStatus.SENT
    await services.stop("sender-smtp")
    await services.start("sender-smtp")
    await producer.send_and_wait(REQUESTS.name, encode(request), key=key)
    await _duplicate_event(events, request.send_id)
    assert _copies_received(mail, request.send_id) == 1
