"""Running the `sendrail` command as a person would, against the test broker."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from sendrail.settings import Settings
from support.services import environment


async def sendrail(settings: Settings, cwd: Path, *args: str) -> str:
    """The command's output; fails the test if it exits with an error."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sendrail.cli", *args, cwd=cwd,
        env={**os.environ, **environment(settings)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    return output.decode()
