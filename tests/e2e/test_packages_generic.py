"""Generic packages with curl, exactly as GitLab's docs show it: `--header "Deploy-Token: …" --upload-file` to
upload, `--user <anything>:<token>` to download; the gateway's embedded store keeps the files."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.clock import FixedClock
from gateway.secretbox import SecretBox
from gateway.store.sqlite import SQLiteStore
from tests.conftest import make_config
from tests.package_clients import cast, require, run, serve
from tests.world import World

CURL = Path("/usr/bin/curl")
LIMIT = 4 * 1024 * 1024


@pytest.fixture
async def gateway(tmp_path: Path, store: SQLiteStore, clock: FixedClock, box: SecretBox) -> AsyncIterator[str]:
    config = make_config(tmp_path, packages={"max_upload_size": LIMIT})
    async with serve(config, store, clock, box) as origin:
        yield origin


async def curl(*args: str | Path, stdin: Path | None = None) -> tuple[int, str]:
    argv: list[str | Path] = [require(CURL), "-sS", "-w", "\n%{http_code}", *args]
    if stdin is not None:
        # curl reads "-" from stdin and then uploads chunked (no Content-Length).
        return await run(["/bin/sh", "-c", " ".join(f"'{a}'" for a in argv) + f" < '{stdin}'"])
    return await run(argv)


def status(out: str) -> int:
    return int(out.rsplit("\n", 1)[-1])


async def test_upload_and_download_with_curl(gateway: str, world: World, clock: FixedClock, tmp_path: Path) -> None:
    c = await cast(world, clock, prefix="g1")
    base = f"{gateway}/api/v4/projects/{c.pa.id}/packages/generic/my_package/0.0.1"
    payload = tmp_path / "file.txt"
    payload.write_bytes(os.urandom(1024 * 1024))

    rc, out = await curl(
        "--header", f"Deploy-Token: {c.secrets['pa_write']}", "--upload-file", payload, f"{base}/file.txt"
    )
    assert status(out) == 201 and '"201 Created"' in out, out
    # GitLab's curl examples for users: PRIVATE-TOKEN; chunked from stdin works too (the store streams).
    rc, out = await curl(
        "--header",
        f"PRIVATE-TOKEN: {c.secrets['developer_pat']}",
        "--upload-file",
        "-",
        f"{base}/stdin.bin",
        stdin=payload,
    )
    assert status(out) == 201, out
    for name in ("file.txt", "stdin.bin"):
        target = tmp_path / f"down-{name}"
        rc, out = await curl("--user", f"whatever:{c.secrets['pa_read']}", "-o", target, f"{base}/{name}")
        assert (
            status(out) == 200
            and hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(payload.read_bytes()).digest()
        ), name

    # The read-only token cannot upload; another project's token cannot even see the file.
    rc, out = await curl(
        "--header", f"Deploy-Token: {c.secrets['pa_read']}", "--upload-file", payload, f"{base}/other.txt"
    )
    assert rc == 0 and status(out) == 403
    _, out = await curl("--user", f"x:{c.secrets['pb_write']}", f"{base}/file.txt")
    assert status(out) == 404


async def test_oversized_upload_with_curl_is_413(gateway: str, world: World, clock: FixedClock, tmp_path: Path) -> None:
    c = await cast(world, clock, prefix="g2")
    url = f"{gateway}/api/v4/projects/{c.pa.id}/packages/generic/big/1.0.0/big.bin"
    big = tmp_path / "big.bin"
    big.write_bytes(b"z" * (LIMIT + 1))
    rc, out = await curl("--header", f"Deploy-Token: {c.secrets['pa_write']}", "--upload-file", big, url)
    assert rc == 0 and status(out) == 413 and "larger than" in out
    _, out = await curl("--user", f"x:{c.secrets['pa_write']}", url)
    assert status(out) == 404
