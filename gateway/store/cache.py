"""A bounded, short-lived cache of hot-path reads (token digests, users, projects and groups, memberships) in a store.

Every write through the same store clears it, so a process sees its own changes at once; other workers and
replicas see them when an entry is renewed or ages out (`ttl`, 0.5 s by default, inside the 1 s revocation bound).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from gateway.store.base import Project

V = TypeVar("V")
T = TypeVar("T")

DEFAULT_TTL = 0.5  # half the 1 s revocation bound (issue 7): room for scheduling and polling
DEFAULT_SIZE = 10_000
# An entry asked for once this share of `ttl` has passed is read again in the background while it keeps answering:
# a hot entry is renewed before it ages out, so its requests do not all wait for one read every `ttl` (measured:
# /jwt/auth's p99 15-17 ms with the stall, 13 ms without, at 64 connections). Nothing served is older than `ttl`.
RENEW_AFTER = 0.5


def _is_not_none(value: object) -> bool:
    return value is not None


def always(value: object) -> bool:
    return True


def never(value: object) -> bool:
    return False


class TTLCache(Generic[V]):
    """LRU with a time-to-live on a monotonic clock (never the app clock tests move: staleness is real time)."""

    def __init__(
        self, ttl: float = DEFAULT_TTL, size: int = DEFAULT_SIZE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl, self.size, self._clock = ttl, size, clock
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        # Loads in progress (single flight) and the write generation they started in (see `load`).
        self._loading: dict[Hashable, asyncio.Future[V]] = {}
        # Reads answering several keys at once (load_covering), apart: their result is not a value of one key, and a
        # `load` of the same key must never receive it.
        self._covering: dict[Hashable, asyncio.Future[Any]] = {}
        # Every read still running (a clear forgets them above, but the event loop keeps only weak references).
        self._running: set[asyncio.Future[Any]] = set()
        self._generation = 0

    def _lookup(self, key: Hashable) -> tuple[V | None, bool]:
        """The live value of `key` (None when absent or aged out) and whether it is due for renewal."""
        entry = self._entries.get(key)
        if entry is None:
            return None, False
        age = self._clock() - entry[0]
        if age >= self.ttl:
            del self._entries[key]
            return None, False
        self._entries.move_to_end(key)
        return entry[1], age >= self.ttl * RENEW_AFTER

    def get(self, key: Hashable) -> V | None:
        return self._lookup(key)[0]

    def fresh(self, key: Hashable) -> V | None:
        """A hit that needs nothing more (not due for renewal, or its renewal is running): the fast path before
        `load`, which renews a due entry."""
        value, due = self._lookup(key)
        return None if due and key not in self._loading else value

    def due(self, key: Hashable) -> bool:
        """Whether the entry of `key` is due for renewal and no read covering it is running (projects_by_paths)."""
        return self._lookup(key)[1] and key not in self._covering

    @property
    def generation(self) -> int:
        """Changes with every clear: a read that started in an older generation may predate a write."""
        return self._generation

    def put(self, key: Hashable, value: V, *, generation: int | None = None) -> None:
        if self.ttl <= 0 or (generation is not None and generation != self._generation):
            return
        self._entries[key] = (self._clock(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    async def load(
        self, key: Hashable, loader: Callable[[], Awaitable[V]], *, keep: Callable[[V], bool] = _is_not_none
    ) -> V:
        """A hit, or one read shared by every concurrent miss of `key` (single flight); kept if `keep(value)`.

        Without it, an entry that ages out under load sends every request in flight to the database at once
        (64 connections: 64 identical queries queued behind each other every `ttl`), the latency tail of
        /jwt/auth. The read runs as its own task: a requester that goes away does not cancel it for the others.
        """
        hit, due = self._lookup(key)
        if hit is not None and not due:
            return hit
        pending = self._loading.get(key)
        if pending is None:
            pending = self._run(loader())
            self._loading[key] = pending
            generation = self._generation
            pending.add_done_callback(lambda done: self._loaded(key, done, generation, keep))
        if hit is not None:
            return hit  # renewed in the background (RENEW_AFTER)
        return await asyncio.shield(pending)

    def _run(self, read: Awaitable[T]) -> asyncio.Future[T]:
        task = asyncio.ensure_future(read)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    def pending(self, keys: Iterable[Hashable]) -> set[asyncio.Future[Any]]:
        """The reads in progress (load_covering) that answer any of `keys`."""
        covering = self._covering
        return {future for key in keys if (future := covering.get(key)) is not None}

    async def load_covering(self, keys: Sequence[Hashable], loader: Callable[[], Awaitable[T]]) -> T:
        """Run one read that answers every key of `keys`; meanwhile it is `pending` under each of them, so that a
        request missing any of them can wait for it. Its result is the caller's to keep (put), key by key."""
        return await asyncio.shield(self.cover(keys, loader))

    def cover(self, keys: Sequence[Hashable], loader: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """Start the read of load_covering without waiting for it."""
        task = self._run(loader())
        for key in keys:
            self._covering[key] = task
        task.add_done_callback(lambda done: self._forget(keys, done))
        return task

    def _forget(self, keys: Sequence[Hashable], done: asyncio.Future[Any]) -> None:
        for key in keys:
            if self._covering.get(key) is done:
                del self._covering[key]
        if not done.cancelled():
            done.exception()  # retrieved: a failure is its requesters' to report, not the loop's

    def _loaded(self, key: Hashable, done: asyncio.Future[V], generation: int, keep: Callable[[V], bool]) -> None:
        if self._loading.get(key) is done:
            del self._loading[key]
        if done.cancelled() or done.exception() is not None:  # exception() also marks it retrieved
            return
        # A write cleared the cache while this read ran: its answer may predate the write, so it is not kept.
        if keep(done.result()):
            self.put(key, done.result(), generation=generation)
        else:
            self.drop(key, generation)  # a renewal that found nothing: the older answer goes too

    def drop(self, key: Hashable, generation: int) -> None:
        """Forget `key`, unless a write cleared the cache since `generation` (then it is gone already)."""
        if generation == self._generation:
            self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
        self._loading.clear()  # later misses read afresh, after the write that cleared
        self._covering.clear()
        self._generation += 1

    def __len__(self) -> int:
        return len(self._entries)


def project_key(full_path: str) -> tuple[str, str]:
    return ("project_path", full_path.lower())


async def projects_by_paths(
    cache: TTLCache[Any], full_paths: Sequence[str], read: Callable[[list[str]], Awaitable[Sequence[Project]]]
) -> list[Project]:
    """The projects at `full_paths`: what the cache knows (known_projects), then what reads in flight for some of
    them answer, the rest from `read(paths)`; what was read is kept per path unless a write overtook the read."""
    found, unknown = known_projects(cache, full_paths)
    due = [p.full_path.lower() for p in found if cache.due(project_key(p.full_path))]
    if due:
        _renew(cache, due, read)
    if unknown:
        # A burst of new image names below one project whose entry just aged out (g/p/a, g/p/b, ... each missing
        # g/p): distinct paths, so per-request single flight shares nothing and 64 reads queue up (a 100 ms tail
        # every `ttl`). Waiting for the read already asking g/p settles the names below it too (one route per path).
        waiting = cache.pending(project_key(p) for p in unknown)
        if waiting:
            await asyncio.wait(waiting)
            found, unknown = _answered_by(waiting, found, unknown)
    if not unknown:
        return found
    generation = cache.generation
    asked = tuple(p.lower() for p in unknown)

    async def read_unknown() -> tuple[tuple[str, ...], Sequence[Project]]:
        return asked, await read(unknown)

    _, read_now = await cache.load_covering([project_key(p) for p in asked], read_unknown)
    for project in read_now:
        cache.put(project_key(project.full_path), project, generation=generation)
    return found + list(read_now)


def _renew(cache: TTLCache[Any], paths: list[str], read: Callable[[list[str]], Awaitable[Sequence[Project]]]) -> None:
    """Read `paths` again in the background (RENEW_AFTER): what is found replaces its entry, what is not any more
    (renamed, deleted) is forgotten. A request missing one of them meanwhile waits for this read (`pending`)."""
    generation = cache.generation
    asked = tuple(paths)

    async def read_again() -> tuple[tuple[str, ...], Sequence[Project]]:
        return asked, await read(list(paths))

    def keep(done: asyncio.Future[tuple[tuple[str, ...], Sequence[Project]]]) -> None:
        if done.cancelled() or done.exception() is not None:
            return  # the entries answer until they age out; a request after that reads (and fails) itself
        _, projects = done.result()
        for project in projects:
            cache.put(project_key(project.full_path), project, generation=generation)
        for path in set(asked) - {p.full_path.lower() for p in projects}:
            cache.drop(project_key(path), generation)

    cache.cover([project_key(p) for p in asked], read_again).add_done_callback(keep)


def _answered_by(
    reads: set[asyncio.Future[Any]], found: list[Project], unknown: list[str]
) -> tuple[list[Project], list[str]]:
    """`found` and `unknown` after the finished reads of other requests (`(asked, projects)` each): a path they
    asked is settled, found or not, and so is every path below a project found (known_projects' rule)."""
    settled: set[str] = set()
    projects = {p.full_path.lower(): p for p in found}
    for done in reads:
        if done.cancelled() or done.exception() is not None:
            continue  # that request's failure is its own: ours reads again, and reports its own failure
        asked, read_now = done.result()
        settled.update(asked)
        projects.update((p.full_path.lower(), p) for p in read_now)
    wanted = {p.lower() for p in unknown} | {p.full_path.lower() for p in found}
    kept = [p for path, p in projects.items() if path in wanted]
    return kept, _not_below([p for p in unknown if p.lower() not in settled], [p.full_path for p in kept])


def known_projects(cache: TTLCache[Any], full_paths: Sequence[str]) -> tuple[list[Project], list[str]]:
    """The projects among `full_paths` that the cache answers, and the paths it leaves to the database.

    Every path is one route (the `routes` table, GitLab's rule): a project is never also a namespace, so no path
    below a known project is a project. The candidates of an image name (`g/p/img`, `g/p`) then need no read once
    `g/p` is known, whatever the image is called (registry_auth.grant: a new name must not cost a query).
    """
    found: dict[str, Project] = {}
    unknown: list[str] = []
    for path in full_paths:
        hit = cache.get(project_key(path))
        if hit is not None:
            found[path.lower()] = hit
        else:
            unknown.append(path)
    return list(found.values()), _not_below(unknown, list(found))


def _not_below(paths: list[str], projects: Sequence[str]) -> list[str]:
    """`paths` less those below one of `projects` (lowercase full paths): no path below a project is a project."""
    if not paths or not projects:
        return paths
    below = tuple(p.lower() + "/" for p in projects)
    return [p for p in paths if not p.lower().startswith(below)]
