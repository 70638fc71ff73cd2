"""Store contract for failed authentications per client address (what gateway/bruteforce.py relies on): the window
count, bans, resets that never lift a ban, the incremental listing, pruning, and concurrent failures all counted."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from gateway.store.base import Store

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=3)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


async def fail(store: Store, address: str, second: float) -> int:
    now = at(second)
    return await store.record_auth_failure(address, now=now, window_start_after=now - WINDOW)


async def test_failures_count_within_a_window_that_restarts(any_store: Store) -> None:
    assert [await fail(any_store, "192.0.2.1", s) for s in (0, 10, 179.9)] == [1, 2, 3]
    assert await fail(any_store, "198.51.100.1", 20) == 1  # addresses count separately
    # 180 s after the window's first failure it is over: a new one starts with this failure.
    assert await fail(any_store, "192.0.2.1", 180) == 1
    assert await fail(any_store, "192.0.2.1", 200) == 2
    [row] = [
        r
        for r in await any_store.list_auth_failures(now=at(200), updated_since=NOW, limit=10)
        if r.address == "192.0.2.1"
    ]
    assert (row.failures, row.window_start, row.updated_at, row.banned_until) == (2, at(180), at(200), None)


async def test_ban_resets_the_count_and_a_success_does_not_lift_it(any_store: Store) -> None:
    for s in range(3):
        await fail(any_store, "192.0.2.1", s)
    await any_store.ban_address("192.0.2.1", until=at(3600), now=at(3))
    rows = await any_store.list_auth_failures(now=at(4), updated_since=at(1000), limit=10)
    assert [(r.address, r.failures, r.banned_until) for r in rows] == [("192.0.2.1", 0, at(3600))]
    assert await any_store.clear_auth_failures("192.0.2.1", now=at(5)) is False  # still banned: kept
    assert await any_store.list_auth_failures(now=at(5), updated_since=at(1000), limit=10) != []
    # Once the ban is over, the address is forgotten like any other.
    assert await any_store.clear_auth_failures("192.0.2.1", now=at(3600)) is True
    assert await any_store.list_auth_failures(now=at(3600), updated_since=NOW, limit=10) == []
    assert await any_store.clear_auth_failures("192.0.2.1", now=at(3600)) is False
    # A ban of an address with no failures on record (another process counted them) creates its row.
    await any_store.ban_address("2001:db8::/64", until=at(100), now=at(1))
    [row] = await any_store.list_auth_failures(now=at(2), updated_since=at(50), limit=10)
    assert (row.address, row.banned_until) == ("2001:db8::/64", at(100))


async def test_listing_is_bans_and_recent_failures_newest_first(any_store: Store) -> None:
    await fail(any_store, "a", 0)
    await fail(any_store, "b", 10)
    await fail(any_store, "c", 20)
    await any_store.ban_address("d", until=at(1000), now=at(5))
    listed = await any_store.list_auth_failures(now=at(30), updated_since=at(9), limit=10)
    assert [r.address for r in listed] == ["c", "b", "d"]  # d: banned, though updated before `updated_since`
    assert [r.address for r in await any_store.list_auth_failures(now=at(30), updated_since=at(9), limit=2)] == [
        "c",
        "b",
    ]
    assert [r.address for r in await any_store.list_auth_failures(now=at(1000), updated_since=at(30), limit=10)] == []


async def test_stale_rows_are_pruned_but_never_a_ban(any_store: Store) -> None:
    await fail(any_store, "old", 0)
    await fail(any_store, "recent", 100)
    await any_store.ban_address("banned", until=at(3600), now=at(0))
    assert await any_store.delete_stale_auth_failures(now=at(200), updated_before=at(20)) == 1
    listed = await any_store.list_auth_failures(now=at(200), updated_since=NOW - WINDOW, limit=10)
    assert sorted(r.address for r in listed) == ["banned", "recent"]
    assert await any_store.delete_stale_auth_failures(now=at(3600), updated_before=at(3600)) == 2


async def test_concurrent_failures_are_all_counted(any_store: Store) -> None:
    counts = await asyncio.gather(*(fail(any_store, "192.0.2.1", 1) for _ in range(20)))
    assert sorted(counts) == list(range(1, 21))  # atomic: no two failures read the same count


async def test_an_operator_lifts_a_ban(any_store: Store) -> None:
    await any_store.ban_address("192.0.2.7", until=at(3600), now=at(1))
    await any_store.ban_address("192.0.2.8", until=at(3600), now=at(1))
    assert await any_store.clear_auth_failures("192.0.2.7", now=at(2), lift_ban=True) is True
    rows = await any_store.list_auth_failures(now=at(3), updated_since=at(1000), limit=10)
    assert [r.address for r in rows] == ["192.0.2.8"]  # only the one lifted
