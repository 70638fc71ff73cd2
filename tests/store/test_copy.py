"""`gateway store copy` at the store level (gateway/store/copy.py): every direction between SQLite and PostgreSQL,
every table and column, id sequences, the snapshot, and the refusals that keep a database in use safe.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.errors import StoreError
from gateway.store import copy
from gateway.store.base import AuditQuery, Listing, NewAuditEvent, NewDeployToken, Store, TokenUse
from gateway.store.copy import TABLES, NotEmpty, SchemaMismatch, copy_store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore, migrations
from tests.pg import Cluster

NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
Opener = Callable[[str], Awaitable[SQLiteStore | PostgresStore]]


async def c_locale_database(cluster: Cluster, name: str) -> str:
    """A new database whose lower() folds ASCII only, as on a cluster built without ICU: LC_CTYPE "C", and no ICU
    collation in its catalog (as in tests/store/test_search_keys_postgres.py); its DSN."""
    admin = await cluster.admin()
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'")
    finally:
        await admin.close()
    conn = await asyncpg.connect(cluster.dsn(name))
    try:
        await conn.execute("DELETE FROM pg_collation WHERE collprovider = 'i'")
    finally:
        await conn.close()
    return cluster.dsn(name)


@pytest.fixture
async def opener(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Opener]:
    """open(kind) → a new, migrated-on-demand store of that kind ('sqlite', 'postgres', or 'postgres-c': a database
    whose own lower() folds ASCII only), closed after the test."""
    opened: list[SQLiteStore | PostgresStore] = []
    dropped: list[str] = []

    async def open_(kind: str) -> SQLiteStore | PostgresStore:
        store: SQLiteStore | PostgresStore
        if kind == "sqlite":
            store = await SQLiteStore(tmp_path / f"{uuid.uuid4().hex[:8]}.db").open()
        else:
            cluster: Cluster = request.getfixturevalue("postgres_cluster")
            name = f"t_{uuid.uuid4().hex[:16]}"
            dropped.append(name)
            make = c_locale_database if kind == "postgres-c" else Cluster.create_database
            store = await PostgresStore(await make(cluster, name)).open()
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()
    if dropped:
        cluster = request.getfixturevalue("postgres_cluster")
        for name in dropped:
            await cluster.drop_database(name)


def token(digest: bytes, **fields: Any) -> NewDeployToken:
    values: dict[str, Any] = {
        "name": "t",
        "custom_username": None,
        "scopes": ("read_repository", "read_registry"),
        "expires_at": None,
        "token_digest": digest,
        "token_encrypted": None,
        "creator_id": None,
        "project_id": None,
        "group_id": None,
        "created_at": NOW,
    } | fields
    return NewDeployToken(**values)


async def fill(store: Store) -> dict[str, int]:
    """A bit of everything every table can hold, with the awkward values: deleted rows behind the sequences,
    NULLs, microseconds, the extreme timestamps, non-ASCII text, binary digests, JSON with nesting."""
    await store.migrate()
    alice = await store.create_user(
        username="alice", name="Alicé Ünïcode", email="a@x", password_hash="$argon2id$v=19$x", is_admin=True, now=NOW
    )
    bob = await store.create_user(username="bob", name="Bob", email="b@x", password_hash=None, is_admin=False, now=NOW)
    await store.set_user_state(bob.id, "blocked")
    top = await store.create_group(
        name="Top", path="top", parent_id=None, visibility="private", description="", now=NOW, owner_id=alice.id
    )
    sub = await store.create_group(
        name="Sub", path="sub", parent_id=top.id, visibility="internal", description="d\n“q”", now=NOW
    )
    app = await store.create_project(
        namespace_id=sub.id, name="App", path="app", visibility="public", description="", creator_id=alice.id, now=NOW
    )
    gone = await store.create_project(
        namespace_id=top.id, name="Gone", path="gone", visibility="private", description="", creator_id=None, now=NOW
    )
    await store.add_member(source_kind="project", source_id=app.id, user_id=bob.id, access_level=30, now=NOW)
    pat = await store.create_personal_access_token(
        user_id=alice.id, name="api", token_digest=b"\x00pat" * 8, scopes=("api", "read_api"), expires_at=None, now=NOW
    )
    revoked_pat = await store.create_personal_access_token(
        user_id=bob.id, name="old", token_digest=b"\xffold" * 8, scopes=("api",), expires_at=NOW, now=NOW
    )
    await store.revoke_personal_access_token(revoked_pat.id)
    kept = await store.create_deploy_token(
        token(b"\x01" * 32, project_id=app.id, token_encrypted=b"\x02nonce+ciphertext", name="gitlab-deploy-token")
    )
    await store.create_deploy_token(
        token(b"\x03" * 32, group_id=top.id, custom_username="ci-user", expires_at=datetime.max.replace(tzinfo=UTC))
    )
    revoked = await store.create_deploy_token(token(b"\x04" * 32, project_id=app.id, expires_at=NOW))
    await store.revoke_deploy_token(revoked.id)
    # The highest id of all, deleted: the target must not hand it out again (gitlab+deploy-token-{id}).
    deleted = await store.create_deploy_token(token(b"\x05" * 32, project_id=gone.id))
    await store.delete_deploy_token(deleted.id)
    await store.delete_project(gone.id)
    await store.record_token_use(
        TokenUse("deploy_token", kept.id, NOW, ("10.0.0.1", "2001:db8::1")), min_interval=0, keep_ips=5
    )
    await store.record_token_use(TokenUse("personal_access_token", pat.id, NOW, ("::1",)), min_interval=0, keep_ips=5)
    await store.claim_package_name(format="pypi", name="my-pkg", project_id=app.id, exclusive=True, now=NOW)
    await store.create_web_session(
        session_digest=b"\x06" * 32, user_id=alice.id, created_at=NOW, expires_at=NOW + timedelta(hours=1)
    )
    await store.record_auth_failure("192.0.2.7", now=NOW, window_start_after=NOW - timedelta(minutes=3))
    await store.ban_address("198.51.100.0", until=NOW + timedelta(hours=1), now=NOW)
    await store.report_key_holder("gw-1:4242:0a1b", ("new-key", "old-key"), "kid")
    await store.insert_audit_events(
        [
            NewAuditEvent(NOW, alice.id, "Project", app.id, "deploy_token_created", {"a": [1, {"b": None}], "é": "ü"}),
            NewAuditEvent(NOW, -2, "Gitlab::Audit::InstanceScope", 0, "authenticated", {}),
        ]
    )
    return {"deploy_tokens": deleted.id, "group": top.id}


async def dump(store: Store) -> dict[str, list[copy.Row]]:
    """Every row of every table, as the copy reads them (portable values)."""
    out: dict[str, list[copy.Row]] = {}
    async with store.copy_transaction(write=False) as side:
        for table in TABLES:
            out[table.name] = [row async for batch in side.batches(table) for row in batch]
    return out


def as_copied(rows: dict[str, list[copy.Row]]) -> dict[str, list[copy.Row]]:
    """What a copy carries: every table's rows but the reports of the source's processes (key_holders), which do not
    run on the copy (found by a README walkthrough: a restored installation listed the old machine's as live)."""
    return {name: found if next(t for t in TABLES if t.name == name).copied else [] for name, found in rows.items()}


async def assert_same_searches(one: Store, other: Store) -> None:
    """Users, groups and projects searched by a part of their names: the same non-empty answers from both."""
    for term in ("LICÉ", "SUB", "App"):
        everything = Listing(open=("private", "internal", "public"), search=term)
        found = [
            [u.id for u in (await store.list_users(offset=0, limit=10, search=term)).items]
            + [g.id for g in (await store.page_groups(everything, offset=0, limit=10)).items]
            + [p.id for p in (await store.page_projects(everything, offset=0, limit=10)).items]
            for store in (one, other)
        ]
        assert found[0] == found[1] and found[0], term


DIRECTIONS = [("sqlite", "postgres"), ("postgres", "sqlite"), ("sqlite", "sqlite"), ("postgres", "postgres")]


@pytest.mark.parametrize("batch", [2, copy.BATCH])  # 2: every table spans several batches
@pytest.mark.parametrize(("source_kind", "target_kind"), DIRECTIONS)
async def test_copy_carries_every_row_and_value(
    opener: Opener, source_kind: str, target_kind: str, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(copy, "BATCH", batch)
    source, target = await opener(source_kind), await opener(target_kind)
    highest = await fill(source)
    before = await dump(source)
    assert all(before[t.name] for t in TABLES), "the fixture must fill every table"
    progress: list[tuple[str, int]] = []

    copied = await copy_store(source, target, progress=lambda table, rows: progress.append((table, rows)))

    assert await dump(target) == as_copied(before)
    assert before["key_holders"]  # there was a report to leave behind
    assert copied.rows == {t.name: len(before[t.name]) for t in TABLES if t.copied}
    assert progress == list(copied.rows.items())
    assert await dump(source) == before  # the source is only read
    # Through the Store API too: a token is found by its digest with every field intact.
    for digest in (b"\x01" * 32, b"\x03" * 32, b"\x04" * 32):
        assert await target.find_deploy_token(digest) == await source.find_deploy_token(digest)
    query = AuditQuery()
    assert await target.list_audit_events(query, offset=0, limit=10) == await source.list_audit_events(
        query, offset=0, limit=10
    )
    assert await gin_options(target) == ({"fastupdate=off"} if target_kind == "postgres" else set())
    # Searches find what was copied (on SQLite through the search indexes its triggers filled as rows arrived).
    await assert_same_searches(source, target)
    # Sequences carry over past deleted rows: new rows get the ids the source would have handed out next.
    assert copied.id_positions["deploy_tokens"] == highest["deploy_tokens"]
    new = token(b"\x07" * 32, group_id=highest["group"])
    made = [await store.create_deploy_token(new) for store in (source, target)]
    assert made[0].id == made[1].id == highest["deploy_tokens"] + 1
    assert made[1].username == f"gitlab+deploy-token-{highest['deploy_tokens'] + 1}"
    user = await target.create_user(
        username="carol", name="C", email="c@x", password_hash=None, is_admin=False, now=NOW
    )
    assert user.id == max(r[0] for r in before["users"]) + 1


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_tables_name_every_column_of_the_schema(opener: Opener, kind: str) -> None:
    """A migration that adds a table or a column must add it to copy.TABLES, or the copy would drop it silently."""
    store = await opener(kind)
    await store.migrate()
    if isinstance(store, SQLiteStore):
        tables = await store.db.execute_fetchall("SELECT name, sql FROM sqlite_master WHERE type='table'")
        # The FTS5 search indexes (a virtual table and its shadow tables each) are SQLite's to fill, not copied.
        searches = [name for name, sql in tables if sql.startswith("CREATE VIRTUAL TABLE")]
        assert sorted(searches) == ["namespaces_search", "projects_search", "users_search"]
        schema = {
            name: {r[1] for r in await store.db.execute_fetchall(f"PRAGMA table_info({name})")}
            for name, _ in tables
            if name not in ("sqlite_sequence", "schema_version") and not name.startswith(tuple(searches))
        }
    else:
        rows = await store.pool.fetch(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
        )
        schema = {}
        for row in rows:
            if row["table_name"] != "schema_version":
                schema.setdefault(row["table_name"], set()).add(row["column_name"])
    assert schema == {t.name: set(t.names) for t in TABLES}


@pytest.mark.parametrize(("source_kind", "target_kind"), [("sqlite", "postgres"), ("postgres", "sqlite")])
async def test_a_target_holding_data_is_refused_and_left_alone(
    opener: Opener, source_kind: str, target_kind: str
) -> None:
    source, target = await opener(source_kind), await opener(target_kind)
    await fill(source)
    await target.migrate()
    await target.create_user(username="root", name="Root", email="r@x", password_hash=None, is_admin=True, now=NOW)
    before = await dump(target)

    with pytest.raises(NotEmpty, match=r"not empty \(namespaces: 1 rows\).*gateway init"):
        await copy_store(source, target)

    assert await dump(target) == before


async def test_a_value_postgresql_cannot_hold_stops_the_copy_cleanly(opener: Opener) -> None:
    """SQLite keeps a NUL inside text, PostgreSQL's text cannot: a clear error, and nothing written."""
    source, target = await opener("sqlite"), await opener("postgres")
    await fill(source)
    assert isinstance(source, SQLiteStore)
    await source.db.execute("UPDATE projects SET description = ?", ("a\x00b",))
    with pytest.raises(StoreError, match="PostgreSQL refused a copied row"):
        await copy_store(source, target)
    assert all(not rows for rows in (await dump(target)).values())


@pytest.mark.parametrize(("source_kind", "target_kind"), [("sqlite", "postgres"), ("postgres", "sqlite")])
async def test_a_failure_midway_leaves_the_target_empty(opener: Opener, source_kind: str, target_kind: str) -> None:
    source, target = await opener(source_kind), await opener(target_kind)
    await fill(source)

    def interrupt(table: str, rows: int) -> None:
        if table == "deploy_tokens":
            raise KeyboardInterrupt  # the operator's Ctrl-C, after six tables went in

    with pytest.raises(KeyboardInterrupt):
        await copy_store(source, target, progress=interrupt)

    assert all(not rows for rows in (await dump(target)).values())
    one_by_one = {"fastupdate=off"} if target_kind == "postgres" else set()
    assert await gin_options(target) == one_by_one  # the load's setting went with the rollback
    await copy_store(source, target)  # and it can simply be run again
    assert await dump(target) == as_copied(await dump(source))
    assert await gin_options(target) == one_by_one


async def gin_options(store: Store) -> set[str]:
    """The options of PostgreSQL's GIN indexes (the copy loads with fastupdate on, then sets it off again); none on
    SQLite."""
    if not isinstance(store, PostgresStore):
        return set()
    rows = await store.pool.fetch(
        "SELECT c.reloptions FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'gin'"
        " AND c.relnamespace = current_schema()::regnamespace"
    )
    assert len(rows) == 7
    return {option for row in rows for option in row[0] or ["(none)"]}


class WriteBeforeUsers:
    """The source, with another connection creating a user just before the copy reads the users table (after it
    read the namespaces): a write committed while the copy runs."""

    def __init__(self, store: SQLiteStore | PostgresStore, writer: Store) -> None:
        self.store, self.writer, self.written = store, writer, 0

    async def migrate(self, *, upto: int | None = None) -> int:
        return await self.store.migrate(upto=upto)

    async def schema_version(self) -> int:
        return await self.store.schema_version()

    @asynccontextmanager
    async def copy_transaction(self, *, write: bool) -> AsyncIterator[copy.Side]:
        async with self.store.copy_transaction(write=write) as side:
            outer = self

            class Side:
                def __getattr__(self, name: str) -> Any:
                    return getattr(side, name)

                async def batches(self, table: copy.Table) -> AsyncIterator[list[copy.Row]]:
                    if table.name == "users":
                        user = await outer.writer.create_user(
                            username="late", name="L", email="l@x", password_hash=None, is_admin=False, now=NOW
                        )
                        outer.written = user.id
                    async for batch in side.batches(table):
                        yield batch

            yield Side()  # type: ignore[misc]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_the_source_is_read_as_one_snapshot(opener: Opener, kind: str) -> None:
    """The user written meanwhile is not copied, and neither is its personal namespace. Read without a snapshot,
    the target would get that user without its namespace (a broken foreign key)."""
    source, target = await opener(kind), await opener("sqlite")
    await fill(source)
    writer = await (
        SQLiteStore(source.path).open() if isinstance(source, SQLiteStore) else PostgresStore(source.dsn).open()
    )
    try:
        racing = WriteBeforeUsers(source, writer)
        copied = await copy_store(racing, target)
    finally:
        await writer.close()
    late = await source.get_user(racing.written)
    assert late is not None and await source.get_namespace(late.namespace_id) is not None
    assert await target.get_user(racing.written) is None
    assert await target.get_namespace(late.namespace_id) is None
    after = await dump(source)
    assert copied.rows["users"] == len(after["users"]) - 1
    assert copied.rows["namespaces"] == len(after["namespaces"]) - 1


async def test_an_empty_source_is_refused_before_the_target_is_touched(opener: Opener) -> None:
    source, target = await opener("sqlite"), await opener("postgres")
    with pytest.raises(SchemaMismatch, match="holds no gateway schema"):
        await copy_store(source, target)
    assert await target.schema_version() == 0


async def at_release(store: SQLiteStore | PostgresStore, version: int, rows: dict[str, list[copy.Row]]) -> None:
    """`store` as the release of schema `version` would have left it holding `rows` (portable rows of this release's
    schema): migrated only that far, each row cut down to the columns that schema has."""
    assert await store.migrate(upto=version) == version
    async with store.copy_transaction(write=True) as side:
        tables = await copy.schema_tables(side)
        for table in tables:
            whole = next(t for t in TABLES if t.name == table.name)
            kept = [whole.names.index(name) for name in table.names]
            await side.load(table, [tuple(row[i] for i in kept) for row in rows[table.name]])
        await side.set_id_positions(tables, {t.name: 100 + i for i, t in enumerate(tables)})


# 5: before the search keys (0008) and the list and search indexes (0009); 7: the release before them; 8: keys but no
# SQLite search index. Every table has existed since 0005 but key_holders (0010), which such a source cannot hold.
# "postgres-c": a target whose own lower() leaves "Ü" as it is, where 0008 must still key the copied names by Python's
# str.lower.
@pytest.mark.parametrize("release", [5, 7, 8])
@pytest.mark.parametrize(
    ("source_kind", "target_kind"), [*DIRECTIONS, ("sqlite", "postgres-c"), ("postgres", "postgres-c")]
)
async def test_a_source_of_an_earlier_release_is_copied_then_migrated(
    opener: Opener, source_kind: str, target_kind: str, release: int
) -> None:
    """An old installation's database, or an old backup, is copied as it is and left so: the target takes the rows
    at the source's schema, then the later migrations run on the target and fill what they add (the search keys,
    the search indexes) as `gateway migrate` would have on the source."""
    now = await opener(source_kind)
    await fill(now)
    expected = await dump(now)
    source, target = await opener(source_kind), await opener(target_kind)
    await at_release(source, release, expected)
    before = await dump_as_found(source)
    latest = migrations()[-1][0]

    copied = await copy_store(source, target)

    assert (copied.found, copied.version) == (release, latest)
    assert await target.schema_version() == latest
    assert await source.schema_version() == release and await dump_as_found(source) == before
    # 0008's lower-case keys are again the ones this release writes.
    assert await dump(target) == as_copied({name: rows if name in before else [] for name, rows in expected.items()})
    assert copied.id_positions == {t.name: 100 + i for i, t in enumerate(TABLES) if t.identity}
    await assert_same_searches(now, target)  # found through the keys and indexes the later migrations made
    assert await target.find_deploy_token(b"\x01" * 32) == await now.find_deploy_token(b"\x01" * 32)


async def dump_as_found(store: Store) -> dict[str, list[copy.Row]]:
    """Every row of every table the database has, at its own schema."""
    async with store.copy_transaction(write=False) as side:
        return {
            table.name: [row async for batch in side.batches(table) for row in batch]
            for table in await copy.schema_tables(side)
        }


@pytest.mark.parametrize(("source_kind", "target_kind"), [("sqlite", "postgres"), ("postgres", "sqlite")])
async def test_a_target_migrated_past_an_earlier_source_is_refused(
    opener: Opener, source_kind: str, target_kind: str
) -> None:
    """A schema is never migrated backwards: an empty target already at this release's schema cannot take the rows
    of release 7's, and says what can."""
    source, target = await opener(source_kind), await opener(target_kind)
    await source.migrate(upto=7)
    await target.migrate()
    with pytest.raises(
        SchemaMismatch, match=r"already at schema version .*, the source at 7: copy into a new database"
    ):
        await copy_store(source, target)
    assert await source.schema_version() == 7


async def test_a_source_of_a_newer_release_is_refused(opener: Opener) -> None:
    source, target = await opener("sqlite"), await opener("postgres")
    await source.migrate()
    assert isinstance(source, SQLiteStore)
    async with source._tx() as db:
        await db.execute("INSERT INTO schema_version VALUES (999, '0999_future.sql', '2030-01-01')")
    with pytest.raises(SchemaMismatch, match=r"at schema version 999, newer than this gateway's .*newer gateway"):
        await copy_store(source, target)
