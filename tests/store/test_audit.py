"""Store contract for the audit trail (insert in batches, filter, page, purge) and tokens' last use."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from gateway.store.base import AuditQuery, NewAuditEvent, NewDeployToken, Store, TokenUse

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def event(n: int, *, entity: tuple[str, int] = ("Project", 7), author: int = 1, at: datetime = NOW) -> NewAuditEvent:
    return NewAuditEvent(
        created_at=at,
        author_id=author,
        entity_type=entity[0],
        entity_id=entity[1],
        event_name=f"event_{n}",
        details={"n": n, "nested": {"ip_address": "10.0.0.1"}, "ips": ["a", "b"], "none": None},
    )


async def test_insert_and_read_back_newest_first(any_store: Store) -> None:
    await any_store.insert_audit_events([event(1), event(2)])
    await any_store.insert_audit_events([event(3)])
    await any_store.insert_audit_events([])
    page = await any_store.list_audit_events(AuditQuery(), offset=0, limit=10)
    assert page.total == 3
    assert [e.event_name for e in page.items] == ["event_3", "event_2", "event_1"]
    first = page.items[-1]
    assert (first.created_at, first.author_id, first.entity_type, first.entity_id) == (NOW, 1, "Project", 7)
    assert first.details == {"n": 1, "nested": {"ip_address": "10.0.0.1"}, "ips": ["a", "b"], "none": None}
    assert await any_store.get_audit_event(first.id) == first
    assert await any_store.get_audit_event(first.id + 100) is None


FILTERS: list[tuple[str, AuditQuery, list[str]]] = [
    ("entity type", AuditQuery(entity_type="Group"), ["event_4", "event_3"]),
    ("entity type and id", AuditQuery(entity_type="Group", entity_id=3), ["event_3"]),
    ("author", AuditQuery(author_id=-2), ["event_5"]),
    ("created after (inclusive)", AuditQuery(created_after=NOW + timedelta(hours=1)), ["event_5", "event_4"]),
    ("created before (inclusive)", AuditQuery(created_before=NOW), ["event_3", "event_2", "event_1"]),
    (
        "a window and an entity",
        AuditQuery(entity_type="Project", created_after=NOW - timedelta(hours=1), created_before=NOW),
        ["event_2"],
    ),
    # Keyset pagination's cursor: older than an event (ids 1-5 in a new database, in the order inserted).
    ("older than an event", AuditQuery(id_before=3), ["event_2", "event_1"]),
    ("older than an event, of an entity", AuditQuery(entity_type="Project", id_before=5), ["event_2", "event_1"]),
]


@pytest.mark.parametrize(("name", "query", "expected"), FILTERS, ids=[f[0] for f in FILTERS])
async def test_filters(any_store: Store, name: str, query: AuditQuery, expected: list[str]) -> None:
    await any_store.insert_audit_events(
        [
            event(1, at=NOW - timedelta(days=1)),
            event(2),
            event(3, entity=("Group", 3)),
            event(4, entity=("Group", 4), at=NOW + timedelta(hours=1)),
            event(5, entity=("Project", 8), author=-2, at=NOW + timedelta(hours=2)),
        ]
    )
    page = await any_store.list_audit_events(query, offset=0, limit=100)
    assert [e.event_name for e in page.items] == expected
    assert page.total == len(expected)


async def test_pages(any_store: Store) -> None:
    await any_store.insert_audit_events([event(n) for n in range(1, 8)])
    pages = [await any_store.list_audit_events(AuditQuery(), offset=o, limit=3) for o in (0, 3, 6)]
    assert [[e.event_name for e in p.items] for p in pages] == [
        ["event_7", "event_6", "event_5"],
        ["event_4", "event_3", "event_2"],
        ["event_1"],
    ]
    assert {p.total for p in pages} == {7}
    # Keyset pagination walks the same pages, each read from past the last one's oldest event, counted one past it.
    walked, query = [], AuditQuery()
    while True:
        page = await any_store.list_audit_events(query, offset=0, limit=3, count_up_to=4)
        walked.append([e.event_name for e in page.items])
        if page.total <= 3:
            break
        query = AuditQuery(id_before=page.items[-1].id)
    assert walked == [[e.event_name for e in p.items] for p in pages]


async def test_purge_before(any_store: Store) -> None:
    await any_store.insert_audit_events(
        [event(1, at=NOW - timedelta(days=91)), event(2, at=NOW - timedelta(days=90)), event(3, at=NOW)]
    )
    assert await any_store.purge_audit_events(NOW - timedelta(days=90)) == 1  # strictly older only
    page = await any_store.list_audit_events(AuditQuery(), offset=0, limit=10)
    assert [e.event_name for e in page.items] == ["event_3", "event_2"]
    assert await any_store.purge_audit_events(NOW - timedelta(days=90)) == 0


async def _tokens(store: Store) -> tuple[int, int]:
    """A deploy token and a personal access token; their ids."""
    user = await store.create_user(username="u", name="u", email="u@x", password_hash=None, is_admin=False, now=NOW)
    group = await store.create_group(name="g", path="g", parent_id=None, visibility="private", description="", now=NOW)
    deploy = await store.create_deploy_token(
        NewDeployToken(
            name="t",
            custom_username=None,
            scopes=("read_repository",),
            expires_at=None,
            token_digest=hashlib.sha256(b"dt").digest(),
            token_encrypted=None,
            creator_id=None,
            project_id=None,
            group_id=group.id,
            created_at=NOW,
        )
    )
    pat = await store.create_personal_access_token(
        user_id=user.id,
        name="p",
        token_digest=hashlib.sha256(b"pat").digest(),
        scopes=["api"],
        expires_at=None,
        now=NOW,
    )
    assert (deploy.last_used_at, deploy.last_used_ips, pat.last_used_at, pat.last_used_ips) == (None, (), None, ())
    return deploy.id, pat.id


async def _last_use(store: Store, kind: str, token_id: int) -> tuple[datetime | None, tuple[str, ...]]:
    if kind == "deploy_token":
        token = await store.get_deploy_token(token_id)
        assert token is not None
        return token.last_used_at, token.last_used_ips
    user = await store.get_user_by_username("u")
    assert user is not None
    pat = next(p for p in await store.list_personal_access_tokens(user.id) if p.id == token_id)
    return pat.last_used_at, pat.last_used_ips


@pytest.mark.parametrize("kind", ["deploy_token", "personal_access_token"])
async def test_token_use_written_at_most_once_a_minute(any_store: Store, kind: str) -> None:
    deploy_id, pat_id = await _tokens(any_store)
    token_id = deploy_id if kind == "deploy_token" else pat_id

    async def use(at: datetime, *ips: str) -> bool:
        return await any_store.record_token_use(TokenUse(kind, token_id, at, ips), min_interval=60, keep_ips=3)  # type: ignore[arg-type]

    assert await use(NOW, "10.0.0.1") is True
    assert await _last_use(any_store, kind, token_id) == (NOW, ("10.0.0.1",))
    # Another process saw a use 59 s later: the stored value is fresh enough, nothing is written.
    assert await use(NOW + timedelta(seconds=59), "10.0.0.2") is False
    assert await _last_use(any_store, kind, token_id) == (NOW, ("10.0.0.1",))
    later = NOW + timedelta(seconds=60)
    assert await use(later, "10.0.0.2", "10.0.0.3") is True
    assert await _last_use(any_store, kind, token_id) == (later, ("10.0.0.2", "10.0.0.3", "10.0.0.1"))
    latest = later + timedelta(minutes=5)
    assert await use(latest, "10.0.0.1", "10.0.0.4") is True  # newest first, unique, three at most
    assert await _last_use(any_store, kind, token_id) == (latest, ("10.0.0.1", "10.0.0.4", "10.0.0.2"))
    # A token deleted meanwhile: nothing to write, no error.
    missing = TokenUse(kind, token_id + 1000, latest + timedelta(hours=1), ("10.0.0.9",))  # type: ignore[arg-type]
    assert await any_store.record_token_use(missing, min_interval=60, keep_ips=3) is False


async def test_audit_and_last_use_writes_keep_the_hot_read_cache(any_store: Store) -> None:
    """The background writes (every second under load) must not empty the hot-path cache each time."""
    deploy_id, _ = await _tokens(any_store)
    digest = hashlib.sha256(b"dt").digest()
    cached = await any_store.find_deploy_token(digest)
    assert cached is not None
    cache = any_store._cache  # type: ignore[attr-defined]
    assert len(cache) > 0
    before = len(cache)
    await any_store.insert_audit_events([event(1)])
    await any_store.record_token_use(
        TokenUse("deploy_token", deploy_id, NOW, ("10.0.0.1",)), min_interval=60, keep_ips=5
    )
    await any_store.purge_audit_events(NOW)
    assert len(cache) == before
    await any_store.revoke_deploy_token(deploy_id)  # a real change still clears it
    assert len(cache) == 0
