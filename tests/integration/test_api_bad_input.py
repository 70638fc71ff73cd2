"""Bad input to the deploy-token API gets GitLab's error shape, and nothing is half-written in the database."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import users
from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.secretbox import SecretBox
from gateway.store.base import Namespace, Project
from gateway.store.sqlite import SQLiteStore
from gateway.users import AccessLevel
from tests import unstorable_text
from tests.conftest import make_config
from tests.world import Actor, World

GOOD = {"name": "ci", "scopes": ["read_repository"]}


@dataclass
class Setup:
    owner: Actor
    group: Namespace
    project: Project

    def url(self, kind: str) -> str:
        if kind == "project":
            return f"/api/v4/projects/{self.project.id}/deploy_tokens"
        return f"/api/v4/groups/{self.group.id}/deploy_tokens"


@pytest.fixture
async def setup(world: World) -> Setup:
    owner = await world.user("owner")
    group = await world.group("tanuki")
    project = await world.project("awesome", group)
    await world.member(owner, group, AccessLevel.OWNER)
    return Setup(owner, group, project)


async def token_rows(world: World) -> list[tuple[Any, ...]]:
    page = await world.store.list_deploy_tokens(limit=1000)
    return [(t.id, t.name, t.custom_username, t.scopes, t.expires_at, t.revoked) for t in page.items]


LONG = "x" * 256

# (id, body, expected status, expected body); `json` bodies unless the body is bytes (sent as is, with a type).
JSON_CASES: list[tuple[str, Any, int, dict[str, Any]]] = [
    ("name-missing", {"scopes": ["read_repository"]}, 400, {"error": "name is missing"}),
    ("scopes-missing", {"name": "ci"}, 400, {"error": "scopes is missing"}),
    (
        "unknown-scope",
        {"name": "ci", "scopes": ["read_everything"]},
        400,
        {"error": "scopes does not have a valid value"},
    ),
    (
        "one-unknown-scope",
        {"name": "ci", "scopes": ["read_repository", "api"]},
        400,
        {"error": "scopes does not have a valid value"},
    ),
    ("empty-scopes", {"name": "ci", "scopes": []}, 400, {"message": "Scopes can't be blank"}),
    # GitLab's CommaSeparatedToArray makes anything but a string or an array no scopes at all.
    ("scopes-not-a-list", {"name": "ci", "scopes": 7}, 400, {"message": "Scopes can't be blank"}),
    ("scopes-null", {"name": "ci", "scopes": None}, 400, {"message": "Scopes can't be blank"}),
    (
        "scopes-leading-comma",
        {"name": "ci", "scopes": ",read_repository"},
        400,
        {"error": "scopes does not have a valid value"},
    ),
    (
        "scope-not-a-string",
        {"name": "ci", "scopes": [["read_repository"]]},
        400,
        {"error": "scopes does not have a valid value"},
    ),
    ("name-not-a-string", {"name": ["ci"], "scopes": ["read_repository"]}, 400, {"error": "name is invalid"}),
    ("name-null", {"name": None, "scopes": ["read_repository"]}, 400, {"error": "name is missing"}),
    ("username-not-a-string", {**GOOD, "username": 12}, 400, {"error": "username is invalid"}),
    ("expires-feb-30", {**GOOD, "expires_at": "2021-02-30"}, 400, {"error": "expires_at is invalid"}),
    ("expires-garbage", {**GOOD, "expires_at": "next tuesday"}, 400, {"error": "expires_at is invalid"}),
    ("expires-number", {**GOOD, "expires_at": 20210101}, 400, {"error": "expires_at is invalid"}),
    ("expires-month-13", {**GOOD, "expires_at": "2021-13-01T00:00:00Z"}, 400, {"error": "expires_at is invalid"}),
    ("name-256", {**GOOD, "name": LONG}, 400, {"message": "Name is too long (maximum is 255 characters)"}),
    ("name-blank", {**GOOD, "name": "   "}, 400, {"message": "Name can't be blank"}),
    ("username-256", {**GOOD, "username": LONG}, 400, {"message": "Username is too long (maximum is 255 characters)"}),
    *[
        (
            f"username-{label}",
            {**GOOD, "username": username},
            400,
            {"message": "Username can contain only letters, digits, '_', '-', '+', and '.'"},
        )
        for label, username in [
            ("space", "deploy bot"),
            ("slash", "a/b"),
            ("colon", "user:pass"),
            ("unicode", "dëploy"),
            ("newline", "bot\n"),
            ("at", "bot@example.com"),
        ]
    ],
    # Grape reports every parameter error at once, in declaration order (name, scopes, expires_at, username).
    ("nothing", {}, 400, {"error": "name is missing, scopes is missing"}),
    ("no-name-bad-scope", {"scopes": ["api"]}, 400, {"error": "name is missing, scopes does not have a valid value"}),
    (
        "three-parameter-errors",
        {"name": ["x"], "scopes": "read_repository", "expires_at": "soon", "username": 5},
        400,
        {"error": "name is invalid, expires_at is invalid, username is invalid"},
    ),
    # A parameter error wins over model errors: the blank scopes are not reported beside it.
    ("param-before-model", {"name": "ci", "scopes": [], "expires_at": "soon"}, 400, {"error": "expires_at is invalid"}),
    (
        "three-model-errors",  # the model's order, joined by Rails' to_sentence
        {"name": LONG, "username": "bad user", "scopes": []},
        400,
        {
            "message": "Scopes can't be blank, Username can contain only letters, digits, '_', '-', '+', and '.', "
            "and Name is too long (maximum is 255 characters)"
        },
    ),
]


@pytest.mark.parametrize("kind", ["project", "group"])
@pytest.mark.parametrize(("case", "body", "status", "error"), JSON_CASES, ids=[c[0] for c in JSON_CASES])
async def test_json_body_errors(
    client: TestClient,
    world: World,
    setup: Setup,
    kind: str,
    case: str,
    body: Any,
    status: int,
    error: dict[str, Any],
) -> None:
    before = await token_rows(world)
    r = await client.post(setup.url(kind), json=body, headers=setup.owner.headers)
    assert r.status == status, await r.text()
    assert await r.json() == error
    assert await token_rows(world) == before


RAW_CASES = [
    ("malformed-json", b'{"name": "ci", "scopes": [', "application/json"),
    ("json-array", b'[{"name": "ci"}]', "application/json"),
    ("json-string", b'"ci"', "application/json"),
    ("invalid-utf8", b'{"name": "\xff\xfe", "scopes": ["read_repository"]}', "application/json"),
    ("xml", b"<token><name>ci</name></token>", "application/xml"),
]


@pytest.mark.parametrize(("case", "raw", "ctype"), RAW_CASES, ids=[c[0] for c in RAW_CASES])
async def test_unparseable_bodies(
    client: TestClient, world: World, setup: Setup, case: str, raw: bytes, ctype: str
) -> None:
    before = await token_rows(world)
    r = await client.post(setup.url("project"), data=raw, headers={**setup.owner.headers, "Content-Type": ctype})
    assert r.status == 400
    body = await r.json()
    assert list(body) == ["message"] and body["message"].startswith("400 Bad request")
    assert await token_rows(world) == before


FORM_CASES = [
    ("array-form", [("name", "ci"), ("scopes[]", "read_repository"), ("scopes[]", "read_registry")], 201, None),
    ("comma-string", [("name", "ci"), ("scopes", "read_repository,read_registry")], 201, None),
    ("form-missing-scopes", [("name", "ci")], 400, {"error": "scopes is missing"}),
    (
        "form-unknown-scope",
        [("name", "ci"), ("scopes", "read_repository,nope")],
        400,
        {"error": "scopes does not have a valid value"},
    ),
    ("form-empty-expiry-is-never", [("name", "ci"), ("scopes[]", "read_repository"), ("expires_at", "")], 201, None),
]


@pytest.mark.parametrize(("case", "form", "status", "error"), FORM_CASES, ids=[c[0] for c in FORM_CASES])
async def test_form_bodies(
    client: TestClient,
    world: World,
    setup: Setup,
    case: str,
    form: list[tuple[str, str]],
    status: int,
    error: dict[str, str] | None,
) -> None:
    """Form-encoded bodies (curl --data, python-gitlab's files=) are Grape parameters like JSON ones."""
    before = await token_rows(world)
    r = await client.post(setup.url("project"), data=form, headers=setup.owner.headers)
    assert r.status == status, await r.text()
    if error is not None:
        assert await r.json() == error
        assert await token_rows(world) == before
    else:
        body = await r.json()
        assert body["name"] == "ci" and body["expires_at"] is None
        wanted = [v for k, v in form if k.startswith("scopes")]
        assert body["scopes"] == [s for s in ("read_repository", "read_registry") if any(s in w for w in wanted)]
        assert len(await token_rows(world)) == len(before) + 1


@pytest.mark.parametrize(
    ("expires_at", "shown", "expired"),
    [
        ("0001-01-01", "0001-01-01T00:00:00.000Z", True),  # terraform's "no expiry" quirk: accepted, already expired
        ("9999-12-31", "9999-12-31T00:00:00.000Z", False),
        ("2030-06-01T12:30:00+02:00", "2030-06-01T10:30:00.000Z", False),
        ("2030-06-01T12:30:00.123456Z", "2030-06-01T12:30:00.123Z", False),
        (None, None, False),
        ("", None, False),
    ],
)
async def test_boundary_dates_are_accepted(
    client: TestClient, world: World, setup: Setup, expires_at: str | None, shown: str | None, expired: bool
) -> None:
    r = await client.post(setup.url("project"), json={**GOOD, "expires_at": expires_at}, headers=setup.owner.headers)
    assert r.status == 201, await r.text()
    body = await r.json()
    assert (body["expires_at"], body["expired"]) == (shown, expired)
    listed = await (await client.get(setup.url("project"), headers=setup.owner.headers)).json()
    assert [(t["expires_at"], t["expired"]) for t in listed] == [(shown, expired)]


@pytest.mark.parametrize("length", [1, 255])
async def test_longest_names_are_accepted(client: TestClient, world: World, setup: Setup, length: int) -> None:
    body = {**GOOD, "name": "n" * length, "username": "u" * length}
    r = await client.post(setup.url("group"), json=body, headers=setup.owner.headers)
    assert r.status == 201, await r.text()
    assert ((await r.json())["name"], (await r.json())["username"]) == ("n" * length, "u" * length)


@pytest.mark.parametrize(("name", "stored"), [(123, "123"), (0, "0")])
async def test_a_numeric_name_is_taken_as_text(
    client: TestClient, world: World, setup: Setup, name: int, stored: str
) -> None:
    """Grape coerces a JSON number to the String `name` it declares (python-gitlab users pass ints by mistake)."""
    r = await client.post(setup.url("project"), json={**GOOD, "name": name}, headers=setup.owner.headers)
    assert r.status == 201, await r.text()
    assert (await r.json())["name"] == stored
    assert [row[1] for row in await token_rows(world)] == [stored]


async def test_an_empty_active_is_no_filter(client: TestClient, world: World, setup: Setup) -> None:
    """`?active=` is absent to Grape, not invalid: every token is listed."""
    await world.deploy_token(setup.project, name="live")
    gone = await world.deploy_token(setup.project, name="gone")
    await world.store.revoke_deploy_token(gone.token.id)
    r = await client.get(setup.url("project") + "?active=", headers=setup.owner.headers)
    assert r.status == 200
    assert [t["name"] for t in await r.json()] == ["live", "gone"]


async def test_empty_username_means_the_default(client: TestClient, world: World, setup: Setup) -> None:
    r = await client.post(setup.url("project"), json={**GOOD, "username": ""}, headers=setup.owner.headers)
    body = await r.json()
    assert r.status == 201 and body["username"] == f"gitlab+deploy-token-{body['id']}"


@pytest.mark.parametrize("kind", ["project", "group"])
@pytest.mark.parametrize("method", ["GET", "DELETE", "POST-revoke"])
@pytest.mark.parametrize("which", ["missing", "other-project", "other-group", "not-a-number", "huge", "negative"])
async def test_token_ids_outside_the_holder(
    client: TestClient, world: World, setup: Setup, kind: str, method: str, which: str
) -> None:
    """A token id that does not exist or belongs elsewhere is GitLab's 404 {"message":"404 Not found"}; one that is
    no integer fails Grape's `type: Integer` first: 400 {"error": "token_id is invalid"}."""
    other_group = await world.group("other")
    other_project = await world.project("elsewhere", other_group)
    await world.member(setup.owner, other_group, AccessLevel.OWNER)  # the caller could manage those tokens there
    ids = {
        "missing": "999999",
        "other-project": str((await world.deploy_token(other_project)).token.id),
        "other-group": str((await world.deploy_token(other_group)).token.id),
        "not-a-number": "abc",
        "huge": "9" * 40,
        "negative": "-1",
    }
    # The holder's own token of the other kind must not be reachable through this kind's URL either.
    before = await token_rows(world)
    url = f"{setup.url(kind)}/{ids[which]}"
    if method == "POST-revoke":
        r = await client.post(url + "/revoke", headers=setup.owner.headers)
    else:
        r = await client.request(method, url, headers=setup.owner.headers)
    if which == "not-a-number":
        assert (r.status, await r.json()) == (400, {"error": "token_id is invalid"})
    else:
        assert (r.status, await r.json()) == (404, {"message": "404 Not found"})
    assert await token_rows(world) == before


@pytest.mark.parametrize(("kind", "other"), [("project", "group"), ("group", "project")])
async def test_a_project_token_is_not_a_group_token(
    client: TestClient, world: World, setup: Setup, kind: str, other: str
) -> None:
    holder = setup.group if other == "group" else setup.project
    token = (await world.deploy_token(holder)).token
    for method in ("GET", "DELETE"):
        r = await client.request(method, f"{setup.url(kind)}/{token.id}", headers=setup.owner.headers)
        assert (r.status, await r.json()) == (404, {"message": "404 Not found"})
    assert await world.store.get_deploy_token(token.id) is not None


@pytest.mark.parametrize(
    "ref",
    [
        "tanuki%2F..%2Fawesome",
        "..%2Ftanuki%2Fawesome",
        "tanuki%2F.%2Fawesome",
        "tanuki%2Fawesome%00",
        "tanuki%00%2Fawesome",
        "tanuki%252Fawesome",  # double encoding
        "tanuki%2F%2Fawesome",
        "tanuki%5Cawesome",
        "%2Ftanuki%2Fawesome",
        "awesome",  # a project path needs its namespace
    ],
)
async def test_tricky_project_paths_are_not_found(client: TestClient, world: World, setup: Setup, ref: str) -> None:
    r = await client.get(f"/api/v4/projects/{ref}/deploy_tokens", headers=setup.owner.headers)
    assert r.status == 404
    assert await r.json() == {"message": "404 Project Not Found"}


# (A bare `..` segment is resolved by URL normalisation before routing, so only encoded forms reach a handler.)
@pytest.mark.parametrize("ref", ["tanuki%2F..", "..%2Ftanuki", "%2E%2E%2Ftanuki", "tanuki%00", "tanuki%252F", "t%25"])
async def test_tricky_group_paths_are_not_found(client: TestClient, world: World, setup: Setup, ref: str) -> None:
    r = await client.get(f"/api/v4/groups/{ref}/deploy_tokens", headers=setup.owner.headers)
    assert r.status == 404


async def test_case_insensitive_paths_are_found(client: TestClient, world: World, setup: Setup) -> None:
    r = await client.get("/api/v4/projects/TANUKI%2FAwesome/deploy_tokens", headers=setup.owner.headers)
    assert r.status == 200


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="none"),
        pytest.param({"PRIVATE-TOKEN": "glpat-not-a-real-token-000"}, id="unknown-pat"),
        pytest.param({"PRIVATE-TOKEN": ""}, id="empty"),
        pytest.param({"PRIVATE-TOKEN": "a b"}, id="space"),
        pytest.param({"Authorization": "Bearer "}, id="empty-bearer"),
        pytest.param({"Authorization": "Token abc"}, id="unknown-scheme"),
        pytest.param({"Authorization": "Basic !!!"}, id="bad-basic"),
    ],
)
async def test_missing_or_bad_credentials(
    client: TestClient, world: World, setup: Setup, headers: dict[str, str]
) -> None:
    before = await token_rows(world)
    r = await client.post(setup.url("project"), json=GOOD, headers=headers)
    assert r.status == 401
    assert await r.json() == {"message": "401 Unauthorized"}
    assert await token_rows(world) == before


@pytest.mark.parametrize("how", ["PRIVATE-TOKEN", "Bearer", "Basic", "Deploy-Token"])
async def test_deploy_tokens_cannot_use_the_api(client: TestClient, world: World, setup: Setup, how: str) -> None:
    """Even a token of this very project is refused by the management API (GitLab: deploy tokens are no users)."""
    created = await world.deploy_token(setup.project, ("read_repository", "write_registry"))
    secret = created.secret
    headers = {
        "PRIVATE-TOKEN": {"PRIVATE-TOKEN": secret},
        "Bearer": {"Authorization": f"Bearer {secret}"},
        "Basic": {"Authorization": "Basic " + base64.b64encode(f"{created.token.username}:{secret}".encode()).decode()},
        "Deploy-Token": {"Deploy-Token": secret},
    }[how]
    before = await token_rows(world)
    for method, url in [("GET", setup.url("project")), ("POST", setup.url("project")), ("GET", "/api/v4/user")]:
        r = await client.request(method, url, json=GOOD, headers=headers)
        assert r.status == 401, (method, url)
        assert await r.json() == {"message": "401 Unauthorized"}
    assert await token_rows(world) == before


@pytest.mark.parametrize("state", ["revoked", "expired"])
async def test_inactive_personal_access_tokens_are_refused(
    client: TestClient, world: World, setup: Setup, clock: FixedClock, state: str
) -> None:
    made = await users.create_pat(
        world.store,
        user=setup.owner.user,
        name="short",
        scopes=("api",),
        expires_at=clock.now() + timedelta(days=1),
        now=clock.now(),
    )
    if state == "revoked":
        await world.store.revoke_personal_access_token(made.token.id)
    else:
        clock.advance(timedelta(days=1))
    r = await client.get(setup.url("project"), headers={"PRIVATE-TOKEN": made.secret})
    assert r.status == 401


async def test_bodies_over_the_size_limit(
    aiohttp_client: Any, tmp_path: Path, store: SQLiteStore, clock: FixedClock, box: SecretBox, world: World
) -> None:
    """server.max_body_size bounds API bodies: 413 in GitLab's shape, and nothing is stored."""
    config = make_config(tmp_path, server={"max_body_size": 2048})
    client = await aiohttp_client(create_app(config, store=store, clock=clock, box=box))
    owner = await world.user("owner")
    group = await world.group("tanuki")
    project = await world.project("awesome", group)
    await world.member(owner, group, AccessLevel.OWNER)
    url = f"/api/v4/projects/{project.id}/deploy_tokens"
    big = {**GOOD, "name": "n" * 4096}
    r = await client.post(url, json=big, headers=owner.headers)
    assert r.status == 413
    assert await r.json() == {"message": "413 Request Entity Too Large"}
    form = await client.post(url, data={"name": "n" * 4096, "scopes": "read_repository"}, headers=owner.headers)
    assert form.status == 413
    assert await token_rows(world) == []
    small = await client.post(url, json=GOOD, headers=owner.headers)
    assert small.status == 201


@pytest.mark.parametrize("kind", ["project", "group", "instance"])
async def test_pagination_and_active_filter(
    client: TestClient, world: World, setup: Setup, clock: FixedClock, kind: str
) -> None:
    """7 tokens (2 inactive) listed 3 per page: GitLab's headers on every page, `active=true` leaves out the
    revoked and the expired ones, order by id."""
    holder: Project | Namespace = setup.group if kind == "group" else setup.project
    made = [(await world.deploy_token(holder, name=f"t{i}")).token for i in range(7)]
    await world.store.revoke_deploy_token(made[1].id)
    expiring = await world.deploy_token(holder, name="soon", expires_at=clock.now() + timedelta(hours=1))
    made.append(expiring.token)
    clock.advance(timedelta(hours=1))  # `soon` expires exactly now
    admin = await world.user("root", admin=True)
    url = "/api/v4/deploy_tokens" if kind == "instance" else setup.url(kind)
    caller = admin if kind == "instance" else setup.owner
    everyone = [t.id for t in made]
    active = [t.id for t in made if t.id not in (made[1].id, expiring.token.id)]

    for flag, ids in [(None, everyone), ("false", everyone), ("true", active)]:
        seen: list[int] = []
        pages = -(-len(ids) // 3)
        for page in range(1, pages + 1):
            query = {"per_page": "3", "page": str(page), **({"active": flag} if flag else {})}
            r = await client.get(url, params=query, headers=caller.headers)
            assert r.status == 200
            h = r.headers
            assert (h["X-Total"], h["X-Total-Pages"], h["X-Page"], h["X-Per-Page"]) == (
                str(len(ids)),
                str(pages),
                str(page),
                "3",
            )
            assert h["X-Next-Page"] == (str(page + 1) if page < pages else "")
            assert h["X-Prev-Page"] == (str(page - 1) if page > 1 else "")
            links = dict((part.split(";")[1].strip(), part.split(";")[0].strip()) for part in h["Link"].split(","))
            assert ('rel="next"' in links) == (page < pages) and ('rel="prev"' in links) == (page > 1)
            assert f"page={pages}" in links['rel="last"'] and "page=1" in links['rel="first"']
            if flag:
                assert f"active={flag}" in links['rel="first"']
            body = await r.json()
            assert [t["id"] for t in body] == ids[(page - 1) * 3 : page * 3]
            seen += [t["id"] for t in body]
        assert seen == ids
        # Following the Link headers from page 1 walks the same pages (python-gitlab's way).
        followed: list[int] = []
        next_url: str | None = url + "?per_page=3" + (f"&active={flag}" if flag else "")
        while next_url:
            r = await client.get(next_url.replace(str(client.make_url("")), ""), headers=caller.headers)
            followed += [t["id"] for t in await r.json()]
            nxt = [p.split(";")[0].strip()[1:-1] for p in r.headers["Link"].split(",") if 'rel="next"' in p]
            next_url = nxt[0] if nxt else None
        assert followed == ids


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"active": "maybe"}, {"error": "active is invalid"}),
        ({"page": "x"}, {"error": "page is invalid"}),
        ({"per_page": "1.5"}, {"error": "per_page is invalid"}),
        ({"per_page": "0"}, {"error": "per_page has a value not allowed"}),  # PaginationParams: except_values [0]
        ({"active": "tRuE"}, {"error": "active is invalid"}),  # Grape's Boolean takes exact spellings only
    ],
)
async def test_bad_list_parameters(
    client: TestClient, world: World, setup: Setup, query: dict[str, str], error: dict[str, str]
) -> None:
    r = await client.get(setup.url("project"), params=query, headers=setup.owner.headers)
    assert r.status == 400
    assert await r.json() == error


async def test_page_beyond_the_end_is_empty(client: TestClient, world: World, setup: Setup) -> None:
    await world.deploy_token(setup.project)
    r = await client.get(setup.url("project"), params={"page": "5"}, headers=setup.owner.headers)
    assert r.status == 200 and await r.json() == []
    assert r.headers["X-Total"] == "1" and r.headers["X-Next-Page"] == ""
    # Kaminari has no previous page past the last one either.
    assert r.headers["X-Prev-Page"] == "" and 'rel="prev"' not in r.headers["Link"]


# Kaminari reads what Grape's Integer accepts: a page below 1 is the first, a negative per_page the default.
@pytest.mark.parametrize(
    ("query", "page", "per_page"),
    [
        ({"page": "-1"}, "1", "20"),
        ({"page": "0", "per_page": "-5"}, "1", "20"),
        ({"page": "+2", "per_page": "+1"}, "2", "1"),
        ({"per_page": "1000"}, "1", "100"),
    ],
)
async def test_out_of_range_pages(
    client: TestClient, world: World, setup: Setup, query: dict[str, str], page: str, per_page: str
) -> None:
    for i in range(3):
        await world.deploy_token(setup.project, name=f"t{i}")
    r = await client.get(setup.url("project"), params=query, headers=setup.owner.headers)
    assert r.status == 200, await r.text()
    assert (r.headers["X-Page"], r.headers["X-Per-Page"]) == (page, per_page)


@pytest.mark.parametrize(
    ("flag", "only_active"),
    [(spelling, True) for spelling in ("1", "on", "ON", "t", "True", "y", "YES")]
    + [(spelling, False) for spelling in ("0", "off", "Off", "f", "FALSE", "n", "no")],
)
async def test_active_takes_every_spelling_of_grapes_boolean(
    client: TestClient, world: World, setup: Setup, flag: str, only_active: bool
) -> None:
    kept = (await world.deploy_token(setup.project, name="kept")).token
    revoked = (await world.deploy_token(setup.project, name="revoked")).token
    await world.store.revoke_deploy_token(revoked.id)
    r = await client.get(setup.url("project"), params={"active": flag}, headers=setup.owner.headers)
    assert r.status == 200, await r.text()
    assert [t["id"] for t in await r.json()] == ([kept.id] if only_active else [kept.id, revoked.id])


async def test_head_answers_a_get_routes_headers(client: TestClient, world: World, setup: Setup) -> None:
    """Grape answers HEAD on every GET route: scripts count with `curl -I` and X-Total."""
    for i in range(3):
        await world.deploy_token(setup.project, name=f"t{i}")
    r = await client.head(setup.url("project"), params={"per_page": "2"}, headers=setup.owner.headers)
    assert r.status == 200 and await r.read() == b""
    assert (r.headers["X-Total"], r.headers["X-Next-Page"]) == ("3", "2")


async def test_an_unknown_method_is_refused_as_grape_does(client: TestClient, world: World, setup: Setup) -> None:
    token = (await world.deploy_token(setup.project)).token
    r = await client.put(f"{setup.url('project')}/{token.id}", headers=setup.owner.headers)
    assert r.status == 405 and await r.json() == {"message": "405 Not Allowed"}
    assert set(r.headers["Allow"].split(",")) >= {"GET", "DELETE"}


@pytest.mark.parametrize("case", unstorable_text.CASES, ids=lambda c: f"{c.method} {c.path}")
async def test_text_no_database_stores_is_refused_or_found_nowhere(
    client: TestClient, world: World, case: unstorable_text.Case
) -> None:
    """tests/unstorable_text.py on SQLite (tests/e2e/test_unstorable_text.py runs the same table on PostgreSQL)."""
    root = await world.user("root", admin=True)
    assert root.user.id == 1  # the table's /users/1
    await world.project("p", await world.group("g"))
    before = await world.store.count_users(), [g.id for g in await world.store.list_groups()]
    r = await client.request(
        case.method, case.path, data=case.raw_body(), headers=unstorable_text.headers(case, root.pat)
    )
    assert r.status == case.status, await r.text()
    if case.answer is not None:
        assert await r.json() == case.answer
    assert (await world.store.count_users(), [g.id for g in await world.store.list_groups()]) == before
