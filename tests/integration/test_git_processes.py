"""The embedded backend's children: bounded by git.max_processes, killed with their group on client disconnect."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway import repositories
from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.secretbox import SecretBox
from gateway.store.sqlite import SQLiteStore
from gateway.users import AccessLevel
from tests.conftest import make_config
from tests.gitcli import git_env, make_random_repo, make_seed, push_direct
from tests.procs import ProcInfo, alive, group_members, processes
from tests.world import Actor, World


def backend_children() -> list[ProcInfo]:
    """git-http-backend processes started by this (test) process, i.e. by the in-process gateway."""
    me = os.getpid()
    return [p for p in processes() if p.ppid == me and "git-http-backend" in p.cmdline and p.state != "Z"]


async def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())


def pkt(line: str) -> bytes:
    data = line.encode()
    return f"{len(data) + 4:04x}".encode() + data


Serve = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve(tmp_path: Path, store: SQLiteStore, clock: FixedClock, box: SecretBox) -> AsyncIterator[Serve]:
    """Run the gateway in process exactly as `gateway serve` does (AppRunner, auto_decompress=False and no handler
    cancellation: a client disconnect surfaces as a failed write, not as a cancelled handler). Yields its URL."""
    runners: list[web.AppRunner] = []

    async def start(**git: Any) -> str:
        config = make_config(tmp_path, git=git)
        runner = web.AppRunner(create_app(config, store=store, clock=clock, box=box), auto_decompress=False)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def project_with(world: World, tmp_path: Path, *, megabytes: int = 0) -> tuple[Actor, str, str]:
    """A Developer's PAT, the project path and the head commit of its seeded repository."""
    env = git_env(tmp_path / "home")
    group = await world.group("tanuki")
    project = await world.project("awesome", group)
    dev = await world.user("dev", scopes=("read_repository",))
    await world.member(dev, group, AccessLevel.DEVELOPER)
    seed = tmp_path / "seed"
    head = make_random_repo(env, seed, megabytes=megabytes) if megabytes else make_seed(env, seed)
    bare = repositories.locate(world.config, project.full_path)
    assert bare is not None
    push_direct(env, seed, bare)
    return dev, project.full_path, head


def auth(actor: Actor) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{actor.user.username}:{actor.pat}".encode()).decode()}


async def test_concurrent_backends_are_bounded(serve: Serve, world: World, tmp_path: Path) -> None:
    base = await serve(max_processes=1)
    dev, path, head = await project_with(world, tmp_path)
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield pkt(f"want {head}\n")
        await release.wait()  # the child now waits on stdin, holding the only slot
        yield b"0000" + pkt("done\n")

    headers = auth(dev) | {"Content-Type": "application/x-git-upload-pack-request"}
    async with aiohttp.ClientSession() as session:

        async def fetch(method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
            async with session.request(method, base + url, **kwargs) as r:
                return r.status, await r.read()

        first = asyncio.ensure_future(fetch("POST", f"/{path}.git/git-upload-pack", data=slow_body(), headers=headers))
        assert await wait_for(lambda: len(backend_children()) == 1)
        second = asyncio.ensure_future(
            fetch("GET", f"/{path}.git/info/refs?service=git-upload-pack", headers=auth(dev))
        )
        await asyncio.sleep(0.5)
        assert not second.done()  # queued behind the slot, not running a second child
        assert len(backend_children()) == 1

        release.set()
        status, body = await first
        assert status == 200
        assert b"PACK" in body
        status, body = await second
        assert status == 200
        assert head.encode() in body


@pytest.mark.parametrize("phase", ["request body", "response body"])
async def test_client_disconnect_kills_the_backend_group(
    serve: Serve, world: World, tmp_path: Path, phase: str
) -> None:
    base = await serve()
    # 40 MB of random data: far more than socket buffers, so the backend is still sending when the client leaves.
    dev, path, head = await project_with(world, tmp_path, megabytes=40 if phase == "response body" else 0)
    stuck = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield pkt(f"want {head}\n")
        if phase == "request body":
            await stuck.wait()  # never set: the client leaves mid-upload
        yield b"0000" + pkt("done\n")

    headers = auth(dev) | {"Content-Type": "application/x-git-upload-pack-request"}
    async with aiohttp.ClientSession() as session:
        url = f"{base}/{path}.git/git-upload-pack"
        request = asyncio.ensure_future(session.post(url, data=body(), headers=headers))
        assert await wait_for(lambda: len(backend_children()) == 1)
        child = backend_children()[0]
        # http-backend answers with its headers before upload-pack has read the request.
        response = await request
        assert response.status == 200
        if phase == "response body":
            await response.content.read(64 * 1024)
            # upload-pack and pack-objects run in the child's process group while the pack streams.
            assert await wait_for(lambda: len(group_members(child.pid)) >= 2)
        response.close()  # the client goes away
    assert await wait_for(lambda: not alive(child.pid))
    assert await wait_for(lambda: not group_members(child.pid)), group_members(child.pid)
    assert not stuck.is_set()


async def test_stalled_client_releases_the_backend(serve: Serve, world: World, tmp_path: Path) -> None:
    """git.timeout bounds each wait: a client that stops mid-upload loses its backend instead of holding a slot."""
    base = await serve(timeout=0.5, max_processes=1)
    dev, path, head = await project_with(world, tmp_path)
    never = asyncio.Event()

    async def stalled_body() -> AsyncIterator[bytes]:
        yield pkt(f"want {head}\n")
        await never.wait()
        yield b"0000"

    headers = auth(dev) | {"Content-Type": "application/x-git-upload-pack-request"}
    async with aiohttp.ClientSession() as session:
        stalled = asyncio.ensure_future(
            session.post(f"{base}/{path}.git/git-upload-pack", data=stalled_body(), headers=headers)
        )
        assert await wait_for(lambda: len(backend_children()) == 1)
        child = backend_children()[0]
        assert await wait_for(lambda: not alive(child.pid), timeout=5)
        # The slot is free again: the next request is served at once.
        async with session.get(f"{base}/{path}.git/info/refs?service=git-upload-pack", headers=auth(dev)) as r:
            assert r.status == 200
        stalled.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            response = await stalled
            await response.read()


@pytest.mark.parametrize("megabytes", [2, 40])
async def test_a_clone_abandoned_by_a_slow_reader_ends_at_once(
    serve: Serve, world: World, tmp_path: Path, megabytes: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by a README walkthrough: a client that reads slowly, then leaves, held its handler and its
    git.max_processes slot until git.timeout (asyncio's wait() for the child waited for the abandoned stdout pipe),
    and was then logged as a 500 (aiohttp's "Connection lost" is a ConnectionError, not a reset)."""
    caplog.set_level("INFO", logger="gateway.access")
    base = await serve(max_processes=1)
    dev, path, head = await project_with(world, tmp_path, megabytes=megabytes)
    body = pkt(f"want {head} no-progress\n") + b"0000" + pkt("done\n")
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    head_lines = (
        f"POST /{path}.git/git-upload-pack HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: {auth(dev)['Authorization']}\r\n"
        f"Content-Type: application/x-git-upload-pack-request\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head_lines.encode() + body)
    got = 0
    while got < 200_000:
        data = await reader.read(16384)
        if not data:
            break
        got += len(data)
        await asyncio.sleep(0.01)
    assert got >= 200_000
    writer.close()
    with caplog.at_level("INFO", logger="gateway.access"):
        assert await wait_for(lambda: not backend_children(), timeout=10)
        assert await wait_for(lambda: "git-upload-pack" in caplog.text, timeout=5)
    [entry] = [json.loads(r.getMessage()) for r in caplog.records if "git-upload-pack" in r.getMessage()]
    # Written whole into the socket buffers before the client left (2 MB), or cut off by its leaving (40 MB).
    assert entry["status"] == (200 if megabytes == 2 else 499)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # The slot is free again: the next request is served at once.
    url = f"{base}/{path}.git/info/refs?service=git-upload-pack"
    async with aiohttp.ClientSession() as session, session.get(url, headers=auth(dev)) as r:
        assert r.status == 200
