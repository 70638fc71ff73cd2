"""Benchmark: the package files of `gateway backup` (gateway/backup.py), 1,000 blobs of 1 MiB: a first backup
against `cp -a` of the same folder (the machine's copy, same run), and the next day's with --link-dest when 1 % of
the blobs are new. Reported, not judged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Context, Row, tempdir
from gateway import backup

BLOB = 1024 * 1024


def put(store: Path, index: int) -> None:
    """One package file as the embedded store lays it out: a blob named by its SHA-256 and a pointer to it."""
    content = index.to_bytes(8, "big") * (BLOB // 8)
    digest = hashlib.sha256(content).hexdigest()
    (store / "blobs" / digest[:2]).mkdir(parents=True, exist_ok=True)
    (store / "blobs" / digest[:2] / digest).write_bytes(content)
    pointer = store / "generic" / "1" / "tool" / str(index) / ".f.tool.bin"
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(f'{{"sha256": "{digest}", "size": {BLOB}}}')


def timed(action: Callable[[], object]) -> float:
    os.sync()  # what the previous step wrote is on disk: each step pays for its own writes only
    started = time.perf_counter()
    action()
    os.sync()
    return time.perf_counter() - started


def run(ctx: Context) -> list[Row]:
    files = ctx.pick(1000, 200)
    tmp = tempdir("bench-backup-")
    try:
        store = tmp / "packages"
        for i in range(files):
            put(store, i)
        copied = timed(lambda: subprocess.run(["cp", "-a", str(store), str(tmp / "cp")], check=True))
        first = timed(lambda: backup._copy_packages(store, tmp / "monday"))
        for i in range(files, files + files // 100):
            put(store, i)
        linked: list[backup.Filed] = []
        second = timed(lambda: linked.append(backup._copy_packages(store, tmp / "tuesday", tmp / "monday")))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mib = files * BLOB / 2**20
    return [
        Row(
            f"backup, package files: {files:,} blobs of 1 MiB ({mib:,.0f} MiB) and their pointers, first backup",
            f"{first:.2f} s",
            f"{copied:.2f} s (cp -a)",
            f"{first / copied:.2f}",
            "(reported)",
        ),
        Row(
            f"backup --link-dest the first, {files // 100} new blobs ({linked[0].linked:,} linked)",
            f"{second:.2f} s",
            f"{first:.2f} s (the first backup)",
            f"{second / first:.2f}",
            "(reported)",
        ),
    ]


if __name__ == "__main__":
    from bench.__main__ import main

    raise SystemExit(main(["--only", "backup"]))
