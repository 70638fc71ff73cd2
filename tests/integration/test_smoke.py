from aiohttp.test_utils import TestClient

from gateway.users import AccessLevel
from tests.world import World


async def test_project_deploy_token_roundtrip(client: TestClient, world: World) -> None:
    alice = await world.user("alice")
    group = await world.group("tanuki")
    project = await world.project("awesome", group)
    await world.member(alice, group, AccessLevel.MAINTAINER)
    r = await client.post(
        f"/api/v4/projects/{project.id}/deploy_tokens/",
        json={
            "name": "My deploy token",
            "expires_at": "2027-01-01",
            "username": "custom-user",
            "scopes": ["read_repository"],
        },
        headers=alice.headers,
    )
    assert r.status == 201, await r.text()
    body = await r.json()
    assert list(body) == [
        *["id", "name", "username", "expires_at", "scopes", "revoked", "expired", "token"],  # GitLab's
        *["last_used_at", "last_used_ips"],  # this gateway's own, after GitLab's
    ]
    assert body["expires_at"] == "2027-01-01T00:00:00.000Z"
    r = await client.get("/api/v4/projects/tanuki%2Fawesome/deploy_tokens", headers=alice.headers)
    assert r.status == 200
    assert [t["id"] for t in await r.json()] == [body["id"]]
    assert r.headers["X-Total"] == "1"
