"""Parsing in the pool gives what parsing in place gives, and a dead worker is replaced."""

from __future__ import annotations

import os
import signal

import pytest

from sendrail.bounces import parse_notice
from sendrail.services.bounce_watcher.parsing import NoticeParser
from support.notices import gmail_plain_notice

NOTICES = [gmail_plain_notice("ann@acme.example", "lee@customer.example", in_reply_to="<a@acme.example>"),
           b"", b"\x00" * 100, b"Subject: hi\r\n\r\nhello"]


async def test_the_pool_parses_as_the_parser_does() -> None:
    parser = NoticeParser(2)
    try:
        assert [await parser.parse(raw) for raw in NOTICES] == [parse_notice(raw) for raw in NOTICES]
    finally:
        await parser.close()


async def test_a_worker_that_dies_is_replaced() -> None:
    parser = NoticeParser(1)
    try:
        await parser.parse(NOTICES[0])
        pool = parser._pool
        assert pool is not None
        for pid in list(pool._processes):  # what the kernel's OOM killer would do
            os.kill(pid, signal.SIGKILL)
        assert await parser.parse(NOTICES[0]) == parse_notice(NOTICES[0])
        assert parser._pool is not pool
    finally:
        await parser.close()


def test_at_least_one_process() -> None:
    with pytest.raises(ValueError):
        NoticeParser(0)
