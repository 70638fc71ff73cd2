"""The repository bundles of a backup with --link-dest: the earlier backup's bundle is hard-linked where the
repository's refs have not moved and its bytes are the ones its manifest recorded; else the repository is bundled
anew. Either way the bundle holds the repository as it is (real git)."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway import backup, config, repositories
from tests.gitcli import commit_file, git, git_env, make_seed, push_direct
from tests.servers import write_config

PROJECT = "team/app"


def _push(env: dict[str, str], work: Path, bare: Path) -> None:
    commit_file(env, work, "later.txt", "pushed after the earlier backup\n")
    push_direct(env, work, bare, "main")


def _branch(env: dict[str, str], work: Path, bare: Path) -> None:
    push_direct(env, work, bare, "main:refs/heads/feature")  # a new ref to an object the bundle already holds


def _delete(env: dict[str, str], work: Path, bare: Path) -> None:
    git(env, "--git-dir", str(bare), "update-ref", "-d", "refs/heads/old").check()


def _damage(entry: dict[str, object], earlier: Path) -> None:
    bundle = earlier / str(entry["bundle"])
    data = bytearray(bundle.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    bundle.write_bytes(bytes(data))


def _no_digest(entry: dict[str, object], earlier: Path) -> None:
    entry["sha256"] = None  # a backup of a release that recorded none


def _elsewhere(entry: dict[str, object], earlier: Path) -> None:
    entry["bundle"] = "../outside.bundle"  # a manifest naming a file outside its folder is never read


Change = Callable[[dict[str, str], Path, Path], None]
Spoil = Callable[[dict[str, object], Path], None]


@pytest.mark.parametrize(
    ("change", "spoil", "link_fails", "linked"),
    [
        (None, None, None, True),
        (_push, None, None, False),
        (_branch, None, None, False),
        (_delete, None, None, False),
        (None, _damage, None, False),
        (None, _no_digest, None, False),
        (None, _elsewhere, None, False),
        (None, None, errno.EXDEV, False),  # the earlier backup on another file system: the same bundle, copied
    ],
)
def test_a_bundle_is_linked_only_when_nothing_moved(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: Change | None,
    spoil: Spoil | None,
    link_fails: int | None,
    linked: bool,
) -> None:
    env = git_env(tmp_path / "home")
    settings = config.load(write_config(tmp_path / "install"))
    bare = asyncio.run(repositories.create_bare(settings, PROJECT))
    assert bare is not None
    work = tmp_path / "work"
    make_seed(env, work)
    push_direct(env, work, bare, "main", "main:refs/heads/old")
    earlier = tmp_path / "monday"
    made = asyncio.run(backup._bundle(settings, PROJECT, earlier, None))
    assert made is not None and made[1] is False
    entry = dict(vars(made[0]))
    (tmp_path / "outside.bundle").write_bytes((earlier / str(entry["bundle"])).read_bytes())
    if change is not None:
        change(env, work, bare)
    if spoil is not None:
        spoil(entry, earlier)
    if link_fails is not None:

        def refuse(*_: object) -> None:
            raise OSError(link_fails, os.strerror(link_fails))

        monkeypatch.setattr(os, "link", refuse)

    later = tmp_path / "tuesday"
    result = asyncio.run(backup._bundle(settings, PROJECT, later, backup.Earlier(earlier, {PROJECT: entry})))
    assert result is not None
    repo, was_linked = result
    assert was_linked is linked
    bundle = later / str(repo.bundle)
    assert (bundle.stat().st_ino == (earlier / str(made[0].bundle)).stat().st_ino) is linked
    assert repo.sha256 == backup._digest(bundle)
    # What the bundle holds is the repository now: fetched into a new one, the same refs.
    restored = tmp_path / "restored.git"
    git(env, "init", "-q", "--bare", str(restored)).check()
    git(env, "--git-dir", str(restored), "fetch", "-q", str(bundle), "+refs/*:refs/*").check()
    refs = ["for-each-ref", "--format=%(objectname) %(refname)"]
    assert git(env, "--git-dir", str(restored), *refs).check().out == git(env, "--git-dir", str(bare), *refs).out


def test_an_empty_repository_has_no_bundle_to_link(tmp_path: Path) -> None:
    settings = config.load(write_config(tmp_path / "install"))
    asyncio.run(repositories.create_bare(settings, PROJECT))
    result = asyncio.run(backup._bundle(settings, PROJECT, tmp_path / "tuesday", backup.Earlier(tmp_path, {})))
    assert result is not None
    assert (vars(result[0]), result[1]) == (
        {"path": PROJECT, "bundle": None, "head": "refs/heads/main", "sha256": None},
        False,
    )
