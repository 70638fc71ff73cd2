"""Each server looks at its key files every CHECK_INTERVAL, reloads what changed and reports what it holds
(key_holders.py): a step of a key rotation reaches every process sharing the key folder, signalled or not, and
the next step checks that every process that reported lately holds what it needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from gateway.store.base import KeyHolder, Store

CHECK_INTERVAL = 10.0
# What a rotation step waits after the one before (encryption_keys, key_rotation): a few checks, so a process busy
# for a moment has looked too.
SETTLE = 3 * CHECK_INTERVAL
# Reports older than this are of processes gone without a word (killed): pruned when a step looks.
FORGOTTEN_AFTER = timedelta(days=1)

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


async def watch(watched: Sequence[Watched], report: Callable[[], Awaitable[None]]) -> None:
    """Until cancelled (the server stops); after each look, `report` says what this process holds now."""
    while True:
        await asyncio.sleep(CHECK_INTERVAL)
        for files in watched:
            files.check()
        await report()


async def recent(store: Store, now: datetime) -> list[KeyHolder]:
    """The processes that reported within SETTLE (each reports every CHECK_INTERVAL): the ones running now."""
    await store.delete_stale_key_holders(now - FORGOTTEN_AFTER)
    return await store.list_key_holders(now - timedelta(seconds=SETTLE))


def lagging(holders: Sequence[KeyHolder], needs: Callable[[KeyHolder], bool], now: datetime, what: str) -> str | None:
    """Why a step cannot go ahead yet (the processes that lack what it needs), or None."""
    behind = [h for h in holders if not needs(h)]
    if not behind:
        return None
    named = ", ".join(
        f"{host} pid {pid} (reported {int((now - h.seen_at).total_seconds())} s ago)"
        for h in behind[:10]
        for host, pid, _ in [h.process.rsplit(":", 2)]
    )
    more = f" and {len(behind) - 10} more" if len(behind) > 10 else ""
    return (
        f"{len(behind)} of {len(holders)} running gateway processes {what}: {named}{more}. A process that cannot read"
        " the key files (their owner and mode, a replica with its own copy of them) says why in its log"
    )
