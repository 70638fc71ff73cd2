"""Process fixtures for end-to-end tests: the real gateway (`python -m gateway serve`) and real backends, each on a
free loopback port, readiness polled, stopped by PID (helpers: tests/procs.py, launchers: tests/servers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import pg
from tests.servers import Gateway, GitUpstream, init_gateway, start_gateway, start_git_upstream, write_config

# Credentials nginx demands from the gateway in front of it (git.backend_username / git.backend_password).
UPSTREAM_USER = "gateway"
UPSTREAM_PASSWORD = "upstream-secret"


@pytest.fixture(scope="module")
def git_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitUpstream]:
    """nginx + fcgiwrap + git http-backend requiring the gateway's own Basic credentials."""
    upstream = start_git_upstream(
        tmp_path_factory.mktemp("git-upstream"), username=UPSTREAM_USER, password=UPSTREAM_PASSWORD
    )
    try:
        yield upstream
    finally:
        upstream.stop()


GatewayFactory = Callable[..., Gateway]


@pytest.fixture(scope="module")
def gateway_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayFactory]:
    """make(git={...}, prepare=fn(config_path)) → a running gateway; `prepare` runs after `gateway init` and
    before `serve` (e.g. to build users, projects and tokens in its database)."""
    started: list[Gateway] = []

    def make(*, git: dict[str, Any] | None = None, prepare: Callable[[Path], None] | None = None) -> Gateway:
        config = write_config(tmp_path_factory.mktemp("gateway"), git=git)
        init_gateway(config)
        if prepare is not None:
            prepare(config)
        gateway = start_gateway(config)
        started.append(gateway)
        return gateway

    try:
        yield make
    finally:
        for gateway in started:
            gateway.stop()


@pytest.fixture(scope="module")
def postgres() -> Iterator[pg.Cluster]:
    """A throwaway PostgreSQL 15 cluster (tests/pg.py). Not under pytest's tmp dir: that is 0700 root-owned and the
    server runs as `postgres` when we are root."""
    with pg.running_cluster() as cluster:
        yield cluster
