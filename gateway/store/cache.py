"""A bounded, short-lived cache of hot-path reads (token digests, project paths, memberships) inside a store.

Every write through the same store clears it, so a process sees its own changes at once; other workers and
replicas see them when an entry ages out (`ttl`, 0.5 s by default, inside the 1 s revocation bound).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

DEFAULT_TTL = 0.5  # half the 1 s revocation bound (issue 7): room for scheduling and polling
DEFAULT_SIZE = 10_000


class TTLCache(Generic[V]):
    """LRU with a time-to-live on a monotonic clock (never the app clock tests move: staleness is real time)."""

    def __init__(
        self, ttl: float = DEFAULT_TTL, size: int = DEFAULT_SIZE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl, self.size, self._clock = ttl, size, clock
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()

    def get(self, key: Hashable) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() - entry[0] >= self.ttl:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: Hashable, value: V) -> None:
        if self.ttl <= 0:
            return
        self._entries[key] = (self._clock(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
