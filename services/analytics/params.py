"""The API's parameters checked one by one, each refusal naming the parameter and what it takes."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Final

from pydantic import TypeAdapter, ValidationError

from sendrail.events import ChannelKind
from sendrail.services.analytics.feed import FeedFilter
from sendrail.services.analytics.models import Dimension, FeedKind, Window
from sendrail.validation import Identifier

FEED_LIMIT_DEFAULT: Final = 50
FEED_LIMIT_MAX: Final = 500
MAX_IDENTITY_CHARS: Final = 320
"""RFC 5321 §4.5.3.1: a 64-character local part, '@' and a 255-character domain."""

_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)
IDENTIFIER_SCHEMA: Final = _IDENTIFIER.json_schema()
FEED_FILTERS: Final = ("campaign", "template", "user", "kind")


class BadParameter(ValueError):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message


def check_names(given: Sequence[str], accepted: Collection[str]) -> None:
    """Refuse a parameter the route does not take (a typo would otherwise be ignored silently)
    or one given twice; `given` lists every name in the query string, repeats included."""
    seen: set[str] = set()
    for name in given:
        if name not in accepted:
            names = ", ".join(sorted(accepted)) or "none"
            raise BadParameter(name, f"unknown parameter {name[:40]!r}; this route takes: {names}")
        if name in seen:
            raise BadParameter(name, f"parameter {name!r} given more than once")
        seen.add(name)


def identifier(parameter: str, value: str) -> str:
    """A tenant, campaign, template or user id, as send requests define them."""
    try:
        return _IDENTIFIER.validate_python(value)
    except ValidationError:
        raise BadParameter(parameter, f"{parameter} must be 1 to 128 letters, digits or ._:@- "
                                      f"starting with a letter or digit, not {value[:140]!r}") from None


def window(value: str | None, *, default: Window, allowed: Collection[Window] = tuple(Window)) -> Window:
    if value is None:
        return default
    if value not in {w.value for w in allowed}:
        choices = ", ".join(w.value for w in allowed)
        raise BadParameter("window", f"window must be one of {choices}, not {value[:40]!r}")
    return Window(value)


def dimension(value: str) -> Dimension:
    """The `by` parameter."""
    if value not in {d.value for d in Dimension}:
        choices = ", ".join(d.value for d in Dimension)
        raise BadParameter("by", f"by must be one of {choices}, not {value[:40]!r}")
    return Dimension(value)


def dimension_key(by: Dimension, value: str) -> str:
    """The `key` of a `by`: an identifier, an address for identities, a channel kind for channels."""
    if by is Dimension.CHANNEL:
        if value not in {c.value for c in ChannelKind}:
            choices = ", ".join(c.value for c in ChannelKind)
            raise BadParameter("key", f"a channel is one of {choices}, not {value[:40]!r}")
        return value
    if by is Dimension.IDENTITY:
        if not 0 < len(value) <= MAX_IDENTITY_CHARS or not value.isprintable() or " " in value:
            raise BadParameter("key", f"an identity is an address of at most {MAX_IDENTITY_CHARS} "
                                      "printable characters without spaces")
        return value
    return identifier("key", value)


def limit(value: str | None) -> int:
    if value is None:
        return FEED_LIMIT_DEFAULT
    if not value.isdigit() or not 1 <= int(value) <= FEED_LIMIT_MAX:
        raise BadParameter("limit", f"limit must be a whole number from 1 to {FEED_LIMIT_MAX}, "
                                    f"not {value[:40]!r}")
    return int(value)


def feed_filter(query: Mapping[str, str]) -> FeedFilter:
    """campaign, template, user and kind (one kind or several, comma-separated)."""
    kinds: frozenset[FeedKind] | None = None
    if "kind" in query:
        names = query["kind"].split(",")
        unknown = [n for n in names if n not in {k.value for k in FeedKind}]
        if unknown:
            choices = ", ".join(k.value for k in FeedKind)
            raise BadParameter("kind", f"kind must be one or more of {choices} (comma-separated), "
                                       f"not {unknown[0][:40]!r}")
        kinds = frozenset(FeedKind(n) for n in names)
    found = {name: identifier(name, query[name]) for name in ("campaign", "template", "user")
             if name in query}
    return FeedFilter(campaign=found.get("campaign"), template=found.get("template"),
                      user=found.get("user"), kinds=kinds)
