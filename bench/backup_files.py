"""Benchmark: `gateway backup` (gateway/backup.py). Package files, 1,000 blobs of 1 MiB, and embedded
repositories, 50 of 4 MiB: a first backup against `cp -a` of the same folder (the machine's copy, same run), and the
next day's with --link-dest when 1 % of the blobs are new and one repository was pushed to. Reported, not judged.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Context, Row, tempdir
from gateway import backup, repositories
from gateway import config as config_module
from tests.gitcli import FAST_PACK, commit_file, git, git_env, make_random_repo, push_direct

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


def run_repositories(ctx: Context) -> list[Row]:
    tmp = tempdir("bench-backup-")
    try:
        return _repositories(ctx, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _repositories(ctx: Context, tmp: Path) -> list[Row]:
    count, megabytes = ctx.pick((50, 4), (10, 2))
    env = git_env(tmp / "home")
    config_file = tmp / "gateway.toml"
    config_file.write_text(f'[git]\nrepositories = "{tmp / "repositories"}"\n')
    config = config_module.load(config_file)
    work = tmp / "work"
    make_random_repo(env, work, megabytes=megabytes, blob_mb=1)
    git(env, "branch", "-qM", "main", cwd=work).check()
    projects = [f"bench/app{i:03d}" for i in range(count)]
    for project in projects:
        bare = asyncio.run(repositories.create_bare(config, project))
        assert bare is not None
        push_direct(env, work, bare, "main")
    copied = timed(lambda: subprocess.run(["cp", "-a", str(tmp / "repositories"), str(tmp / "cp")], check=True))
    monday, tuesday = tmp / "monday", tmp / "tuesday"
    made: list[backup.Repository] = []

    def first_backup() -> None:
        for project in projects:
            bundled = asyncio.run(backup._bundle(config, project, monday, None))
            assert bundled is not None
            made.append(bundled[0])

    first = timed(first_backup)
    commit_file(env, work, "tuesday.txt", "one repository pushed to\n")
    pushed = repositories.locate(config, projects[0])
    assert pushed is not None
    git(env, *FAST_PACK, "push", "-q", str(pushed), "main", cwd=work).check()
    earlier = backup.Earlier(monday, {r.path: vars(r) for r in made})
    linked: list[int] = []

    def second_backup() -> None:
        n = 0
        for project in projects:
            bundled = asyncio.run(backup._bundle(config, project, tuesday, earlier))
            assert bundled is not None
            n += bundled[1]
        linked.append(n)

    second = timed(second_backup)
    mib = count * megabytes
    return [
        Row(
            f"backup, repositories: {count} of {megabytes} MiB ({mib:,} MiB), one bundle each, first backup",
            f"{first:.2f} s",
            f"{copied:.2f} s (cp -a)",
            f"{first / copied:.2f}",
            "(reported)",
        ),
        Row(
            f"backup --link-dest the first, 1 repository pushed to ({linked[0]} bundles linked)",
            f"{second:.2f} s",
            f"{first:.2f} s (the first backup)",
            f"{second / first:.2f}",
            "(reported)",
        ),
    ]


def run(ctx: Context) -> list[Row]:
    return run_packages(ctx) + run_repositories(ctx)


def run_packages(ctx: Context) -> list[Row]:
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
