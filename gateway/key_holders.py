"""What keys this process holds, reported to the store every key_watch.CHECK_INTERVAL: what a key rotation step
checks (key_watch.lagging) before it goes ahead.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from contextlib import suppress

from aiohttp import web

from gateway.app import ENCRYPTION, REGISTRY_SIGNING, STORE
from gateway.errors import StoreError
from gateway.key_watch import FORGOTTEN_AFTER

log = logging.getLogger("gateway.keys")

_process: tuple[int, str] | None = None


def process_id() -> str:
    """This process, across hosts and restarts (a pid is reused): made once per pid, so each forked worker has its
    own."""
    global _process
    if _process is None or _process[0] != os.getpid():
        _process = (os.getpid(), f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}")
    return _process[1]


def holding(app: web.Application) -> tuple[tuple[str, ...], str]:
    """The encryption key ids it holds (the one it seals with first) and the kid it signs registry tokens with."""
    signer = app[REGISTRY_SIGNING].current
    return tuple(box.key_id for box in app[ENCRYPTION].current.boxes), signer.key.kid if signer is not None else ""


class Reporter:
    """Reports what this process holds; a store that does not answer is said once, not at every report."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._failing = False
        self._pruned = False
        self.stopped = False

    async def report(self) -> None:
        if STORE not in self.app or self.stopped:
            return  # a SIGHUP before the store is open (the first report follows), or after `forget`
        store = self.app[STORE]
        try:
            if not self._pruned:  # as a process starts: the reports of processes killed long ago
                await store.delete_stale_key_holders(FORGOTTEN_AFTER)
                self._pruned = True
            await store.report_key_holder(process_id(), *holding(self.app))
        except StoreError as exc:
            if not self._failing:
                log.warning("cannot report this process's keys (key rotations do not see it meanwhile): %s", exc)
            self._failing = True
        else:
            self._failing = False

    async def forget(self) -> None:
        """At a stop: a rotation need not wait for a process that is gone. No report follows."""
        self.stopped = True
        with suppress(StoreError):  # else its report ages out
            await self.app[STORE].forget_key_holder(process_id())
