"""The hot-path read cache: bounded, aged by a monotonic clock, cleared by writes, one read per concurrent miss."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.store.base import Namespace, Project
from gateway.store.cache import TTLCache, always, known_projects, never, project_key, projects_by_paths


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_age_out_and_the_size_is_bounded() -> None:
    ticks = Ticks()
    cache: TTLCache[str] = TTLCache(ttl=1.0, size=2, clock=ticks)
    cache.put("a", "A")
    ticks.now = 0.999
    assert cache.get("a") == "A"
    ticks.now = 1.0  # exactly ttl old: gone
    assert cache.get("a") is None
    for key in "bcd":
        cache.put(key, key.upper())
    assert len(cache) == 2 and cache.get("b") is None and cache.get("d") == "D"
    cache.clear()
    assert cache.get("d") is None


def test_zero_ttl_disables_caching() -> None:
    cache: TTLCache[str] = TTLCache(ttl=0)
    cache.put("a", "A")
    assert cache.get("a") is None


class Reads:
    """A loader that counts its calls and finishes when the test says so."""

    def __init__(self, value: str | None = "v") -> None:
        self.calls, self.value = 0, value
        self.release = asyncio.Event()

    async def __call__(self) -> str | None:
        self.calls += 1
        await self.release.wait()
        if self.value == "boom":
            raise RuntimeError("database down")
        return self.value


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_concurrent_misses_share_one_read_and_it_is_kept() -> None:
    cache: TTLCache[str | None] = TTLCache(ttl=60)
    reads = Reads()
    waiters = [asyncio.ensure_future(cache.load("k", reads)) for _ in range(64)]
    await _settle()
    reads.release.set()
    assert await asyncio.gather(*waiters) == ["v"] * 64
    assert reads.calls == 1
    assert cache.get("k") == "v"
    assert await cache.load("k", reads) == "v" and reads.calls == 1  # a hit: no read


@pytest.mark.parametrize(
    ("value", "keep", "kept"),
    [("v", None, "v"), (None, None, None), ("v", never, None), ((), always, ())],
    ids=["value kept", "miss not kept", "never keeps", "empty kept with always"],
)
async def test_what_a_read_leaves_in_the_cache(value: Any, keep: Any, kept: Any) -> None:
    cache: TTLCache[Any] = TTLCache(ttl=60)
    reads = Reads(value)
    reads.release.set()
    loaded = await (cache.load("k", reads) if keep is None else cache.load("k", reads, keep=keep))
    assert loaded == value
    assert cache.get("k") == kept


async def test_a_write_during_a_read_keeps_its_answer_out_and_later_misses_read_again() -> None:
    cache: TTLCache[str | None] = TTLCache(ttl=60)
    first = Reads("before the write")
    pending = asyncio.ensure_future(cache.load("k", first))
    await _settle()
    cache.clear()  # a write commits while the read runs
    second = Reads("after the write")
    second.release.set()
    assert await cache.load("k", second) == "after the write"  # not joined to the older read
    first.release.set()
    assert await pending == "before the write"
    assert cache.get("k") == "after the write"


async def test_a_failed_read_reaches_every_waiter_and_is_not_kept() -> None:
    cache: TTLCache[str | None] = TTLCache(ttl=60)
    reads = Reads("boom")
    waiters = [asyncio.ensure_future(cache.load("k", reads)) for _ in range(3)]
    await _settle()
    reads.release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert cache.get("k") is None and reads.calls == 1


async def test_a_requester_that_goes_away_does_not_cancel_the_read_for_the_others() -> None:
    cache: TTLCache[str | None] = TTLCache(ttl=60)
    reads = Reads()
    leaver = asyncio.ensure_future(cache.load("k", reads))
    stayer = asyncio.ensure_future(cache.load("k", reads))
    await _settle()
    leaver.cancel()
    await _settle()
    reads.release.set()
    assert await stayer == "v" and leaver.cancelled()
    assert cache.get("k") == "v"


def _project(full_path: str, project_id: int = 1) -> Project:
    namespace = Namespace(1, "group", "g", "g", "g", None, (1,), "private", "", datetime(2026, 1, 1, tzinfo=UTC), None)
    return Project(
        project_id, "p", full_path.rsplit("/", 1)[-1], full_path, namespace, "private", "", namespace.created_at, None
    )


@pytest.mark.parametrize(
    ("cached", "asked", "found", "unknown"),
    [
        ([], ["g/p/img", "g/p"], [], ["g/p/img", "g/p"]),
        (["g/p"], ["g/p/img", "g/p"], ["g/p"], []),  # below a project: no read, whatever the image name
        (["g/p"], ["G/P/a/b", "G/P/a", "G/P"], ["g/p"], []),  # case-insensitive, two segments below
        (["g/p"], ["g/px/img", "g/px"], [], ["g/px/img", "g/px"]),  # a sibling sharing a prefix is not below
        (["g/sub/p"], ["g/sub/img", "g/sub"], [], ["g/sub/img", "g/sub"]),  # not asked: it settles nothing
    ],
    ids=["cold", "image below a project", "case and depth", "prefix sibling", "unasked project"],
)
def test_known_projects_follow_the_one_route_per_path_rule(
    cached: list[str], asked: list[str], found: list[str], unknown: list[str]
) -> None:
    cache: TTLCache[Any] = TTLCache(ttl=60)
    for i, path in enumerate(cached):
        cache.put(project_key(path), _project(path, i + 1))
    hits, rest = known_projects(cache, asked)
    assert [p.full_path for p in hits] == found
    assert rest == unknown


async def test_projects_by_paths_reads_once_then_resolves_new_image_names_from_the_cache() -> None:
    cache: TTLCache[Any] = TTLCache(ttl=60)
    asked: list[list[str]] = []

    async def read(paths: list[str]) -> list[Project]:
        asked.append(paths)
        return [_project("g/p")] if "g/p" in paths else []

    first = await projects_by_paths(cache, ["g/p/img-1", "g/p"], read)
    second = await projects_by_paths(cache, ["g/p/img-2", "g/p"], read)  # a new name: known to be below g/p
    assert [p.full_path for p in first] == [p.full_path for p in second] == ["g/p"]
    assert asked == [["g/p/img-1", "g/p"]]
    cache.clear()  # a write: what the cache knew is gone
    await projects_by_paths(cache, ["g/p/img-3", "g/p"], read)
    assert asked[-1] == ["g/p/img-3", "g/p"]


@pytest.mark.parametrize(
    ("first", "second", "fails", "reads", "answer"),
    [
        # New image names below one project, asked while g/p is being read: the second waits for that read.
        (["g/p/img-1", "g/p"], ["g/p/img-2", "g/p"], False, [["g/p/img-1", "g/p"]], ["g/p"]),
        # A path that is no project, asked twice at once: the first read settles it for both.
        (["nope/nope"], ["nope/nope"], False, [["nope/nope"]], []),
        # Only a path the first read does not settle is read again, on its own.
        (["g/p/img-1", "g/p"], ["h/q/img", "h/q", "g/p"], False, [["g/p/img-1", "g/p"], ["h/q/img", "h/q"]], ["g/p"]),
        # The first read fails: the second reads for itself.
        (["g/p/img-1", "g/p"], ["g/p/img-2", "g/p"], True, [["g/p/img-1", "g/p"], ["g/p/img-2", "g/p"]], ["g/p"]),
    ],
    ids=["below the project read", "no such project", "unsettled path", "failed read"],
)
async def test_a_request_waits_for_the_read_in_flight_that_settles_its_paths(
    first: list[str], second: list[str], fails: bool, reads: list[list[str]], answer: list[str]
) -> None:
    cache: TTLCache[Any] = TTLCache(ttl=60)
    asked: list[list[str]] = []
    release = asyncio.Event()

    async def read(paths: list[str]) -> list[Project]:
        asked.append(paths)
        if len(asked) == 1:
            await release.wait()
            if fails:
                raise ConnectionError("database gone")
        return [_project("g/p")] if "g/p" in paths else []

    one = asyncio.ensure_future(projects_by_paths(cache, first, read))
    await asyncio.sleep(0)  # the first read is in flight
    two = asyncio.ensure_future(projects_by_paths(cache, second, read))
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(one, two, return_exceptions=True)
    assert isinstance(results[0], ConnectionError) == fails
    assert [p.full_path for p in results[1]] == answer  # type: ignore[union-attr]
    assert asked == reads


async def test_a_single_path_load_never_receives_a_covering_read() -> None:
    # get_project_by_path loads project_key(path) on its own while projects_by_paths reads the same path with others
    # (registry and git at once, the soak found it): each gets its own kind of answer.
    cache: TTLCache[Any] = TTLCache(ttl=60)
    release = asyncio.Event()

    async def read(paths: list[str]) -> list[Project]:
        await release.wait()
        return [_project("g/p")]

    async def read_one() -> Project:
        await release.wait()
        return _project("g/p")

    many = asyncio.ensure_future(projects_by_paths(cache, ["g/p/img", "g/p"], read))
    await asyncio.sleep(0)
    one = asyncio.ensure_future(cache.load(project_key("g/p"), read_one))
    await asyncio.sleep(0)
    release.set()
    assert isinstance(await one, Project) and (await one).full_path == "g/p"
    assert [p.full_path for p in await many] == ["g/p"]


# Renewal (RENEW_AFTER): ttl 1.0, so an entry is due from 0.5 s of age and gone at 1.0.
@pytest.mark.parametrize(
    ("age", "renewed"), [(0.49, False), (0.5, True), (0.99, True)], ids=["young", "due", "about to age out"]
)
async def test_a_due_entry_answers_at_once_and_is_read_again_in_the_background(age: float, renewed: bool) -> None:
    ticks = Ticks()
    cache: TTLCache[str | None] = TTLCache(ttl=1.0, clock=ticks)
    cache.put("k", "old")
    ticks.now = age
    assert cache.fresh("k") == (None if renewed else "old")  # a due entry sends the fast path to `load`
    reads = Reads("new")
    answers = await asyncio.gather(*(cache.load("k", reads) for _ in range(8)))
    assert answers == ["old"] * 8  # nobody waits for the renewal
    assert reads.calls == (1 if renewed else 0)  # one read for all of them
    if renewed:
        assert cache.fresh("k") == "old"  # its renewal is running: the fast path answers
    reads.release.set()
    await _settle()
    ticks.now = age + 0.6  # past the old entry's ttl, inside the renewed one's
    assert cache.get("k") == ("new" if renewed else None)


@pytest.mark.parametrize(
    ("value", "clear", "left"),
    [
        (None, False, None),  # the row is gone (a deleted token): the older answer goes too
        ("boom", False, "old"),  # the read failed: the older answer serves until it ages out
        ("new", True, "after"),  # a write cleared the cache meanwhile: the renewal's answer may predate it
    ],
    ids=["row gone", "read failed", "write during the renewal"],
)
async def test_what_a_renewal_leaves(value: str | None, clear: bool, left: str | None) -> None:
    ticks = Ticks()
    cache: TTLCache[str | None] = TTLCache(ttl=1.0, clock=ticks)
    cache.put("k", "old")
    ticks.now = 0.6
    reads = Reads(value)
    assert await cache.load("k", reads) == "old"
    if clear:
        cache.clear()
        cache.put("k", "after")  # read again after the write, by a request of its own
    reads.release.set()
    await _settle()
    assert cache.get("k") == left


async def test_projects_by_paths_renews_due_projects_and_forgets_the_ones_gone() -> None:
    ticks = Ticks()
    cache: TTLCache[Any] = TTLCache(ttl=1.0, clock=ticks)
    cache.put(project_key("g/p"), _project("g/p", 1))
    cache.put(project_key("g/q"), _project("g/q", 2))
    asked: list[list[str]] = []
    release = asyncio.Event()

    async def read(paths: list[str]) -> list[Project]:
        asked.append(paths)
        await release.wait()
        return [_project("g/p", 1)]  # g/q was deleted by another replica

    ticks.now = 0.7
    found = await projects_by_paths(cache, ["g/p/img", "g/p", "g/q"], read)
    assert sorted(p.full_path for p in found) == ["g/p", "g/q"]  # answered from the cache, nobody waited
    await _settle()
    assert asked == [["g/p", "g/q"]]
    await projects_by_paths(cache, ["g/p", "g/q"], read)  # the renewal is running: no second one
    assert len(asked) == 1
    release.set()
    await _settle()
    ticks.now = 1.2  # the old entries have aged out; the renewed g/p has not
    assert cache.get(project_key("g/p")) is not None
    assert cache.get(project_key("g/q")) is None
