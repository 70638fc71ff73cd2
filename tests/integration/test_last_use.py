"""Tokens' last use: noted in memory on each authentication, written at most once a minute per token (never per
request), shown in the API (GitLab's PAT fields; the same names after GitLab's deploy token fields) and the UI."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import AUDIT, create_app
from gateway.clock import FixedClock
from gateway.secretbox import SecretBox
from gateway.store.base import TokenUse
from gateway.store.sqlite import SQLiteStore
from gateway.users import AccessLevel
from tests.conftest import make_config, start_server
from tests.webui import signed_in
from tests.world import World


class CountingStore(SQLiteStore):
    """The real SQLite store, counting the last-use writes it makes."""

    writes: list[TokenUse]

    async def record_token_use(self, use: TokenUse, *, min_interval: float, keep_ips: int) -> bool:
        written = await super().record_token_use(use, min_interval=min_interval, keep_ips=keep_ips)
        if written:
            self.writes.append(use)
        return written


@pytest.fixture
async def counting_store(tmp_path: Path) -> Any:
    store = await CountingStore(tmp_path / "counting.db").open()
    store.writes = []
    await store.migrate()
    yield store
    await store.close()


@pytest.fixture
async def gw(
    counting_store: CountingStore, aiohttp_client: Any, tmp_path: Path, clock: FixedClock, box: SecretBox
) -> TestClient:
    # The test client's address (127.0.0.1) is a trusted proxy: X-Forwarded-For names the client.
    config = make_config(tmp_path, server={"trusted_proxies": ["127.0.0.1"]})
    app = create_app(config, store=counting_store, clock=clock, box=box)
    return await aiohttp_client(await start_server(app))  # type: ignore[no-any-return]


@pytest.fixture
def world_c(counting_store: CountingStore, clock: FixedClock, box: SecretBox, hasher: Any, config: Any) -> World:
    return World(counting_store, clock, box, hasher, config)


async def flush(client: TestClient) -> None:
    """What the background task does every second (audit.flush_interval)."""
    audit_log = client.server.app[AUDIT]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while audit_log.in_flight and loop.time() < deadline:  # streamed answers are recorded when their handler ends
        await asyncio.sleep(0.01)
    await audit_log.flush()


async def test_deploy_token_written_at_most_once_a_minute(
    gw: TestClient, world_c: World, counting_store: CountingStore, clock: FixedClock
) -> None:
    group = await world_c.group("g")
    project = await world_c.project("p", group)
    created = await world_c.deploy_token(project, ("read_package_registry",))
    url = f"/api/v4/projects/{project.id}/packages/generic/tool/1.0/tool.tgz"
    t0 = clock.now()
    for seconds, ip in [(0, "10.0.0.1"), (10, "10.0.0.2"), (20, "10.0.0.2"), (59, "10.0.0.3"), (61, "10.0.0.4")]:
        clock.set(t0 + timedelta(seconds=seconds))
        for _ in range(3):  # many requests, one note in memory
            r = await gw.get(url, headers={"Deploy-Token": created.secret, "X-Forwarded-For": ip})
            assert r.status == 404  # authenticated and allowed; the package does not exist
        await flush(gw)
    # Written at 0 s (first use) and at 61 s (a minute after the last write); 15 requests, 2 writes.
    assert [(w.at - t0).total_seconds() for w in counting_store.writes] == [0, 61]
    stored = await counting_store.get_deploy_token(created.token.id)
    assert stored is not None
    assert stored.last_used_at == t0 + timedelta(seconds=61)
    # Newest first, distinct; what this process saw between the two writes is merged in.
    assert stored.last_used_ips == ("10.0.0.4", "10.0.0.3", "10.0.0.2", "10.0.0.1")

    # In the API, after GitLab's fields; and a token never used shows null and [].
    unused = await world_c.deploy_token(project, ("read_repository",), name="unused")
    owner = await world_c.user("owner")
    await world_c.member(owner, project, AccessLevel.MAINTAINER)
    listed = await (await gw.get(f"/api/v4/projects/{project.id}/deploy_tokens", headers=owner.headers)).json()
    assert [(t["id"], t["last_used_at"], t["last_used_ips"]) for t in listed] == [
        (created.token.id, "2026-01-15T12:01:01.000Z", ["10.0.0.4", "10.0.0.3", "10.0.0.2", "10.0.0.1"]),
        (unused.token.id, None, []),
    ]
    assert list(listed[0])[-2:] == ["last_used_at", "last_used_ips"]


async def test_personal_access_token_last_use(
    gw: TestClient, world_c: World, counting_store: CountingStore, clock: FixedClock
) -> None:
    alice = await world_c.user("alice")
    t0 = clock.now()
    ips = [f"10.0.1.{n}" for n in range(1, 8)]
    for n, ip in enumerate(ips):  # seven addresses, each a minute apart: GitLab keeps the five most recent
        clock.set(t0 + timedelta(minutes=n))
        assert (await gw.get("/api/v4/user", headers={**alice.headers, "X-Forwarded-For": ip})).status == 200
        await flush(gw)
    assert len(counting_store.writes) == 7
    me = await (await gw.get("/api/v4/personal_access_tokens/self", headers=alice.headers)).json()
    assert me["last_used_at"] == "2026-01-15T12:06:00.000Z"
    assert me["last_used_ips"] == ["10.0.1.7", "10.0.1.6", "10.0.1.5", "10.0.1.4", "10.0.1.3"]
    listed = await (await gw.get("/api/v4/personal_access_tokens", headers=alice.headers)).json()
    assert [t["id"] for t in listed] == [me["id"]] and listed[0]["last_used_ips"] == me["last_used_ips"]


async def test_bad_credentials_are_not_a_use(gw: TestClient, world_c: World, counting_store: CountingStore) -> None:
    alice = await world_c.user("alice")
    assert (await gw.get("/api/v4/user", headers={"PRIVATE-TOKEN": alice.pat + "x"})).status == 401
    await flush(gw)
    assert counting_store.writes == []


async def test_ui_shows_last_use(gw: TestClient, world_c: World, clock: FixedClock) -> None:
    owner = await world_c.user("owner")
    group = await world_c.group("g")
    project = await world_c.project("p", group)
    await world_c.member(owner, project, AccessLevel.MAINTAINER)
    used = await world_c.deploy_token(project, ("read_package_registry",), name="used-token")
    await world_c.deploy_token(project, ("read_repository",), name="fresh-token")
    url = f"/api/v4/projects/{project.id}/packages/generic/tool/1.0/tool.tgz"
    r = await gw.get(url, headers={"Deploy-Token": used.secret, "X-Forwarded-For": "192.0.2.7"})
    assert r.status == 404
    await flush(gw)
    await signed_in(gw, owner)
    html = await (await gw.get(f"/{project.full_path}/-/settings/repository")).text()
    assert '<th scope="col">Last used</th>' in html
    rows = {name: html[html.index(name) :].split("</tr>", 1)[0] for name in ("used-token", "fresh-token")}
    assert "2026-01-15 12:00 UTC" in rows["used-token"] and "from 192.0.2.7" in rows["used-token"]
    assert '<td class="token-last-used">Never</td>' in rows["fresh-token"]
