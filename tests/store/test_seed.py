"""The benchmark seeding aid (store/seed.py) makes ordinary deploy tokens, on every backend."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from gateway import tokens
from gateway.store.base import NewDeployToken, Store
from gateway.store.seed import seed_deploy_tokens

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def test_seeded_tokens_are_ordinary_tokens(any_store: Store) -> None:
    g = await any_store.create_group(name="G", path="g", parent_id=None, visibility="private", description="", now=NOW)
    digests = (hashlib.sha256(b"seed-%d" % i).digest() for i in range(250))
    assert await seed_deploy_tokens(any_store, group_id=g.id, digests=digests, now=NOW) == 250
    found = await any_store.find_deploy_token(hashlib.sha256(b"seed-137").digest())
    assert found is not None and found.group_id == g.id and found.name == "seed-138"
    assert found.scopes == ("read_repository",) and tokens.is_active(found, NOW) and found.created_at == NOW
    page = await any_store.list_deploy_tokens(group_id=g.id, active_at=NOW, limit=1)
    assert page.total == 250
    # The id sequence moved past the seeded rows: the next token gets a fresh id.
    made = await any_store.create_deploy_token(
        NewDeployToken(
            name="after",
            custom_username=None,
            scopes=("read_registry",),
            expires_at=None,
            token_digest=b"n" * 32,
            token_encrypted=None,
            creator_id=None,
            project_id=None,
            group_id=g.id,
            created_at=NOW,
        )
    )
    assert made.id > max(t.id for t in (await any_store.list_deploy_tokens(group_id=g.id, limit=250)).items)
