"""The audit trail: management changes and authentication decisions of every family are recorded (in batches, never
a secret), and read back through GitLab's audit events API with its permissions, filters, pages and retention."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.api.pagination import encode_cursor
from gateway.app import AUDIT, create_app
from gateway.audit import AuditLog
from gateway.clock import FixedClock
from gateway.config import Config
from gateway.secretbox import SecretBox
from gateway.signing_keys import SigningKey, generate_key, self_signed_certificate
from gateway.store.base import AuditEvent, AuditQuery, NewAuditEvent, Project
from gateway.store.sqlite import SQLiteStore
from gateway.users import AccessLevel
from tests.conftest import make_config, start_server
from tests.links import walk_next
from tests.webui import post_form, signed_in
from tests.world import Actor, World

UA = "audit-test/1.0"


@pytest.fixture(scope="module")
def signing_key() -> SigningKey:
    key = generate_key("ES256")
    return SigningKey(key, self_signed_certificate(key, "test", datetime.now(UTC)))


async def gateway_client(
    aiohttp_client: Any, config: Config, store: SQLiteStore, clock: FixedClock, box: SecretBox, key: SigningKey
) -> TestClient:
    app = create_app(config, store=store, clock=clock, box=box, signing_key=key)
    return await aiohttp_client(await start_server(app))  # type: ignore[no-any-return]


@pytest.fixture
async def gw(
    aiohttp_client: Any, config: Config, store: SQLiteStore, clock: FixedClock, box: SecretBox, signing_key: SigningKey
) -> TestClient:
    return await gateway_client(aiohttp_client, config, store, clock, box, signing_key)


def audit_log(client: TestClient) -> AuditLog:
    return client.server.app[AUDIT]


async def settled(client: TestClient) -> None:
    """Wait until every request has been recorded (a streamed git answer reaches the client before its handler
    ends): polled, bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while audit_log(client).in_flight and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert audit_log(client).in_flight == 0


async def events(client: TestClient, **query: Any) -> list[AuditEvent]:
    """Everything buffered written (as the background task does each second), then read back oldest first."""
    await settled(client)
    await audit_log(client).flush()
    store = audit_log(client).store
    assert store is not None
    page = await store.list_audit_events(AuditQuery(**query), offset=0, limit=1000)
    return list(reversed(page.items))


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode(), "User-Agent": UA}


@dataclass
class Scene:
    admin: Actor
    owner: Actor  # Owner of the group
    maintainer: Actor  # Maintainer of the project
    developer: Actor  # Developer of the project
    reporter: Actor  # Reporter of the project
    stranger: Actor  # member of another group only
    group: Any
    other_group: Any
    project: Project
    secrets: list[str]


@pytest.fixture
async def scene(world: World) -> Scene:
    admin = await world.user("root", admin=True)
    owner, maintainer = await world.user("owner"), await world.user("maint")
    developer, reporter, stranger = await world.user("dev"), await world.user("rep"), await world.user("stranger")
    group, other = await world.group("g"), await world.group("other")
    project = await world.project("p", group)
    await world.member(owner, group, AccessLevel.OWNER)
    await world.member(maintainer, project, AccessLevel.MAINTAINER)
    await world.member(developer, project, AccessLevel.DEVELOPER)
    await world.member(reporter, project, AccessLevel.REPORTER)
    await world.member(stranger, other, AccessLevel.OWNER)
    actors = (admin, owner, maintainer, developer, reporter, stranger)
    return Scene(*actors, group, other, project, [s for a in actors for s in (a.pat, a.password)])


# --- management changes -----------------------------------------------------------------------------------------


async def test_deploy_token_changes_are_recorded(gw: TestClient, scene: Scene) -> None:
    for kind, holder, who in (("projects", scene.project, scene.maintainer), ("groups", scene.group, scene.owner)):
        base = f"/api/v4/{kind}/{holder.id}/deploy_tokens"
        created = await (
            await gw.post(
                base, json={"name": "ci", "scopes": ["read_repository"]}, headers={**who.headers, "User-Agent": UA}
            )
        ).json()
        scene.secrets.append(created["token"])
        assert (await gw.post(f"{base}/{created['id']}/revoke", headers=who.headers)).status == 200
        assert (await gw.delete(f"{base}/{created['id']}", headers=who.headers)).status == 204
        entity = "Project" if kind == "projects" else "Group"
        recorded = [
            e for e in await events(gw, entity_type=entity, entity_id=holder.id) if "deploy_token" in e.event_name
        ]
        assert [e.event_name for e in recorded] == [
            "deploy_token_created",
            "deploy_token_revoked",
            "deploy_token_destroyed",
        ]
        for e in recorded:
            assert e.author_id == who.user.id
            d = e.details
            assert (d["author_name"], d["target_type"], d["target_id"], d["target_details"]) == (
                who.user.username,
                "DeployToken",
                created["id"],
                "ci",
            )
            assert (d["entity_path"], d["ip_address"], d["deploy_token_username"]) == (
                holder.full_path,
                "127.0.0.1",
                created["username"],
            )
            assert d["principal"].startswith(f"user:{who.user.id}/pat:")
        assert recorded[0].details["user_agent"] == UA
        assert recorded[0].details["route"].endswith("deploy_tokens.create")


async def test_member_and_pat_changes_are_recorded(gw: TestClient, scene: Scene) -> None:
    r = await gw.post(
        f"/api/v4/projects/{scene.project.id}/members",
        json={"user_id": scene.stranger.user.id, "access_level": 30},
        headers=scene.maintainer.headers,
    )
    assert r.status == 201
    r = await gw.post(
        f"/api/v4/groups/{scene.group.id}/members",
        json={"user_id": scene.stranger.user.id, "access_level": 20},
        headers=scene.owner.headers,
    )
    assert r.status == 201
    r = await gw.post(
        f"/api/v4/users/{scene.developer.user.id}/personal_access_tokens",
        json={"name": "laptop", "scopes": ["read_api"]},
        headers=scene.admin.headers,
    )
    assert r.status == 201
    pat = await r.json()
    scene.secrets.append(pat["token"])
    r = await gw.delete("/api/v4/personal_access_tokens/self", headers={"PRIVATE-TOKEN": pat["token"]})
    assert r.status == 403  # its only scope is read_api: refused (a denied decision, not a change)
    r = await gw.delete(f"/api/v4/personal_access_tokens/{pat['id']}", headers=scene.developer.headers)
    assert r.status == 204
    r = await gw.post(
        "/api/v4/users",
        json={"username": "newcomer", "name": "N", "email": "n@example.com", "password": "Newcomer-pw-1"},
        headers=scene.admin.headers,
    )
    assert r.status == 201
    newcomer = await r.json()
    names = ("member_created", "personal_access_token_created", "personal_access_token_revoked", "user_created")
    changes = [e for e in await events(gw) if e.event_name in names]
    assert [(e.event_name, e.author_id, e.entity_type, e.entity_id, e.details["target_id"]) for e in changes] == [
        ("member_created", scene.maintainer.user.id, "Project", scene.project.id, scene.stranger.user.id),
        ("member_created", scene.owner.user.id, "Group", scene.group.id, scene.stranger.user.id),
        ("personal_access_token_created", scene.admin.user.id, "User", scene.developer.user.id, pat["id"]),
        ("personal_access_token_revoked", scene.developer.user.id, "User", scene.developer.user.id, pat["id"]),
        ("user_created", scene.admin.user.id, "User", newcomer["id"], newcomer["id"]),
    ]
    assert [e.details.get("access_level") for e in changes[:2]] == [30, 20]
    assert "Newcomer-pw-1" not in str(changes[-1].details)


async def test_ui_changes_are_recorded(gw: TestClient, scene: Scene, world: World) -> None:
    await signed_in(gw, scene.maintainer)
    settings = f"/{scene.project.full_path}/-/settings/repository"
    r = await post_form(
        gw, f"{settings}/deploy_token/create", {"name": "from-ui", "scopes": ["read_repository"]}, page=settings
    )
    assert r.status == 200
    token = (await world.store.list_deploy_tokens(project_id=scene.project.id)).items[0]
    r = await post_form(
        gw, f"/{scene.project.full_path}/-/deploy_tokens/{token.id}/revoke", {"confirmed": "yes"}, page=settings
    )
    assert r.status == 303
    recorded = [e for e in await events(gw, entity_type="Project") if e.event_name.startswith("deploy_token")]
    assert [(e.event_name, e.author_id, e.details["principal"]) for e in recorded] == [
        ("deploy_token_created", scene.maintainer.user.id, f"user:{scene.maintainer.user.id}"),
        ("deploy_token_revoked", scene.maintainer.user.id, f"user:{scene.maintainer.user.id}"),
    ]


# --- authentication decisions, one table per family ------------------------------------------------------------


async def test_decisions_of_every_family(gw: TestClient, scene: Scene, world: World) -> None:
    p = scene.project
    git_token = await world.deploy_token(p, ("read_repository",), name="git")
    pkg_token = await world.deploy_token(p, ("read_package_registry",), name="pkg")
    reg_token = await world.deploy_token(p, ("read_registry",), name="reg")
    scene.secrets += [git_token.secret, pkg_token.secret, reg_token.secret]
    git, reg = git_token.token, reg_token.token
    requests: list[tuple[str, str, dict[str, str], int]] = [
        (
            "git allowed",
            f"/{p.full_path}.git/info/refs?service=git-upload-pack",
            basic(git.username, git_token.secret),
            200,
        ),
        (
            "git denied (push)",
            f"/{p.full_path}.git/info/refs?service=git-receive-pack",
            basic(git.username, git_token.secret),
            403,
        ),
        (
            "registry pull allowed, push denied",
            f"/jwt/auth?service=container_registry&scope=repository:{p.full_path}:pull,push",
            basic(reg.username, reg_token.secret),
            200,
        ),
        (
            "package read allowed",
            f"/api/v4/projects/{p.id}/packages/generic/tool/1.0/tool.tgz",
            {"Deploy-Token": pkg_token.secret, "User-Agent": UA},
            404,
        ),
        ("api allowed", f"/api/v4/projects/{p.id}/deploy_tokens", {**scene.maintainer.headers, "User-Agent": UA}, 200),
        ("api denied", f"/api/v4/projects/{p.id}/deploy_tokens", {**scene.developer.headers, "User-Agent": UA}, 403),
        (
            "bad credentials",
            f"/{p.full_path}.git/info/refs?service=git-upload-pack",
            basic(git.username, "gldt-nope"),
            401,
        ),
        ("bad PAT", "/api/v4/user", {"PRIVATE-TOKEN": "glpat-not-a-real-token-x", "User-Agent": UA}, 401),
    ]
    for name, url, headers, status in requests:
        r = await gw.get(url, headers=headers)
        assert r.status == status, (name, await r.text())
    recorded = await events(gw)
    seen = [
        (e.event_name, e.entity_type, e.details["principal"], e.details["operation"], e.details["route"])
        for e in recorded
    ]
    dt = lambda t: f"deploy_token:{t.id}"  # noqa: E731
    maintainer = f"user:{scene.maintainer.user.id}/pat:{await pat_id(world, scene.maintainer)}"
    developer = f"user:{scene.developer.user.id}/pat:{await pat_id(world, scene.developer)}"
    # (Each request is recorded when its handler ends: a streamed git answer may end after the next request.)
    assert sorted(seen, key=repr) == sorted(
        [
            ("access_allowed", "Project", dt(git), "git_read", "git.info_refs"),
            ("access_denied", "Project", dt(git), "git_write", "git.info_refs"),
            ("access_allowed", "Project", dt(reg), "registry_pull", "registry_auth.token"),
            ("access_denied", "Project", dt(reg), "registry_push", "registry_auth.token"),
            ("access_allowed", "Project", dt(pkg_token.token), "package_read", "packages.generic.get"),
            ("access_allowed", "Project", maintainer, "read_project_deploy_tokens", "api.project_deploy_tokens.list"),
            ("access_denied", "Project", developer, "read_project_deploy_tokens", "api.project_deploy_tokens.list"),
            ("authentication_failed", "Gitlab::Audit::InstanceScope", "unknown", None, "git.info_refs"),
            ("authentication_failed", "Gitlab::Audit::InstanceScope", "unknown", None, "api.user.current"),
        ],
        key=repr,
    )
    by_operation = {e.details["operation"]: e for e in recorded}
    first = by_operation["git_read"]
    assert first.author_id == -2 and first.entity_id == p.id
    assert {
        k: first.details[k]
        for k in (
            "author_name",
            "author_class",
            "token_type",
            "token_id",
            "outcome",
            "reason",
            "ip_address",
            "user_agent",
            "count",
        )
    } == {
        "author_name": git.username,
        "author_class": "DeployToken",
        "token_type": "deploy_token",
        "token_id": git.id,
        "outcome": "allowed",
        "reason": "deploy token scope",
        "ip_address": "127.0.0.1",
        "user_agent": UA,
        "count": 1,
    }
    assert by_operation["git_write"].details["reason"] == "You are not allowed to upload code."
    failed = [e for e in recorded if e.event_name == "authentication_failed"]
    assert {(e.author_id, e.details["reason"], e.details["outcome"]) for e in failed} == {
        (-1, "invalid credentials", "denied")
    }
    # The anonymous probe git sends first is a challenge, not a decision: nothing recorded for it.
    assert (await gw.get(f"/{p.full_path}.git/info/refs?service=git-upload-pack")).status == 401
    assert len(await events(gw)) == len(recorded)


async def pat_id(world: World, actor: Actor) -> int:
    return (await world.store.list_personal_access_tokens(actor.user.id))[0].id


async def test_identical_decisions_are_one_event_with_a_count(gw: TestClient, scene: Scene, world: World) -> None:
    created = await world.deploy_token(scene.project, ("read_repository",))
    url = f"/{scene.project.full_path}.git/info/refs?service=git-upload-pack"
    for _ in range(3):
        assert (await gw.get(url, headers=basic(created.token.username, created.secret))).status == 200
    [event] = await events(gw)
    assert event.details["count"] == 3
    assert (await gw.get(url, headers=basic(created.token.username, created.secret))).status == 200
    assert [e.details["count"] for e in await events(gw)] == [3, 1]  # a new batch, a new event


@pytest.mark.parametrize(("mode", "expected"), [("all", 3), ("denied", 2), ("off", 0)])
async def test_authentication_setting(
    aiohttp_client: Any,
    tmp_path: Path,
    store: SQLiteStore,
    clock: FixedClock,
    box: SecretBox,
    signing_key: SigningKey,
    world: World,
    mode: str,
    expected: int,
) -> None:
    config = make_config(tmp_path, audit={"authentication": mode})
    client = await gateway_client(aiohttp_client, config, store, clock, box, signing_key)
    owner = await world.user("owner")
    group = await world.group("g")
    await world.member(owner, group, AccessLevel.OWNER)
    assert (await client.get(f"/api/v4/groups/{group.id}/deploy_tokens", headers=owner.headers)).status == 200
    assert (await client.get("/api/v4/deploy_tokens", headers=owner.headers)).status == 403
    assert (await client.get("/api/v4/user", headers={"PRIVATE-TOKEN": "wrong"})).status == 401
    assert len(await events(client)) == expected
    # Management changes are recorded whatever the setting.
    r = await client.post(
        f"/api/v4/groups/{group.id}/deploy_tokens",
        json={"name": "t", "scopes": ["read_registry"]},
        headers=owner.headers,
    )
    assert r.status == 201
    assert "deploy_token_created" in [e.event_name for e in await events(client)]


async def test_a_full_buffer_drops_and_counts(
    aiohttp_client: Any,
    tmp_path: Path,
    store: SQLiteStore,
    clock: FixedClock,
    box: SecretBox,
    signing_key: SigningKey,
    world: World,
) -> None:
    config = make_config(tmp_path, audit={"max_pending": 2})
    client = await gateway_client(aiohttp_client, config, store, clock, box, signing_key)
    for n in range(4):  # four distinct failed authentications (distinct user agents)
        r = await client.get("/api/v4/user", headers={"PRIVATE-TOKEN": "wrong", "User-Agent": f"ua-{n}"})
        assert r.status == 401  # answered all the same
    assert audit_log(client).dropped == 2
    assert len(await events(client)) == 2


# --- the API: permissions, filters, pages ----------------------------------------------------------------------


async def _seed_events(world: World, scene: Scene) -> None:
    t = world.clock.now()
    p, g = scene.project, scene.group

    def ev(n: int, entity: tuple[str, int], author: int, days: int) -> NewAuditEvent:
        return NewAuditEvent(t - timedelta(days=days), author, entity[0], entity[1], f"e{n}", {"n": n})

    await world.store.insert_audit_events(
        [
            ev(1, ("Project", p.id), scene.maintainer.user.id, 3),
            ev(2, ("Project", p.id), scene.developer.user.id, 2),
            ev(3, ("Group", g.id), scene.owner.user.id, 2),
            ev(4, ("Group", g.id), scene.developer.user.id, 1),
            ev(5, ("Group", scene.other_group.id), scene.stranger.user.id, 1),
            ev(6, ("User", scene.developer.user.id), scene.admin.user.id, 0),
        ]
    )


def _names(body: list[dict[str, Any]]) -> list[str]:
    return [e["event_name"] for e in body if e["event_name"].startswith("e")]


PERMISSIONS: list[tuple[str, str, str, int, list[str]]] = [
    ("instance", "admin", "/api/v4/audit_events", 200, ["e6", "e5", "e4", "e3", "e2", "e1"]),
    ("instance", "owner", "/api/v4/audit_events", 403, []),
    ("group", "admin", "/api/v4/groups/{g}/audit_events", 200, ["e4", "e3"]),
    ("group", "owner", "/api/v4/groups/{g}/audit_events", 200, ["e4", "e3"]),
    ("group", "stranger", "/api/v4/groups/{g}/audit_events", 404, []),
    ("project", "admin", "/api/v4/projects/{p}/audit_events", 200, ["e2", "e1"]),
    ("project", "owner", "/api/v4/projects/{p}/audit_events", 200, ["e2", "e1"]),  # Owner of the group above
    ("project", "maintainer", "/api/v4/projects/{p}/audit_events", 200, ["e2", "e1"]),
    ("project", "developer", "/api/v4/projects/{p}/audit_events", 200, ["e2"]),  # their own only
    ("project", "reporter", "/api/v4/projects/{p}/audit_events", 403, []),
    ("project", "stranger", "/api/v4/projects/{p}/audit_events", 404, []),
]


@pytest.mark.parametrize(
    ("scope", "who", "path", "status", "expected"), PERMISSIONS, ids=[f"{p[0]}-{p[1]}" for p in PERMISSIONS]
)
async def test_permissions(
    gw: TestClient, scene: Scene, world: World, scope: str, who: str, path: str, status: int, expected: list[str]
) -> None:
    await _seed_events(world, scene)
    actor = getattr(scene, who)
    r = await gw.get(path.format(g=scene.group.id, p=scene.project.id), headers=actor.headers)
    assert r.status == status, await r.text()
    if status == 200:
        assert _names(await r.json()) == expected


async def test_group_developer_sees_own_group_events(gw: TestClient, scene: Scene, world: World) -> None:
    await _seed_events(world, scene)
    await world.member(scene.developer, scene.group, AccessLevel.DEVELOPER)
    r = await gw.get(f"/api/v4/groups/{scene.group.id}/audit_events", headers=scene.developer.headers)
    assert r.status == 200 and _names(await r.json()) == ["e4"]


async def test_entity_shape_and_single_event(gw: TestClient, scene: Scene, world: World) -> None:
    await _seed_events(world, scene)
    body = await (
        await gw.get(f"/api/v4/projects/{scene.project.id}/audit_events", headers=scene.maintainer.headers)
    ).json()
    first = body[0]
    assert list(first) == ["id", "author_id", "entity_id", "entity_type", "event_name", "details", "created_at"]
    assert (first["entity_type"], first["entity_id"], first["details"]) == ("Project", scene.project.id, {"n": 2})
    assert first["created_at"] == "2026-01-13T12:00:00.000Z"
    one = f"/api/v4/projects/{scene.project.id}/audit_events/{first['id']}"
    assert await (await gw.get(one, headers=scene.maintainer.headers)).json() == first
    assert (await gw.get(one, headers=scene.developer.headers)).status == 403  # a single event: Maintainer+
    group_event = f"/api/v4/groups/{scene.group.id}/audit_events/{first['id']}"
    assert (await gw.get(group_event, headers=scene.owner.headers)).status == 404  # not the group's event
    assert (await gw.get(f"/api/v4/audit_events/{first['id']}", headers=scene.admin.headers)).status == 200
    assert (await gw.get("/api/v4/audit_events/999999", headers=scene.admin.headers)).status == 404
    bad = await gw.get("/api/v4/audit_events/x", headers=scene.admin.headers)
    assert (bad.status, await bad.json()) == (400, {"error": "id is invalid"})  # Grape's `requires :id, Integer`


FILTERS: list[tuple[str, str, int, list[str]]] = [
    ("entity_type", "entity_type=Group", 200, ["e5", "e4", "e3"]),
    ("entity_type and id", "entity_type=Group&entity_id={g}", 200, ["e4", "e3"]),
    ("entity_id without type is ignored", "entity_id={g}", 200, ["e6", "e5", "e4", "e3", "e2", "e1"]),
    ("user entity", "entity_type=User", 200, ["e6"]),
    ("created_after", "created_after=2026-01-14T00:00:00Z", 200, ["e6", "e5", "e4"]),
    ("created_before (date)", "created_before=2026-01-13", 200, ["e1"]),
    (
        "a window",
        "created_after=2026-01-13T12:00:00Z&created_before=2026-01-14T12:00:00Z",
        200,
        ["e5", "e4", "e3", "e2"],
    ),
    ("bad entity_type", "entity_type=Pipeline", 400, []),
    ("bad entity_id", "entity_type=Group&entity_id=x", 400, []),
    ("bad created_after", "created_after=yesterday", 400, []),
]


@pytest.mark.parametrize(("name", "query", "status", "expected"), FILTERS, ids=[f[0] for f in FILTERS])
async def test_filters(
    gw: TestClient, scene: Scene, world: World, name: str, query: str, status: int, expected: list[str]
) -> None:
    await _seed_events(world, scene)
    r = await gw.get(f"/api/v4/audit_events?{query.format(g=scene.group.id)}", headers=scene.admin.headers)
    assert r.status == status, await r.text()
    if status == 200:
        assert _names(await r.json()) == expected
    else:
        assert "error" in await r.json()


async def test_pages(gw: TestClient, scene: Scene, world: World) -> None:
    await _seed_events(world, scene)
    url = f"/api/v4/audit_events?entity_type=Project&entity_id={scene.project.id}&per_page=1"
    r = await gw.get(url, headers=scene.admin.headers)
    assert _names(await r.json()) == ["e2"]
    assert (r.headers["X-Total"], r.headers["X-Total-Pages"], r.headers["X-Next-Page"]) == ("2", "2", "2")
    assert 'rel="next"' in r.headers["Link"] and "entity_type=Project" in r.headers["Link"]
    r = await gw.get(url + "&page=2", headers=scene.admin.headers)
    assert _names(await r.json()) == ["e1"] and r.headers["X-Next-Page"] == ""


@pytest.mark.parametrize(
    ("who", "path", "query", "walk"),
    [
        # GitLab's keyset pagination of audit events (by id, newest first): rel="next" holds an opaque cursor.
        ("admin", "/api/v4/audit_events", {"entity_type": "Group", "per_page": "1"}, [["e5"], ["e4"], ["e3"]]),
        ("admin", "/api/v4/audit_events", {"entity_type": "Group", "per_page": "2"}, [["e5", "e4"], ["e3"]]),
        ("owner", "/api/v4/groups/{g}/audit_events", {"per_page": "1"}, [["e4"], ["e3"]]),
        ("developer", "/api/v4/projects/{p}/audit_events", {"per_page": "1"}, [["e2"]]),  # their own only
        ("admin", "/api/v4/audit_events", {"entity_type": "Group", "created_before": "2026-01-13"}, [[]]),
    ],
)
async def test_keyset_pages(
    gw: TestClient, scene: Scene, world: World, who: str, path: str, query: dict[str, str], walk: list[list[str]]
) -> None:
    await _seed_events(world, scene)
    actor: Actor = getattr(scene, who)
    url = path.format(g=scene.group.id, p=scene.project.id)
    pages = await walk_next(gw, url, {**query, "pagination": "keyset"}, actor.headers)
    assert [_names(page) for page in pages] == walk


@pytest.mark.parametrize(
    ("query", "status", "body"),
    [
        ({"sort": "asc"}, 405, {"error": "Keyset pagination is not yet available for this type of request"}),
        ({"order_by": "created_at"}, 405, {"error": "Keyset pagination is not yet available for this type of request"}),
        ({"cursor": "%%"}, 400, {"error": "cursor is invalid"}),
        ({"cursor": encode_cursor({"id": "-1"})}, 400, {"error": "cursor is invalid"}),
    ],
)
async def test_keyset_mistakes(
    gw: TestClient, scene: Scene, query: dict[str, str], status: int, body: dict[str, str]
) -> None:
    r = await gw.get("/api/v4/audit_events", params={**query, "pagination": "keyset"}, headers=scene.admin.headers)
    assert (r.status, await r.json()) == (status, body)


async def test_retention_purges_old_events(gw: TestClient, scene: Scene, world: World) -> None:
    await _seed_events(world, scene)  # 0 to 3 days old
    clock: FixedClock = world.clock
    clock.advance(timedelta(days=89, hours=12))  # retention_days = 90: e1 (3 days) .. e4/e5 (1 day) age out
    assert await audit_log(gw).purge() == 5
    assert [e.event_name for e in await events(gw)] == ["e6"]


# --- no secret, ever ----------------------------------------------------------------------------------------------


async def test_no_secret_is_recorded(gw: TestClient, scene: Scene, world: World, store: SQLiteStore) -> None:
    created = await world.deploy_token(scene.project, ("read_repository", "read_registry"), name="s")
    scene.secrets.append(created.secret)
    t = created.token
    git = f"/{scene.project.full_path}.git/info/refs?service=git-upload-pack"
    await gw.get(git, headers=basic(t.username, created.secret))
    await gw.get(git, headers=basic(t.username, created.secret + "x"))  # a near miss is a secret too
    await gw.get(git, headers=basic(scene.developer.user.username, scene.developer.password))
    await gw.get(git, headers=basic(scene.developer.user.username, scene.developer.password + "!"))
    scene.secrets += [created.secret + "x", scene.developer.password + "!"]
    await gw.get(
        f"/jwt/auth?service=container_registry&scope=repository:{scene.project.full_path}:pull",
        headers=basic(t.username, created.secret),
    )
    await gw.get(f"/api/v4/projects/{scene.project.id}", headers=scene.maintainer.headers)
    r = await gw.post(
        f"/api/v4/projects/{scene.project.id}/deploy_tokens",
        json={"name": "n", "scopes": ["read_repository"]},
        headers=scene.maintainer.headers,
    )
    scene.secrets.append((await r.json())["token"])
    recorded = await events(gw)
    assert len(recorded) >= 6
    raw = b"".join(f.read_bytes() for f in (Path(store.path), Path(store.path + "-wal")) if f.exists())
    for secret in scene.secrets:
        assert secret.encode() not in raw, "a secret reached the database"
        assert all(secret not in str(e.details) for e in recorded)


async def sign_ins_counted(client: TestClient, outcome: str) -> float:
    text = await (await client.get("/-/metrics")).text()
    line = f'gateway_authentications_total{{mode="web",outcome="{outcome}"}} '
    return sum(float(row.removeprefix(line)) for row in text.splitlines() if row.startswith(line))


@pytest.mark.parametrize(
    ("password", "status", "event", "principal", "outcome"),
    [
        (None, 303, "access_allowed", "user", "password"),
        ("not-the-password", 422, "authentication_failed", "unknown", "failed"),
    ],
    ids=["signed-in", "wrong-password"],
)
async def test_web_sign_in_is_an_authentication_decision(
    gw: TestClient, scene: Scene, password: str | None, status: int, event: str, principal: str, outcome: str
) -> None:
    """The UI's sign-in form checks a secret too: audited and counted like authn's checks."""
    from tests.webui import sign_in

    before = await sign_ins_counted(gw, outcome)
    r = await sign_in(gw, scene.developer, password=password)
    assert r.status == status
    recorded = [(e.event_name, e.details.get("principal"), e.details.get("route")) for e in await events(gw)]
    expected = f"user:{scene.developer.user.id}" if principal == "user" else principal
    assert recorded == [(event, expected, "web.login")]
    assert await sign_ins_counted(gw, outcome) == before + 1
