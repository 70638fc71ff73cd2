"""Store contract for package names (docs/packages.md): exclusive claims are atomic, owners and listings."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from gateway.store.base import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def projects(store: Store, n: int) -> list[int]:
    group = await store.create_group(name="G", path="g", parent_id=None, visibility="private", description="", now=T0)
    return [
        (
            await store.create_project(
                namespace_id=group.id,
                name=f"p{i}",
                path=f"p{i}",
                visibility="private",
                description="",
                creator_id=None,
                now=T0,
            )
        ).id
        for i in range(n)
    ]


async def test_exclusive_claims_have_one_winner(any_store: Store) -> None:
    ids = await projects(any_store, 6)
    owners = await asyncio.gather(
        *(any_store.claim_package_name(format="npm", name="x", project_id=i, exclusive=True, now=T0) for i in ids)
    )
    assert len(set(owners)) == 1 and owners[0] in ids
    assert [o.project_id for o in await any_store.package_name_owners("npm", "x")] == [owners[0]]
    # The owner claims again (a new version): still the owner, its upload time moves on.
    later = T0 + timedelta(hours=1)
    assert await any_store.claim_package_name(format="npm", name="x", project_id=owners[0], exclusive=True, now=later)
    assert (await any_store.package_name_owners("npm", "x"))[0].updated_at == later


async def test_shared_claims_and_listings(any_store: Store) -> None:
    a, b, c = await projects(any_store, 3)
    for project, name, at in ((a, "lib", 1), (b, "lib", 2), (a, "app", 3), (c, "lib", 0)):
        got = await any_store.claim_package_name(
            format="maven", name=name, project_id=project, exclusive=False, now=T0 + timedelta(minutes=at)
        )
        assert got == project
    # Most recent upload first; other formats are separate.
    assert [o.project_id for o in await any_store.package_name_owners("maven", "lib")] == [b, a, c]
    assert await any_store.package_name_owners("pypi", "lib") == []
    listed = await any_store.list_package_names("maven", [a, b])
    assert [(n.name, n.project_id) for n in listed] == [("app", a), ("lib", a), ("lib", b)]
    assert await any_store.list_package_names("maven", []) == []
