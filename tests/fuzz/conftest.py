"""The fuzzed gateway: the whole app in process with a registry signing key (so /jwt/auth issues tokens), PyPI and
npm backends that refuse connections (so uploads are parsed, then answered 502), the test client as a trusted proxy
(so X-Forwarded-For is parsed), and a seeded world."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.secretbox import SecretBox
from gateway.signing_keys import SigningKey, generate_key, self_signed_certificate
from gateway.store.sqlite import SQLiteStore
from tests.conftest import make_config
from tests.fuzz.seed import Seed, build
from tests.world import World


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
    aiohttp_server: Any,
    tmp_path: Path,
    store: SQLiteStore,
    clock: FixedClock,
    box: SecretBox,
    signing_key: SigningKey,
) -> int:
    """The port of a running gateway (its server is stopped by the aiohttp_server fixture)."""
    dead = f"http://127.0.0.1:{closed_port()}"
    config = make_config(
        tmp_path,
        packages={"pypi": {"backend": f"{dead}/pypi/{{project_id}}/"}, "npm": {"backend": f"{dead}/npm/"}},
        # Believe X-Forwarded-For from the test client, so that fuzzed values of it are parsed.
        server={"trusted_proxies": ["127.0.0.1"]},
    )
    app = create_app(config, store=store, clock=clock, box=box, signing_key=signing_key)
    server = await aiohttp_server(app, auto_decompress=False)
    return int(server.port)


@pytest.fixture
async def seed(world: World) -> Seed:
    return await build(world)
