"""Users API: GET /user, GET /users (filters, order, pagination), GET /users/:id, POST /users and POST
/users/:id/personal_access_tokens, in GitLab's shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.api.pagination import encode_cursor
from gateway.clock import FixedClock
from tests.links import walk_next
from tests.world import INSUFFICIENT_API_SCOPE, World

NEW_USER = {"username": "newbie", "name": "New Bie", "email": "newbie@example.com", "password": "s3cret-enough"}


async def user_count(world: World) -> int:
    return await world.store.count_users()


async def test_current_user(client: TestClient, world: World) -> None:
    alice = await world.user("alice")
    r = await client.get("/api/v4/user", headers=alice.headers)
    assert r.status == 200
    body = await r.json()
    assert list(body)[:7] == ["id", "username", "name", "state", "locked", "avatar_url", "web_url"]
    assert body["id"] == alice.user.id and body["username"] == "alice"
    assert body["email"] == "alice@example.com" and body["is_admin"] is False
    assert body["web_url"] == str(client.make_url("/alice"))
    bearer = await client.get("/api/v4/user", headers={"Authorization": f"Bearer {alice.pat}"})
    assert (await bearer.json())["id"] == alice.user.id


@pytest.mark.parametrize(("scopes", "status"), [(("read_api",), 200), (("read_repository",), 403), (("api",), 200)])
async def test_current_user_needs_an_api_scope(
    client: TestClient, world: World, scopes: tuple[str, ...], status: int
) -> None:
    alice = await world.user("alice", scopes=scopes)
    r = await client.get("/api/v4/user", headers=alice.headers)
    assert r.status == status


async def test_users_list_is_for_signed_in_users(client: TestClient, world: World) -> None:
    await world.user("alice")
    r = await client.get("/api/v4/users")
    assert (r.status, await r.json()) == (401, {"message": "401 Unauthorized"})


async def test_users_list_entities(client: TestClient, world: World) -> None:
    """Non-admins get UserBasic (no e-mail); administrators get the admin entity."""
    alice = await world.user("alice")
    root = await world.user("root", admin=True)
    plain = await (await client.get("/api/v4/users", headers=alice.headers)).json()
    assert [u["username"] for u in plain] == ["root", "alice"]  # newest first: order_by=id, sort=desc
    assert all("email" not in u and "is_admin" not in u for u in plain)
    full = await (await client.get("/api/v4/users", headers=root.headers)).json()
    assert {u["username"]: (u["email"], u["is_admin"]) for u in full} == {
        "alice": ("alice@example.com", False),
        "root": ("root@example.com", True),
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"username": "Bob"}, ["bob"]),  # exact, case-insensitive
        ({"username": "bo"}, []),
        ({"username": ""}, []),
        # A part from 3 characters, a whole username or name below (GitLab's Gitlab::SQL::Pattern).
        ({"search": "aro"}, ["carol"]),
        ({"search": "CAR"}, ["carol"]),
        ({"search": "o"}, []),
        ({"search": "bo"}, []),
        ({"search": "alice@example.com"}, []),  # e-mail addresses are searched for administrators only
        ({"search": "_%"}, []),  # LIKE wildcards are literal
        ({"sort": "asc"}, ["root", "alice", "bob", "carol"]),
        ({"order_by": "username", "sort": "asc"}, ["alice", "bob", "carol", "root"]),
        ({"order_by": "username"}, ["root", "carol", "bob", "alice"]),
        ({}, ["carol", "bob", "alice", "root"]),
    ],
)
async def test_users_list_filters(client: TestClient, world: World, query: dict[str, str], expected: list[str]) -> None:
    await world.user("root", admin=True)
    alice = await world.user("alice")
    await world.user("bob")
    await world.user("carol")
    r = await client.get("/api/v4/users", params=query, headers=alice.headers)
    assert r.status == 200
    assert [u["username"] for u in await r.json()] == expected
    assert r.headers["X-Total"] == str(len(expected))


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("ALICE@example.com", ["alice"]),
        ("alice@example", []),  # a whole address only, as GitLab's User.search: a part would list a whole domain
        ("@example.com", []),
    ],
)
async def test_admin_searches_email(client: TestClient, world: World, search: str, expected: list[str]) -> None:
    root = await world.user("root", admin=True)
    await world.user("alice")
    r = await client.get("/api/v4/users", params={"search": search}, headers=root.headers)
    assert [u["username"] for u in await r.json()] == expected


@pytest.mark.parametrize("sort", ["desc", "asc"])
async def test_users_pagination(client: TestClient, world: World, sort: str) -> None:
    made = [await world.user(f"user{i}") for i in range(7)]
    ids = sorted((a.user.id for a in made), reverse=sort == "desc")
    seen: list[int] = []
    for page in (1, 2, 3):
        r = await client.get(
            "/api/v4/users", params={"per_page": "3", "page": str(page), "sort": sort}, headers=made[0].headers
        )
        assert (r.headers["X-Total"], r.headers["X-Total-Pages"], r.headers["X-Page"]) == ("7", "3", str(page))
        seen += [u["id"] for u in await r.json()]
    assert seen == ids


@pytest.mark.parametrize(
    ("query", "walk"),
    [
        # GitLab's keyset pagination of users (CursorBasedKeyset: id, name, username, created_at, updated_at, either
        # way): follow rel="next", an opaque cursor, until it is gone; every user once. Names tie ("sam", "Sam"):
        # ties go by id in the list's direction.
        ({"per_page": "2"}, [["erin", "dan"], ["carol", "bob"], ["alice"]]),
        ({"per_page": "2", "sort": "asc"}, [["alice", "bob"], ["carol", "dan"], ["erin"]]),
        ({"per_page": "2", "order_by": "name", "sort": "asc"}, [["carol", "erin"], ["bob", "dan"], ["alice"]]),
        ({"per_page": "2", "order_by": "name"}, [["alice", "dan"], ["bob", "erin"], ["carol"]]),
        ({"per_page": "3", "order_by": "username", "sort": "asc"}, [["alice", "bob", "carol"], ["dan", "erin"]]),
        ({"per_page": "1", "order_by": "created_at"}, [["erin"], ["dan"], ["carol"], ["bob"], ["alice"]]),
        ({"per_page": "4", "order_by": "updated_at", "sort": "asc"}, [["alice", "bob", "carol", "dan"], ["erin"]]),
        ({"per_page": "5", "order_by": "name"}, [["alice", "dan", "bob", "erin", "carol"]]),
        ({"per_page": "1", "search": "SAM"}, [["dan"], ["bob"]]),
        ({"per_page": "1", "username": "BOB"}, [["bob"]]),
        ({"per_page": "1", "search": "nobody"}, [[]]),
    ],
)
async def test_keyset_pagination_walks_every_user_once(
    client: TestClient, world: World, clock: FixedClock, query: dict[str, str], walk: list[list[str]]
) -> None:
    made = []
    for username, name in (("alice", "Zed"), ("bob", "sam"), ("carol", "Ann"), ("dan", "Sam"), ("erin", "Bea")):
        clock.advance(timedelta(minutes=1))
        made.append(await world.user(username, name=name))
    pages = await walk_next(client, "/api/v4/users", {**query, "pagination": "keyset"}, made[0].headers)
    assert [[u["username"] for u in page] for page in pages] == walk


@pytest.mark.parametrize(
    ("query", "status", "body"),
    [
        ({"cursor": "not base64 at all!"}, 400, {"error": "cursor is invalid"}),
        ({"cursor": "é"}, 400, {"error": "cursor is invalid"}),
        ({"cursor": "bm90IGpzb24="}, 400, {"error": "cursor is invalid"}),  # "not json"
        ({"cursor": "WzFd"}, 400, {"error": "cursor is invalid"}),  # [1]
        ({"cursor": encode_cursor({"id": "x1"})}, 400, {"error": "cursor is invalid"}),
        ({"cursor": encode_cursor({"id": "1" * 19})}, 400, {"error": "cursor is invalid"}),
        ({"cursor": encode_cursor({"id": "1"})[:-4]}, 400, {"error": "cursor is invalid"}),
        ({"cursor": "A" * 5000}, 400, {"error": "cursor is invalid"}),
        # A cursor made for another order lacks its key; one naming a NUL or a naive time is refused too.
        ({"order_by": "name", "cursor": encode_cursor({"id": "1"})}, 400, {"error": "cursor is invalid"}),
        (
            {"order_by": "name", "cursor": encode_cursor({"id": "1", "name": "a\0"})},
            400,
            {"error": "cursor is invalid"},
        ),
        (
            {"order_by": "created_at", "cursor": encode_cursor({"id": "1", "created_at": "yesterday"})},
            400,
            {"error": "cursor is invalid"},
        ),
        (
            {"order_by": "created_at", "cursor": encode_cursor({"id": "1", "created_at": "2026-01-01T00:00:00"})},
            400,
            {"error": "cursor is invalid"},
        ),
        # Backward cursors ("_kd": "p") are GraphQL's: the REST API links forward only.
        ({"cursor": "eyJpZCI6IjEiLCJfa2QiOiJwIn0="}, 400, {"error": "cursor is invalid"}),
        ({"pagination": "pages"}, 400, {"error": "pagination does not have a valid value"}),
        # An empty cursor is the first page, as GitLab's Paginator has it.
        ({"cursor": ""}, 200, None),
    ],
)
async def test_keyset_pagination_of_users_mistakes(
    client: TestClient, world: World, query: dict[str, str], status: int, body: dict[str, str] | None
) -> None:
    alice = await world.user("alice")
    r = await client.get("/api/v4/users", params={"pagination": "keyset", **query}, headers=alice.headers)
    assert r.status == status
    if body is not None:
        assert await r.json() == body


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"order_by": "email"}, "order_by does not have a valid value"),
        ({"sort": "up"}, "sort does not have a valid value"),
    ],
)
async def test_users_list_bad_parameters(client: TestClient, world: World, query: dict[str, str], error: str) -> None:
    alice = await world.user("alice")
    r = await client.get("/api/v4/users", params=query, headers=alice.headers)
    assert (r.status, await r.json()) == (400, {"error": error})


@pytest.mark.parametrize(
    ("ref", "status", "body"),
    [
        ("999", 404, {"message": "404 User Not Found"}),
        ("abc", 400, {"error": "id is invalid"}),
        ("1.5", 400, {"error": "id is invalid"}),
    ],
)
async def test_get_user_errors(client: TestClient, world: World, ref: str, status: int, body: dict[str, str]) -> None:
    alice = await world.user("alice")
    r = await client.get(f"/api/v4/users/{ref}", headers=alice.headers)
    assert (r.status, await r.json()) == (status, body)


async def test_get_user_private_fields_for_admins_only(client: TestClient, world: World) -> None:
    alice = await world.user("alice")
    root = await world.user("root", admin=True)
    seen_by_alice = await (await client.get(f"/api/v4/users/{root.user.id}", headers=alice.headers)).json()
    assert seen_by_alice["username"] == "root" and "email" not in seen_by_alice
    seen_by_root = await (await client.get(f"/api/v4/users/{alice.user.id}", headers=root.headers)).json()
    assert seen_by_root["email"] == "alice@example.com"


async def test_create_user(client: TestClient, world: World) -> None:
    root = await world.user("root", admin=True)
    r = await client.post("/api/v4/users", json={**NEW_USER, "admin": True}, headers=root.headers)
    assert r.status == 201, await r.text()
    body = await r.json()
    assert (body["username"], body["name"], body["email"], body["is_admin"]) == (
        "newbie",
        "New Bie",
        "newbie@example.com",
        True,
    )
    assert "password" not in body and "password_hash" not in body
    stored = await world.store.get_user_by_username("newbie")
    assert stored is not None and stored.is_admin and stored.password_hash and "s3cret" not in stored.password_hash
    assert world.hasher.verify("s3cret-enough", stored.password_hash)
    # The new user's personal namespace exists: a project can be created in it later.
    ns = await world.store.get_namespace(stored.namespace_id)
    assert ns is not None and ns.full_path == "newbie"


async def test_create_user_form_encoded(client: TestClient, world: World) -> None:
    root = await world.user("root", admin=True)
    r = await client.post("/api/v4/users", data={**NEW_USER, "admin": "false"}, headers=root.headers)
    assert r.status == 201
    assert (await r.json())["is_admin"] is False


async def test_create_user_without_password(client: TestClient, world: World) -> None:
    root = await world.user("root", admin=True)
    body = {k: v for k, v in NEW_USER.items() if k != "password"}
    r = await client.post("/api/v4/users", json=body, headers=root.headers)
    assert (r.status, await r.json()) == (
        400,
        {
            "error": "password, reset_password, force_random_password are missing, "
            "at least one parameter must be provided"
        },
    )
    r = await client.post("/api/v4/users", json={**body, "force_random_password": True}, headers=root.headers)
    assert r.status == 201
    stored = await world.store.get_user_by_username("newbie")
    assert stored is not None and stored.password_hash is None


async def test_only_admins_create_users(client: TestClient, world: World) -> None:
    alice = await world.user("alice")
    before = await user_count(world)
    r = await client.post("/api/v4/users", json=NEW_USER, headers=alice.headers)
    assert (r.status, await r.json()) == (403, {"message": "403 Forbidden"})
    assert await user_count(world) == before


INVALID_USERS: list[tuple[str, dict[str, Any], int, dict[str, Any]]] = [
    ("username-missing", {"username": None}, 400, {"error": "username is missing"}),
    ("email-missing", {"email": None}, 400, {"error": "email is missing"}),
    ("name-missing", {"name": None}, 400, {"error": "name is missing"}),
    ("username-list", {"username": ["a"]}, 400, {"error": "username is invalid"}),
    ("admin-not-bool", {"admin": "perhaps"}, 400, {"error": "admin is invalid"}),
    ("username-reserved", {"username": "api"}, 400, {"message": {"username": ["api is a reserved name"]}}),
    (
        "username-256",
        {"username": "u" * 256},
        400,
        {"message": {"username": ["is too long (maximum is 255 characters)"]}},
    ),
    *[
        (
            f"username-{label}",
            {"username": username},
            400,
            {
                "message": {
                    "username": [
                        "can contain only letters, digits, '_', '-' and '.'. Cannot start with '-', end in '.git' or "
                        "end in '.atom'"
                    ]
                }
            },
        )
        for label, username in [("space", "new bie"), ("dash", "-newbie"), ("git", "newbie.git"), ("slash", "a/b")]
    ],
    ("name-blank", {"name": " "}, 400, {"message": {"name": ["can't be blank"]}}),
    ("name-256", {"name": "n" * 256}, 400, {"message": {"name": ["is too long (maximum is 255 characters)"]}}),
    ("email-invalid", {"email": "not-an-address"}, 400, {"message": {"email": ["is invalid"]}}),
    (
        "password-short",
        {"password": "short"},
        400,
        {"message": {"password": ["is too short (minimum is 8 characters)"]}},
    ),
    (
        "several",
        {"name": "", "email": "x"},
        400,
        {"message": {"name": ["can't be blank"], "email": ["is invalid"]}},
    ),
    ("username-taken", {"username": "ALICE"}, 409, {"message": "Username has already been taken"}),
    ("email-taken", {"email": "Alice@Example.com"}, 409, {"message": "Email has already been taken"}),
]


@pytest.mark.parametrize(("case", "change", "status", "error"), INVALID_USERS, ids=[c[0] for c in INVALID_USERS])
async def test_create_user_rejections(
    client: TestClient, world: World, case: str, change: dict[str, Any], status: int, error: dict[str, Any]
) -> None:
    root = await world.user("root", admin=True)
    await world.user("alice")
    before = await user_count(world)
    body = {k: v for k, v in {**NEW_USER, **change}.items() if v is not None}
    r = await client.post("/api/v4/users", json=body, headers=root.headers)
    assert r.status == status, await r.text()
    assert await r.json() == error
    assert await user_count(world) == before


async def test_username_taken_by_a_group(client: TestClient, world: World) -> None:
    """A user's personal namespace shares the path space with groups (routes are unique case-insensitively)."""
    root = await world.user("root", admin=True)
    await world.group("newbie")
    before = await user_count(world)
    r = await client.post("/api/v4/users", json=NEW_USER, headers=root.headers)
    assert r.status in (400, 409)
    assert "has already been taken" in str(await r.json())
    assert await user_count(world) == before


async def test_create_personal_access_token(client: TestClient, world: World, clock: FixedClock) -> None:
    root = await world.user("root", admin=True)
    alice = await world.user("alice")
    r = await client.post(
        f"/api/v4/users/{alice.user.id}/personal_access_tokens",
        json={"name": "ci", "scopes": ["read_api", "api"], "expires_at": "2026-02-01"},
        headers=root.headers,
    )
    assert r.status == 201, await r.text()
    body = await r.json()
    assert list(body) == [
        "id",
        "name",
        "revoked",
        "created_at",
        "scopes",
        "user_id",
        "last_used_at",
        "active",
        "expires_at",
        "last_used_ips",  # GitLab 17.x PersonalAccessTokenWithLastUsedIps
        "token",
    ]
    assert (body["name"], body["scopes"], body["user_id"], body["active"], body["expires_at"]) == (
        "ci",
        ["api", "read_api"],
        alice.user.id,
        True,
        "2026-02-01",
    )
    token = body["token"]
    assert token.startswith("glpat-")
    me = await client.get("/api/v4/user", headers={"PRIVATE-TOKEN": token})
    assert (await me.json())["username"] == "alice"
    # The token stops working at 00:00 UTC of its expiry date.
    clock.set(datetime(2026, 2, 1, tzinfo=UTC) - timedelta(seconds=1))
    assert (await client.get("/api/v4/user", headers={"PRIVATE-TOKEN": token})).status == 200
    clock.set(datetime(2026, 2, 1, tzinfo=UTC))
    assert (await client.get("/api/v4/user", headers={"PRIVATE-TOKEN": token})).status == 401


INVALID_PATS: list[tuple[str, str, dict[str, Any], int, dict[str, Any]]] = [
    ("no-scopes", "alice", {"name": "ci"}, 400, {"error": "scopes is missing"}),
    (
        "unknown-scope",
        "alice",
        {"name": "ci", "scopes": ["sudo"]},
        400,
        {"error": "scopes does not have a valid value"},
    ),
    ("empty-scopes", "alice", {"name": "ci", "scopes": []}, 400, {"error": "scopes does not have a valid value"}),
    ("no-name", "alice", {"scopes": ["api"]}, 400, {"error": "name is missing"}),
    ("blank-name", "alice", {"name": "", "scopes": ["api"]}, 400, {"message": {"name": ["can't be blank"]}}),
    (
        "bad-date",
        "alice",
        {"name": "ci", "scopes": ["api"], "expires_at": "2026-02-30"},
        400,
        {"error": "expires_at is invalid"},
    ),
    ("unknown-user", "999", {"name": "ci", "scopes": ["api"]}, 404, {"message": "404 User Not Found"}),
    ("bad-user-id", "abc", {"name": "ci", "scopes": ["api"]}, 400, {"error": "id is invalid"}),
]


@pytest.mark.parametrize(("case", "who", "body", "status", "error"), INVALID_PATS, ids=[c[0] for c in INVALID_PATS])
async def test_create_personal_access_token_rejections(
    client: TestClient, world: World, case: str, who: str, body: dict[str, Any], status: int, error: dict[str, Any]
) -> None:
    root = await world.user("root", admin=True)
    alice = await world.user("alice")
    user_ref = str(alice.user.id) if who == "alice" else who
    r = await client.post(f"/api/v4/users/{user_ref}/personal_access_tokens", json=body, headers=root.headers)
    assert r.status == status, await r.text()
    assert await r.json() == error
    assert len(await world.store.list_personal_access_tokens(alice.user.id)) == 1  # the world's own token only


async def test_only_admins_create_personal_access_tokens(client: TestClient, world: World) -> None:
    alice = await world.user("alice")
    bob = await world.user("bob")
    for target in (alice, bob):  # not even for oneself through this admin endpoint
        r = await client.post(
            f"/api/v4/users/{target.user.id}/personal_access_tokens",
            json={"name": "x", "scopes": ["api"]},
            headers=alice.headers,
        )
        assert (r.status, await r.json()) == (403, {"message": "403 Forbidden"})
    assert len(await world.store.list_personal_access_tokens(bob.user.id)) == 1


# Who revokes whose token: GitLab's PersonalAccessTokensFinder + RevokeService (owner or admin; else 400).
REVOCATIONS = [
    ("own token by id", "alice", "alice", 204, None, True),
    ("own token as self", "alice", "self", 204, None, True),
    ("another user's token", "bob", "alice", 400, {"message": "400 Bad request"}, False),
    ("administrator, another user's token", "root", "alice", 204, None, True),
    ("unknown id", "alice", "999999", 404, {"message": "404 Not Found"}, False),
    ("not an id", "alice", "1x", 400, {"error": "id is invalid"}, False),
    ("a read_api token may not revoke", "reader", "alice", 403, INSUFFICIENT_API_SCOPE, False),
]


@pytest.mark.parametrize(
    ("case", "who", "ref", "status", "error", "revoked"), REVOCATIONS, ids=[c[0] for c in REVOCATIONS]
)
async def test_revoke_personal_access_token(
    client: TestClient,
    world: World,
    case: str,
    who: str,
    ref: str,
    status: int,
    error: dict[str, Any] | None,
    revoked: bool,
) -> None:
    actors = {
        "alice": await world.user("alice"),
        "bob": await world.user("bob"),
        "root": await world.user("root", admin=True),
        "reader": await world.user("reader", admin=True, scopes=("read_api",)),
    }
    alice = actors["alice"]
    (alice_pat,) = await world.store.list_personal_access_tokens(alice.user.id)
    path = {"alice": str(alice_pat.id)}.get(ref, ref)
    r = await client.delete(f"/api/v4/personal_access_tokens/{path}", headers=actors[who].headers)
    assert r.status == status, await r.text()
    if error is not None:
        assert await r.json() == error
    after = await world.store.get_personal_access_token(alice_pat.id)
    assert after is not None and after.revoked == revoked
    # The revoked token is refused from then on; a refused revocation leaves it working.
    me = await client.get("/api/v4/user", headers=alice.headers)
    assert me.status == (401 if revoked else 200)
