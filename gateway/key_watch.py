"""Each server looks at its key files every CHECK_INTERVAL and reloads what changed: a step of a key rotation reaches
every process sharing the key folder, signalled or not, and the next step may rely on that SETTLE after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

CHECK_INTERVAL = 10.0
# What a rotation step waits after the one before (encryption_keys, key_rotation): a few checks, so a process busy
# for a moment has looked too.
SETTLE = 3 * CHECK_INTERVAL

Stamp = tuple[tuple[int, int, int] | None, ...]


def stamp(paths: Sequence[Path]) -> Stamp:
    """What changes when a file is written, replaced (renamed over), created or deleted; None for a missing one."""
    found: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            found.append(None)
        else:
            found.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(found)


class Watched:
    """Files and what loads them again: `check` calls it when they changed since the last look."""

    def __init__(self, paths: Sequence[Path], reload: Callable[[], object]) -> None:
        self.paths = tuple(paths)
        self.reload = reload
        self.seen = stamp(self.paths)

    def check(self) -> None:
        now = stamp(self.paths)
        if now != self.seen:
            self.seen = now
            self.reload()


async def watch(watched: Sequence[Watched]) -> None:
    """Until cancelled (the server stops)."""
    while True:
        await asyncio.sleep(CHECK_INTERVAL)
        for files in watched:
            files.check()
