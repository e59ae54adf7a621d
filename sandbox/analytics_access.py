"""Analytics tokens for the local stack and the demo: made at their start, revoked at their end.

The same records `sendrail analytics token create` and `revoke` write; a stack's token dies
with the stack, so tokens of past runs never pile up open in the kept broker data.
"""

from __future__ import annotations

from sendrail import analytics_tokens
from sendrail.analytics_tokens import IssuedToken
from sendrail.bus.clients import make_producer
from sendrail.clock import system_clock
from sendrail.events import AnalyticsTokenIssued
from sendrail.registry.store import publish_record
from sendrail.settings import KafkaSettings

SAMPLE_TENANT = "acme"


async def _publish(kafka: KafkaSettings, record: AnalyticsTokenIssued) -> None:
    producer = make_producer(kafka, client_id="sendrail-local")
    await producer.start()
    try:
        await publish_record(producer, record)
    finally:
        await producer.stop()


async def issue_token(kafka: KafkaSettings, tenant_id: str = SAMPLE_TENANT) -> IssuedToken:
    issued = analytics_tokens.issue(tenant_id, system_clock())
    await _publish(kafka, issued.record)
    return issued


async def revoke_token(kafka: KafkaSettings, issued: IssuedToken) -> None:
    await _publish(kafka, analytics_tokens.revoked(issued.record, system_clock()))
