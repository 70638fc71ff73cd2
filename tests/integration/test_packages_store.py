"""The embedded store behind generic and Maven packages: duplicates, checksums, HEAD, size limit, interrupted
uploads and invalid names — nothing lost, nothing half-written, nothing outside the store."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.cli import _cut_connections
from gateway.clock import FixedClock
from gateway.secretbox import SecretBox
from gateway.store.sqlite import SQLiteStore
from tests.conftest import make_config, start_server
from tests.world import World

LIMIT = 64 * 1024


@pytest.fixture
async def env(
    aiohttp_client: Any, tmp_path: Path, store: SQLiteStore, clock: FixedClock, box: SecretBox, world: World
) -> tuple[TestClient, str, dict[str, str], Path]:
    config = make_config(tmp_path, packages={"max_upload_size": LIMIT})
    client = await aiohttp_client(
        create_app(config, store=store, clock=clock, box=box), server_kwargs={"auto_decompress": False}
    )
    project = await world.project("p", await world.group("g"))
    token = await world.deploy_token(project, ("write_package_registry",))
    return client, f"/api/v4/projects/{project.id}/packages", {"Deploy-Token": token.secret}, tmp_path / "data"


def stored_files(data: Path) -> list[Path]:
    return sorted(p for p in (data / "packages").rglob("*") if p.is_file()) if (data / "packages").exists() else []


def leftovers(data: Path) -> list[Path]:
    tmp = data / "packages" / "tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


@pytest.mark.parametrize(
    ("path", "second", "status", "final"),
    [
        # immutable files: the same bytes again are fine, different bytes are refused and the first stays
        ("generic/tool/1.0.0/tool.bin", b"one", 200, b"one"),
        ("generic/tool/1.0.0/tool.bin", b"two", 409, b"one"),
        ("maven/com/ex/demo/1.0/demo-1.0.jar", b"two", 409, b"one"),
        # Maven rewrites metadata on every deploy and re-deploys SNAPSHOTs by design
        ("maven/com/ex/demo/maven-metadata.xml", b"two", 201, b"two"),
        ("maven/com/ex/demo/1.0-SNAPSHOT/demo-1.0-SNAPSHOT.jar", b"two", 201, b"two"),
        ("maven/com/ex/demo/1.0-SNAPSHOT/maven-metadata.xml", b"two", 201, b"two"),
    ],
)
async def test_duplicate_uploads(
    env: tuple[TestClient, str, dict[str, str], Path], path: str, second: bytes, status: int, final: bytes
) -> None:
    client, base, auth, _ = env
    assert (await client.put(f"{base}/{path}", data=b"one", headers=auth)).status == 201
    again = await client.put(f"{base}/{path}", data=second, headers=auth)
    assert again.status == status, await again.text()
    assert await (await client.get(f"{base}/{path}", headers=auth)).read() == final


async def test_concurrent_uploads_of_one_file_publish_exactly_one(
    env: tuple[TestClient, str, dict[str, str], Path],
) -> None:
    client, base, auth, _ = env
    url = f"{base}/generic/race/1.0.0/file.bin"
    bodies = [bytes([i]) * 60_000 for i in range(6)]
    answers = await asyncio.gather(*(client.put(url, data=b, headers=auth) for b in bodies))
    assert sorted(a.status for a in answers) == [201] + [409] * 5
    winner = bodies[[a.status for a in answers].index(201)]
    assert await (await client.get(url, headers=auth)).read() == winner


async def test_maven_checksums_head_and_verification(env: tuple[TestClient, str, dict[str, str], Path]) -> None:
    client, base, auth, _ = env
    jar = b"PK\x03\x04 a jar" * 1000
    url = f"{base}/maven/com/ex/demo/1.0/demo-1.0.jar"
    assert (await client.put(url, data=jar, headers=auth)).status == 201
    for algorithm in ("md5", "sha1", "sha256", "sha512"):
        got = await client.get(f"{url}.{algorithm}", headers=auth)
        assert got.status == 200
        assert await got.text() == hashlib.new(algorithm, jar).hexdigest()
    head = await client.head(url, headers=auth)
    assert head.status == 200 and head.headers["Content-Length"] == str(len(jar))
    assert head.headers["X-Checksum-Sha256"] == hashlib.sha256(jar).hexdigest()
    assert await head.read() == b""
    # Maven uploads a .sha1 after each file: verified, never stored as a file of its own.
    good = await client.put(f"{url}.sha1", data=hashlib.sha1(jar).hexdigest().encode(), headers=auth)
    assert good.status == 201
    bad = await client.put(f"{url}.md5", data=b"0" * 32, headers=auth)
    assert bad.status == 400 and "does not match" in (await bad.json())["message"]
    orphan = await client.put(f"{base}/maven/com/ex/demo/2.0/demo-2.0.jar.sha1", data=b"0" * 40, headers=auth)
    assert orphan.status == 400
    assert (await client.get(f"{base}/maven/com/ex/demo/1.0/demo-1.0.pom", headers=auth)).status == 404


async def chunked(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 8192):
        yield data[i : i + 8192]


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "chunked"])
async def test_oversized_upload_is_413_and_leaves_nothing(
    env: tuple[TestClient, str, dict[str, str], Path], announced: bool
) -> None:
    client, base, auth, data = env
    body = b"x" * (LIMIT + 1)
    url = f"{base}/generic/big/1.0.0/big.bin"
    resp = await client.put(url, data=body if announced else chunked(body), headers=auth)
    assert resp.status == 413
    assert "larger than" in (await resp.json())["message"]
    assert (await client.get(url, headers=auth)).status == 404
    assert leftovers(data) == []
    # Exactly the limit is fine.
    assert (await client.put(url, data=body[:-1], headers=auth)).status == 201


async def test_interrupted_upload_leaves_no_partial_file(env: tuple[TestClient, str, dict[str, str], Path]) -> None:
    client, base, auth, data = env
    url = f"{base}/generic/cut/1.0.0/cut.bin"
    _, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        f"PUT {url} HTTP/1.1\r\nHost: x\r\nDeploy-Token: {auth['Deploy-Token']}\r\n".encode()
        + b"Content-Length: 50000\r\n\r\n"
        + b"y" * 20000
    )
    await writer.drain()
    await asyncio.sleep(0.2)  # the gateway is streaming the body to disk now
    writer.close()
    await writer.wait_closed()
    for _ in range(50):
        if not leftovers(data):
            break
        await asyncio.sleep(0.05)
    assert leftovers(data) == []
    assert (await client.get(url, headers=auth)).status == 404
    assert not any(p.name.startswith(".f.cut") for p in stored_files(data))


@pytest.mark.parametrize(
    "path",
    [
        "generic/../1.0.0/x.bin",
        "generic/%2e%2e/1.0.0/x.bin",
        "generic/a..b/1.0.0/x.bin",
        "generic/.hidden/1.0.0/x.bin",
        "generic/tool/1.0.0/.f.x.bin",
        "generic/tool/1.0.0/a%00b",
        "generic/tool/1.0.0/a%2Fb",
        "generic/tool/1.0.0/a%5Cb",
        "generic/tool/1.0.0/a b",
        "generic/" + "n" * 256 + "/1.0.0/x.bin",
        "generic/tool/" + "9" * 256 + "/x.bin",
        "maven/com/ex/../../../etc/passwd",
        "maven/com/ex/demo/1.0/other-1.0.jar",
        "maven/demo-1.0.jar",
        "maven/com//ex/demo/1.0/demo-1.0.jar",
        "maven/com/ex/demo/1.0/%2e%2e",
    ],
)
async def test_invalid_names_are_clear_errors_and_write_nothing(
    env: tuple[TestClient, str, dict[str, str], Path], path: str
) -> None:
    client, base, auth, data = env
    before = stored_files(data)
    resp = await client.put(f"{base}/{path}", data=b"payload", headers=auth)
    assert resp.status in (400, 404), await resp.text()
    if resp.status == 400:
        assert "invalid" in (await resp.json())["message"] or "does not match" in (await resp.json())["message"]
    assert stored_files(data) == before
    assert not (data.parent / "etc").exists()


@pytest.mark.parametrize("ending", ["client leaves", "server cuts"])
async def test_a_download_is_logged_and_ended_with_its_transfer(
    tmp_path: Path,
    store: SQLiteStore,
    clock: FixedClock,
    box: SecretBox,
    world: World,
    ending: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by a README walkthrough: a download was logged when its handler returned, before the file was sent
    (a 200 of 9 ms for 2 s, never a 499), and a second stop signal during it left the server waiting 60 s."""
    caplog.set_level("INFO", logger="gateway.access")
    config = make_config(tmp_path, packages={"max_upload_size": 64 << 20})
    server = await start_server(create_app(config, store=store, clock=clock, box=box))
    host, port = server.host, server.port
    assert server.runner is not None
    try:
        project = await world.project("p", await world.group("g"))
        token = await world.deploy_token(project, ("read_package_registry", "write_package_registry"))
        path = f"/api/v4/projects/{project.id}/packages/generic/tool/1.0.0/tool.bin"
        async with (
            aiohttp.ClientSession() as http,
            http.put(
                f"http://{host}:{port}{path}",
                data=io.BytesIO(b"x" * (32 << 20)),
                headers={"Deploy-Token": token.secret},
            ) as r,
        ):
            assert r.status == 201
        reader, writer = await asyncio.open_connection(host, port)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nDeploy-Token: {token.secret}\r\n\r\n".encode())
        got = 0
        while got < 1 << 20:  # slowly: about 0.2 s
            got += len(await reader.read(65536))
            await asyncio.sleep(0.01)
        started = asyncio.get_running_loop().time()
        if ending == "client leaves":
            writer.transport.abort()
        else:
            _cut_connections(server.runner)

        def logged() -> list[dict[str, object]]:
            return [
                json.loads(r.getMessage())
                for r in caplog.records
                if r.name == "gateway.access" and "tool.bin" in r.getMessage() and '"GET"' in r.getMessage()
            ]

        while not logged() and asyncio.get_running_loop().time() - started < 5:
            await asyncio.sleep(0.02)
        [entry] = logged()
        assert asyncio.get_running_loop().time() - started < 1
        # The client's leaving (499), or the server stopping (503); either way, the time the transfer lasted.
        assert entry["status"] == (499 if ending == "client leaves" else 503)
        assert float(entry["duration_ms"]) > 100  # type: ignore[arg-type]
        assert not [r for r in caplog.records if r.levelno >= 40], [
            r.getMessage() for r in caplog.records if r.levelno >= 40
        ]
        writer.close()
    finally:
        await server.close()
