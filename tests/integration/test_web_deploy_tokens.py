"""Settings → Repository → Deploy tokens without a browser: who sees and manages what (the same policy as the API),
creating with the secret shown once, CSRF refusals, validation next to the fields, escaping, revoking, headers."""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from html import escape, unescape

import pytest
from aiohttp.test_utils import TestClient

from gateway import tokens
from gateway.clock import FixedClock
from gateway.policy import Operation, Target
from gateway.store.base import DeployToken, Namespace, Project
from gateway.store.sqlite import SQLiteStore
from gateway.users import AccessLevel
from gateway.web import home
from gateway.web.deploy_tokens import SCOPE_DESCRIPTIONS
from gateway.web.home import group_settings_url, project_settings_url
from gateway.web.render import CONTENT_SECURITY_POLICY
from tests.webui import form_token, post_form, signed_in
from tests.world import Actor, World, policy_verdict, policy_world

PROJECT_PAGE = "/tanuki/app/-/settings/repository"
GROUP_PAGE = "/groups/tanuki/-/settings/repository"
PROJECT_CREATE = PROJECT_PAGE + "/deploy_token/create"
GROUP_CREATE = GROUP_PAGE + "/deploy_token/create"
VALID = {"name": "ci", "scopes": ["read_repository"], "expires_at": "", "username": ""}
NEW_TOKEN_RE = re.compile(r'id="deploy-token-value" value="([^"]+)"')


@dataclass
class Setup:
    group: Namespace
    project: Project
    project_token: DeployToken
    group_token: DeployToken


@pytest.fixture
async def setup(world: World) -> Setup:
    group = await world.group("tanuki")
    project = await world.project("app", group)
    project_token = (await world.deploy_token(project, name="project existing")).token
    group_token = (await world.deploy_token(group, name="group existing")).token
    return Setup(group, project, project_token, group_token)


ROLES = ["non_member", "guest", "reporter", "developer", "maintainer", "owner", "admin"]
LEVEL = {
    "guest": AccessLevel.GUEST,
    "reporter": AccessLevel.REPORTER,
    "developer": AccessLevel.DEVELOPER,
    "maintainer": AccessLevel.MAINTAINER,
    "owner": AccessLevel.OWNER,
}


async def actor_with(world: World, setup: Setup, role: str, where: str = "group") -> Actor:
    actor = await world.user(f"{role.replace('_', '')}1", admin=role == "admin")
    if role in LEVEL:
        await world.member(actor, setup.group if where == "group" else setup.project, LEVEL[role])
    return actor


async def count(store: SQLiteStore, setup: Setup, clock: FixedClock) -> int:
    project = await store.list_deploy_tokens(project_id=setup.project.id, active_at=clock.now())
    group = await store.list_deploy_tokens(group_id=setup.group.id, active_at=clock.now())
    return project.total + group.total


# (page, role) → (status, create form shown, revoke buttons shown). GitLab: project tokens Maintainer; group tokens
# Maintainer to see, Owner to create and revoke; settings a user may not use are 404 (they reveal nothing).
PAGE_RULES = {
    "project": {"maintainer": (200, True), "owner": (200, True), "admin": (200, True)},
    "group": {"maintainer": (200, False), "owner": (200, True), "admin": (200, True)},
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("kind", ["project", "group"])
async def test_settings_page_by_role(
    client: TestClient, world: World, setup: Setup, clock: FixedClock, store: SQLiteStore, role: str, kind: str
) -> None:
    actor = await actor_with(world, setup, role)
    await signed_in(client, actor)
    page, create = (PROJECT_PAGE, PROJECT_CREATE) if kind == "project" else (GROUP_PAGE, GROUP_CREATE)
    status, manages = PAGE_RULES[kind].get(role, (404, False))
    response = await client.get(page)
    body = await response.text()
    assert response.status == status
    existing = setup.project_token if kind == "project" else setup.group_token
    assert (existing.name in body) is (status == 200)
    assert ('id="new-deploy-token"' in body) is manages
    assert ("/revoke" in body) is manages

    before = await count(store, setup, clock)
    token = await form_token(client, "/")
    created = await post_form(client, create, VALID, token=token)
    # Who cannot see the page gets 404 for its forms too; a group Maintainer sees the page but may not create.
    assert created.status == (200 if manages else 403 if status == 200 else 404)
    assert await count(store, setup, clock) == before + (1 if manages else 0)
    revoke = page.replace("/settings/repository", f"/deploy_tokens/{existing.id}/revoke")
    revoked = await post_form(client, revoke, {"confirmed": "yes"}, token=token)
    assert revoked.status == (303 if manages else 403 if status == 200 else 404)
    stored = await store.get_deploy_token(existing.id)
    assert stored is not None and stored.revoked is manages


async def test_project_membership_alone_manages_project_tokens(client: TestClient, world: World, setup: Setup) -> None:
    actor = await actor_with(world, setup, "maintainer", where="project")
    await signed_in(client, actor)
    assert (await client.get(PROJECT_PAGE)).status == 200
    assert (await client.get(GROUP_PAGE)).status == 404


async def test_landing_lists_what_the_user_may_see(client: TestClient, world: World, setup: Setup) -> None:
    other = await world.group("other")
    await world.project("hidden", other)
    sub = await world.group("sub", setup.group)
    await world.project("deep", sub)
    maya = await actor_with(world, setup, "maintainer")
    await signed_in(client, maya)
    body = await (await client.get("/")).text()
    links = set(re.findall(r'<a href="([^"]+/-/settings/repository)"', body))
    assert links == {
        PROJECT_PAGE,
        "/tanuki/sub/deep/-/settings/repository",  # inherited from the parent group
        GROUP_PAGE,
        "/groups/tanuki/sub/-/settings/repository",
    }

    dave = await world.user("dave")
    await world.member(dave, setup.group, AccessLevel.DEVELOPER)
    await signed_in(client, dave)
    body = await (await client.get("/")).text()
    assert "/-/settings/repository" not in body and "you need the Maintainer role" in body


@pytest.mark.parametrize("who", ["alice", "bob", "carol", "dave", "admin"])
async def test_landing_shows_exactly_what_policy_opens(client: TestClient, world: World, who: str) -> None:
    """The landing page is selected in the database from policy's reach for reading deploy tokens (Maintainer and
    up: memberships on ancestors or the project, the personal namespace, an administrator's everything): its links
    must equal policy's verdict on every project and group of the instance."""
    actor = (await policy_world(world))[who]
    assert actor is not None
    wanted = set()
    for p in await world.store.list_projects():
        if await policy_verdict(world, actor, Target.of_project(p), Operation.READ_PROJECT_DEPLOY_TOKENS, session=True):
            wanted.add(project_settings_url(p))
    for g in await world.store.list_groups():
        if await policy_verdict(world, actor, Target.of_group(g), Operation.READ_GROUP_DEPLOY_TOKENS, session=True):
            wanted.add(group_settings_url(g))
    await signed_in(client, actor)
    body = await (await client.get("/")).text()
    assert set(re.findall(r'<a href="([^"]+/-/settings/repository)"', body)) == wanted
    # Not vacuous: a Guest sees none, a Developer's project membership none, an Owner below the top some.
    assert {"alice": 1, "bob": 1, "carol": 3, "dave": 8, "admin": 15}[who] == len(wanted)


@pytest.mark.parametrize(("projects", "shown", "note"), [(3, 3, None), (4, 3, "Showing the first 3 of 4 projects")])
async def test_landing_counts_what_it_does_not_list(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch, projects: int, shown: int, note: str | None
) -> None:
    monkeypatch.setattr(home, "LIST_LIMIT", 3)
    admin = await world.user("root", admin=True)
    group = await world.group("many")
    for i in range(projects):
        await world.project(f"p{i}", group)
    await signed_in(client, admin)
    body = await (await client.get("/")).text()
    listed = re.findall(r'<a href="(/many/[^"]+/-/settings/repository)"', body)
    assert listed == [f"/many/p{i}/-/settings/repository" for i in range(shown)]  # by name
    assert f'<span class="count">{projects}</span>' in body
    assert (note in body) if note else ("Showing the first" not in body)


@pytest.mark.parametrize(
    ("search", "projects", "groups"),
    [
        ("", ["/many/alpha-1", "/many/alpha-2", "/many/beta"], ["/groups/many"]),
        ("ALPHA", ["/many/alpha-1", "/many/alpha-2"], []),
        ("many", [], ["/groups/many"]),  # a name or a path, not the namespace above it (as GitLab's search)
        ("zzz", [], []),
        ("a\u0000", [], []),  # no name holds a NUL: found nowhere, on either database
    ],
)
async def test_landing_filter(
    client: TestClient, world: World, search: str, projects: list[str], groups: list[str]
) -> None:
    admin = await world.user("root", admin=True)
    group = await world.group("many")
    for path in ("beta", "alpha-2", "alpha-1"):
        await world.project(path, group)
    await signed_in(client, admin)
    body = await (await client.get("/", params={"search": search})).text()
    listed = re.findall(r'<a href="([^"]+)/-/settings/repository"', body)
    assert listed == projects + groups  # projects by name, then groups
    assert f'name="search" value="{escape(search)}"' in body
    if not projects:
        assert "Nothing matches" in body and "you need the Maintainer role" not in body


async def test_create_shows_the_secret_once(
    client: TestClient, world: World, setup: Setup, store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    owner = await actor_with(world, setup, "owner")
    await signed_in(client, owner)
    response = await post_form(
        client,
        PROJECT_CREATE,
        {
            "name": "deployer",
            "scopes": ["read_repository", "read_package_registry"],
            "username": "ci-bot",
            "expires_at": "2026-03-01",
        },
        page=PROJECT_PAGE,
    )
    assert response.status == 200 and "Location" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.text()
    found = NEW_TOKEN_RE.search(body)
    assert found is not None
    secret = unescape(found.group(1))
    assert "won't be shown again" in body and 'data-replace-url="/tanuki/app/-/settings/repository"' in body

    token = await store.find_deploy_token(tokens.digest(secret))
    assert token is not None and token.project_id == setup.project.id and token.creator_id == owner.user.id
    assert (token.name, token.username, token.scopes) == (
        "deployer",
        "ci-bot",
        ("read_repository", "read_package_registry"),
    )
    assert token.expires_at is not None and token.expires_at.isoformat() == "2026-03-01T00:00:00+00:00"

    later = await (await client.get(PROJECT_PAGE)).text()
    assert secret not in later and "deployer" in later and "ci-bot" in later and "2026-03-01" in later
    assert secret not in caplog.text


async def test_csrf_is_required_and_bound_to_the_session(
    client: TestClient, world: World, setup: Setup, store: SQLiteStore, clock: FixedClock
) -> None:
    owner, other = await actor_with(world, setup, "owner"), await world.user("other")
    await signed_in(client, other)
    others_token = await form_token(client, "/")
    await signed_in(client, owner)
    own_token = await form_token(client, "/")
    before = await count(store, setup, clock)
    for token in ("", "forged", others_token, own_token[:-1] + ("A" if own_token[-1] != "A" else "B")):
        refused = await post_form(client, PROJECT_CREATE, VALID, token=token)
        assert refused.status == 403
        assert "could not be verified" in await refused.text()
    revoke = f"/tanuki/app/-/deploy_tokens/{setup.project_token.id}/revoke"
    assert (await post_form(client, revoke, {"confirmed": "yes"}, token=others_token)).status == 403
    assert await count(store, setup, clock) == before
    assert (await post_form(client, PROJECT_CREATE, VALID, token=own_token)).status == 200


YESTERDAY, TODAY, TOMORROW = "2026-01-14", "2026-01-15", "2026-01-16"  # the test clock's today: 2026-01-15


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"scopes": []}, {"scopes": "Scopes can't be blank"}),
        ({"username": "bad user!"}, {"username": tokens.USERNAME_MESSAGE}),
        ({"username": "ü"}, {"username": tokens.USERNAME_MESSAGE}),
        ({"username": "u" * 256}, {"username": "Username is too long (maximum is 255 characters)"}),
        ({"expires_at": YESTERDAY}, {"expires_at": "Expiration date must be in the future"}),
        ({"expires_at": TODAY}, {"expires_at": "Expiration date must be in the future"}),  # 00:00 UTC has passed
        ({"expires_at": "2026-02-30"}, {"expires_at": "Expiration date is invalid"}),
        ({"expires_at": "soon"}, {"expires_at": "Expiration date is invalid"}),
        ({"name": ""}, {"name": "Name can't be blank"}),
        ({"name": "n" * 256}, {"name": "Name is too long (maximum is 255 characters)"}),
        ({"scopes": ["read_repository", "api"]}, {"scopes": "Scopes must be chosen from the list"}),
        (
            {"name": " ", "username": "a b", "scopes": [], "expires_at": YESTERDAY},
            {
                "name": "Name can't be blank",
                "username": tokens.USERNAME_MESSAGE,
                "scopes": "Scopes can't be blank",
                "expires_at": "Expiration date must be in the future",
            },
        ),
        ({"expires_at": TOMORROW, "username": "a.b+c_d-e"}, {}),
    ],
)
async def test_validation_errors_next_to_fields(
    client: TestClient,
    world: World,
    setup: Setup,
    store: SQLiteStore,
    clock: FixedClock,
    fields: dict[str, str | list[str]],
    errors: dict[str, str],
) -> None:
    await signed_in(client, await actor_with(world, setup, "maintainer"))
    before = await count(store, setup, clock)
    response = await post_form(client, PROJECT_CREATE, VALID | fields, page=PROJECT_PAGE)
    body = await response.text()
    assert response.status == (422 if errors else 200)
    shown = {
        field: unescape(message)
        for field, message in re.findall(r'<p class="field-error" id="deploy_token_(\w+)_error">([^<]*)</p>', body)
    }
    assert shown == errors
    for field in errors:
        if field != "scopes":
            assert f'aria-describedby="deploy_token_{field}_error"' in body
    assert await count(store, setup, clock) == before + (0 if errors else 1)
    if errors:  # what the user typed is offered again for correction
        for field in ("name", "username", "expires_at"):
            value = (VALID | fields)[field]
            assert f'name="{field}" value="{value}"' in body


async def test_everything_typed_is_escaped(client: TestClient, world: World, setup: Setup) -> None:
    await signed_in(client, await actor_with(world, setup, "maintainer"))
    name = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    created = await post_form(client, PROJECT_CREATE, VALID | {"name": name}, page=PROJECT_PAGE)
    assert created.status == 200
    invalid = await post_form(
        client, PROJECT_CREATE, VALID | {"name": name, "username": name, "expires_at": name}, page=PROJECT_PAGE
    )
    assert invalid.status == 422
    listed = await client.get(PROJECT_PAGE)
    for response in (created, invalid, listed):
        body = await response.text()
        assert "<script>alert" not in body and "<img src=x" not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


async def test_revoke_asks_first_then_revokes(
    client: TestClient, world: World, setup: Setup, store: SQLiteStore
) -> None:
    await signed_in(client, await actor_with(world, setup, "owner"))
    token_id = setup.project_token.id
    url = f"/tanuki/app/-/deploy_tokens/{token_id}/revoke"
    asked = await post_form(client, url, {}, page=PROJECT_PAGE)
    assert asked.status == 200
    body = await asked.text()
    assert "Revoke deploy token?" in body and 'name="confirmed" value="yes"' in body and "project existing" in body
    assert not (await store.get_deploy_token(token_id)).revoked  # type: ignore[union-attr]

    done = await post_form(client, url, {"confirmed": "yes"}, page=PROJECT_PAGE)
    assert done.status == 303 and done.headers["Location"] == f"{PROJECT_PAGE}?revoked={token_id}"
    assert (await store.get_deploy_token(token_id)).revoked  # type: ignore[union-attr]
    after = await (await client.get(done.headers["Location"])).text()
    assert "The deploy token “project existing” has been revoked." in after
    assert "This project has no active deploy tokens." in after


@pytest.mark.parametrize(
    "path",
    [
        "/tanuki/app/-/deploy_tokens/{group_token}/revoke",  # a token of another holder
        "/groups/tanuki/-/deploy_tokens/{project_token}/revoke",
        "/tanuki/app/-/deploy_tokens/999999/revoke",
        "/tanuki/app/-/deploy_tokens/1e3/revoke",
        "/tanuki/nothing/-/deploy_tokens/{project_token}/revoke",
    ],
)
async def test_revoke_only_what_the_page_holds(
    client: TestClient, world: World, setup: Setup, store: SQLiteStore, path: str
) -> None:
    await signed_in(client, await actor_with(world, setup, "owner"))
    url = path.format(group_token=setup.group_token.id, project_token=setup.project_token.id)
    response = await post_form(client, url, {"confirmed": "yes"}, page=PROJECT_PAGE)
    assert response.status == 404
    for token in (setup.project_token, setup.group_token):
        assert not (await store.get_deploy_token(token.id)).revoked  # type: ignore[union-attr]


async def test_expired_and_revoked_tokens_are_not_listed(
    client: TestClient, world: World, setup: Setup, clock: FixedClock, store: SQLiteStore
) -> None:
    await world.deploy_token(setup.project, name="expires soon", expires_at=clock.now() + timedelta(hours=1))
    await store.revoke_deploy_token(setup.project_token.id)
    await signed_in(client, await actor_with(world, setup, "maintainer"))
    assert "expires soon" in await (await client.get(PROJECT_PAGE)).text()
    clock.advance(timedelta(hours=1))
    body = await (await client.get(PROJECT_PAGE)).text()
    assert "expires soon" not in body and "project existing" not in body


@pytest.mark.parametrize(
    ("path", "signed", "status"),
    [
        ("/-/login", False, 200),
        ("/", True, 200),
        (PROJECT_PAGE, True, 200),
        (GROUP_PAGE, True, 200),
        ("/tanuki/nothing/-/settings/repository", True, 404),
        ("/groups/nothing/-/settings/repository", True, 404),
        ("/groups/tanuki/app/-/settings/repository", True, 404),  # a project is not a group
        ("/tanuki/-/settings/repository", True, 404),  # a group is not a project
    ],
)
async def test_security_headers_on_every_page(
    client: TestClient, world: World, setup: Setup, path: str, signed: bool, status: int
) -> None:
    if signed:
        await signed_in(client, await actor_with(world, setup, "owner"))
    response = await client.get(path)
    assert response.status == status
    assert response.content_type == "text/html"
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.text()
    # Nothing inline that the CSP would have to allow: no inline script, event handler or style attribute.
    assert not re.search(r"<script(?![^>]*\ssrc=)", body)
    assert not re.search(r"<[^>]+\s(on\w+|style)=", body)


@pytest.mark.parametrize(
    ("name", "status", "content_type"),
    [
        ("style.css", 200, "text/css"),
        ("ui.js", 200, "text/javascript"),
        ("../__init__.py", 404, None),
        ("render.py", 404, None),
    ],
)
async def test_static_files(client: TestClient, name: str, status: int, content_type: str | None) -> None:
    response = await client.get(f"/-/static/{name}")
    assert response.status == status
    if content_type:
        assert response.content_type == content_type
        assert "max-age" in response.headers["Cache-Control"]
        assert "http://" not in await response.text() and "https://" not in await response.text()  # no CDN


def test_every_scope_has_its_description() -> None:
    assert tuple(SCOPE_DESCRIPTIONS) == tokens.SCOPES


async def test_oversized_form_is_refused_politely(client: TestClient, world: World, setup: Setup) -> None:
    await signed_in(client, await actor_with(world, setup, "owner"))
    token = await form_token(client, PROJECT_PAGE)
    body = f"authenticity_token={token}&scopes=read_repository&name=".encode() + b"n" * (2 * 1024 * 1024)
    response = await client.post(
        PROJECT_CREATE,
        data=io.BytesIO(body),  # (a stream: aiohttp warns about large raw bodies)
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 413
    assert "The form is too large." in await response.text()
    assert response.headers["X-Frame-Options"] == "DENY"
