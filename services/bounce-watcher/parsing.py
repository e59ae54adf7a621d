"""Parsing fetched messages off the event loop, in a small pool of processes.

All mailboxes share one event loop, and anyone can mail a user a message that is slow
to read: measured here, a 575 KB plain-text notice in Gmail's wording took 3 s of CPU
in `parse_notice` (corpus bounces: 0.8 ms median, 3 ms at most). Parsed on the loop, it
froze every other mailbox and the Kafka clients for those 3 s. `asyncio.to_thread` does
not help much: the parse is pure Python and holds the GIL, so the loop only gets it back
at each switch interval; with the same message in a thread, the loop's 5 ms timer ran up
to 48 ms late and another mailbox's 300 ordinary bounces took 1.7 s instead of 0.3 s. In
a pool of two processes the loop stayed within 7 ms and those 300 bounces took 1.2 s
(the slow message held one worker, the other served the rest), at about 0.5 ms of
transfer per message (1.25 ms against 0.74 ms parsed in place): nothing next to IMAP.

The pool is bounded (`SENDRAIL_WATCHER_PARSE_PROCESSES`), so hostile mail costs at most
that many cores. Workers are forked from a forkserver that has imported the parser, never
from this process, whose threads (the Kafka clients') make `fork` unsafe. As with every
non-fork start method, a worker imports the parent's main module under another name: the
`sendrail` script guards its entry point, and `python -m sendrail.cli` is a package's
`__main__`, which multiprocessing does not import. A worker that dies (out of memory)
breaks the pool; it is replaced, and the message is tried once more before it counts as
failed.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import structlog

from sendrail.bounces.notice import Notice
from sendrail.bounces.parser import parse_notice

log = structlog.get_logger(__name__)


class NoticeParser:
    def __init__(self, processes: int) -> None:
        if processes < 1:
            raise ValueError("the parser needs at least one process")
        self._processes = processes
        self._pool: ProcessPoolExecutor | None = None

    async def parse(self, raw: bytes) -> Notice:
        for attempt in (1, 2):
            pool = self._pool_now()
            try:
                return await asyncio.get_running_loop().run_in_executor(pool, parse_notice, raw)
            except BrokenProcessPool:
                log.warning("parser process died; starting a new pool", attempt=attempt)
                self._replace(pool)
        raise RuntimeError("the parser process died twice on this message")

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    def _pool_now(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["sendrail.bounces.parser"])
            self._pool = ProcessPoolExecutor(max_workers=self._processes, mp_context=context)
        return self._pool

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:
            self._pool = None
            broken.shutdown(wait=False, cancel_futures=True)
