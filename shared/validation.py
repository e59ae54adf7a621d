"""Field types that keep hostile input off the wire: addresses, header names and values, ids.

Every value that ends up in an SMTP command or a message header passes through
here, so a CR or LF can never smuggle in a header or a command (RFC 5321 §2.3.8,
RFC 5322 §2.2).
"""

from __future__ import annotations

import functools
import re
from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import (
    CASE_INSENSITIVE_MAILBOX_NAMES,
    DOT_ATOM_TEXT,
    EMAIL_MAX_LENGTH,
)
from pydantic import AfterValidator, Field, StringConstraints

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")  # RFC 5322 §2.2: printable US-ASCII except ':'
_LINE_BREAKS = re.compile("[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029\x00]")
"""Every character Python (and some mail software) treats as a line end, and NUL."""

MAX_HEADER_VALUE_CHARS = 998
"""RFC 5322 §2.1.1: a line is at most 998 characters."""

RESERVED_HEADERS = frozenset(
    {
        "from", "sender", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id",
        "mime-version", "content-type", "content-transfer-encoding", "return-path",
        "received", "dkim-signature",
    }
)
"""Set by sendrail from the request's own fields; an extra header may not override them."""

AT_MOST_ONCE_HEADERS = frozenset(
    {
        "date", "orig-date", "from", "sender", "reply-to", "to", "cc", "bcc", "message-id",
        "in-reply-to", "references", "subject",
    }
)
"""RFC 5322 §3.6: fields a message may carry at most once. `orig-date` is the grammar's name
for Date:, and the email package also holds a field of that name to one occurrence."""

MAX_EXTRA_HEADERS = 100
MAX_EXTRA_HEADERS_BYTES = 32 * 1024
"""Bounds on a request's extra headers, counted as written (`Name: value` and CRLF, UTF-8).
Upstream systems add a handful (threading, List-Unsubscribe, campaign tags): the bounds leave
them ample room, and keep small what one request adds to the header section that every
receiving server reads whole."""


def normalize_address(value: str) -> str:
    """An addr-spec checked for syntax (no DNS look-up), domain lowercased."""
    if _LINE_BREAKS.search(value):
        raise ValueError("address contains a line break or NUL")
    return _plain_address(value) or _checked_address(value)


_CASE_INSENSITIVE_LOCAL_PARTS = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


def _plain_address(value: str) -> str | None:
    """The common case at a fraction of the cost, or None to check the address in full.

    An ASCII dot-atom local part (RFC 5322 §3.4.1) is valid as it is, and the domain's
    verdict does not depend on the local part, so a domain is checked once and
    remembered. The result is exactly what the full check returns; anything else
    (quotes, display names, IDNA, lengths near the limit, a domain that fails) goes
    through the full check and gets its own error.
    """
    local, at, domain = value.partition("@")
    if not at or not value.isascii() or not DOT_ATOM_TEXT.match(local):
        return None
    ascii_domain = _plain_domain(domain)
    if ascii_domain is None or len(local) + 1 + max(len(domain), len(ascii_domain)) > EMAIL_MAX_LENGTH:
        return None
    if local.lower() in _CASE_INSENSITIVE_LOCAL_PARTS:
        local = local.lower()
    return f"{local}@{ascii_domain.lower()}"


@functools.lru_cache(maxsize=4096)
def _plain_domain(domain: str) -> str | None:
    """The domain's ASCII form when it is valid and needs no IDNA conversion, else None."""
    try:
        checked = validate_email(f"a@{domain}", check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    return checked.ascii_domain if checked.domain == checked.ascii_domain else None


def _checked_address(value: str) -> str:
    try:
        # No SMTPUTF8 (RFC 6531) yet: local parts are ASCII, domains go out in their
        # ASCII (IDNA) form, which every server accepts.
        checked = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as error:
        raise ValueError(f"invalid address {value!r}: {error}") from None
    return f"{checked.local_part}@{checked.ascii_domain.lower()}"


def check_header_value(value: str) -> str:
    if _LINE_BREAKS.search(value):
        raise ValueError("header value contains a line break or NUL")
    if len(value) > MAX_HEADER_VALUE_CHARS:
        raise ValueError(f"header value longer than {MAX_HEADER_VALUE_CHARS} characters")
    return value


def check_header_name(value: str) -> str:
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError(f"invalid header name {value!r}")
    if value.lower() in RESERVED_HEADERS or value.lower().startswith("x-sendrail-"):
        raise ValueError(f"header {value!r} is set by sendrail and cannot be overridden")
    return value


def check_extra_headers(headers: dict[str, str]) -> dict[str, str]:
    """Names checked as a set: RFC 5322 field names are case-insensitive (§1.2.2: its
    literal strings are; §2.2: a field name), so `X-Tag` and `x-tag` are one field twice."""
    if not headers:
        return headers
    if len(headers) > MAX_EXTRA_HEADERS:
        raise ValueError(f"{len(headers):,} extra headers; at most {MAX_EXTRA_HEADERS} are allowed")
    seen: dict[str, str] = {}
    total_bytes = 0
    for name, value in headers.items():
        folded = name.lower()
        if folded in seen:
            if folded in AT_MOST_ONCE_HEADERS:
                raise ValueError(f"headers {seen[folded]!r} and {name!r}: a message carries "
                                 f"{seen[folded]} at most once (RFC 5322 §3.6)")
            raise ValueError(f"headers {seen[folded]!r} and {name!r} are the same field: header "
                             "names are case-insensitive (RFC 5322 §1.2.2)")
        seen[folded] = name
        total_bytes += len(name) + len(value.encode("utf-8", "surrogatepass")) + 4  # ": ", CRLF
    if total_bytes > MAX_EXTRA_HEADERS_BYTES:
        raise ValueError(f"the extra headers take {total_bytes:,} bytes; at most "
                         f"{MAX_EXTRA_HEADERS_BYTES:,} (32 KiB) are allowed")
    return headers


EmailAddress = Annotated[str, AfterValidator(normalize_address)]
HeaderValue = Annotated[str, AfterValidator(check_header_value)]
HeaderName = Annotated[str, AfterValidator(check_header_name)]
ExtraHeaders = Annotated[
    dict[HeaderName, HeaderValue],
    Field(json_schema_extra={"maxProperties": MAX_EXTRA_HEADERS}),
    AfterValidator(check_extra_headers),
]
"""A request's own headers: at most MAX_EXTRA_HEADERS of them, MAX_EXTRA_HEADERS_BYTES in all."""
Identifier = Annotated[str, StringConstraints(pattern=_ID_PATTERN)]
_IDENTIFIER = re.compile(_ID_PATTERN)


def is_identifier(text: str) -> bool:
    """True if `text` is a valid tenant, user or connection id."""
    return _IDENTIFIER.fullmatch(text) is not None
"""Tenant, user, connection, campaign and template ids: short, printable, no spaces."""
