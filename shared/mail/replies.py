"""What an SMTP reply means for sendrail: retry, pause the mailbox, mark it broken, or fail.

Pure: a provider's table of known replies (PRODUCT.md section 3) is tried first, then
the generic meaning of the reply code (RFC 5321 §4.2.1, RFC 3463 for enhanced codes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sendrail.delivery.outcome import Outcome, OutcomeKind


@dataclass(frozen=True)
class ReplyRule:
    code: int | None
    pattern: re.Pattern[str]
    action: OutcomeKind
    meaning: str
    """What a person should know, in a sentence."""


def rule(code: int | None, pattern: str, action: OutcomeKind, meaning: str) -> ReplyRule:
    """`pattern` is searched in the reply text (after the code); `^` anchors at the start of
    any of its lines, where an RFC 3463 enhanced code stands (RFC 2034 §3)."""
    return ReplyRule(code, re.compile(pattern, re.IGNORECASE | re.MULTILINE), action, meaning)


GENERIC_RULES: tuple[ReplyRule, ...] = (
    rule(530, r"", OutcomeKind.BROKEN, "the server requires authentication it did not get"),
    rule(534, r"", OutcomeKind.BROKEN, "the server wants a different authentication mechanism"),
    rule(535, r"", OutcomeKind.BROKEN, "the server refused the credentials"),
    rule(454, r"^4\.7\.0\b", OutcomeKind.RETRY, "authentication temporarily unavailable; backing off"),
    rule(452, r"^4\.5\.3\b|too many recipients", OutcomeKind.FAILED,
         "the message has more recipients than the server accepts"),
    rule(552, r"", OutcomeKind.FAILED, "the message exceeds the server's size or storage limit"),
)


def classify_reply(code: int, text: str, provider_rules: Sequence[ReplyRule] = ()) -> ReplyRule:
    """The first matching rule: the provider's own, then the generic ones, then the code class."""
    for candidate in (*provider_rules, *GENERIC_RULES):
        if (candidate.code is None or candidate.code == code) and candidate.pattern.search(text):
            return candidate
    if 400 <= code < 500:
        return ReplyRule(code, re.compile(""), OutcomeKind.RETRY, "temporary failure")
    return ReplyRule(code, re.compile(""), OutcomeKind.FAILED, "permanent failure")


def outcome_for_reply(code: int, text: str, provider_rules: Sequence[ReplyRule] = ()) -> Outcome:
    """A refusing reply as the loop sees it: the rule's meaning, with the server's words."""
    matched = classify_reply(code, text, provider_rules)
    return Outcome(matched.action, matched.meaning, reply_code=code, reply_text=text)
