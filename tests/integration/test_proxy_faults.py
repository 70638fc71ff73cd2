"""Backend faults through the gateway's forwarder (proxy.py), per route family, with real backend processes:
down → 502, silent → 504 in the family's error shape; killed mid-body → the client's transfer fails, never a
truncated success; back → served again without touching the gateway; a client that leaves frees the backend.

The gateway runs in process (as `gateway serve` runs it) so that its backend connections can be observed; the file
server is bench/servers.py's, a separate process killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.clock import FixedClock
from gateway.secretbox import SecretBox
from gateway.store.sqlite import SQLiteStore
from tests.conftest import make_config
from tests.package_clients import serve
from tests.procs import Proc, alive, established, free_port, stop
from tests.servers import start_file_server
from tests.world import World

SIZE = 64 * 1024 * 1024  # far more than every socket and read buffer between the backend and the client
BLOCK = os.urandom(1024 * 1024)
TIMEOUT = 0.5  # git.timeout, registry.timeout and packages.timeout of the "silent" gateway


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A backend that accepts connections (the kernel completes the handshake) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


@dataclass
class Site:
    url: str
    project_path: str
    git_auth: str  # Basic value of a read_repository deploy token
    package_token: str  # a write_package_registry deploy token
    project_id: int


async def site(world: World) -> tuple[str, str, int, str]:
    group = await world.group("tanuki")
    project = await world.project("awesome", group)
    git = await world.deploy_token(project, ("read_repository",))
    packages = await world.deploy_token(project, ("write_package_registry",))
    basic = base64.b64encode(f"{git.token.username}:{git.secret}".encode()).decode()
    return project.full_path, f"Basic {basic}", project.id, packages.secret


@contextlib.asynccontextmanager
async def gateway(
    tmp_path: Path, world: World, store: SQLiteStore, clock: FixedClock, box: SecretBox, backend: str, timeout: float
) -> AsyncIterator[Site]:
    """The gateway with every family's backend at `backend` (git upstream, registry, generic packages)."""
    config = make_config(
        tmp_path,
        git={"backend": backend.rstrip("/"), "timeout": timeout},
        registry={"backend": backend.rstrip("/"), "timeout": timeout},
        packages={"timeout": timeout, "generic": {"backend": backend + "{project_id}/"}},
    )
    world.config = config
    path, git_auth, project_id, package_token = await site(world)
    async with serve(config, store, clock, box) as url:
        yield Site(url, path, git_auth, package_token, project_id)


def requests(s: Site) -> dict[str, tuple[str, str, dict[str, str]]]:
    """One request per family that reaches the backend: (method, URL, headers)."""
    return {
        "git": (
            "GET",
            f"{s.url}/{s.project_path}.git/info/refs?service=git-upload-pack",
            {"Authorization": s.git_auth},
        ),
        "registry": ("GET", f"{s.url}/v2/", {}),
        "packages": ("GET", package_url(s, "f.bin"), {"Deploy-Token": s.package_token}),
    }


def package_url(s: Site, name: str) -> str:
    return f"{s.url}/api/v4/projects/{s.project_id}/packages/generic/pkg/1.0.0/{name}"


async def error_text(family: str, r: aiohttp.ClientResponse) -> str:
    """The message of an error the gateway answered, read from the shape this family's clients expect."""
    if family == "git":
        assert r.content_type == "text/plain"
        return await r.text()
    body = await r.json()
    if family == "registry":
        # The distribution spec's error body (docker and skopeo print errors[].message).
        return str(body["errors"][0]["message"])
    return str(body["message"])  # GitLab's package API shape


FAMILIES = ["git", "registry", "packages"]
BACKEND_NAME = {"git": "git backend", "registry": "registry backend", "packages": "generic package backend"}


@pytest.mark.parametrize("family", FAMILIES)
async def test_a_backend_that_is_down_is_502_in_the_familys_shape(
    family: str, tmp_path: Path, world: World, store: SQLiteStore, clock: FixedClock, box: SecretBox
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/"  # nothing listens: connection refused
    async with gateway(tmp_path, world, store, clock, box, dead, 600) as s, aiohttp.ClientSession() as session:
        method, url, headers = requests(s)[family]
        async with session.request(method, url, headers=headers) as r:
            assert r.status == 502
            text = await error_text(family, r)
    assert "502 Bad Gateway" in text and BACKEND_NAME[family] in text and "unreachable" in text


@pytest.mark.parametrize("family", FAMILIES)
async def test_a_backend_silent_before_its_headers_is_504_after_the_configured_timeout(
    family: str,
    silent_port: int,
    tmp_path: Path,
    world: World,
    store: SQLiteStore,
    clock: FixedClock,
    box: SecretBox,
) -> None:
    silent = f"http://127.0.0.1:{silent_port}/"
    async with gateway(tmp_path, world, store, clock, box, silent, TIMEOUT) as s, aiohttp.ClientSession() as session:
        method, url, headers = requests(s)[family]
        # The client's own limit is far above the gateway's: the 504 comes from the configured timeout.
        async with session.request(method, url, headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as r:
            assert r.status == 504
            text = await error_text(family, r)
    assert "504 Gateway Timeout" in text and BACKEND_NAME[family] in text


# --- a real backend process killed mid-transfer ------------------------------------------------------------------


@dataclass
class FileBackend:
    folder: Path
    port: int
    proc: Proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, the kernel closes its sockets mid-stream."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.popen.wait(10)

    def restart(self) -> None:
        _, self.proc = start_file_server(self.folder, self.port)


@pytest.fixture
def files(tmp_path: Path) -> Iterator[FileBackend]:
    folder = tmp_path / "files"
    url, proc = start_file_server(folder)
    backend = FileBackend(folder, int(url.rsplit(":", 1)[1].strip("/")), proc)
    try:
        yield backend
    finally:
        stop(backend.proc)


async def payload() -> AsyncIterator[bytes]:
    for _ in range(SIZE // len(BLOCK)):
        yield BLOCK


DIGEST = hashlib.sha256(BLOCK * (SIZE // len(BLOCK))).hexdigest()


async def upload(session: aiohttp.ClientSession, s: Site, name: str, body: Any) -> tuple[int, str]:
    headers = {"Deploy-Token": s.package_token, "Content-Length": str(SIZE)}
    async with session.put(package_url(s, name), data=body, headers=headers) as r:
        return r.status, await r.text()


async def download(session: aiohttp.ClientSession, s: Site, name: str) -> tuple[int, str]:
    async with session.get(package_url(s, name), headers={"Deploy-Token": s.package_token}) as r:
        digest = hashlib.sha256()
        async for chunk in r.content.iter_chunked(1024 * 1024):
            digest.update(chunk)
        return r.status, digest.hexdigest()


async def test_backend_killed_mid_download_aborts_the_client_and_recovers(
    files: FileBackend, tmp_path: Path, world: World, store: SQLiteStore, clock: FixedClock, box: SecretBox
) -> None:
    async with gateway(tmp_path, world, store, clock, box, files.url, 600) as s, aiohttp.ClientSession() as session:
        assert await upload(session, s, "big.bin", payload()) == (201, "")
        async with session.get(package_url(s, "big.bin"), headers={"Deploy-Token": s.package_token}) as r:
            assert r.status == 200 and r.headers["Content-Length"] == str(SIZE)
            received = len(await r.content.read(1024 * 1024))
            files.kill()  # the backend dies with most of the body unsent (the client has not read it)
            with pytest.raises(aiohttp.ClientPayloadError):  # never a short body that looks complete
                while chunk := await r.content.read(1024 * 1024):
                    received += len(chunk)
            assert received < SIZE
        # While it is down: a clean 502 before any header, not a hang.
        async with session.get(package_url(s, "big.bin"), headers={"Deploy-Token": s.package_token}) as r:
            assert r.status == 502
        files.restart()
        # Back: the next request is served in full by the same gateway process.
        assert await download(session, s, "big.bin") == (200, DIGEST)


async def test_backend_killed_mid_upload_is_never_a_success(
    files: FileBackend, tmp_path: Path, world: World, store: SQLiteStore, clock: FixedClock, box: SecretBox
) -> None:
    async with gateway(tmp_path, world, store, clock, box, files.url, 600) as s, aiohttp.ClientSession() as session:
        sent = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal sent
            async for block in payload():
                if sent == 8 * len(BLOCK):
                    files.kill()  # the backend has part of the upload and no longer reads
                    await asyncio.sleep(0.1)
                sent += len(block)
                yield block

        outcome: tuple[int, str] | str
        try:
            outcome = await upload(session, s, "cut.bin", body())
        except (aiohttp.ClientError, OSError) as exc:  # the gateway may close while the client still sends
            outcome = type(exc).__name__
        if isinstance(outcome, tuple):  # else the transfer failed at the client: not a success either
            status, text = outcome
            assert status == 502 and "generic package backend" in text, outcome
        files.restart()
        assert await upload(session, s, "cut.bin", payload()) == (201, "")
        assert await download(session, s, "cut.bin") == (200, DIGEST)


async def test_client_leaving_mid_download_releases_the_backend_connection(
    files: FileBackend, tmp_path: Path, world: World, store: SQLiteStore, clock: FixedClock, box: SecretBox
) -> None:
    async with gateway(tmp_path, world, store, clock, box, files.url, 600) as s:
        async with aiohttp.ClientSession() as session:  # noqa: SIM117 - closed before the next phase
            # Straight to the backend (bench/servers.py flattens the path): the gateway has no pooled connection.
            async with session.put(f"{files.url}{s.project_id}/pkg/1.0.0/big.bin", data=payload()) as r:
                assert r.status == 201
        assert await wait_for(lambda: established(files.port) == 0)
        async with aiohttp.ClientSession() as session:
            r = await session.get(package_url(s, "big.bin"), headers={"Deploy-Token": s.package_token})
            assert r.status == 200
            await r.content.read(1024 * 1024)
            # Mid-body: gateway → backend is open (both ends of it on this host), the backend still streaming.
            assert established(files.port) >= 2
            r.close()  # the client goes away
        # The gateway closes its half-read backend connection (a pool cannot reuse it); the backend sees it close.
        assert await wait_for(lambda: established(files.port) == 0), established(files.port)
        assert alive(files.proc.pid)


async def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


async def test_client_cut_mid_upload_never_completes_the_backend_request(
    files: FileBackend, tmp_path: Path, world: World, store: SQLiteStore, clock: FixedClock, box: SecretBox
) -> None:
    """A large announced upload is relayed socket to socket (proxy.RelayedUpload): a client that stops halfway
    leaves the backend with a short body it can tell from a complete one, and the gateway serves the next upload."""
    async with gateway(tmp_path, world, store, clock, box, files.url, 600) as s, aiohttp.ClientSession() as session:
        host, port = s.url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        path = package_url(s, "cut.bin").removeprefix(s.url)
        head = f"PUT {path} HTTP/1.1\r\nHost: {host}\r\nDeploy-Token: {s.package_token}\r\nContent-Length: {SIZE}\r\n"
        writer.write(head.encode() + b"\r\n")
        for _ in range(8):
            writer.write(BLOCK)
            await writer.drain()
        writer.transport.abort()  # the client dies with 8 of 64 MB sent
        stored = files.folder / f"{s.project_id}_pkg_1.0.0_cut.bin"
        assert await wait_for(lambda: established(files.port) == 0)
        assert not stored.exists() or stored.stat().st_size < SIZE
        # A complete relayed upload: stored whole, and the client told not to reuse the connection.
        headers = {"Deploy-Token": s.package_token, "Content-Length": str(SIZE)}
        async with session.put(package_url(s, "whole.bin"), data=payload(), headers=headers) as r:
            assert r.status == 201 and r.headers.get("Connection", "").lower() == "close"
        assert await download(session, s, "whole.bin") == (200, DIGEST)
