"""Store contract for web UI sessions and a user's memberships (what web/sessions.py and web/home.py rely on)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import Conflict
from gateway.store.base import Store

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def digest(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


async def user(store: Store, name: str) -> int:
    created = await store.create_user(
        username=name, name=name, email=f"{name}@x", password_hash=None, is_admin=False, now=NOW
    )
    return created.id


async def test_session_lifecycle(any_store: Store) -> None:
    alice = await user(any_store, "alice")
    await any_store.create_web_session(
        session_digest=digest("a"), user_id=alice, created_at=NOW, expires_at=NOW + timedelta(hours=8)
    )
    found = await any_store.get_web_session(digest("a"))
    assert found is not None
    assert (found.user_id, found.created_at, found.expires_at) == (alice, NOW, NOW + timedelta(hours=8))
    assert await any_store.get_web_session(digest("b")) is None
    with pytest.raises(Conflict):
        await any_store.create_web_session(session_digest=digest("a"), user_id=alice, created_at=NOW, expires_at=NOW)
    assert await any_store.delete_web_session(digest("a")) is True
    assert await any_store.delete_web_session(digest("a")) is False
    assert await any_store.get_web_session(digest("a")) is None


async def test_expired_sessions_are_pruned(any_store: Store) -> None:
    alice = await user(any_store, "alice")
    for name, hours in (("old", -1), ("edge", 0), ("fresh", 1)):
        await any_store.create_web_session(
            session_digest=digest(name), user_id=alice, created_at=NOW, expires_at=NOW + timedelta(hours=hours)
        )
    assert await any_store.delete_expired_web_sessions(NOW) == 2  # expires_at <= now: over
    assert await any_store.get_web_session(digest("fresh")) is not None
    assert await any_store.get_web_session(digest("edge")) is None


async def test_user_memberships(any_store: Store) -> None:
    alice, bob = await user(any_store, "alice"), await user(any_store, "bob")
    group = await any_store.create_group(
        name="G", path="g", parent_id=None, visibility="private", description="", now=NOW
    )
    project = await any_store.create_project(
        namespace_id=group.id, name="p", path="p", visibility="private", description="", creator_id=None, now=NOW
    )
    await any_store.add_member(source_kind="namespace", source_id=group.id, user_id=alice, access_level=40, now=NOW)
    await any_store.add_member(source_kind="project", source_id=project.id, user_id=alice, access_level=30, now=NOW)
    await any_store.add_member(source_kind="project", source_id=project.id, user_id=bob, access_level=50, now=NOW)
    found = [
        (m.source_kind, m.source_id, m.access_level, m.user.id) for m in await any_store.list_user_memberships(alice)
    ]
    assert found == [("namespace", group.id, 40, alice), ("project", project.id, 30, alice)]
    assert await any_store.list_user_memberships(await user(any_store, "carol")) == []
