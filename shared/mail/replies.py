"""What an SMTP reply means for sendrail: retry, pause the mailbox, mark it broken, or fail.

Pure: a provider's table of known replies (PRODUCT.md section 3) is tried first, then
the generic meaning of the reply code (RFC 5321 §4.2.1, RFC 3463 for enhanced codes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sendrail.errors import (
    ConnectionBroken,
    DeliveryError,
    PermanentError,
    QuotaExceeded,
    TransientError,
)


class ReplyAction(StrEnum):
    RETRY = "retry"
    """Temporary: try again later with backoff."""
    PAUSE = "pause"
    """The mailbox hit a provider cap: hold its mail until the window frees room."""
    BROKEN = "broken"
    """Credentials refused or sending disabled: hold the mail until the user reconnects."""
    REJECT = "reject"
    """This message will not be accepted as it is: fail it, never retry."""


@dataclass(frozen=True)
class ReplyRule:
    code: int | None
    pattern: re.Pattern[str]
    action: ReplyAction
    meaning: str
    """What a person should know, in a sentence."""


def rule(code: int | None, pattern: str, action: ReplyAction, meaning: str) -> ReplyRule:
    """`pattern` is searched in the reply text (after the code); `^` anchors at the start of
    any of its lines, where an RFC 3463 enhanced code stands (RFC 2034 §3)."""
    return ReplyRule(code, re.compile(pattern, re.IGNORECASE | re.MULTILINE), action, meaning)


GENERIC_RULES: tuple[ReplyRule, ...] = (
    rule(530, r"", ReplyAction.BROKEN, "the server requires authentication it did not get"),
    rule(534, r"", ReplyAction.BROKEN, "the server wants a different authentication mechanism"),
    rule(535, r"", ReplyAction.BROKEN, "the server refused the credentials"),
    rule(454, r"^4\.7\.0\b", ReplyAction.RETRY, "authentication temporarily unavailable; backing off"),
    rule(452, r"^4\.5\.3\b|too many recipients", ReplyAction.REJECT,
         "the message has more recipients than the server accepts"),
    rule(552, r"", ReplyAction.REJECT, "the message exceeds the server's size or storage limit"),
)


def classify_reply(code: int, text: str, provider_rules: Sequence[ReplyRule] = ()) -> ReplyRule:
    """The first matching rule: the provider's own, then the generic ones, then the code class."""
    for candidate in (*provider_rules, *GENERIC_RULES):
        if (candidate.code is None or candidate.code == code) and candidate.pattern.search(text):
            return candidate
    if 400 <= code < 500:
        return ReplyRule(code, re.compile(""), ReplyAction.RETRY, "temporary failure")
    return ReplyRule(code, re.compile(""), ReplyAction.REJECT, "permanent failure")


_ERRORS: dict[ReplyAction, type[DeliveryError]] = {
    ReplyAction.RETRY: TransientError,
    ReplyAction.PAUSE: QuotaExceeded,
    ReplyAction.BROKEN: ConnectionBroken,
    ReplyAction.REJECT: PermanentError,
}


def error_for_reply(code: int, text: str, provider_rules: Sequence[ReplyRule] = ()) -> DeliveryError:
    matched = classify_reply(code, text, provider_rules)
    return _ERRORS[matched.action](matched.meaning, reply_code=code, reply_text=text)
