"""Shared fixtures: a settable clock, a migrated SQLite store, the app in process, and a World builder."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.config import Config, from_mapping
from gateway.secretbox import SecretBox
from gateway.server import Runner
from gateway.store.sqlite import SQLiteStore
from gateway.users import PasswordHasher
from tests.world import World

# Argon2id at its minimum cost keeps the suite fast; production parameters are the config defaults.
FAST_KDF = {"password_memory_kib": 64, "password_iterations": 1}
T0 = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers follow the directory: tests/unit → unit, tests/e2e → e2e, ..."""
    for item in items:
        kind = Path(str(item.fspath)).parent.name
        if kind in ("unit", "store", "integration", "e2e", "fuzz"):
            item.add_marker(getattr(pytest.mark, kind))


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    raw: dict[str, Any] = {"security": dict(FAST_KDF), "storage": {"data_dir": str(tmp_path / "data")}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    raw["storage"].setdefault("database", f"sqlite:///{tmp_path / 'data' / 'gateway.db'}")
    raw["storage"].setdefault("encryption_key", str(tmp_path / "data" / "secret.key"))
    raw.setdefault("git", {}).setdefault("repositories", str(tmp_path / "data" / "repositories"))
    return from_mapping(raw, tmp_path)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore(tmp_path / "store.db").open()
    await s.migrate()
    yield s
    await s.close()


@pytest.fixture
def secret_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def box(secret_key: bytes) -> SecretBox:
    return SecretBox(secret_key)


@pytest.fixture
def hasher() -> PasswordHasher:
    return PasswordHasher(FAST_KDF["password_memory_kib"], FAST_KDF["password_iterations"])


@pytest.fixture
def world(store: SQLiteStore, clock: FixedClock, box: SecretBox, hasher: PasswordHasher, config: Config) -> World:
    return World(store, clock, box, hasher, config)


@pytest.fixture
def aiohttp_client(store: SQLiteStore, aiohttp_client: Any) -> Any:
    """pytest-aiohttp's client factory, set up after the store and so torn down before it: every app a test
    starts stops, and writes its last audit batch, while the store is still open."""
    return aiohttp_client


class GatewayServer(TestServer):
    """aiohttp's TestServer on the gateway's own server (gateway/server.py), as `gateway serve` runs the app."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return Runner(self.app, **kwargs)


async def start_server(app: web.Application) -> GatewayServer:
    """The app on 127.0.0.1:<free port>; the caller closes it (aiohttp_client(server) does on teardown)."""
    server = GatewayServer(app)
    # auto_decompress=False as in production (cli serve): git sends gzip bodies that must pass through untouched.
    await server.start_server(auto_decompress=False)
    return server


@pytest.fixture
async def client(
    aiohttp_client: Any, config: Config, store: SQLiteStore, clock: FixedClock, box: SecretBox
) -> TestClient:
    app = create_app(config, store=store, clock=clock, box=box)
    # (aiohttp_client(app, server_kwargs=...) drops server_kwargs; a server made first keeps them.)
    return await aiohttp_client(await start_server(app))
