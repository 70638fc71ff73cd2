"""Each server looks at its key files every CHECK_INTERVAL, reloads what changed and reports what it holds
(key_holders.py): a step of a key rotation reaches every process sharing the key folder, signalled or not, and
the next step checks that every process that reported lately holds what it needs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from gateway.file_stamps import stamp
from gateway.store.base import KeyHolder, Store

log = logging.getLogger("gateway.keys")

CHECK_INTERVAL = 10.0
# What a rotation step waits after the one before (encryption_keys, key_rotation): a few checks, so a process busy
# for a moment has looked too; a process whose last report is older is taken for stopped.
SETTLE = 3 * CHECK_INTERVAL
# Reports older than this (seconds) are of processes gone without a word (killed): pruned as a process starts.
FORGOTTEN_AFTER = 24 * 3600.0


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
    """Until cancelled (the server stops); after each look, `report` says what this process holds now. Whatever one
    look meets is logged and the next one comes: a process that stopped looking would hold a rotation back, or be
    left behind by it, without a word."""
    while True:
        await asyncio.sleep(CHECK_INTERVAL)
        try:
            for files in watched:
                files.check()
            await report()
        except Exception:
            log.exception("key files not checked this time")


async def recent(store: Store) -> list[KeyHolder]:
    """The processes that reported within SETTLE (each reports every CHECK_INTERVAL): the ones running now."""
    return await store.list_key_holders(SETTLE)


async def quiet(store: Store) -> list[KeyHolder]:
    """The processes that reported within FORGOTTEN_AFTER but not within SETTLE: killed, or unable to reach the
    database. Not waited for: `show` names them, so that a replica gone quiet while it serves is noticed."""
    return [holder for holder in await store.list_key_holders(FORGOTTEN_AFTER) if holder.age > SETTLE]


def lagging(holders: Sequence[KeyHolder], needs: Callable[[KeyHolder], bool], what: str) -> str | None:
    """Why a step cannot go ahead yet (the processes that lack what it needs), or None."""
    behind = [h for h in holders if not needs(h)]
    if not behind:
        return None
    more = f" and {len(behind) - 10} more" if len(behind) > 10 else ""
    return (
        f"{len(behind)} of {len(holders)} running gateway processes {what}: {', '.join(map(named, behind[:10]))}"
        f"{more}. A process that cannot read the key files (their owner and mode, a replica with its own copy of"
        " them) says why in its log"
    )


def named(holder: KeyHolder) -> str:
    host, pid, _ = holder.process.rsplit(":", 2)
    return f"{host} pid {pid} (reported {int(holder.age)} s ago)"
