"""Bounces: reading the notices found in a sender's inbox (pure: bytes in, a Notice out)."""

from sendrail.bounces.notice import FailedRecipient, Notice, NoticeKind, OriginalMessage
from sendrail.bounces.parser import parse_notice
from sendrail.bounces.reasons import HARD_REASONS, Reason, classify, is_hard

__all__ = [
    "HARD_REASONS",
    "FailedRecipient",
    "Notice",
    "NoticeKind",
    "OriginalMessage",
    "Reason",
    "classify",
    "is_hard",
    "parse_notice",
]
