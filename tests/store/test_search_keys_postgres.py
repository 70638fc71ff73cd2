"""Migration 0008 on a PostgreSQL database whose own lower() folds differently from Python's str.lower: a "C"
locale on a cluster without ICU. Release 7's rows must get the keys the store writes for new ones.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from gateway.store import postgres
from gateway.store.base import Listing
from gateway.store.postgres import PostgresStore
from tests.pg import Cluster

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVERYONE = ("private", "internal", "public")
# Names Python lowers beyond ASCII, some letters by their place (Σ ending a word: ς) or into two code points (İ: i and
# a combining dot above); ẞ lowers to ß.
GROUPS = [("ÉMILE Group", "Emile-G"), ("ΣΊΣΥΦΟΣ", "Sisyphos"), ("İstanbul", "IST"), ("STRASSE ẞ", "Strasse")]
PROJECTS = [("Ünïcode App", "Uni-App", "ÜBER ẞ and ΣΊΣΥΦΟΣ")]
USERS = [("ÉMILE", "Émile ÇA", "ÉMILE@EXAMPLE.COM"), ("ΣΊΣΥΦΟΣ", "İpek", "ΣΊΣ@X")]
# Each table's lowered columns, then their keys.
KEYS = [
    "SELECT name, path, name_lower, path_lower FROM namespaces",
    "SELECT name, path, description, name_lower, path_lower, description_lower FROM projects",
    "SELECT username, name, email, username_lower, name_lower, email_lower FROM users",
]


async def c_locale_database(cluster: Cluster, name: str) -> str:
    """A new database whose lower() folds ASCII only, as on a cluster built without ICU: LC_CTYPE "C", and no ICU
    collation in its catalog (deleted, as the superuser the test cluster runs as); its DSN."""
    admin = await cluster.admin()
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'")
    finally:
        await admin.close()
    dsn = cluster.dsn(name)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM pg_collation WHERE collprovider = 'i'")
        assert await conn.fetchval("SELECT lower('ÉMILE')") == "Émile"
    finally:
        await conn.close()
    return dsn


@pytest.fixture
async def c_store(postgres_cluster: Cluster) -> AsyncIterator[PostgresStore]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    store = await PostgresStore(await c_locale_database(postgres_cluster, name)).open()
    try:
        yield store
    finally:
        await store.close()
        await postgres_cluster.drop_database(name)


async def at_release_7(store: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """`store` migrated to schema 7 and holding GROUPS, PROJECTS and USERS as release 7 wrote them: no keys."""
    known = postgres.migrations()
    monkeypatch.setattr(postgres, "migrations", lambda: [m for m in known if m[0] < 8])
    assert await store.migrate() == 7
    monkeypatch.undo()
    async with store.pool.acquire() as conn, conn.transaction():
        groups = []
        for name, path in GROUPS:
            groups.append(
                await conn.fetchval(
                    "INSERT INTO namespaces (kind, name, path, full_path, visibility, created_at)"
                    " VALUES ('group', $1, $2, $2, 'public', $3) RETURNING id",
                    *(name, path, NOW),
                )
            )
        for name, path, description in PROJECTS:
            await conn.execute(
                "INSERT INTO projects (namespace_id, name, path, full_path, visibility, description, created_at)"
                " VALUES ($1, $2, $3, $4, 'public', $5, $6)",
                *(groups[0], name, path, f"{GROUPS[0][1]}/{path}", description, NOW),
            )
        for username, name, email in USERS:
            namespace = await conn.fetchval(
                "INSERT INTO namespaces (kind, name, path, full_path, visibility, created_at)"
                " VALUES ('user', $1, $2, $2, 'private', $3) RETURNING id",
                *(name, username, NOW),
            )
            await conn.execute(
                "INSERT INTO users (username, name, email, created_at, namespace_id) VALUES ($1, $2, $3, $4, $5)",
                *(username, name, email, NOW, namespace),
            )


async def test_keys_of_earlier_rows_are_pythons_lower_whatever_the_locale(
    c_store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await at_release_7(c_store, monkeypatch)

    assert await c_store.migrate() == postgres.migrations()[-1][0]

    for sql in KEYS:
        rows = await c_store.pool.fetch(sql)
        assert rows
        for row in rows:
            half = len(row) // 2
            assert list(row[half:]) == [text.lower() for text in row[:half]], sql
    # Found by any case of their names, and ordered by the Python keys' code points.
    everyone = Listing(open=EVERYONE, order_by="name")
    listed = (await c_store.page_groups(everyone, offset=0, limit=20)).items
    assert [g.name for g in listed] == sorted((n for n, _ in GROUPS), key=str.lower)
    for term, path in [("émile", "Emile-G"), ("ΣΊΣΥΦΟΣ", "Sisyphos"), ("σίσυφος", "Sisyphos"), ("İSTANBUL", "IST")]:
        found = await c_store.page_groups(Listing(open=EVERYONE, search=term), offset=0, limit=10)
        assert [g.path for g in found.items] == [path], term
    for term in ("ünï", "über ß", "σίσυφος", "uni-app"):
        found_projects = await c_store.page_projects(Listing(open=EVERYONE, search=term), offset=0, limit=10)
        assert [p.path for p in found_projects.items] == ["Uni-App"], term
    for term, username in [
        ("émile ça", "ÉMILE"),
        ("émile@example.com", "ÉMILE"),
        ("ΣΊΣ@x", "ΣΊΣΥΦΟΣ"),
        ("İPEK", "ΣΊΣΥΦΟΣ"),
    ]:
        users = await c_store.list_users(offset=0, limit=10, search=term)
        assert [u.username for u in users.items] == [username], term
    assert (await c_store.find_user_by_email("Émile@example.com")) is not None
    # A row written now gets the same keys as one migrated: the two sort and match alike.
    made = await c_store.create_group(
        name="ÉMILE Bis", path="emile-bis", parent_id=None, visibility="public", description="", now=NOW
    )
    found = await c_store.page_groups(Listing(open=EVERYONE, search="ÉMILE", order_by="name"), offset=0, limit=10)
    assert [g.path for g in found.items] == [made.path, "Emile-G"]
