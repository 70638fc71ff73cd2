"""PostgreSQL-specific store behaviour: migrations under an advisory lock, identity ids, the bounded pool, several
stores on one database (replicas), and outages reported as StoreUnavailable (503), never as a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.app import create_app
from gateway.config import Config
from gateway.errors import Conflict, StoreUnavailable
from gateway.secretbox import SecretBox
from gateway.store import open_store
from gateway.store.base import NewDeployToken
from gateway.store.cache import TTLCache
from gateway.store.postgres import PostgresStore, migrations
from tests.conftest import make_config
from tests.pg import Cluster, free_port, start_cluster
from tests.store.conftest import NewDatabase

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def token(digest: bytes, group_id: int) -> NewDeployToken:
    return NewDeployToken(
        name="t",
        custom_username=None,
        scopes=("read_repository",),
        expires_at=None,
        token_digest=digest,
        token_encrypted=None,
        creator_id=None,
        project_id=None,
        group_id=group_id,
        created_at=NOW,
    )


async def stores(dsn: str, n: int, **kwargs: Any) -> list[PostgresStore]:
    return [await PostgresStore(dsn, **kwargs).open() for _ in range(n)]


async def close_all(opened: list[PostgresStore]) -> None:
    for store in opened:
        await store.close()


async def test_replicas_starting_together_migrate_once(postgres_databases: NewDatabase) -> None:
    """Several replicas run migrate() on one fresh database at once: all succeed, each migration applies once."""
    dsn = await postgres_databases()
    replicas = await stores(dsn, 6, pool_size=1)
    try:
        results = await asyncio.gather(*(r.migrate() for r in replicas), return_exceptions=True)
        latest = max(v for v, _, _ in migrations())
        assert results == [latest] * len(replicas)
        conn = await asyncpg.connect(dsn)
        try:
            applied = [tuple(r) for r in await conn.fetch("SELECT version, name FROM schema_version ORDER BY 1")]
        finally:
            await conn.close()
        assert applied == [(v, name) for v, name, _ in migrations()]
        assert [await r.schema_version() for r in replicas] == [latest] * len(replicas)
    finally:
        await close_all(replicas)


async def schema_rows(postgres_databases: NewDatabase, sql: str) -> list[asyncpg.Record]:
    """What `sql` reads of the catalog of a new database migrated to this release's schema."""
    store = await PostgresStore(await postgres_databases()).open()
    try:
        await store.migrate()
        return list(await store.pool.fetch(sql))
    finally:
        await store.close()


async def test_postgres_migrations_mirror_the_sqlite_ones() -> None:
    from gateway.store.sqlite import migrations as sqlite_migrations

    assert [(v, name) for v, name, _ in migrations()] == [(v, name) for v, name, _ in sqlite_migrations()]


async def test_column_types(postgres_databases: NewDatabase) -> None:
    """ids are `bigint generated always as identity`, times timestamptz, digests and ciphertexts bytea."""
    rows = await schema_rows(
        postgres_databases,
        "SELECT table_name, column_name, data_type, identity_generation FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name <> 'schema_version'",
    )
    ids = {(r["table_name"], r["data_type"], r["identity_generation"]) for r in rows if r["column_name"] == "id"}
    assert {(kind, always) for _, kind, always in ids} == {("bigint", "ALWAYS")}
    assert {t for t, _, _ in ids} >= {"namespaces", "users", "projects", "personal_access_tokens", "deploy_tokens"}
    times = {r["data_type"] for r in rows if r["column_name"].endswith("_at")}
    assert times == {"timestamp with time zone"}
    secrets_ = {r["data_type"] for r in rows if r["column_name"].endswith(("_digest", "_encrypted"))}
    assert secrets_ == {"bytea"}


async def test_trigram_indexes_take_new_rows_in_at_once(postgres_databases: NewDatabase) -> None:
    """Every trigram index (pg_trgm ships with Debian's postgresql) has fastupdate off: no pending list that each
    search would read whole until a vacuum (migration 0009)."""
    rows = await schema_rows(
        postgres_databases,
        "SELECT c.relname, c.reloptions FROM pg_class c JOIN pg_am a ON a.oid = c.relam"
        " WHERE c.relkind = 'i' AND a.amname = 'gin' AND c.relnamespace = current_schema()::regnamespace",
    )
    assert {r["relname"]: r["reloptions"] for r in rows} == {
        name: ["fastupdate=off"]
        for name in (
            "users_name_trgm",
            "users_username_trgm",
            "namespaces_name_trgm",
            "namespaces_path_trgm",
            "projects_name_trgm",
            "projects_path_trgm",
            "projects_description_trgm",
        )
    }


async def test_ids_are_never_reused(postgres_databases: NewDatabase) -> None:
    """The default username gitlab+deploy-token-{id} must never name a second token, even after a delete."""
    # One pooled connection: the failed (rolled back) write below must leave it clean for the next statement.
    store = await PostgresStore(await postgres_databases(), pool_size=1).open()
    try:
        await store.migrate()
        g = await store.create_group(name="G", path="g", parent_id=None, visibility="private", description="", now=NOW)
        first = await store.create_deploy_token(token(b"a" * 32, g.id))
        with pytest.raises(Conflict):
            await store.create_deploy_token(token(b"a" * 32, g.id))
        second = await store.create_deploy_token(token(b"b" * 32, g.id))
        assert await store.delete_deploy_token(second.id)
        third = await store.create_deploy_token(token(b"c" * 32, g.id))
        assert third.id > second.id > first.id
        assert third.username != second.username
    finally:
        await store.close()


async def test_pool_is_bounded(tmp_path: Path, postgres_cluster: Cluster) -> None:
    """storage.pool_size caps the connections one process opens, however many requests run at once."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    dsn = await postgres_cluster.create_database(name)
    config = make_config(tmp_path, storage={"database": dsn.replace("postgresql://", "postgres://"), "pool_size": 2})
    store = await open_store(config)
    try:
        assert isinstance(store, PostgresStore)
        await store.migrate()
        g = await store.create_group(name="G", path="g", parent_id=None, visibility="private", description="", now=NOW)
        found = await asyncio.gather(*(store.get_namespace(g.id) for _ in range(40)))
        assert found == [g] * 40
        admin = await postgres_cluster.admin()
        try:
            connections = await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name)
        finally:
            await admin.close()
        assert 1 <= connections <= 2
    finally:
        await store.close()
        await postgres_cluster.drop_database(name)


async def test_a_revocation_reaches_another_replica_within_the_cache_ttl(postgres_databases: NewDatabase) -> None:
    dsn = await postgres_databases()
    ticks = [0.0]
    reader = await PostgresStore(dsn, cache=TTLCache(ttl=1.0, clock=lambda: ticks[0])).open()
    writer = await PostgresStore(dsn).open()
    try:
        await writer.migrate()
        g = await writer.create_group(name="G", path="g", parent_id=None, visibility="private", description="", now=NOW)
        made = await writer.create_deploy_token(token(b"x" * 32, g.id))
        assert await reader.find_deploy_token(b"x" * 32) == made  # now cached by the reader
        await writer.revoke_deploy_token(made.id)
        own = await writer.find_deploy_token(b"x" * 32)
        assert own is not None and own.revoked  # the writer's own cache was cleared by its write
        stale = await reader.find_deploy_token(b"x" * 32)
        assert stale is not None and not stale.revoked  # within the TTL the other replica may still see it
        ticks[0] = 1.0
        fresh = await reader.find_deploy_token(b"x" * 32)
        assert fresh is not None and fresh.revoked
    finally:
        await close_all([reader, writer])


async def test_exclusive_package_claims_across_replicas_have_one_winner(postgres_databases: NewDatabase) -> None:
    dsn = await postgres_databases()
    replicas = await stores(dsn, 3, pool_size=4)
    try:
        await replicas[0].migrate()
        g = await replicas[0].create_group(
            name="G", path="g", parent_id=None, visibility="private", description="", now=NOW
        )
        ids = [
            (
                await replicas[0].create_project(
                    namespace_id=g.id,
                    name=f"p{i}",
                    path=f"p{i}",
                    visibility="private",
                    description="",
                    creator_id=None,
                    now=NOW,
                )
            ).id
            for i in range(4)
        ]
        # Warm every pool first, so the claims really run at once instead of queueing on connection setup.
        await asyncio.gather(*(r.count_users() for r in replicas for _ in range(4)))
        claims = [
            replica.claim_package_name(format="pypi", name="lib", project_id=pid, exclusive=True, now=NOW)
            for replica in replicas
            for pid in ids
        ]
        owners = await asyncio.gather(*claims)
        assert len(set(owners)) == 1
        assert [o.project_id for o in await replicas[1].package_name_owners("pypi", "lib")] == [owners[0]]
    finally:
        await close_all(replicas)


@pytest.mark.parametrize("fault", ["wrong password", "missing database", "nothing listening"])
async def test_unreachable_database_is_store_unavailable(postgres_cluster: Cluster, fault: str) -> None:
    dsn = {
        "wrong password": postgres_cluster.dsn().replace(postgres_cluster.password, "not-the-password"),
        "missing database": postgres_cluster.dsn("no_such_database"),
        "nothing listening": postgres_cluster.dsn().replace(f":{postgres_cluster.port}/", f":{free_port()}/"),
    }[fault]
    with pytest.raises(StoreUnavailable) as raised:
        await PostgresStore(dsn).open()
    message = str(raised.value)
    assert message.startswith("cannot connect to PostgreSQL at 127.0.0.1:")
    assert "not-the-password" not in message and postgres_cluster.password not in message


@pytest.fixture(scope="module")
def outage_cluster() -> Iterator[Cluster]:
    """A cluster of its own, halted and restarted by the outage tests (the session cluster stays up).

    synchronous_commit on: the halt is a crash (-m immediate), and a commit must not live only in WAL buffers.
    """
    cluster = start_cluster(settings=["synchronous_commit=on"])
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_outage_is_store_unavailable_and_the_pool_recovers(outage_cluster: Cluster) -> None:
    name = f"t_{uuid.uuid4().hex[:16]}"
    store = await PostgresStore(await outage_cluster.create_database(name), pool_size=3).open()
    try:
        await store.migrate()
        g = await store.create_group(name="G", path="g", parent_id=None, visibility="private", description="", now=NOW)
        outage_cluster.halt_server()
        try:
            # Reads the hot-read cache cannot answer (g itself is cached since its creation; a miss is never kept).
            for attempt in (store.get_namespace(g.id + 1), store.find_deploy_token(b"z" * 32), store.count_users()):
                with pytest.raises(StoreUnavailable) as raised:
                    await attempt
                assert f"127.0.0.1:{outage_cluster.port}/{name}" in str(raised.value)
                assert outage_cluster.password not in str(raised.value)
            with pytest.raises(StoreUnavailable):
                await store.create_group(
                    name="H", path="h", parent_id=None, visibility="private", description="", now=NOW
                )
        finally:
            outage_cluster.start_server()
        # Same store, no restart of the gateway: the pool opens new connections once the server is back.
        assert await store.get_namespace_by_path("G") == g  # not read before: from the database
        assert await store.get_namespace_by_path("h") is None  # the failed write left nothing behind
    finally:
        await store.close()
        await outage_cluster.drop_database(name)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/v4/projects", {"PRIVATE-TOKEN": "glpat-anything"}),
        (
            "/g/p.git/info/refs?service=git-upload-pack",
            {"Authorization": "Basic " + base64.b64encode(b"gitlab+deploy-token-1:gldt-x").decode()},
        ),
    ],
)
async def test_clients_get_503_during_an_outage(
    aiohttp_client: Any, config: Config, box: SecretBox, outage_cluster: Cluster, path: str, headers: dict[str, str]
) -> None:
    name = f"t_{uuid.uuid4().hex[:16]}"
    store = await PostgresStore(await outage_cluster.create_database(name)).open()
    try:
        await store.migrate()
        client = await aiohttp_client(create_app(config, store=store, box=box))
        outage_cluster.halt_server()
        try:
            r = await client.get(path, headers=headers)
            body = await r.text()
        finally:
            outage_cluster.start_server()
        assert r.status == 503
        assert "database is unavailable" in body
        assert "Traceback" not in body and outage_cluster.password not in body and "127.0.0.1" not in body
    finally:
        await store.close()
        await outage_cluster.drop_database(name)
