"""Members API: who may add whom at which level to projects and groups, duplicates, and the member listing."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.store.base import Namespace, Project
from gateway.users import AccessLevel
from tests.world import World

L = AccessLevel


async def setup(world: World) -> tuple[Namespace, Namespace, Project]:
    top = await world.group("top")
    sub = await world.group("sub", top)
    project = await world.project("app", sub)
    return top, sub, project


def url(kind: str, sub: Namespace, project: Project) -> str:
    return f"/api/v4/projects/{project.id}/members" if kind == "project" else f"/api/v4/groups/{sub.id}/members"


async def direct_members(world: World, kind: str, sub: Namespace, project: Project) -> list[tuple[int, int]]:
    members = await world.store.list_members(
        "project" if kind == "project" else "namespace", project.id if kind == "project" else sub.id
    )
    return [(m.user.id, m.access_level) for m in members]


# (kind, caller's role on `top` (inherited), level granted, expected status)
GRANTS = [
    ("project", None, L.DEVELOPER, 404),
    ("project", L.DEVELOPER, L.GUEST, 403),
    ("project", L.MAINTAINER, L.DEVELOPER, 201),
    ("project", L.MAINTAINER, L.MAINTAINER, 201),
    ("project", L.MAINTAINER, L.OWNER, 403),  # only Owners grant Owner
    ("project", L.OWNER, L.OWNER, 201),
    ("project", "admin", L.OWNER, 201),
    ("group", None, L.DEVELOPER, 404),
    ("group", L.DEVELOPER, L.GUEST, 403),
    ("group", L.MAINTAINER, L.GUEST, 403),  # group membership is the Owner's business
    ("group", L.OWNER, L.REPORTER, 201),
    ("group", L.OWNER, L.OWNER, 201),
    ("group", "admin", L.MAINTAINER, 201),
]


@pytest.mark.parametrize(("kind", "role", "level", "status"), GRANTS)
async def test_who_may_add_members(
    client: TestClient, world: World, kind: str, role: AccessLevel | str | None, level: AccessLevel, status: int
) -> None:
    top, sub, project = await setup(world)
    actor = await world.user("actor", admin=role == "admin")
    newbie = await world.user("newbie")
    if isinstance(role, AccessLevel):
        await world.member(actor, top, role)
    before = await direct_members(world, kind, sub, project)
    r = await client.post(
        url(kind, sub, project), json={"user_id": newbie.user.id, "access_level": int(level)}, headers=actor.headers
    )
    assert r.status == status, await r.text()
    after = await direct_members(world, kind, sub, project)
    if status == 201:
        body = await r.json()
        assert list(body) == [
            "id",
            "username",
            "name",
            "state",
            "locked",
            "avatar_url",
            "web_url",
            "created_at",
            "expires_at",
            "access_level",
        ]
        assert (body["id"], body["username"], body["access_level"]) == (newbie.user.id, "newbie", int(level))
        assert after == [*before, (newbie.user.id, int(level))]
    else:
        not_found = "404 Project Not Found" if kind == "project" else "404 Group Not Found"
        assert await r.json() == {"message": {403: "403 Forbidden", 404: not_found}[status]}
        assert after == before


async def test_membership_takes_effect(client: TestClient, world: World) -> None:
    """A Maintainer added through the API may then manage the project's deploy tokens; a Developer may not."""
    top, _sub, project = await setup(world)
    owner = await world.user("owner")
    maint = await world.user("maint")
    dev = await world.user("dev")
    await world.member(owner, top, L.OWNER)
    for who, level in ((maint, L.MAINTAINER), (dev, L.DEVELOPER)):
        r = await client.post(
            f"/api/v4/projects/{project.id}/members",
            json={"user_id": who.user.id, "access_level": int(level)},
            headers=owner.headers,
        )
        assert r.status == 201
    tokens_url = f"/api/v4/projects/{project.id}/deploy_tokens"
    assert (await client.get(tokens_url, headers=maint.headers)).status == 200
    assert (await client.get(tokens_url, headers=dev.headers)).status == 403


MEMBER_REJECTIONS: list[tuple[str, dict[str, Any], int, dict[str, Any]]] = [
    ("duplicate", {"user_id": "{member}", "access_level": 30}, 409, {"message": "Member already exists"}),
    ("unknown-user", {"user_id": 99999, "access_level": 30}, 404, {"message": "404 User Not Found"}),
    ("unknown-username", {"username": "ghost", "access_level": 30}, 404, {"message": "404 User Not Found"}),
    ("level-missing", {"user_id": "{newbie}"}, 400, {"error": "access_level is missing"}),
    ("level-text", {"user_id": "{newbie}", "access_level": "high"}, 400, {"error": "access_level is invalid"}),
    (
        "level-60",
        {"user_id": "{newbie}", "access_level": 60},
        400,
        {"message": {"access_level": ["is not included in the list"]}},
    ),
    (
        "level-0",
        {"user_id": "{newbie}", "access_level": 0},
        400,
        {"message": {"access_level": ["is not included in the list"]}},
    ),
    ("level-bool", {"user_id": "{newbie}", "access_level": True}, 400, {"error": "access_level is invalid"}),
    (
        "no-user",
        {"access_level": 30},
        400,
        {"error": "user_id, username are missing, exactly one parameter must be provided"},
    ),
    (
        "both-user-refs",
        {"user_id": "{newbie}", "username": "newbie", "access_level": 30},
        400,
        {"error": "user_id, username are mutually exclusive"},
    ),
    ("user-id-text", {"user_id": "newbie", "access_level": 30}, 400, {"error": "user_id is invalid"}),
    (
        "expiring",
        {"user_id": "{newbie}", "access_level": 30, "expires_at": "2030-01-01"},
        400,
        {"error": "expires_at is not supported: memberships do not expire on this server"},
    ),
]


@pytest.mark.parametrize("kind", ["project", "group"])
@pytest.mark.parametrize(("case", "body", "status", "error"), MEMBER_REJECTIONS, ids=[c[0] for c in MEMBER_REJECTIONS])
async def test_add_member_rejections(
    client: TestClient,
    world: World,
    kind: str,
    case: str,
    body: dict[str, Any],
    status: int,
    error: dict[str, Any],
) -> None:
    top, sub, project = await setup(world)
    owner = await world.user("owner")
    member = await world.user("member")
    newbie = await world.user("newbie")
    await world.member(owner, top, L.OWNER)
    await world.member(member, project if kind == "project" else sub, L.REPORTER)
    ids = {"{member}": member.user.id, "{newbie}": newbie.user.id}
    sent = {k: ids.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    before = await direct_members(world, kind, sub, project)
    r = await client.post(url(kind, sub, project), json=sent, headers=owner.headers)
    assert r.status == status, await r.text()
    assert await r.json() == error
    assert await direct_members(world, kind, sub, project) == before


async def test_add_member_by_username_and_form(client: TestClient, world: World) -> None:
    top, sub, _project = await setup(world)
    owner = await world.user("owner")
    await world.user("newbie")
    await world.member(owner, top, L.OWNER)
    r = await client.post(
        f"/api/v4/groups/{sub.id}/members", data={"username": "NewBie", "access_level": "20"}, headers=owner.headers
    )
    assert r.status == 201
    assert ((await r.json())["username"], (await r.json())["access_level"]) == ("newbie", 20)


@pytest.mark.parametrize("kind", ["project", "group"])
async def test_list_members(client: TestClient, world: World, kind: str) -> None:
    """Direct members only, filterable by `query` and `user_ids`, paginated; Guests may read, strangers not."""
    top, sub, project = await setup(world)
    owner = await world.user("owner")
    stranger = await world.user("stranger")
    made = [await world.user(f"member{i}") for i in range(4)]
    await world.member(owner, top, L.OWNER)  # inherited: not a direct member of sub / app
    source = project if kind == "project" else sub
    for i, actor in enumerate(made):
        await world.member(actor, source, [L.GUEST, L.REPORTER, L.DEVELOPER, L.MAINTAINER][i])
    u = url(kind, sub, project)
    r = await client.get(u, params={"per_page": "3"}, headers=made[0].headers)
    assert r.status == 200
    assert (r.headers["X-Total"], r.headers["X-Total-Pages"], r.headers["X-Next-Page"]) == ("4", "2", "2")
    assert [(m["username"], m["access_level"]) for m in await r.json()] == [
        ("member0", 10),
        ("member1", 20),
        ("member2", 30),
    ]
    q = await client.get(u, params={"query": "MEMBER3"}, headers=owner.headers)
    assert [m["username"] for m in await q.json()] == ["member3"]
    ids = await client.get(u, params={"user_ids": f"{made[1].user.id},{made[2].user.id}"}, headers=owner.headers)
    assert [m["username"] for m in await ids.json()] == ["member1", "member2"]
    denied = await client.get(u, headers=stranger.headers)
    assert denied.status == 404
    anonymous = await client.get(u)
    assert anonymous.status == 401
