"""Seeding aid for benchmarks and load tests: bulk-insert many deploy tokens or users in one transaction (COPY on
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


# A user's display name: "User " and eight hex digits that vary from one id to the next (Knuth's multiplicative
# hash), the same in both databases, so that a search for a few of them finds a handful of users.
_SQLITE_USERS = """
WITH RECURSIVE s (i) AS (SELECT ? UNION ALL SELECT i + 1 FROM s WHERE i < ?)
INSERT INTO namespaces (kind, name, path, full_path, traversal_ids, visibility, created_at, name_lower, path_lower)
SELECT 'user', 'User ' || printf('%08x', (i * 2654435761) % 4294967296), 'seed-user-' || i, 'seed-user-' || i,
       '', 'private', ?, 'user ' || printf('%08x', (i * 2654435761) % 4294967296), 'seed-user-' || i FROM s
"""
_POSTGRES_USERS = """
INSERT INTO namespaces (kind, name, path, full_path, visibility, created_at, name_lower, path_lower)
SELECT 'user', 'User ' || lpad(to_hex((i * 2654435761) % 4294967296), 8, '0'), 'seed-user-' || i, 'seed-user-' || i,
       'private', $3, 'user ' || lpad(to_hex((i * 2654435761) % 4294967296), 8, '0'), 'seed-user-' || i
FROM generate_series($1::bigint, $2::bigint) i
"""
# Then each namespace's user, its traversal ids its own id (as store/queries.py _insert_namespace writes them).
_USERS_OF_NAMESPACES = """
INSERT INTO users (username, name, email, created_at, namespace_id, username_lower, name_lower, email_lower)
SELECT n.path, n.name, n.path || '@example.com', n.created_at, n.id, n.path_lower, n.name_lower,
       n.path_lower || '@example.com'
FROM namespaces n WHERE n.kind = 'user' AND n.path LIKE 'seed-user-%' AND n.id NOT IN (SELECT namespace_id FROM users)
"""
# And each namespace's owner, its user (as store/queries.py create_user writes it).
_OWNERS = """
UPDATE namespaces SET owner_id = u.id FROM users u
WHERE u.namespace_id = namespaces.id AND namespaces.kind = 'user' AND namespaces.owner_id IS NULL
  AND namespaces.path LIKE 'seed-user-%'
"""


async def seed_users(store: Store, *, count: int, now: datetime) -> None:
    """Insert `count` users (`seed-user-{n}`, named "User" and eight hex digits) with their personal namespaces,
    in one transaction."""
    if isinstance(store, PostgresStore):
        async with store._tx() as conn, store.loading(conn):
            await conn.execute(_POSTGRES_USERS, 1, count, now)
            await conn.execute("UPDATE namespaces SET traversal_ids = ARRAY[id] WHERE traversal_ids = '{}'")
            await conn.execute(_USERS_OF_NAMESPACES)
            await conn.execute(_OWNERS)
        await fresh_statistics(store)
    elif isinstance(store, SQLiteStore):
        async with store._tx() as db:
            await db.execute(_SQLITE_USERS, (1, count, ts(now)))
            await db.execute("UPDATE namespaces SET traversal_ids = CAST(id AS TEXT) WHERE traversal_ids = ''")
            await db.execute(_USERS_OF_NAMESPACES)
            await db.execute(_OWNERS)
    else:
        raise TypeError(f"cannot seed a {type(store).__name__}")
