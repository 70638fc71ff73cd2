"""Every curl example of the Deploy Tokens API reference (seed 003) answers with the documented status and shape."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient

from gateway.clock import FixedClock
from gateway.store.base import Namespace, Project
from gateway.users import AccessLevel
from tests.world import Actor, World

# The documents were written in 2020: at that time the documented tokens had not expired yet.
DOC_TIME = datetime(2020, 1, 10, 9, 30, tzinfo=UTC)
# The documented list/get entity (seed 003), token id 1 being the first token of a fresh instance.
DOC_TOKEN = {
    "id": 1,
    "name": "MyToken",
    "username": "gitlab+deploy-token-1",
    "expires_at": "2020-02-14T00:00:00.000Z",
    "revoked": False,
    "expired": False,
    "scopes": ["read_repository", "read_registry"],
    # This gateway's own fields, after GitLab's: a token never used yet.
    "last_used_at": None,
    "last_used_ips": [],
}
# GitLab's entity order (lib/api/entities/deploy_token.rb); the docs print the same fields in another order.
GITLAB_ORDER = ["id", "name", "username", "expires_at", "scopes", "revoked", "expired"]
# Then the extra fields of this gateway (last use, as on GitLab's personal access tokens).
EXTRA = ["last_used_at", "last_used_ips"]
ENTITY_ORDER = [*GITLAB_ORDER, *EXTRA]
DOC_CREATE_BODY = {
    "name": "My deploy token",
    "expires_at": "2021-01-01",
    "username": "custom-user",
    "scopes": ["read_repository"],
}


@dataclass
class Seeded:
    owner: Actor
    admin: Actor
    group: Namespace
    project: Project

    def base(self, kind: str, by_path: bool = False) -> str:
        if kind == "project":
            ref = "tanuki%2Fawesome" if by_path else str(self.project.id)
            return f"/api/v4/projects/{ref}/deploy_tokens"
        return f"/api/v4/groups/{'tanuki' if by_path else self.group.id}/deploy_tokens"

    def holder(self, kind: str) -> Project | Namespace:
        return self.project if kind == "project" else self.group


@pytest.fixture
async def seeded(world: World, clock: FixedClock) -> Seeded:
    clock.set(DOC_TIME)
    owner = await world.user("owner")
    admin = await world.user("root", admin=True)
    group = await world.group("tanuki")
    project = await world.project("awesome", group)
    await world.member(owner, group, AccessLevel.OWNER)
    return Seeded(owner, admin, group, project)


async def _doc_token(world: World, seeded: Seeded, kind: str) -> int:
    created = await world.deploy_token(
        seeded.holder(kind),
        ("read_registry", "read_repository"),
        name="MyToken",
        expires_at=datetime(2020, 2, 14, tzinfo=UTC),
    )
    return created.token.id


async def test_list_all_deploy_tokens(client: TestClient, world: World, seeded: Seeded) -> None:
    """curl "https://gitlab.example.com/api/v4/deploy_tokens" (administrator)."""
    await _doc_token(world, seeded, "project")
    r = await client.get("/api/v4/deploy_tokens", headers=seeded.admin.headers)
    assert r.status == 200
    body = await r.json()
    assert body == [DOC_TOKEN]
    assert list(body[0]) == ENTITY_ORDER


@pytest.mark.parametrize("kind", ["project", "group"])
@pytest.mark.parametrize("by_path", [False, True], ids=["id", "path"])
async def test_list_holder_tokens(client: TestClient, world: World, seeded: Seeded, kind: str, by_path: bool) -> None:
    """curl ".../projects/1/deploy_tokens" and ".../groups/1/deploy_tokens"."""
    await _doc_token(world, seeded, kind)
    r = await client.get(seeded.base(kind, by_path), headers=seeded.owner.headers)
    assert r.status == 200
    body = await r.json()
    assert body == [DOC_TOKEN]
    assert list(body[0]) == ENTITY_ORDER
    assert r.headers["X-Total"] == "1" and r.headers["X-Page"] == "1"


@pytest.mark.parametrize("kind", ["project", "group"])
async def test_get_holder_token(client: TestClient, world: World, seeded: Seeded, kind: str) -> None:
    """curl ".../projects/1/deploy_tokens/1" and ".../groups/1/deploy_tokens/1"."""
    token_id = await _doc_token(world, seeded, kind)
    r = await client.get(f"{seeded.base(kind)}/{token_id}", headers=seeded.owner.headers)
    assert r.status == 200
    body = await r.json()
    assert body == DOC_TOKEN
    assert list(body) == ENTITY_ORDER


@pytest.mark.parametrize("kind", ["project", "group"])
@pytest.mark.parametrize("slash", ["/", ""], ids=["trailing-slash", "no-slash"])
async def test_create_holder_token(client: TestClient, world: World, seeded: Seeded, kind: str, slash: str) -> None:
    """curl --request POST --data '{"name": "My deploy token", ...}' ".../projects/5/deploy_tokens/"."""
    r = await client.post(seeded.base(kind) + slash, json=DOC_CREATE_BODY, headers=seeded.owner.headers)
    assert r.status == 201, await r.text()
    body = await r.json()
    assert list(body) == [*GITLAB_ORDER, "token", *EXTRA]
    secret = body.pop("token")
    assert secret.startswith("gldt-") and len(secret) == 25
    assert body == {
        "id": body["id"],
        "name": "My deploy token",
        "username": "custom-user",
        "expires_at": "2021-01-01T00:00:00.000Z",
        "revoked": False,
        "expired": False,
        "scopes": ["read_repository"],
        "last_used_at": None,
        "last_used_ips": [],
    }
    # The secret is shown once: the stored token is listed without it, and the store keeps no plaintext.
    listed = await (await client.get(seeded.base(kind), headers=seeded.owner.headers)).json()
    assert [t["id"] for t in listed] == [body["id"]] and "token" not in listed[0]
    stored = await world.store.get_deploy_token(body["id"])
    assert stored is not None and stored.token_encrypted is None
    assert (stored.project_id, stored.group_id) == (
        (seeded.project.id, None) if kind == "project" else (None, seeded.group.id)
    )


# What GitLab reads as "none given" (`params[:username].presence`; Forever.date, whose getter answers null).
@pytest.mark.parametrize(
    ("given", "username", "expires_at"),
    [
        ({"username": "   "}, "gitlab+deploy-token-{id}", None),
        ({"username": ""}, "gitlab+deploy-token-{id}", None),
        ({"expires_at": "3000-01-01"}, "gitlab+deploy-token-{id}", None),
        ({"expires_at": "3000-01-01T00:00:00Z"}, "gitlab+deploy-token-{id}", None),
        ({"expires_at": "2999-12-31"}, "gitlab+deploy-token-{id}", "2999-12-31T00:00:00.000Z"),
        ({"username": " x "}, None, None),  # not blank: given, and not a valid username
        ({"scopes": ["read_repository,read_registry", ""]}, "gitlab+deploy-token-{id}", None),
    ],
)
async def test_what_counts_as_not_given(
    client: TestClient, seeded: Seeded, given: dict[str, object], username: str | None, expires_at: str | None
) -> None:
    body = {"name": "t", "scopes": ["read_repository"], **given}
    r = await client.post(seeded.base("project"), json=body, headers=seeded.owner.headers)
    if username is None:
        assert r.status == 400 and "Username can contain only" in (await r.json())["message"]
        return
    assert r.status == 201, await r.text()
    created = await r.json()
    assert created["username"] == username.format(id=created["id"]) and created["expires_at"] == expires_at
    assert created["scopes"] == (["read_repository", "read_registry"] if "scopes" in given else ["read_repository"])


@pytest.mark.parametrize("kind", ["project", "group"])
async def test_delete_holder_token(client: TestClient, world: World, seeded: Seeded, kind: str) -> None:
    """curl --request DELETE ".../projects/5/deploy_tokens/13": 204 with an empty body, then the token is gone."""
    keep = await world.deploy_token(seeded.holder(kind), name="keep")
    gone = await world.deploy_token(seeded.holder(kind), name="gone")
    r = await client.delete(f"{seeded.base(kind)}/{gone.token.id}", headers=seeded.owner.headers)
    assert r.status == 204
    assert await r.read() == b""
    again = await client.get(f"{seeded.base(kind)}/{gone.token.id}", headers=seeded.owner.headers)
    assert again.status == 404
    assert await again.json() == {"message": "404 Not found"}
    assert await world.store.get_deploy_token(gone.token.id) is None
    assert await world.store.get_deploy_token(keep.token.id) is not None


async def test_expired_flag_follows_the_clock(
    client: TestClient, world: World, seeded: Seeded, clock: FixedClock
) -> None:
    """The documented token expires at 00:00 UTC of 2020-02-14: `expired` flips exactly then."""
    token_id = await _doc_token(world, seeded, "project")
    url = f"{seeded.base('project')}/{token_id}"
    clock.set(datetime(2020, 2, 13, 23, 59, 59, tzinfo=UTC))
    assert (await (await client.get(url, headers=seeded.owner.headers)).json())["expired"] is False
    clock.set(datetime(2020, 2, 14, tzinfo=UTC))
    assert (await (await client.get(url, headers=seeded.owner.headers)).json())["expired"] is True
