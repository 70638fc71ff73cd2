"""The benchmark seeding aid (store/seed.py) makes ordinary deploy tokens, on every backend."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from gateway import tokens
from gateway.store.base import NewDeployToken, Store
from gateway.store.seed import seed_deploy_tokens, seed_users
from tests.store.test_copy import gin_options

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


async def test_seeded_users_are_ordinary_users(any_store: Store) -> None:
    existing = await any_store.create_user(
        username="root", name="Root", email="r@x", password_hash=None, is_admin=True, now=NOW
    )
    await seed_users(any_store, count=300, now=NOW)
    # Loaded through GIN's pending list, which is merged and switched off again: no search reads it whole.
    assert await gin_options(any_store) <= {"fastupdate=off"}
    everyone = await any_store.list_users(offset=0, limit=1000)
    assert everyone.total == 301
    seeded = {u.username: u for u in everyone.items if u != existing}
    assert set(seeded) == {f"seed-user-{n}" for n in range(1, 301)}
    one = seeded["seed-user-7"]
    # The name's hex digits differ from user to user; both databases make the same ones.
    assert one.name == f"User {7 * 2654435761 % 2**32:08x}" and one.email == "seed-user-7@example.com"
    assert len({u.name for u in seeded.values()}) == 300
    namespace = await any_store.get_namespace(one.namespace_id)
    assert namespace is not None and namespace.traversal_ids == (namespace.id,) and namespace.owner_id == one.id
    assert await any_store.get_user_by_username("SEED-USER-7") == one
    found = await any_store.list_users(offset=0, limit=10, search=one.name[-6:].upper())
    assert one in found.items
    assert (await any_store.find_user_by_email("Seed-User-7@example.com")) == one
    # The id sequences moved past the seeded rows.
    after = await any_store.create_user(
        username="after", name="After", email="a@x", password_hash=None, is_admin=False, now=NOW
    )
    assert after.id > max(u.id for u in everyone.items)
