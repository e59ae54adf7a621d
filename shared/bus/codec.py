"""Events to bytes and back: JSON as the models define it, validated on the way in."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, TypeAdapter

from sendrail.events import AnalyticsEvent, RegistryRecord

M = TypeVar("M", bound=BaseModel)

_REGISTRY_ADAPTER: TypeAdapter[RegistryRecord] = TypeAdapter(RegistryRecord)
_ANALYTICS_ADAPTER: TypeAdapter[AnalyticsEvent] = TypeAdapter(AnalyticsEvent)


def encode(event: BaseModel) -> bytes:
    return event.model_dump_json(exclude_none=False).encode()


def decode(model: type[M], raw: bytes) -> M:
    """Raises pydantic.ValidationError (a ValueError) on anything that is not a valid `model`."""
    return model.model_validate_json(raw)


def decode_registry(raw: bytes) -> RegistryRecord:
    return _REGISTRY_ADAPTER.validate_json(raw)


def decode_analytics(raw: bytes) -> AnalyticsEvent:
    return _ANALYTICS_ADAPTER.validate_json(raw)
