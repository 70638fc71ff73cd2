"""Seeding aid for benchmarks and load tests: bulk-insert many deploy tokens in one transaction (COPY on
PostgreSQL, executemany on SQLite), and planner statistics after a load. The gateway itself never calls it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from gateway.store.base import Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore, ts

_COLUMNS = ("name", "token_digest", "scopes", "created_at", "group_id")


async def seed_deploy_tokens(
    store: Store,
    *,
    group_id: int,
    digests: Iterable[bytes],
    now: datetime,
    scopes: Sequence[str] = ("read_repository",),
    name_prefix: str = "seed-",
) -> int:
    """Insert one active group deploy token per digest (named `{name_prefix}{n}`), streamed; return how many.

    Rows are generated lazily, so a million tokens need no million-row list in memory. The store's hot-read cache
    is cleared like after any write.
    """
    count = 0

    def rows(scopes_value: Any, created_at: Any) -> Iterator[tuple[Any, ...]]:
        nonlocal count
        for digest in digests:
            count += 1
            yield (f"{name_prefix}{count}", digest, scopes_value, created_at, group_id)

    if isinstance(store, PostgresStore):
        async with store._tx() as conn:
            await conn.copy_records_to_table("deploy_tokens", records=rows(list(scopes), now), columns=_COLUMNS)
        await fresh_statistics(store)
    elif isinstance(store, SQLiteStore):
        async with store._tx() as db:
            await db.executemany(
                f"INSERT INTO deploy_tokens ({', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?)",
                rows(" ".join(scopes), ts(now)),
            )
    else:
        raise TypeError(f"cannot seed a {type(store).__name__}")
    return count


async def fresh_statistics(store: Store) -> None:
    """Planner statistics for what was just seeded, as autovacuum would gather a little later on PostgreSQL (SQLite's
    planner works from its indexes alone)."""
    if isinstance(store, PostgresStore):
        await store.pool.execute("ANALYZE")
