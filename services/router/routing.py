"""The router's handling of one batch: validate, choose a route, publish the outcome."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import datetime

import structlog
from aiokafka import ConsumerRecord
from pydantic import ValidationError

from sendrail.bus.codec import decode
from sendrail.bus.publisher import Publisher
from sendrail.events import (
    DeliveryEvent,
    DeliveryStatus,
    EmailRequested,
    EmailRouted,
    RequestDeadLettered,
    send_id_for,
)
from sendrail.metrics import requests_routed
from sendrail.registry.store import RegistryStore
from sendrail.services.router.rules import Refusal, Route, choose_route
from sendrail.suppression.store import SuppressionList
from sendrail.topics import DEAD_LETTER, DELIVERY, HELD, OUTBOUND_BY_CHANNEL, connection_key

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


def _describe(error: ValidationError) -> str:
    first = error.errors()[:3]
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'message'}: "
             f"{e['msg'].removeprefix('Value error, ')}" for e in first]
    more = error.error_count() - len(first)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _identify(raw: bytes) -> tuple[str | None, uuid.UUID | None]:
    """The tenant and send id of a malformed request, when its JSON still names them, so
    the upstream system can match the dead-lettered event to what it published."""
    try:
        fields = json.loads(raw)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(fields, dict):
        return None, None
    tenant_id, key = fields.get("tenant_id"), fields.get("idempotency_key")
    if not isinstance(tenant_id, str) or not isinstance(key, str):
        return None, None
    return tenant_id[:128], send_id_for(tenant_id, key)


class Router:
    def __init__(self, registry: RegistryStore, suppression: SuppressionList, publisher: Publisher,
                 clock: Clock) -> None:
        self._registry = registry
        self._suppression = suppression
        self._publisher = publisher
        self._clock = clock

    async def handle_batch(self, batch: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Each request is decided without waiting on the bus: its events are staged on the
        publisher, which the worker sends and confirms once for the whole batch."""
        for record in batch:
            if not self._handle(record, registry_fresh=False):
                # The registry may lag a change written a moment ago: catch up once, then decide.
                await self._registry.refresh()
                self._handle(record, registry_fresh=True)

    def _handle(self, record: ConsumerRecord[bytes, bytes], *, registry_fresh: bool) -> bool:
        """False when the request would be refused and the registry may not be current yet;
        nothing is published then."""
        try:
            request = decode(EmailRequested, record.value or b"")
        except ValidationError as error:
            self._dead_letter(record, f"invalid send request: {_describe(error)}")
            return True
        suppressed = self._suppression.suppressed(request.tenant_id, request.recipients)
        if suppressed:
            self._refuse(request, Refusal(
                "suppressed recipients: " + "; ".join(f"{s.address} ({s.reason})" for s in suppressed)
                + ". Remove them from the request, or lift the suppression with "
                  "`sendrail suppression remove`"), DeliveryStatus.SUPPRESSED)
            return True
        decision = choose_route(request, self._registry.view)
        if isinstance(decision, Refusal):
            if not registry_fresh:
                return False
            self._refuse(request, decision)
        else:
            self._route(request, decision)
        return True

    def _route(self, request: EmailRequested, route: Route) -> None:
        now = self._clock()
        connection = route.connection
        routed = EmailRouted(
            send_id=request.send_id, channel=connection.kind,
            connection_id=connection.connection_id, request=request, routed_at=now,
        )
        key = connection_key(request.tenant_id, connection.connection_id)
        if route.held_reason is None:
            self._publisher.stage(OUTBOUND_BY_CHANNEL[connection.kind], routed, key=key)
            event = DeliveryEvent.for_routed(routed, DeliveryStatus.QUEUED, now)
            outcome = "routed"
        else:
            self._publisher.stage(HELD, routed, key=key)
            event = DeliveryEvent.for_routed(
                routed, DeliveryStatus.DEFERRED, now,
                reason=f"held until the user reconnects {connection.connection_id}: {route.held_reason}",
            )
            outcome = "held"
        self._publisher.stage(DELIVERY, event, key=str(routed.send_id).encode())
        requests_routed.labels(connection.kind.value, outcome).inc()

    def _refuse(self, request: EmailRequested, refusal: Refusal,
                status: DeliveryStatus = DeliveryStatus.FAILED) -> None:
        event = DeliveryEvent(
            status=status, send_id=request.send_id, tenant_id=request.tenant_id,
            user_id=request.user_id, identity=request.identity, campaign_id=request.campaign_id,
            template_id=request.template_id, recipients=request.recipients,
            reason=refusal.reason, occurred_at=self._clock(),
        )
        self._publisher.stage(DELIVERY, event, key=str(request.send_id).encode())
        requests_routed.labels("none", status.value).inc()
        log.info("request refused", send_id=str(request.send_id), tenant=request.tenant_id,
                 reason=refusal.reason)

    def _dead_letter(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        now = self._clock()
        letter = RequestDeadLettered(
            source_topic=record.topic, partition=record.partition, offset=record.offset,
            key_b64=base64.b64encode(record.key).decode() if record.key is not None else None,
            value_b64=base64.b64encode(record.value or b"").decode(),
            reason=reason, occurred_at=now,
        )
        self._publisher.stage(DEAD_LETTER, letter, key=record.key)
        tenant_id, send_id = _identify(record.value or b"")
        event = DeliveryEvent(status=DeliveryStatus.DEAD_LETTERED, send_id=send_id,
                              tenant_id=tenant_id, reason=reason, occurred_at=now)
        self._publisher.stage(DELIVERY, event, key=record.key)
        requests_routed.labels("none", "dead_lettered").inc()
        log.warning("request dead-lettered", topic=record.topic, partition=record.partition,
                    offset=record.offset, reason=reason)
