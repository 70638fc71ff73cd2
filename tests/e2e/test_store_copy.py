"""Outgrowing SQLite, as an operator does it: a gateway used on SQLite, stopped, `gateway store copy --to
postgresql://…`, started again on PostgreSQL with the same data directory. Everything issued before still works,
checked with real git, the registry's token endpoint, the API and the CLI.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

from tests import pg
from tests.gitcli import git, git_env, make_seed, with_credentials
from tests.replicas import api, basic, init, new_project, request, start_replica
from tests.servers import run_gateway, write_config


def test_a_sqlite_gateway_moves_to_postgresql_and_every_token_keeps_working(
    tmp_path: Path, postgres: pg.Cluster
) -> None:
    config = write_config(tmp_path)
    root = init(config)
    env = git_env(tmp_path / "git-home")
    seed = tmp_path / "seed"
    head = make_seed(env, seed)

    before = start_replica("sqlite", config)
    try:
        project = new_project(before.url, root, "team")
        tokens = f"/projects/{project.id}/deploy_tokens"
        made = {
            name: api(before.url, root, "POST", tokens, {"name": name, "scopes": scopes})
            for name, scopes in (
                ("gitlab-deploy-token", ["read_repository", "read_registry"]),
                ("reader", ["read_repository"]),
                ("dropped", ["read_repository"]),
            )
        }
        api(before.url, root, "DELETE", f"{tokens}/{made['dropped']['id']}")  # the highest id: must not come back
        remote = f"{before.url}/{project.path}.git"
        git(env, "push", "-q", with_credentials(remote, "root", root), "HEAD:main", cwd=seed).check()
        listed = api(before.url, root, "GET", tokens)
        ci_before = run_gateway(config, "ci-variables", project.path)
        assert ci_before.returncode == 0, ci_before.stderr
    finally:
        before.stop()

    dsn = asyncio.run(postgres.create_database(f"copy_{uuid.uuid4().hex[:12]}"))
    copied = run_gateway(config, "store", "copy", "--to", dsn)
    assert copied.returncode == 0, copied.stderr
    assert copied.stdout.startswith("copied ")
    assert re.search(r"^  deploy_tokens +2 +4$", copied.stdout, re.M), copied.stdout  # 3 rows made, 1 deleted
    assert postgres.password not in copied.stdout + copied.stderr  # the DSN's password is never printed
    again = run_gateway(config, "store", "copy", "--to", dsn)
    assert again.returncode == 1 and "the target database is not empty" in again.stderr, again.stderr

    moved = write_config(tmp_path, sections={"storage": {"database": dsn}})  # same data dir, keys, repositories
    after = start_replica("postgresql", moved)
    try:
        assert api(after.url, root, "GET", tokens) == listed  # root's personal access token works too
        clone = tmp_path / "clone"
        ci = made["gitlab-deploy-token"]
        remote = f"{after.url}/{project.path}.git"
        git(env, "clone", with_credentials(remote, ci["username"], ci["token"]), str(clone)).check()
        assert git(env, "rev-parse", "HEAD", cwd=clone).check().out.strip() == head
        query = f"service=container_registry&scope=repository:{project.path}:pull"
        assert request(f"{after.url}/jwt/auth?{query}", headers=basic(ci["username"], ci["token"])) == 200
        assert request(f"{after.url}/jwt/auth?{query}", headers=basic("nobody", "gldt-wrong")) == 401
        ci_after = run_gateway(moved, "ci-variables", project.path)
        assert ci_after.returncode == 0 and ci_after.stdout == ci_before.stdout  # the encrypted copy decrypts
        fresh = api(after.url, root, "POST", tokens, {"name": "new", "scopes": ["read_repository"]})
        assert fresh["id"] == made["dropped"]["id"] + 1
        assert fresh["username"] == f"gitlab+deploy-token-{fresh['id']}"
    finally:
        after.stop()
