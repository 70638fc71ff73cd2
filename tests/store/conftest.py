"""The contract suite runs against every Store implementation: SQLite on a temp file, and PostgreSQL 15 in a
throwaway cluster this run starts (tests/pg.py), with a fresh database per test so tests stay independent.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from gateway.store.base import Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from tests.pg import Cluster, start_cluster

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """One cluster for the session (about 1 s to start); a missing PostgreSQL fails the tests that need it."""
    # Not under pytest's tmp dir: that is 0700 root-owned and the server runs as `postgres` when we are root.
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


NewDatabase = Callable[[], Awaitable[str]]


@pytest.fixture
async def postgres_databases(postgres_cluster: Cluster) -> AsyncIterator[NewDatabase]:
    """make() → the DSN of a new, empty database (CREATE DATABASE from template0), dropped after the test."""
    made: list[str] = []

    async def make() -> str:
        name = f"t_{uuid.uuid4().hex[:16]}"
        made.append(name)
        return await postgres_cluster.create_database(name)

    yield make
    for name in made:
        await postgres_cluster.drop_database(name)


@pytest.fixture(params=BACKENDS)
async def blank_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A store of each kind on a new, empty database: no migration has run."""
    store: SQLiteStore | PostgresStore
    name = ""
    if request.param == "sqlite":
        store = await SQLiteStore(tmp_path / "contract.db").open()
    else:
        # Looked up here, not as an argument, so that a SQLite-only run never starts PostgreSQL.
        cluster: Cluster = request.getfixturevalue("postgres_cluster")
        name = f"t_{uuid.uuid4().hex[:16]}"
        store = await PostgresStore(await cluster.create_database(name)).open()
    try:
        yield store
    finally:
        await store.close()
        if name:
            await cluster.drop_database(name)


@pytest.fixture
async def any_store(blank_store: Store) -> Store:
    """A store of each kind, migrated to this release's schema."""
    await blank_store.migrate()
    return blank_store
