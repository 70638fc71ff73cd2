"""Groups and projects API: creation rules (policy, path rules, depth, visibility), listings, lookups by id or path."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import repositories
from gateway.api import pagination
from gateway.namespaces import MAX_DEPTH
from gateway.policy import Operation, Target
from gateway.store import queries
from gateway.store.base import Namespace
from gateway.users import AccessLevel
from tests.links import walk_next
from tests.world import INSUFFICIENT_API_SCOPE, Actor, World, policy_verdict, policy_world

# ---------------------------------------------------------------------------------------------------------------
# groups: creation


async def group_paths(world: World) -> list[str]:
    return [g.full_path for g in await world.store.list_groups()]


async def test_create_top_level_group_makes_the_creator_owner(client: TestClient, world: World) -> None:
    alice = await world.user("alice")
    r = await client.post(
        "/api/v4/groups",
        json={"name": "Tanuki (team)", "path": "tanuki", "visibility": "internal", "description": "d"},
        headers=alice.headers,
    )
    assert r.status == 201, await r.text()
    body = await r.json()
    assert list(body)[:4] == ["id", "web_url", "name", "path"]
    assert (body["name"], body["path"], body["full_path"], body["visibility"], body["parent_id"]) == (
        "Tanuki (team)",
        "tanuki",
        "tanuki",
        "internal",
        None,
    )
    assert body["web_url"] == str(client.make_url("/groups/tanuki"))
    assert body["projects"] == [] and body["shared_projects"] == []
    members = await world.store.list_members("namespace", body["id"])
    assert [(m.user.id, m.access_level) for m in members] == [(alice.user.id, AccessLevel.OWNER)]
    # As Owner the creator may now manage the group's deploy tokens.
    token = await client.post(
        f"/api/v4/groups/{body['id']}/deploy_tokens",
        json={"name": "t", "scopes": ["read_registry"]},
        headers=alice.headers,
    )
    assert token.status == 201


@pytest.mark.parametrize(
    ("role", "status"),
    [
        (None, 404),
        (AccessLevel.GUEST, 403),
        (AccessLevel.DEVELOPER, 403),
        (AccessLevel.MAINTAINER, 201),
        (AccessLevel.OWNER, 201),
        ("admin", 201),
    ],
)
async def test_create_subgroup_needs_maintainer_of_the_parent(
    client: TestClient, world: World, role: AccessLevel | str | None, status: int
) -> None:
    top = await world.group("top")
    actor = await world.user("actor", admin=role == "admin")
    if isinstance(role, AccessLevel):
        await world.member(actor, top, role)
    before = await group_paths(world)
    r = await client.post(
        "/api/v4/groups", json={"name": "Sub", "path": "sub", "parent_id": top.id}, headers=actor.headers
    )
    assert r.status == status, await r.text()
    if status == 201:
        body = await r.json()
        assert (body["full_path"], body["parent_id"], body["full_name"]) == ("top/sub", top.id, "Top / Sub")
        members = await world.store.list_members("namespace", body["id"])
        assert [(m.user.id, m.access_level) for m in members] == [(actor.user.id, AccessLevel.OWNER)]
    else:
        assert await r.json() == {"message": {403: "403 Forbidden", 404: "404 Group Not Found"}[status]}
        assert await group_paths(world) == before


async def test_inherited_maintainer_creates_nested_subgroups(client: TestClient, world: World) -> None:
    top = await world.group("top")
    mid = await world.group("mid", top)
    maint = await world.user("maint")
    await world.member(maint, top, AccessLevel.MAINTAINER)
    r = await client.post(
        "/api/v4/groups", json={"name": "Leaf", "path": "leaf", "parent_id": mid.id}, headers=maint.headers
    )
    assert r.status == 201
    assert (await r.json())["full_path"] == "top/mid/leaf"


async def test_groups_nest_at_most_max_depth(client: TestClient, world: World) -> None:
    admin = await world.user("root", admin=True)
    parent: Namespace | None = None
    for level in range(MAX_DEPTH - 1):
        parent = await world.group(f"g{level}", parent)
    assert parent is not None and parent.depth == MAX_DEPTH - 1
    r = await client.post(
        "/api/v4/groups", json={"name": "Last", "path": "last", "parent_id": parent.id}, headers=admin.headers
    )
    assert r.status == 201, await r.text()
    deepest = await r.json()
    assert deepest["full_path"].count("/") == MAX_DEPTH - 1
    before = await group_paths(world)
    r = await client.post(
        "/api/v4/groups", json={"name": "Deeper", "path": "deeper", "parent_id": deepest["id"]}, headers=admin.headers
    )
    assert r.status == 400
    assert await r.json() == {"message": 'Failed to save group {:parent_id=>["has too deep level of nesting"]}'}
    assert await group_paths(world) == before
    # A project still fits in the deepest group.
    p = await client.post(
        "/api/v4/projects", json={"path": "app", "namespace_id": deepest["id"]}, headers=admin.headers
    )
    assert p.status == 201, await p.text()


GROUP_REJECTIONS: list[tuple[str, dict[str, Any], int, dict[str, Any]]] = [
    ("name-missing", {"name": None}, 400, {"error": "name is missing"}),
    ("path-missing", {"path": None}, 400, {"error": "path is missing"}),
    ("name-list", {"name": ["x"]}, 400, {"error": "name is invalid"}),
    ("parent-not-int", {"parent_id": "abc"}, 400, {"error": "parent_id is invalid"}),
    ("visibility-unknown", {"visibility": "secret"}, 400, {"error": "visibility does not have a valid value"}),
    ("parent-missing", {"parent_id": 99999}, 404, {"message": "404 Group Not Found"}),
    ("path-reserved", {"path": "API"}, 400, {"message": 'Failed to save group {:path=>["API is a reserved name"]}'}),
    (
        "path-format",
        {"path": "-bad"},
        400,
        {
            "message": "Failed to save group {:path=>[\"can contain only letters, digits, '_', '-' and '.'. "
            "Cannot start with '-', end in '.git' or end in '.atom'\"]}"
        },
    ),
    (
        "path-256",
        {"path": "p" * 256},
        400,
        {"message": 'Failed to save group {:path=>["is too long (maximum is 255 characters)"]}'},
    ),
    ("name-blank", {"name": ""}, 400, {"message": 'Failed to save group {:name=>["can\'t be blank"]}'}),
    (
        "name-format",
        {"name": "bad/name"},
        400,
        {
            "message": "Failed to save group {:name=>[\"can contain only letters, digits, emoji, '_', '.', dash, "
            "space, parenthesis. It must start with letter, digit, emoji or '_'.\"]}"
        },
    ),
    ("path-taken", {"path": "EXISTING"}, 400, {"message": 'Failed to save group {:path=>["has already been taken"]}'}),
    ("path-is-a-user", {"path": "alice"}, 400, {"message": 'Failed to save group {:path=>["has already been taken"]}'}),
]


@pytest.mark.parametrize(("case", "change", "status", "error"), GROUP_REJECTIONS, ids=[c[0] for c in GROUP_REJECTIONS])
async def test_create_group_rejections(
    client: TestClient, world: World, case: str, change: dict[str, Any], status: int, error: dict[str, Any]
) -> None:
    alice = await world.user("alice")
    await world.group("existing")
    before = await group_paths(world)
    body = {k: v for k, v in {"name": "New", "path": "new", **change}.items() if v is not None}
    r = await client.post("/api/v4/groups", json=body, headers=alice.headers)
    assert r.status == status, await r.text()
    assert await r.json() == error
    assert await group_paths(world) == before


@pytest.mark.parametrize(
    ("parent", "child", "ok"),
    [
        ("private", "private", True),
        ("private", "internal", False),
        ("internal", "public", False),
        ("public", "public", True),
        ("public", "private", True),
    ],
)
async def test_subgroup_visibility_is_capped_by_the_parent(
    client: TestClient, world: World, parent: str, child: str, ok: bool
) -> None:
    admin = await world.user("root", admin=True)
    top = await world.group("top", visibility=parent)  # type: ignore[arg-type]
    r = await client.post(
        "/api/v4/groups",
        json={"name": "Sub", "path": "sub", "parent_id": top.id, "visibility": child},
        headers=admin.headers,
    )
    if ok:
        assert r.status == 201 and (await r.json())["visibility"] == child
    else:
        assert r.status == 400
        assert await r.json() == {
            "message": f'Failed to save group {{:visibility_level=>["{child} is not allowed since the parent group '
            f'has a {parent} visibility."]}}'
        }


async def test_reserved_top_level_names_are_fine_below(client: TestClient, world: World) -> None:
    alice = await world.user("alice")
    top = await world.group("top")
    await world.member(alice, top, AccessLevel.OWNER)
    r = await client.post(
        "/api/v4/groups", json={"name": "Api", "path": "api", "parent_id": top.id}, headers=alice.headers
    )
    assert r.status == 201


async def test_read_api_token_cannot_create_groups(client: TestClient, world: World) -> None:
    alice = await world.user("alice", scopes=("read_api",))
    r = await client.post("/api/v4/groups", json={"name": "New", "path": "new"}, headers=alice.headers)
    assert (r.status, await r.json()) == (403, INSUFFICIENT_API_SCOPE)
    assert await group_paths(world) == []


# ---------------------------------------------------------------------------------------------------------------
# groups: reading


async def visible_world(world: World) -> dict[str, Any]:
    """alice belongs to `mine` (private) only; there are also public, internal and foreign private groups."""
    alice = await world.user("alice")
    mine = await world.group("mine")
    child = await world.group("child", mine)
    await world.group("public-g", visibility="public")
    await world.group("internal-g", visibility="internal")
    secret = await world.group("secret")
    await world.member(alice, mine, AccessLevel.DEVELOPER)
    return {"alice": alice, "mine": mine, "child": child, "secret": secret}


@pytest.mark.parametrize(
    ("who", "query", "expected"),
    [
        ("alice", {}, ["child", "mine"]),  # GitLab's default for non-admins: groups they belong to
        ("alice", {"all_available": "true"}, ["child", "internal-g", "mine", "public-g"]),
        ("alice", {"top_level_only": "true"}, ["mine"]),
        ("alice", {"search": "CHI"}, ["child"]),
        ("alice", {"min_access_level": "40"}, []),
        ("alice", {"min_access_level": "30"}, ["child", "mine"]),
        ("alice", {"owned": "true"}, []),
        ("alice", {"order_by": "id", "sort": "desc"}, ["child", "mine"]),
        ("anonymous", {}, ["public-g"]),
        ("admin", {}, ["child", "internal-g", "mine", "public-g", "secret"]),
        ("admin", {"sort": "desc"}, ["secret", "public-g", "mine", "internal-g", "child"]),
    ],
)
async def test_list_groups(
    client: TestClient, world: World, who: str, query: dict[str, str], expected: list[str]
) -> None:
    w = await visible_world(world)
    admin = await world.user("root", admin=True)
    headers = {"alice": w["alice"].headers, "admin": admin.headers, "anonymous": {}}[who]
    r = await client.get("/api/v4/groups", params=query, headers=headers)
    assert r.status == 200, await r.text()
    assert [g["path"] for g in await r.json()] == expected
    assert r.headers["X-Total"] == str(len(expected))


async def test_list_groups_pagination(client: TestClient, world: World) -> None:
    admin = await world.user("root", admin=True)
    for i in range(5):
        await world.group(f"g{i}")
    pages = []
    for page in (1, 2, 3):
        r = await client.get("/api/v4/groups", params={"per_page": "2", "page": str(page)}, headers=admin.headers)
        assert (r.headers["X-Total"], r.headers["X-Total-Pages"], r.headers["X-Next-Page"]) == (
            "5",
            "3",
            str(page + 1) if page < 3 else "",
        )
        pages.append([g["path"] for g in await r.json()])
    assert pages == [["g0", "g1"], ["g2", "g3"], ["g4"]]


@pytest.mark.parametrize(
    ("who", "query", "walk"),
    [
        # GitLab's keyset pagination of groups (by name ascending only): rel="next" holds an opaque cursor.
        ("admin", {"per_page": "2"}, [["child", "internal-g"], ["mine", "public-g"], ["secret"]]),
        (
            "admin",
            {"per_page": "2", "order_by": "name", "sort": "asc"},
            [["child", "internal-g"], ["mine", "public-g"], ["secret"]],
        ),
        ("admin", {"per_page": "5"}, [["child", "internal-g", "mine", "public-g", "secret"]]),
        ("admin", {"per_page": "1", "search": "L-G"}, [["internal-g"]]),
        ("alice", {"per_page": "1"}, [["child"], ["mine"]]),
        ("anonymous", {"per_page": "1"}, [["public-g"]]),
        ("admin", {"per_page": "1", "search": "nothing"}, [[]]),
    ],
)
async def test_keyset_pagination_walks_every_group_once(
    client: TestClient, world: World, who: str, query: dict[str, str], walk: list[list[str]]
) -> None:
    w = await visible_world(world)
    admin = await world.user("root", admin=True)
    headers = {"alice": w["alice"].headers, "admin": admin.headers, "anonymous": {}}[who]
    pages = await walk_next(client, "/api/v4/groups", {**query, "pagination": "keyset"}, headers)
    assert [[g["path"] for g in page] for page in pages] == walk


@pytest.mark.parametrize(
    ("query", "status", "body"),
    [
        ({"order_by": "path"}, 405, {"error": "Keyset pagination is not yet available for this type of request"}),
        ({"order_by": "id"}, 405, {"error": "Keyset pagination is not yet available for this type of request"}),
        ({"sort": "desc"}, 405, {"error": "Keyset pagination is not yet available for this type of request"}),
        ({"cursor": "!!"}, 400, {"error": "cursor is invalid"}),
        ({"cursor": pagination.encode_cursor({"name": "x"})}, 400, {"error": "cursor is invalid"}),
        ({"cursor": pagination.encode_cursor({"id": "1"})}, 400, {"error": "cursor is invalid"}),
    ],
)
async def test_keyset_pagination_of_groups_mistakes(
    client: TestClient, world: World, query: dict[str, str], status: int, body: dict[str, str]
) -> None:
    admin = await world.user("root", admin=True)
    r = await client.get("/api/v4/groups", params={**query, "pagination": "keyset"}, headers=admin.headers)
    assert (r.status, await r.json()) == (status, body)


@pytest.mark.parametrize(
    ("who", "ref", "status"),
    [
        ("alice", "mine", 200),
        ("alice", "MINE", 200),
        ("alice", "mine%2Fchild", 200),
        ("alice", "{child}", 200),
        ("alice", "secret", 404),
        ("alice", "{secret}", 404),
        ("alice", "public-g", 200),
        ("alice", "nothing", 404),
        ("alice", "mine%2F..%2Fsecret", 404),
        ("anonymous", "public-g", 200),
        ("anonymous", "mine", 404),
        ("anonymous", "internal-g", 404),
    ],
)
async def test_get_group(client: TestClient, world: World, who: str, ref: str, status: int) -> None:
    w = await visible_world(world)
    ref = ref.format(child=w["child"].id, secret=w["secret"].id)
    headers = w["alice"].headers if who == "alice" else {}
    r = await client.get(f"/api/v4/groups/{ref}", headers=headers)
    assert r.status == status
    if status == 404:
        assert await r.json() == {"message": "404 Group Not Found"}


async def test_subgroups_and_group_projects(client: TestClient, world: World) -> None:
    alice = await world.user("alice")
    top = await world.group("top")
    sub = await world.group("sub", top)
    await world.group("leaf", sub)
    other_sub = await world.group("other", top)
    await world.project("direct", top)
    await world.project("nested", sub)
    await world.project("deep", other_sub)
    await world.member(alice, top, AccessLevel.REPORTER)
    subs = await client.get("/api/v4/groups/top/subgroups", headers=alice.headers)
    assert [g["full_path"] for g in await subs.json()] == ["top/other", "top/sub"]
    projects = await client.get("/api/v4/groups/top/projects", headers=alice.headers)
    assert [p["path_with_namespace"] for p in await projects.json()] == ["top/direct"]
    deep = await client.get("/api/v4/groups/top/projects", params={"include_subgroups": "true"}, headers=alice.headers)
    assert [p["path_with_namespace"] for p in await deep.json()] == ["top/other/deep", "top/sub/nested", "top/direct"]
    detail = await (await client.get("/api/v4/groups/top%2Fsub", headers=alice.headers)).json()
    assert [p["path"] for p in detail["projects"]] == ["nested"] and detail["full_name"] == "Top / Sub"


# ---------------------------------------------------------------------------------------------------------------
# projects


async def project_paths(world: World) -> list[str]:
    return [p.full_path for p in await world.store.list_projects()]


async def test_create_project_in_personal_namespace(client: TestClient, world: World) -> None:
    alice = await world.user("alice")
    r = await client.post("/api/v4/projects", json={"name": "My Fancy Project.v2"}, headers=alice.headers)
    assert r.status == 201, await r.text()
    body = await r.json()
    assert list(body)[:6] == ["id", "description", "name", "name_with_namespace", "path", "path_with_namespace"]
    assert (body["name"], body["path"], body["path_with_namespace"], body["visibility"]) == (
        "My Fancy Project.v2",
        "my-fancy-project.v2",
        "alice/my-fancy-project.v2",
        "private",
    )
    assert body["namespace"]["kind"] == "user" and body["namespace"]["id"] == alice.user.namespace_id
    assert body["http_url_to_repo"] == str(client.make_url("/alice/my-fancy-project.v2.git"))
    assert body["creator_id"] == alice.user.id
    members = await world.store.list_members("project", body["id"])
    assert [(m.user.id, m.access_level) for m in members] == [(alice.user.id, AccessLevel.OWNER)]
    bare = repositories.locate(world.config, body["path_with_namespace"])
    assert bare is not None and (bare / "HEAD").is_file()


async def test_create_project_by_path_only(client: TestClient, world: World) -> None:
    alice = await world.user("alice")
    r = await client.post("/api/v4/projects", json={"path": "just-a-path"}, headers=alice.headers)
    assert r.status == 201
    assert ((await r.json())["name"], (await r.json())["path"]) == ("just-a-path", "just-a-path")


@pytest.mark.parametrize(
    ("role", "status"),
    [
        (None, 400),
        (AccessLevel.GUEST, 400),
        (AccessLevel.REPORTER, 400),
        (AccessLevel.DEVELOPER, 201),
        (AccessLevel.MAINTAINER, 201),
        ("admin", 201),
    ],
)
async def test_create_project_in_a_group_needs_developer(
    client: TestClient, world: World, role: AccessLevel | str | None, status: int
) -> None:
    top = await world.group("top")
    sub = await world.group("sub", top)
    actor = await world.user("actor", admin=role == "admin")
    if isinstance(role, AccessLevel):
        await world.member(actor, top, role)  # inherited by `sub`
    r = await client.post("/api/v4/projects", json={"path": "app", "namespace_id": sub.id}, headers=actor.headers)
    assert r.status == status, await r.text()
    if status == 201:
        assert (await r.json())["path_with_namespace"] == "top/sub/app"
        assert repositories.locate(world.config, "top/sub/app") is not None
    else:
        assert await r.json() == {"message": {"namespace": ["is not valid"]}}
        assert await project_paths(world) == []


async def test_create_project_in_someone_elses_namespace(client: TestClient, world: World) -> None:
    alice = await world.user("alice")
    bob = await world.user("bob")
    r = await client.post(
        "/api/v4/projects", json={"path": "x", "namespace_id": bob.user.namespace_id}, headers=alice.headers
    )
    assert (r.status, await r.json()) == (400, {"message": {"namespace": ["is not valid"]}})
    assert await project_paths(world) == []


PROJECT_REJECTIONS: list[tuple[str, dict[str, Any], int, dict[str, Any]]] = [
    (
        "nothing",
        {"description": "x"},
        400,
        {"error": "name, path are missing, at least one parameter must be provided"},
    ),
    ("namespace-not-int", {"path": "x", "namespace_id": "top"}, 400, {"error": "namespace_id is invalid"}),
    ("namespace-missing", {"path": "x", "namespace_id": 99999}, 400, {"message": {"namespace": ["is not valid"]}}),
    (
        "visibility-unknown",
        {"path": "x", "visibility": "open"},
        400,
        {"error": "visibility does not have a valid value"},
    ),
    ("path-taken", {"path": "EXISTING"}, 400, {"message": {"path": ["has already been taken"]}}),
    ("path-is-a-subgroup", {"path": "sub"}, 400, {"message": {"path": ["has already been taken"]}}),
    ("path-reserved", {"path": "info"}, 400, {"message": {"path": ["info is a reserved name"]}}),
    (
        "path-dotgit",
        {"path": "x.git"},
        400,
        {
            "message": {
                "path": [
                    "can contain only letters, digits, '_', '-' and '.'. "
                    "Cannot start with '-', end in '.git' or end in '.atom'"
                ]
            }
        },
    ),
    (
        "path-256",
        {"name": "x", "path": "p" * 256},
        400,
        {"message": {"path": ["is too long (maximum is 255 characters)"]}},
    ),
    (
        "name-256",
        {"name": "n" * 256, "path": "x"},
        400,
        {"message": {"name": ["is too long (maximum is 255 characters)"]}},
    ),
    (
        "name-format",
        {"name": "a/b", "path": "x"},
        400,
        {
            "message": {
                "name": [
                    "can contain only letters, digits, emoji, '_', '.', '+', dashes, or spaces. "
                    "It must start with a letter, digit, emoji, or '_'."
                ]
            }
        },
    ),
    (
        "name-only-symbols",
        {"name": "!!!"},
        400,
        {
            "message": {
                "name": [
                    "can contain only letters, digits, emoji, '_', '.', '+', dashes, or spaces. "
                    "It must start with a letter, digit, emoji, or '_'."
                ],
                "path": ["can't be blank"],
            }
        },
    ),
    (
        "public-in-private-group",
        {"path": "x", "visibility": "public"},
        400,
        {"message": {"visibility_level": ["public is not allowed in a private group."]}},
    ),
]


@pytest.mark.parametrize(
    ("case", "change", "status", "error"), PROJECT_REJECTIONS, ids=[c[0] for c in PROJECT_REJECTIONS]
)
async def test_create_project_rejections(
    client: TestClient, world: World, case: str, change: dict[str, Any], status: int, error: dict[str, Any]
) -> None:
    owner = await world.user("owner")
    top = await world.group("top")
    await world.group("sub", top)
    await world.project("existing", top)
    await world.member(owner, top, AccessLevel.OWNER)
    before = await project_paths(world)
    r = await client.post("/api/v4/projects", json={"namespace_id": top.id, **change}, headers=owner.headers)
    assert r.status == status, await r.text()
    assert await r.json() == error
    assert await project_paths(world) == before


async def projects_world(world: World) -> dict[str, Actor]:
    alice = await world.user("alice")
    top = await world.group("top")
    await world.project("a-private", top)
    await world.project("b-internal", top, visibility="internal")
    other = await world.group("other", visibility="public")
    await world.project("c-public", other, visibility="public")
    await world.project("d-secret", other)
    await world.member(alice, top, AccessLevel.DEVELOPER)
    return {"alice": alice}


@pytest.mark.parametrize(
    ("who", "query", "expected"),
    [
        ("alice", {}, ["c-public", "b-internal", "a-private"]),  # created_at desc, ties by id desc
        ("alice", {"membership": "true"}, ["b-internal", "a-private"]),
        ("alice", {"min_access_level": "40"}, []),
        ("alice", {"visibility": "public"}, ["c-public"]),
        ("alice", {"search": "PRIV"}, ["a-private"]),
        ("alice", {"order_by": "name", "sort": "asc"}, ["a-private", "b-internal", "c-public"]),
        ("alice", {"order_by": "id", "sort": "asc"}, ["a-private", "b-internal", "c-public"]),
        ("anonymous", {}, ["c-public"]),
        ("admin", {"sort": "asc"}, ["a-private", "b-internal", "c-public", "d-secret"]),
    ],
)
async def test_list_projects(
    client: TestClient, world: World, who: str, query: dict[str, str], expected: list[str]
) -> None:
    w = await projects_world(world)
    admin = await world.user("root", admin=True)
    headers = {"alice": w["alice"].headers, "admin": admin.headers, "anonymous": {}}[who]
    r = await client.get("/api/v4/projects", params=query, headers=headers)
    assert r.status == 200, await r.text()
    assert [p["path"] for p in await r.json()] == expected
    assert r.headers["X-Total"] == str(len(expected))


LIST_CALLERS = ["alice", "bob", "carol", "dave", "anonymous", "admin"]


@pytest.mark.parametrize("who", LIST_CALLERS)
@pytest.mark.parametrize(
    ("query", "floor"),
    [
        ({}, 0),
        ({"membership": "true"}, AccessLevel.GUEST),
        ({"min_access_level": "30"}, AccessLevel.DEVELOPER),
        ({"owned": "true"}, AccessLevel.OWNER),
        ({"membership": "true", "min_access_level": "20"}, AccessLevel.REPORTER),
    ],
)
async def test_list_projects_shows_exactly_what_policy_shows(
    client: TestClient, world: World, who: str, query: dict[str, str], floor: int
) -> None:
    """GET /projects is selected in the database from policy.list_reach (public and internal projects, the
    caller's groups' trees, project memberships, the personal namespace): it must equal policy's verdict on every
    project of the instance, for every caller and filter."""
    actor = (await policy_world(world))[who]
    shown = {
        p.full_path
        for p in await world.store.list_projects()
        if await policy_verdict(world, actor, Target.of_project(p), Operation.READ_PROJECT, floor)
    }
    r = await client.get(
        "/api/v4/projects", params={**query, "per_page": "100"}, headers=actor.headers if actor else {}
    )
    assert r.status == 200, await r.text()
    assert sorted(p["path_with_namespace"] for p in await r.json()) == sorted(shown)
    assert r.headers["X-Total"] == str(len(shown))
    if not query:  # not vacuous: each caller sees a different part of the instance
        assert {"alice": 6, "bob": 6, "carol": 3, "dave": 0, "anonymous": 1, "admin": 10}[who] == len(shown)


@pytest.mark.parametrize("who", LIST_CALLERS)
@pytest.mark.parametrize(
    ("query", "floor"),
    [
        ({}, -1),  # a user's default: the groups they belong to; an administrator's or anonymous: all they see
        ({"all_available": "true"}, 0),
        ({"all_available": "false"}, AccessLevel.GUEST),
        ({"min_access_level": "30"}, AccessLevel.DEVELOPER),
        ({"owned": "true", "all_available": "true"}, AccessLevel.OWNER),
    ],
)
async def test_list_groups_shows_exactly_what_policy_shows(
    client: TestClient, world: World, who: str, query: dict[str, str], floor: int
) -> None:
    """GET /groups, selected in the database like GET /projects: equal to policy's verdict on every group."""
    actor = (await policy_world(world))[who]
    if floor == -1:
        floor = AccessLevel.GUEST if actor is not None and not actor.user.is_admin else 0
    elif actor is None:
        floor = 0 if query.get("all_available") == "false" else floor  # all_available is a signed-in filter
    shown = {
        g.full_path
        for g in await world.store.list_groups()
        if await policy_verdict(world, actor, Target.of_group(g), Operation.READ_GROUP, floor)
    }
    r = await client.get("/api/v4/groups", params={**query, "per_page": "100"}, headers=actor.headers if actor else {})
    assert r.status == 200, await r.text()
    assert sorted(g["full_path"] for g in await r.json()) == sorted(shown)
    assert r.headers["X-Total"] == str(len(shown))
    if query == {"all_available": "true"}:
        assert {"alice": 4, "bob": 3, "carol": 2, "dave": 0, "anonymous": 1, "admin": 5}[who] == len(shown)


@pytest.mark.parametrize(
    ("limit", "page", "per_page", "total", "next_page", "rels"),
    [
        # GitLab counts no further than 10,000 (here 3, or 100): past it, no total, no last page; next still known.
        (3, 1, 2, None, "2", ["next", "first"]),
        (3, 3, 2, None, "4", ["prev", "next", "first"]),
        (3, 4, 2, None, "", ["prev", "first"]),
        (3, 5, 2, None, "", ["prev", "first"]),
        (100, 1, 2, "8", "2", ["next", "first", "last"]),
        (100, 4, 2, "8", "", ["prev", "first", "last"]),
        (8, 1, 5, "8", "2", ["next", "first", "last"]),
        (7, 1, 5, None, "2", ["next", "first"]),
    ],
)
async def test_a_list_past_the_count_limit_leaves_its_total_out(
    client: TestClient,
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    limit: int,
    page: int,
    per_page: int,
    total: str | None,
    next_page: str,
    rels: list[str],
) -> None:
    monkeypatch.setattr(queries, "COUNT_LIMIT", limit)
    monkeypatch.setattr(pagination, "COUNT_LIMIT", limit)
    admin = await world.user("root", admin=True)
    group = await world.group("many")
    for i in range(8):
        await world.project(f"p{i}", group)
    r = await client.get(
        "/api/v4/projects", params={"page": str(page), "per_page": str(per_page)}, headers=admin.headers
    )
    assert r.status == 200
    assert len(await r.json()) == max(0, min(per_page, 8 - (page - 1) * per_page))
    assert (r.headers.get("X-Total"), r.headers.get("X-Total-Pages") is not None) == (total, total is not None)
    assert r.headers["X-Next-Page"] == next_page
    assert [link.split('rel="')[1].rstrip('"') for link in r.headers["Link"].split(", ")] == rels


@pytest.mark.parametrize(
    ("query", "walk"),
    [
        # GitLab's keyset pagination (order_by=id only): follow rel="next" until it is gone; every project once.
        ({"order_by": "id", "sort": "asc", "per_page": "3"}, [[0, 1, 2], [3, 4, 5], [6]]),
        ({"order_by": "id", "sort": "desc", "per_page": "3"}, [[6, 5, 4], [3, 2, 1], [0]]),
        ({"order_by": "id", "sort": "asc", "per_page": "7"}, [[0, 1, 2, 3, 4, 5, 6]]),
        ({"order_by": "id", "sort": "asc", "per_page": "2", "search": "odd"}, [[1, 3], [5]]),
    ],
)
async def test_keyset_pagination_walks_every_project_once(
    client: TestClient, world: World, query: dict[str, str], walk: list[list[int]]
) -> None:
    admin = await world.user("root", admin=True)
    group = await world.group("keys")
    made = [await world.project(f"{'odd' if i % 2 else 'even'}-{i}", group) for i in range(7)]
    ids = [p.id for p in made]
    cursor = "id_before" if query["sort"] == "desc" else "id_after"
    pages = await walk_next(client, "/api/v4/projects", {**query, "pagination": "keyset"}, admin.headers, cursor=cursor)
    assert [[ids.index(item["id"]) for item in page] for page in pages] == walk


@pytest.mark.parametrize(
    ("query", "status", "body"),
    [
        (
            {"pagination": "keyset", "order_by": "name"},
            405,
            {"error": "Keyset pagination is not yet available for this type of request"},
        ),
        ({"pagination": "keyset"}, 405, {"error": "Keyset pagination is not yet available for this type of request"}),
        ({"pagination": "pages"}, 400, {"error": "pagination does not have a valid value"}),
        ({"id_after": "two"}, 400, {"error": "id_after is invalid"}),
    ],
)
async def test_keyset_pagination_mistakes(
    client: TestClient, world: World, query: dict[str, str], status: int, body: dict[str, str]
) -> None:
    admin = await world.user("root", admin=True)
    r = await client.get("/api/v4/projects", params=query, headers=admin.headers)
    assert (r.status, await r.json()) == (status, body)


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"order_by": "stars"}, "order_by does not have a valid value"),
        ({"visibility": "hidden"}, "visibility does not have a valid value"),
        ({"min_access_level": "25"}, "min_access_level does not have a valid value"),
        ({"membership": "sometimes"}, "membership is invalid"),
    ],
)
async def test_list_projects_bad_parameters(
    client: TestClient, world: World, query: dict[str, str], error: str
) -> None:
    w = await projects_world(world)
    r = await client.get("/api/v4/projects", params=query, headers=w["alice"].headers)
    assert (r.status, await r.json()) == (400, {"error": error})


@pytest.mark.parametrize(
    ("who", "ref", "status"),
    [
        ("alice", "top%2Fa-private", 200),
        ("alice", "TOP%2FA-Private", 200),
        ("alice", "other%2Fd-secret", 404),
        ("alice", "other%2Fc-public", 200),
        ("alice", "a-private", 404),
        ("alice", "top%2Fnothing", 404),
        ("alice", "99999", 404),
        ("anonymous", "other%2Fc-public", 200),
        ("anonymous", "top%2Fb-internal", 404),
    ],
)
async def test_get_project(client: TestClient, world: World, who: str, ref: str, status: int) -> None:
    w = await projects_world(world)
    headers = w["alice"].headers if who == "alice" else {}
    r = await client.get(f"/api/v4/projects/{ref}", headers=headers)
    assert r.status == status
    body = await r.json()
    if status == 404:
        assert body == {"message": "404 Project Not Found"}
    else:
        assert body["path_with_namespace"].lower() == ref.replace("%2F", "/").lower()
        assert body["name_with_namespace"] == f"{body['namespace']['name']} / {body['name']}"
