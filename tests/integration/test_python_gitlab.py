"""python-gitlab, unchanged, against the gateway on a real loopback port: users, tokens, groups, projects, members
and deploy tokens. The client is blocking, so each scenario runs in a worker thread while the loop serves."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import gitlab
import gitlab.const
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.config import Config
from gateway.secretbox import SecretBox
from gateway.store.sqlite import SQLiteStore
from tests.world import World

T = TypeVar("T")


@pytest.fixture
async def url(aiohttp_server: Any, config: Config, store: SQLiteStore, clock: FixedClock, box: SecretBox) -> str:
    """The gateway listening on 127.0.0.1 on a free port (TestServer binds a real TCP socket)."""
    server: TestServer = await aiohttp_server(create_app(config, store=store, clock=clock, box=box))
    return str(server.make_url("")).rstrip("/")


async def blocking(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


def client(url: str, token: str) -> gitlab.Gitlab:
    # per_page 5 makes every listing below span several pages, so python-gitlab must follow the Link headers.
    return gitlab.Gitlab(url, private_token=token, per_page=5, retry_transient_errors=False)


async def test_admin_bootstraps_users_and_tokens(url: str, world: World) -> None:
    root = await world.user("root", admin=True)

    def scenario() -> str:
        with client(url, root.pat) as gl:
            gl.auth()
            assert gl.user is not None and gl.user.username == "root"
            made = [
                gl.users.create(
                    {"username": name, "name": name.title(), "email": f"{name}@example.com", "password": "pw-long-1"}
                )
                for name in ("alice", "bob", "carol", "dave", "erin", "frank")
            ]
            assert [u.username for u in gl.users.list(username="alice")] == ["alice"]
            assert gl.users.get(made[1].id).username == "bob"
            everyone = gl.users.list(get_all=True)
            assert sorted(u.username for u in everyone) == sorted(["root", *(u.username for u in made)])
            pat = made[0].personal_access_tokens.create({"name": "cli", "scopes": ["api"], "expires_at": "2027-01-01"})
            assert pat.token.startswith("glpat-") and pat.scopes == ["api"] and pat.expires_at == "2027-01-01"
            with pytest.raises(gitlab.GitlabCreateError) as dup:
                gl.users.create({"username": "ALICE", "name": "A", "email": "a2@example.com", "password": "pw-long-1"})
            assert dup.value.response_code == 409
            return str(pat.token)

    alice_token = await blocking(scenario)

    def as_alice() -> None:
        with client(url, alice_token) as ga:
            ga.auth()
            assert ga.user is not None and ga.user.username == "alice"
            with pytest.raises(gitlab.GitlabCreateError) as denied:
                ga.users.create({"username": "x", "name": "X", "email": "x@example.com", "password": "pw-long-1"})
            assert denied.value.response_code == 403

    await blocking(as_alice)


async def test_groups_projects_members_and_deploy_tokens(url: str, world: World) -> None:
    alice = await world.user("alice")
    bob = await world.user("bob")
    root = await world.user("root", admin=True)

    def scenario() -> None:
        with client(url, alice.pat) as ga:
            top = ga.groups.create({"name": "Top", "path": "top"})
            sub = ga.groups.create({"name": "Sub", "path": "sub", "parent_id": top.id, "visibility": "private"})
            assert sub.full_path == "top/sub" and sub.parent_id == top.id
            assert ga.groups.get("top/sub").id == sub.id
            for i in range(6):
                ga.groups.create({"name": f"Team {i}", "path": f"team-{i}", "parent_id": top.id})
            assert len(ga.groups.list(get_all=True)) == 8
            # Keyset pagination of groups (by name) and users (any order): python-gitlab follows the opaque cursor.
            walked_groups = ga.groups.list(iterator=True, pagination="keyset", order_by="name", per_page=3)
            assert [g.path for g in walked_groups] == ["sub", *(f"team-{i}" for i in range(6)), "top"]
            walked_users = ga.users.list(iterator=True, pagination="keyset", order_by="username", per_page=1)
            assert [u.username for u in walked_users] == ["root", "bob", "alice"]  # sort=desc by default
            assert [g.path for g in top.subgroups.list(get_all=True)][:2] == ["sub", "team-0"]

            project = ga.projects.create({"name": "App", "namespace_id": sub.id})
            assert project.path_with_namespace == "top/sub/app"
            assert ga.projects.get("top/sub/app").id == project.id
            personal = ga.projects.create({"name": "Scratch"})
            assert personal.namespace["full_path"] == "alice"
            assert {p.id for p in ga.projects.list(get_all=True, membership=True)} == {project.id, personal.id}
            # Keyset pagination, as python-gitlab walks it: the Link header's rel="next" (id_after) until it is gone.
            walked = ga.projects.list(iterator=True, pagination="keyset", order_by="id", sort="asc", per_page=1)
            assert [p.id for p in walked] == sorted((project.id, personal.id))
            assert [p.id for p in ga.groups.get(sub.id).projects.list(get_all=True)] == [project.id]

            member = project.members.create(
                {"user_id": bob.user.id, "access_level": gitlab.const.AccessLevel.MAINTAINER}
            )
            assert member.access_level == 40 and member.username == "bob"
            assert [m.username for m in project.members.list(get_all=True)] == ["bob"]
            with pytest.raises(gitlab.GitlabCreateError) as dup:
                project.members.create({"user_id": bob.user.id, "access_level": 30})
            assert dup.value.response_code == 409
            group = ga.groups.get(sub.id)
            group.members.create({"user_id": bob.user.id, "access_level": gitlab.const.AccessLevel.DEVELOPER})
            assert sorted((m.username, m.access_level) for m in group.members.list(get_all=True)) == [
                ("alice", 50),
                ("bob", 30),
            ]

            # Project deploy tokens: create, list (several pages), get, delete by id and through the object.
            made = [
                project.deploytokens.create(
                    {"name": f"ci-{i}", "scopes": ["read_repository", "read_registry"], "expires_at": "2030-01-01"}
                )
                for i in range(7)
            ]
            assert all(t.token.startswith("gldt-") for t in made)
            assert made[0].username == f"gitlab+deploy-token-{made[0].id}"
            assert made[0].expires_at == "2030-01-01T00:00:00.000Z" and made[0].scopes == [
                "read_repository",
                "read_registry",
            ]
            custom = project.deploytokens.create({"name": "custom", "scopes": ["read_repository"], "username": "bot"})
            assert custom.username == "bot"
            listed = project.deploytokens.list(get_all=True)
            assert [t.id for t in listed] == [*(t.id for t in made), custom.id]
            assert not hasattr(listed[0], "token")
            assert project.deploytokens.get(custom.id).name == "custom"
            project.deploytokens.delete(made[0].id)
            listed[1].delete()
            assert [t.id for t in project.deploytokens.list(get_all=True)] == [*(t.id for t in made[2:]), custom.id]
            with pytest.raises(gitlab.GitlabCreateError) as bad:
                project.deploytokens.create({"name": "x", "scopes": ["read_everything"]})
            assert bad.value.response_code == 400 and "scopes does not have a valid value" in str(bad.value)
            with pytest.raises(gitlab.GitlabGetError) as missing:
                project.deploytokens.get(made[0].id)
            assert missing.value.response_code == 404

            # Group deploy tokens (alice owns `top`, so `sub` too).
            gtoken = group.deploytokens.create({"name": "registry", "scopes": ["read_registry"]})
            assert [t.id for t in group.deploytokens.list(get_all=True)] == [gtoken.id]
            gtoken.delete()
            assert group.deploytokens.list(get_all=True) == []
            group.deploytokens.create({"name": "kept", "scopes": ["read_package_registry"]})

            # The instance-wide list is for administrators only.
            with pytest.raises(gitlab.GitlabListError) as forbidden:
                ga.deploytokens.list(get_all=True)
            assert forbidden.value.response_code == 403

        with client(url, bob.pat) as gb:
            # bob is a Maintainer of the project (direct) and a Developer of `sub`.
            p = gb.projects.get("top/sub/app")
            assert len(p.deploytokens.list(get_all=True)) == 6
            with pytest.raises(gitlab.GitlabListError) as low:
                gb.groups.get("top/sub").deploytokens.list(get_all=True)
            assert low.value.response_code == 403

        with client(url, root.pat) as gl:
            everything = gl.deploytokens.list(get_all=True)
            assert [t.name for t in everything] == [*(f"ci-{i}" for i in range(2, 7)), "custom", "kept"]
            assert [t.name for t in gl.deploytokens.list(get_all=True, active=True)] == [t.name for t in everything]

    await blocking(scenario)


async def test_deploy_tokens_and_bad_tokens_are_refused(url: str, world: World) -> None:
    group = await world.group("top")
    project = await world.project("app", group)
    deploy = await world.deploy_token(project, ("read_repository",))

    def scenario() -> None:
        for token in (deploy.secret, "glpat-nothing-like-a-token"):
            with client(url, token) as gl, pytest.raises(gitlab.GitlabAuthenticationError) as refused:
                gl.auth()
            assert refused.value.response_code == 401
        with gitlab.Gitlab(url, oauth_token=deploy.secret) as gl, pytest.raises(gitlab.GitlabAuthenticationError):
            gl.auth()

    await blocking(scenario)
