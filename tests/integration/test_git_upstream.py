"""git.backend = "http://...": what the gateway sends to the upstream server and how upstream failures show in git.

The upstream here is a recording aiohttp app (its behaviour is scripted); the real nginx + http-backend upstream
is exercised end to end in tests/e2e/test_git_backends.py.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.secretbox import SecretBox
from gateway.store.sqlite import SQLiteStore
from gateway.users import AccessLevel
from tests.conftest import make_config
from tests.gitcli import agit, git_env, with_credentials
from tests.procs import free_port
from tests.world import Actor, World

SEEN = web.AppKey("seen", list)
STATUS = web.AppKey("status", list)


async def record(request: web.Request) -> web.StreamResponse:
    request.app[SEEN].append(
        {"path_qs": request.path_qs, "headers": dict(request.headers), "body": await request.read()}
    )
    status = request.app[STATUS][0]
    if status == 401:
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="upstream"'}, text="who are you")
    return web.Response(
        body=b"001e# service=git-upload-pack\n0000",
        content_type="application/x-git-upload-pack-advertisement",
    )


async def make_gateway(
    aiohttp_client: Any,
    aiohttp_server: Any,
    tmp_path: Path,
    store: SQLiteStore,
    clock: FixedClock,
    box: SecretBox,
    backend: str,
) -> TestClient:
    config = make_config(
        tmp_path, git={"backend": backend, "backend_username": "gw", "backend_password": "upstream-secret"}
    )
    app = create_app(config, store=store, clock=clock, box=box)
    return await aiohttp_client(await aiohttp_server(app, auto_decompress=False))


@pytest.fixture
async def upstream(aiohttp_server: Any) -> Any:
    app = web.Application()
    app[SEEN] = []
    app[STATUS] = [200]
    app.router.add_route("*", "/{tail:.*}", record)
    return await aiohttp_server(app, auto_decompress=False)


async def developer(world: World) -> Actor:
    group = await world.group("tanuki")
    await world.project("awesome", group)
    dev = await world.user("dev", scopes=("read_repository",))
    await world.member(dev, group, AccessLevel.DEVELOPER)
    return dev


async def test_request_sent_upstream(
    aiohttp_client: Any,
    aiohttp_server: Any,
    tmp_path: Path,
    store: SQLiteStore,
    clock: FixedClock,
    box: SecretBox,
    world: World,
    upstream: Any,
) -> None:
    client = await make_gateway(
        aiohttp_client, aiohttp_server, tmp_path, store, clock, box, str(upstream.make_url("/base/"))
    )
    dev = await developer(world)
    basic = "Basic " + base64.b64encode(f"dev:{dev.pat}".encode()).decode()
    r = await client.get(
        "/TANUKI/Awesome/info/refs?service=git-upload-pack&private_token=leak",
        headers={"Authorization": basic, "Git-Protocol": "version=2", "PRIVATE-TOKEN": dev.pat},
    )
    assert r.status == 200
    assert await r.read() == b"001e# service=git-upload-pack\n0000"
    [seen] = upstream.app[SEEN]
    # The canonical project path, only the service parameter, the gateway's credentials instead of the client's.
    assert seen["path_qs"] == "/base/tanuki/awesome.git/info/refs?service=git-upload-pack"
    assert seen["headers"]["Authorization"] == "Basic " + base64.b64encode(b"gw:upstream-secret").decode()
    assert "PRIVATE-TOKEN" not in seen["headers"]
    assert seen["headers"]["Git-Protocol"] == "version=2"
    assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert dev.pat not in repr(seen)


async def test_refused_requests_never_reach_upstream(
    aiohttp_client: Any,
    aiohttp_server: Any,
    tmp_path: Path,
    store: SQLiteStore,
    clock: FixedClock,
    box: SecretBox,
    world: World,
    upstream: Any,
) -> None:
    client = await make_gateway(aiohttp_client, aiohttp_server, tmp_path, store, clock, box, str(upstream.make_url("")))
    await developer(world)
    for path in ("/tanuki/awesome.git/info/refs?service=git-upload-pack", "/tanuki/awesome.git/git-upload-pack"):
        r = await client.request("GET" if "info" in path else "POST", path)
        assert r.status == 401
    assert upstream.app[SEEN] == []


@pytest.mark.parametrize(
    ("scenario", "shown"),
    [
        ("upstream refuses the gateway", "remote: 502 Bad Gateway: the git backend refused the gateway's credentials"),
        ("upstream down", "remote: 502 Bad Gateway: the git backend is unreachable or failed"),
    ],
)
async def test_upstream_failures_as_git_shows_them(
    aiohttp_client: Any,
    aiohttp_server: Any,
    tmp_path: Path,
    store: SQLiteStore,
    clock: FixedClock,
    box: SecretBox,
    world: World,
    upstream: Any,
    scenario: str,
    shown: str,
) -> None:
    if scenario == "upstream down":
        backend = f"http://127.0.0.1:{free_port()}"
    else:
        backend = str(upstream.make_url(""))
        upstream.app[STATUS][0] = 401
    client = await make_gateway(aiohttp_client, aiohttp_server, tmp_path, store, clock, box, backend)
    dev = await developer(world)
    url = with_credentials(str(client.make_url("/tanuki/awesome.git")), "dev", dev.pat)
    result = await agit(git_env(tmp_path / "home"), "ls-remote", url)
    assert result.code != 0
    assert shown in result.err
    assert "The requested URL returned error: 502" in result.err
