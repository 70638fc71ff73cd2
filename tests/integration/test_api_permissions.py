"""Who may call which deploy-token endpoint: roles by endpoints, direct and inherited membership (GitLab's rules:
project endpoints Maintainer+, group list/get Maintainer+, group create/delete/revoke Owner, instance list admin)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient

from gateway.store.base import DeployToken, Namespace, Project
from gateway.users import AccessLevel
from tests.world import INSUFFICIENT_API_SCOPE, World

ROLES = ["non_member", "guest", "reporter", "developer", "maintainer", "owner", "admin"]
LEVEL = {
    "guest": AccessLevel.GUEST,
    "reporter": AccessLevel.REPORTER,
    "developer": AccessLevel.DEVELOPER,
    "maintainer": AccessLevel.MAINTAINER,
    "owner": AccessLevel.OWNER,
}
RANK = {role: i for i, role in enumerate(ROLES)}


@dataclass(frozen=True)
class Endpoint:
    name: str
    holder: str  # "project", "group" or "instance"
    method: str
    suffix: str  # after the holder's deploy_tokens URL; {t} is the existing token's id
    minimum: str  # the lowest role allowed
    success: int
    writes: bool  # whether a successful call changes the tokens

    def url(self, world_: Matrix) -> str:
        if self.holder == "instance":
            return "/api/v4/deploy_tokens"
        token = world_.project_token if self.holder == "project" else world_.group_token
        base = (
            f"/api/v4/projects/{world_.project.id}/deploy_tokens"
            if self.holder == "project"
            else f"/api/v4/groups/{world_.group.id}/deploy_tokens"
        )
        return base + self.suffix.format(t=token.id)


BODY = {"name": "ci", "scopes": ["read_repository"]}
ENDPOINTS = [
    Endpoint("project.list", "project", "GET", "", "maintainer", 200, False),
    Endpoint("project.get", "project", "GET", "/{t}", "maintainer", 200, False),
    Endpoint("project.create", "project", "POST", "", "maintainer", 201, True),
    Endpoint("project.delete", "project", "DELETE", "/{t}", "maintainer", 204, True),
    Endpoint("project.revoke", "project", "POST", "/{t}/revoke", "maintainer", 200, True),
    Endpoint("group.list", "group", "GET", "", "maintainer", 200, False),
    Endpoint("group.get", "group", "GET", "/{t}", "maintainer", 200, False),
    Endpoint("group.create", "group", "POST", "", "owner", 201, True),
    Endpoint("group.delete", "group", "DELETE", "/{t}", "owner", 204, True),
    Endpoint("group.revoke", "group", "POST", "/{t}/revoke", "owner", 200, True),
    Endpoint("instance.list", "instance", "GET", "", "admin", 200, False),
]


@dataclass
class Matrix:
    """top (private) / sub (private) / app (private project); one token on the project, one on `sub`."""

    top: Namespace
    group: Namespace  # top/sub: the group whose tokens are managed
    project: Project  # top/sub/app
    project_token: DeployToken
    group_token: DeployToken


async def build(world: World) -> Matrix:
    top = await world.group("top")
    sub = await world.group("sub", top)
    project = await world.project("app", sub)
    project_token = (await world.deploy_token(project, name="project-token")).token
    group_token = (await world.deploy_token(sub, name="group-token")).token
    return Matrix(top, sub, project, project_token, group_token)


async def snapshot(world: World) -> list[tuple[int, bool]]:
    page = await world.store.list_deploy_tokens(limit=100)
    return [(t.id, t.revoked) for t in page.items]


def expected(endpoint: Endpoint, role: str) -> int:
    if RANK[role] >= RANK[endpoint.minimum]:
        return endpoint.success
    if endpoint.holder != "instance" and role == "non_member":
        return 404  # a private project or group is not even visible
    return 403


CASES = [
    pytest.param(endpoint, role, placement, id=f"{endpoint.name}-{role}-{placement}")
    for endpoint in ENDPOINTS
    for role in ROLES
    for placement in (["direct", "inherited"] if endpoint.holder != "instance" and role in LEVEL else ["-"])
]


@pytest.mark.parametrize(("endpoint", "role", "placement"), CASES)
async def test_permission_matrix(
    client: TestClient, world: World, endpoint: Endpoint, role: str, placement: str
) -> None:
    m = await build(world)
    actor = await world.user("actor", admin=role == "admin")
    if role in LEVEL:
        # direct: on the project (project endpoints) or on `sub` itself; inherited: on the root group `top`.
        if placement == "inherited":
            source: Project | Namespace = m.top
        else:
            source = m.project if endpoint.holder == "project" else m.group
        await world.member(actor, source, LEVEL[role])
    before = await snapshot(world)

    r = await client.request(endpoint.method, endpoint.url(m), json=BODY, headers=actor.headers)

    want = expected(endpoint, role)
    assert r.status == want, await r.text()
    after = await snapshot(world)
    if want >= 400:
        assert await r.json() == {
            "message": {403: "403 Forbidden", 404: f"404 {endpoint.holder.capitalize()} Not Found"}[want]
        }
        assert after == before  # a refused call changes nothing
    elif endpoint.writes:
        assert after != before
    else:
        assert after == before


@pytest.mark.parametrize(
    ("endpoint", "status"),
    [pytest.param(e, e.success if e.method == "GET" else 403, id=e.name) for e in ENDPOINTS if e.holder != "instance"],
)
async def test_read_api_token_cannot_write(client: TestClient, world: World, endpoint: Endpoint, status: int) -> None:
    """A PAT with read_api (not api) lists and reads as an Owner would, but creates, deletes and revokes nothing."""
    m = await build(world)
    owner = await world.user("reader", scopes=("read_api",))
    await world.member(owner, m.top, AccessLevel.OWNER)
    before = await snapshot(world)
    r = await client.request(endpoint.method, endpoint.url(m), json=BODY, headers=owner.headers)
    assert r.status == status, await r.text()
    if status == 403:
        assert await snapshot(world) == before
        # GitLab's api_guard.rb answer: an OAuth2 insufficient_scope error naming the scope that would do.
        assert await r.json() == INSUFFICIENT_API_SCOPE
        assert r.headers["WWW-Authenticate"].startswith('Bearer realm="", error="insufficient_scope"')


@pytest.mark.parametrize("endpoint", [pytest.param(e, id=e.name) for e in ENDPOINTS])
async def test_anonymous_is_unauthorized(client: TestClient, world: World, endpoint: Endpoint) -> None:
    m = await build(world)
    r = await client.request(endpoint.method, endpoint.url(m), json=BODY)
    assert r.status == 401
    assert await r.json() == {"message": "401 Unauthorized"}


@pytest.mark.parametrize(
    ("endpoint", "status"),
    [pytest.param(e, 403, id=e.name) for e in ENDPOINTS if e.holder != "instance"],
)
async def test_public_resources_are_visible_but_not_manageable(
    client: TestClient, world: World, endpoint: Endpoint, status: int
) -> None:
    """On a public group and project a non-member is no longer told 404, but still may not touch the tokens."""
    top = await world.group("top", visibility="public")
    sub = await world.group("sub", top, visibility="public")
    project = await world.project("app", sub, visibility="public")
    m = Matrix(
        top,
        sub,
        project,
        (await world.deploy_token(project)).token,
        (await world.deploy_token(sub)).token,
    )
    stranger = await world.user("stranger")
    r = await client.request(endpoint.method, endpoint.url(m), json=BODY, headers=stranger.headers)
    assert r.status == status
    assert await r.json() == {"message": "403 Forbidden"}


async def test_group_maintainer_of_a_parent_manages_subgroup_project_tokens(client: TestClient, world: World) -> None:
    """Inheritance reaches down two levels: Maintainer on `top` manages tokens of a project in `top/sub`."""
    m = await build(world)
    maintainer = await world.user("maint")
    await world.member(maintainer, m.top, AccessLevel.MAINTAINER)
    r = await client.post("/api/v4/projects/top%2Fsub%2Fapp/deploy_tokens", json=BODY, headers=maintainer.headers)
    assert r.status == 201
    listed = await client.get("/api/v4/projects/top%2Fsub%2Fapp/deploy_tokens", headers=maintainer.headers)
    assert {t["name"] for t in await listed.json()} == {"project-token", "ci"}
