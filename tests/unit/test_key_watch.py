"""key_watch.Watched: a key file written, replaced, created or deleted is loaded again at the next look; an
unchanged one is not (a reload that fails would otherwise be retried and logged at every look)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway import key_watch
from gateway.key_watch import Watched


def rewrite(path: Path) -> None:
    path.write_bytes(b"other bytes, same file")


def replace(path: Path) -> None:
    path.with_name("new").write_bytes(path.read_bytes())
    os.replace(path.with_name("new"), path)  # same bytes, same size: another inode


def touch(path: Path) -> None:
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))


def chmod(path: Path) -> None:
    path.chmod(0o644)  # as `chown`/`chmod` after a step run as another user: only the ctime changes


def delete(path: Path) -> None:
    path.unlink()


def create(path: Path) -> None:
    path.with_name("staged").write_bytes(b"k")


@pytest.mark.parametrize("change", [rewrite, replace, touch, chmod, delete, create])
def test_a_change_is_loaded_once(tmp_path: Path, change: Callable[[Path], None]) -> None:
    active = tmp_path / "active"
    active.write_bytes(b"key")
    loads: list[int] = []
    watched = Watched([active, tmp_path / "staged"], lambda: loads.append(1))
    watched.check()
    assert loads == []  # nothing changed since it was loaded
    change(active)
    watched.check()
    watched.check()
    assert loads == [1]


async def test_the_watch_goes_on_after_a_look_that_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever one look meets is logged: a watch that ended would leave the process behind every rotation."""
    monkeypatch.setattr(key_watch, "CHECK_INTERVAL", 0.01)
    active = tmp_path / "active"
    active.write_bytes(b"key")
    reports = []

    def failing_reload() -> None:
        raise PermissionError(13, "Permission denied")

    async def report() -> None:
        reports.append(1)

    watching = asyncio.create_task(key_watch.watch([Watched([active], failing_reload)], report))
    await asyncio.sleep(0.05)
    active.write_bytes(b"other")
    await asyncio.sleep(0.1)
    assert not watching.done() and len(reports) >= 3
    watching.cancel()
    assert "key files not checked this time" in caplog.text and "Permission denied" in caplog.text
