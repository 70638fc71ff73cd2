"""README "Backup and restore": the database copied with `store copy --to` while the gateway serves and writes (one
snapshot) and restored with `store copy --from`; the whole installation with `gateway backup` and `gateway restore`.
Every token in a snapshot works on the restored installation, and none made after it appears."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests import pg
from tests.gitcli import commit_file, git, git_env, make_seed, with_credentials
from tests.replicas import api, basic, init, new_project, request, start_replica
from tests.servers import run_gateway, write_config

PAGE = 100  # the API's largest page


def test_a_backup_taken_while_serving_restores_every_token_it_holds(tmp_path: Path) -> None:
    config = write_config(tmp_path / "live")
    root = init(config)
    backup = tmp_path / "backups" / "gateway.db"
    live = start_replica("live", config)
    try:
        project = new_project(live.url, root, "team")
        tokens = f"/projects/{project.id}/deploy_tokens"
        ci = api(live.url, root, "POST", tokens, {"name": "gitlab-deploy-token", "scopes": ["read_repository"]})
        made: list[dict[str, Any]] = []
        done = threading.Event()

        def write() -> None:  # tokens created through the API for as long as the backup runs (one page of them)
            while not done.is_set() and len(made) < PAGE - 1:
                made.append(api(live.url, root, "POST", tokens, {"name": "w", "scopes": ["read_repository"]}))
                time.sleep(0.005)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            while len(made) < 5:
                time.sleep(0.01)
            copied = run_gateway(config, "store", "copy", "--to", f"sqlite:///{backup}")
        finally:
            done.set()
            writer.join()
        assert copied.returncode == 0, copied.stderr
        in_backup = re.search(r"^  deploy_tokens +(\d+) +(\d+)$", copied.stdout, re.M)
        assert in_backup is not None, copied.stdout
        count, next_id = int(in_backup.group(1)), int(in_backup.group(2))
        assert 1 + 5 <= count <= 1 + len(made)
        ci_variables = run_gateway(config, "ci-variables", project.path)
        assert ci_variables.returncode == 0, ci_variables.stderr
    finally:
        live.stop()

    # The database is lost; the data folder (keys, repositories) survived or was restored from its own backup.
    for lost in (tmp_path / "live" / "data").glob("gateway.db*"):
        lost.unlink()
    restored = run_gateway(config, "store", "copy", "--from", f"sqlite:///{backup}")
    assert restored.returncode == 0, restored.stderr
    again = start_replica("restored", config)
    try:
        # Root's personal access token is in the snapshot too.
        listed = api(again.url, root, "GET", f"{tokens}?per_page={PAGE}")
        snapshot = [ci, *made[: count - 1]]  # ids in creation order: the snapshot holds a prefix of them
        assert [t["id"] for t in listed] == [t["id"] for t in snapshot]
        assert next_id == snapshot[-1]["id"] + 1
        refs = f"{again.url}/{project.path}.git/info/refs?service=git-upload-pack"
        for token in (ci, snapshot[-1]):
            assert request(refs, headers=basic(token["username"], token["token"])) == 200
        if len(made) > count - 1:  # a token created after the snapshot
            late = made[count - 1]
            assert request(refs, headers=basic(late["username"], late["token"])) == 401
        assert run_gateway(config, "ci-variables", project.path).stdout == ci_variables.stdout
    finally:
        again.stop()


def package(base: str, project: int, file: str, *, headers: dict[str, str], body: bytes | None = None) -> bytes:
    """PUT (with `body`) or GET one generic package file of the embedded store."""
    url = f"{base}/api/v4/projects/{project}/packages/generic/tool/1.0/{file}"
    method = "PUT" if body is not None else "GET"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310 - loopback http
    with urllib.request.urlopen(req, timeout=30) as response:  # noqa: S310 - a loopback test server
        return bytes(response.read())


def database(request: pytest.FixtureRequest, kind: str) -> dict[str, dict[str, str | int | float]]:
    """The storage section of an installation on SQLite (the default) or on a new PostgreSQL database."""
    if kind == "sqlite":
        return {}
    cluster: pg.Cluster = request.getfixturevalue("postgres")
    return {"storage": {"database": asyncio.run(cluster.create_database(f"backup_{uuid.uuid4().hex[:12]}"))}}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_gateway_backup_of_a_serving_installation_restores_into_a_new_one(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    """`gateway backup` while the gateway serves, the next day's with --link-dest after a push, `gateway restore`
    of that one into a new installation (no `gateway init`): the pushed branches and HEAD, an untouched repository,
    an empty one, a package file, every token and the CI secret come back, with the same registry key; restoring
    again over it is refused and changes nothing."""
    env = git_env(tmp_path / "home")
    config = write_config(tmp_path / "old", sections=database(request, kind))
    root = init(config)
    live = start_replica("old", config)
    try:
        project = new_project(live.url, root, "team")
        empty = api(live.url, root, "POST", "/projects", {"name": "empty", "path": "empty"})
        tokens = f"/projects/{project.id}/deploy_tokens"
        scopes = ["read_repository", "read_package_registry", "write_package_registry"]
        ci = api(live.url, root, "POST", tokens, {"name": "gitlab-deploy-token", "scopes": scopes})
        work = tmp_path / "work"
        make_seed(env, work)
        git(env, "checkout", "-qb", "develop", cwd=work).check()
        commit_file(env, work, "dev.txt", "on develop\n")
        remote = with_credentials(f"{live.url}/{project.path}.git", "root", root)
        git(env, "push", "-q", remote, "main", "develop", cwd=work).check()
        # A default branch other than the one a new repository starts with: HEAD must come back as it was.
        bare = tmp_path / "old" / "data" / "repositories" / f"{project.path}.git"
        git(env, "--git-dir", str(bare), "symbolic-ref", "HEAD", "refs/heads/develop").check()
        kept = new_project(live.url, root, "kept")  # pushed once, before both backups
        kept_remote = with_credentials(f"{live.url}/{kept.path}.git", "root", root)
        git(env, "push", "-q", kept_remote, "main", cwd=work).check()
        payload = os.urandom(300_000)
        package(live.url, project.id, "tool.bin", headers={"Deploy-Token": ci["token"]}, body=payload)
        ci_variables = run_gateway(config, "ci-variables", project.path)
        assert ci_variables.returncode == 0, ci_variables.stderr

        monday = tmp_path / "monday"
        first = run_gateway(config, "backup", str(monday))
        assert first.returncode == 0, first.stderr
        # Keys: the encryption key, the registry's key and certificate; a package file is its pointer and its blob.
        assert "3 key files, 3 repositories and 2 package files" in first.stdout, first.stdout

        commit_file(env, work, "tuesday.txt", "pushed between the backups\n")
        git(env, "push", "-q", remote, "develop", cwd=work).check()
        pushed = git(env, "ls-remote", "--symref", remote).check().out
        assert "ref: refs/heads/develop\tHEAD" in pushed
        backup = tmp_path / "tuesday"
        taken = run_gateway(config, "backup", str(backup), "--link-dest", str(monday))
        assert taken.returncode == 0, taken.stderr
    finally:
        live.stop()
    assert f"3 repositories (1 linked) and 2 package files (1 linked to {monday})" in taken.stdout, taken.stdout
    manifest = json.loads((backup / "manifest.json").read_text())
    bundles = {r["path"]: r["bundle"] for r in manifest["repositories"]}
    assert bundles.keys() == {project.path, kept.path, empty["path_with_namespace"]}
    assert bundles[empty["path_with_namespace"]] is None
    inode = {day: (day / bundles[kept.path]).stat().st_ino for day in (monday, backup)}
    assert inode[monday] == inode[backup]  # the untouched repository's bundle: linked to Monday's
    assert (backup / bundles[project.path]).stat().st_nlink == 1  # the pushed one: bundled anew

    new = write_config(tmp_path / "new", sections=database(request, kind))
    checked = run_gateway(new, "restore", str(backup), "--check")  # the real bundles and blob, read back whole
    assert checked.returncode == 0, checked.stderr
    assert "repositories: 2 bundles" in checked.stderr and "1 blobs, 1 pointers" in checked.stderr, checked.stderr
    restored = run_gateway(new, "restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    for key in ("secret.key", "registry.key", "registry.crt"):
        assert (tmp_path / "new" / "data" / key).read_bytes() == (tmp_path / "old" / "data" / key).read_bytes()
    again = start_replica("new", new)
    try:
        moved = with_credentials(f"{again.url}/{project.path}.git", ci["username"], ci["token"])
        assert git(env, "ls-remote", "--symref", moved).check().out == pushed.replace(live.url, again.url)
        clone = git(env, "clone", "-q", moved, str(tmp_path / "clone"))
        assert clone.code == 0, clone.err
        assert git(env, "rev-parse", "HEAD", cwd=tmp_path / "clone").check().out.strip() in pushed
        kept_moved = with_credentials(f"{again.url}/{kept.path}.git", "root", root)
        assert git(env, "clone", "-q", kept_moved, str(tmp_path / "kept")).code == 0
        empty_remote = with_credentials(f"{again.url}/{empty['path_with_namespace']}.git", "root", root)
        assert git(env, "clone", "-q", empty_remote, str(tmp_path / "empty")).code == 0
        assert package(again.url, project.id, "tool.bin", headers=basic(ci["username"], ci["token"])) == payload
        assert run_gateway(new, "ci-variables", project.path).stdout == ci_variables.stdout
        assert api(again.url, root, "GET", "/user")["username"] == "root"
    finally:
        again.stop()

    before = sorted((p, p.stat().st_size) for p in (tmp_path / "new" / "data").rglob("*") if p.is_file())
    twice = run_gateway(new, "restore", str(backup))
    assert twice.returncode == 1 and "restore into a new installation" in twice.stderr, twice.stderr
    assert sorted((p, p.stat().st_size) for p in (tmp_path / "new" / "data").rglob("*") if p.is_file()) == before
