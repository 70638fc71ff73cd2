"""The database never holds a deploy token or PAT secret in plaintext: read the raw SQLite files."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient

from gateway.store.sqlite import SQLiteStore
from gateway.users import AccessLevel
from tests.world import World


async def test_no_secret_in_the_raw_database(client: TestClient, world: World, store: SQLiteStore) -> None:
    owner = await world.user("owner")
    group = await world.group("g")
    project = await world.project("p", group)
    await world.member(owner, group, AccessLevel.OWNER)
    secrets = [owner.pat, owner.password]
    for url, name in [
        (f"/api/v4/projects/{project.id}/deploy_tokens", "plain"),
        (f"/api/v4/projects/{project.id}/deploy_tokens", "gitlab-deploy-token"),  # also kept encrypted
        (f"/api/v4/groups/{group.id}/deploy_tokens", "gitlab-deploy-token"),
    ]:
        r = await client.post(url, json={"name": name, "scopes": ["read_repository"]}, headers=owner.headers)
        assert r.status == 201
        secrets.append((await r.json())["token"])
    assert (
        await store.find_named_deploy_token("gitlab-deploy-token", project_id=project.id, active_at=world.clock.now())
    ) is not None

    files = [Path(store.path), Path(store.path + "-wal")]
    raw = b"".join(f.read_bytes() for f in files if f.exists())
    assert len(raw) > 10_000  # the files were really read
    for secret in secrets:
        assert secret.encode() not in raw, "a secret is stored in plaintext"
        # the random part alone, too (in case a prefix were stripped before storing)
        assert secret.split("-", 1)[-1].encode() not in raw
