"""The fuzzed gateway: the whole app in process with a registry signing key (so /jwt/auth issues tokens), PyPI and
npm backends that refuse connections (so uploads are parsed, then answered 502), the test client as a trusted proxy
(so X-Forwarded-For is parsed), and a seeded world; on SQLite and on PostgreSQL (which refuses what SQLite takes)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.secretbox import SecretBox
from gateway.signing_keys import SigningKey, generate_key, self_signed_certificate
from gateway.store.base import Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from tests import pg
from tests.conftest import make_config, start_server
from tests.fuzz.seed import Seed, build
from tests.world import World


@pytest.fixture(scope="module")
def fuzz_postgres() -> Iterator[pg.Cluster]:
    with pg.running_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Every fuzzed request against both databases: PostgreSQL refuses text SQLite stores (a NUL), which once made
    500s that a SQLite-only run could not see."""
    made: Store
    name = ""
    if request.param == "sqlite":
        made = await SQLiteStore(tmp_path / "store.db").open()
    else:
        cluster: pg.Cluster = request.getfixturevalue("fuzz_postgres")
        name = f"fuzz_{uuid.uuid4().hex[:12]}"
        made = await PostgresStore(await cluster.create_database(name)).open()
    try:
        await made.migrate()
        yield made
    finally:
        await made.close()
        if name:
            await cluster.drop_database(name)


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    key = generate_key("ES256")
    return SigningKey(key, self_signed_certificate(key, "fuzz", datetime.now(UTC)))


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def port(
    tmp_path: Path,
    store: Store,
    clock: FixedClock,
    box: SecretBox,
    signing_key: SigningKey,
) -> AsyncIterator[int]:
    """The port of a running gateway, on the server `gateway serve` uses (gateway/server.py)."""
    dead = f"http://127.0.0.1:{closed_port()}"
    config = make_config(
        tmp_path,
        packages={"pypi": {"backend": f"{dead}/pypi/{{project_id}}/"}, "npm": {"backend": f"{dead}/npm/"}},
        # Believe X-Forwarded-For from the test client, so that fuzzed values of it are parsed.
        server={"trusted_proxies": ["127.0.0.1"]},
        # Thousands of bad credentials from a few addresses: the failure accounting runs (and is fuzzed), but a
        # ban would turn the rest of the run into 403/429 and hide the handlers from the fuzzer.
        bruteforce={"max_failures": 1_000_000},
    )
    app = create_app(config, store=store, clock=clock, box=box, signing_key=signing_key)
    server = await start_server(app)
    try:
        yield int(server.port or 0)
    finally:
        await server.close()


@pytest.fixture
async def seed(world: World) -> Seed:
    return await build(world)
