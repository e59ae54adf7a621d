"""A directory of local state that belongs to one process, and the removal of dead ones'.

Local state is a cache of the changelog, rebuilt whenever a partition is assigned to a
new process; what a process leaves behind is never reused. Each process takes its own
directory and holds an exclusive lock on a file in it while it lives, so replicas on
one host never share a RocksDB (RocksDB allows one writer per database). The lock is
`flock(2)`: the kernel releases it when the process dies, however it dies, so a
directory whose lock can be taken belongs to no live process and may be removed. Only
directories with sendrail's name pattern are ever removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import IO

import structlog

log = structlog.get_logger(__name__)

LOCK_FILE = "owner.lock"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.pid\d+\.[0-9a-f]{8}$")
_CREATING = re.compile(r"^[A-Za-z0-9_.-]+\.pid\d+\.[0-9a-f]{8}\.new$")
"""A directory gets its name only once its lock is held: no directory with that name is
ever unlocked while its process lives."""
CREATING_GRACE_S = 600.0
"""A directory still being created is removed only when it is older than this (its
process died in the instant between creating and naming it)."""


class ProcessStateDir:
    """`claim()` creates the directory and locks it; `release()` removes it."""

    def __init__(self, root: Path, name: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"a state directory name takes letters, digits, '.', '_' and '-': {name!r}")
        self.root = root
        self.name = name
        self._path: Path | None = None
        self._lock: IO[bytes] | None = None

    @property
    def path(self) -> Path:
        if self._path is None:
            raise RuntimeError("the state directory is not claimed")
        return self._path

    def claim(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        remove_dead(self.root)
        path = self.root / f"{self.name}.pid{os.getpid()}.{secrets.token_hex(4)}"
        creating = path.with_name(f"{path.name}.new")
        creating.mkdir()
        lock = (creating / LOCK_FILE).open("wb")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        creating.rename(path)
        self._path, self._lock = path, lock
        return path

    def release(self) -> None:
        path, lock, self._path, self._lock = self._path, self._lock, None, None
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
        if lock is not None:
            lock.close()  # after the removal: nobody else removes it while we do


def remove_dead(root: Path, *, now_s: float | None = None) -> list[Path]:
    """Removes the directories under `root` that no live process holds; returns them."""
    removed: list[Path] = []
    now_s = time.time() if now_s is None else now_s
    for path in sorted(root.iterdir()):
        if not path.is_dir() or path.is_symlink():
            continue
        if _CREATING.match(path.name):
            with contextlib.suppress(FileNotFoundError):
                if now_s - path.stat().st_mtime > CREATING_GRACE_S:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
            continue
        if not _NAME.match(path.name):
            continue
        try:
            lock = (path / LOCK_FILE).open("rb")
        except FileNotFoundError:
            continue  # removed meanwhile, or not one of ours
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live process holds it
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        log.info("state of dead processes removed", root=str(root), directories=len(removed))
    return removed
