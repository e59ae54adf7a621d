"""The router's handling of one batch: validate, choose a route, publish the outcome."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from datetime import datetime

import structlog
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from prometheus_client import Counter
from pydantic import TypeAdapter, ValidationError

from sendrail.bus.codec import decode
from sendrail.bus.dead_letter import Unusable, dead_letter_key, stage_dead_letter, unusable_for
from sendrail.bus.publisher import Publisher
from sendrail.events import (
    DeliveryEvent,
    DeliveryStatus,
    EmailRequested,
    EmailRouted,
    IdempotencyKey,
    send_id_for,
)
from sendrail.metrics import requests_routed
from sendrail.registry.store import RegistryStore
from sendrail.services.router.rules import Refusal, Route, choose_route
from sendrail.suppression.store import SuppressionList
from sendrail.topics import DELIVERY, HELD, OUTBOUND_BY_CHANNEL, connection_key
from sendrail.validation import Identifier

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


def _identify(raw: bytes) -> tuple[str | None, uuid.UUID | None]:
    """The tenant and send id of a refused request, when its JSON still names them validly,
    so the upstream system can match the event to what it published. Whatever the JSON
    holds (a lone surrogate, a huge number, a list) yields None rather than an error."""
    try:
        fields = json.loads(raw)
        if not isinstance(fields, dict):
            return None, None
        tenant_id = _IDENTIFIER.validate_python(fields.get("tenant_id"))
        key = _IDEMPOTENCY_KEY.validate_python(fields.get("idempotency_key"))
    except (ValueError, RecursionError):  # ValidationError and JSONDecodeError are ValueErrors
        return None, None
    return tenant_id, send_id_for(tenant_id, key)


_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)
_IDEMPOTENCY_KEY: TypeAdapter[str] = TypeAdapter(IdempotencyKey)


def body_bytes(request: EmailRequested) -> int:
    """What the bodies alone take, before any transfer encoding (which only adds): a lower
    bound of the message's size, known before anything is built."""
    return sum(len(body.encode("utf-8", "surrogatepass")) for body in (request.text, request.html)
               if body is not None)


class Router:
    def __init__(self, registry: RegistryStore, suppression: SuppressionList, publisher: Publisher,
                 clock: Clock, *, max_request_bytes: int, consumer: str = "sendrail-router") -> None:
        self._registry = registry
        self._suppression = suppression
        self._publisher = publisher
        self._clock = clock
        self._max_request_bytes = max_request_bytes
        self._consumer = consumer

    async def handle_batch(self, batch: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Each request is decided without waiting on the bus: its events are staged on the
        publisher, which the worker sends and confirms once for the whole batch. No request
        can stop the batch: one that cannot be handled is dead-lettered and the next goes on."""
        for record in batch:
            try:
                request = self._request(record)
                if request is not None and not self._decide(request, registry_fresh=False):
                    # The registry may lag a change written a moment ago: catch up once, then decide.
                    await self._registry.refresh()
                    self._decide(request, registry_fresh=True)
            except (TimeoutError, KafkaError):
                raise  # the bus, not the request: the router starts again from its offsets
            except Exception as error:  # confined to this record, kept with its reason
                log.exception("request handling failed", topic=record.topic, offset=record.offset)
                self._dead_letter(record, unusable_for(record.value, error))

    def _request(self, record: ConsumerRecord[bytes, bytes]) -> EmailRequested | None:
        """The request, or None when it was refused (too large, or not a valid request)."""
        raw = record.value or b""
        if len(raw) > self._max_request_bytes:
            tenant_id, send_id = _identify(raw)
            self._publisher.stage(DELIVERY, DeliveryEvent(
                status=DeliveryStatus.FAILED, send_id=send_id, tenant_id=tenant_id,
                reason=f"the request is {len(raw)} bytes; sendrail takes at most "
                       f"{self._max_request_bytes} (SENDRAIL_ROUTER_MAX_REQUEST_BYTES)",
                occurred_at=self._clock()), key=_delivery_key(send_id, record))
            _requests_counter("none", "failed").inc()
            return None
        try:
            return decode(EmailRequested, raw)
        except ValidationError as error:
            self._dead_letter(record, unusable_for(raw, error), prefix="invalid send request: ")
            return None

    def _decide(self, request: EmailRequested, *, registry_fresh: bool) -> bool:
        """False when the request would be refused and the registry may not be current yet;
        nothing is published then."""
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
            return True
        limit = decision.connection.max_message_bytes
        if limit is not None and (size := body_bytes(request)) > limit:
            self._refuse(request, Refusal(
                f"the bodies alone are {size} bytes and connection {decision.connection.connection_id} "
                f"accepts messages of at most {limit}; nothing was sent"))
            return True
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
            topic = OUTBOUND_BY_CHANNEL[connection.kind]
            event = DeliveryEvent.for_routed(routed, DeliveryStatus.QUEUED, now)
            outcome = "routed"
        else:
            topic = HELD
            event = DeliveryEvent.for_routed(
                routed, DeliveryStatus.DEFERRED, now,
                reason=f"held until the user reconnects {connection.connection_id}: {route.held_reason}",
            )
            outcome = "held"
        # Both built before either is staged: a failure leaves nothing half published.
        self._publisher.stage(topic, routed, key=key)
        self._publisher.stage(DELIVERY, event, key=str(routed.send_id).encode())
        _requests_counter(connection.kind.value, outcome).inc()

    def _refuse(self, request: EmailRequested, refusal: Refusal,
                status: DeliveryStatus = DeliveryStatus.FAILED) -> None:
        event = DeliveryEvent(
            status=status, send_id=request.send_id, tenant_id=request.tenant_id,
            user_id=request.user_id, identity=request.identity, campaign_id=request.campaign_id,
            template_id=request.template_id, recipients=request.recipients,
            reason=refusal.reason, occurred_at=self._clock(),
        )
        self._publisher.stage(DELIVERY, event, key=str(request.send_id).encode())
        _requests_counter("none", status.value).inc()
        log.info("request refused", send_id=str(request.send_id), tenant=request.tenant_id,
                 reason=refusal.reason)

    def _dead_letter(self, record: ConsumerRecord[bytes, bytes], unusable: Unusable,
                     *, prefix: str = "") -> None:
        """The dead-letter entry, and a `dead_lettered` delivery event the upstream system can
        match to its request when the request still names its tenant and key."""
        now = self._clock()
        unusable = Unusable(unusable.kind, prefix + unusable.reason)
        stage_dead_letter(self._publisher, record, unusable, consumer=self._consumer, now=now)
        tenant_id, send_id = _identify(record.value or b"")
        event = DeliveryEvent(status=DeliveryStatus.DEAD_LETTERED, send_id=send_id,
                              tenant_id=tenant_id, reason=unusable.reason[:2_000], occurred_at=now)
        self._publisher.stage(DELIVERY, event, key=_delivery_key(send_id, record))
        _requests_counter("none", "dead_lettered").inc()


@functools.cache
def _requests_counter(channel: str, outcome: str) -> Counter:
    """The counter's child for a channel and outcome, looked up once (both are enum values)."""
    return requests_routed.labels(channel, outcome)


def _delivery_key(send_id: uuid.UUID | None, record: ConsumerRecord[bytes, bytes]) -> bytes:
    """Delivery events are keyed by send id; a request without one keeps its position's key."""
    return str(send_id).encode() if send_id is not None else dead_letter_key(record)
