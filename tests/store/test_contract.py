"""Store contract: what every implementation must do, checked through the protocol only."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway import tokens
from gateway.errors import Conflict
from gateway.store import queries
from gateway.store.base import (
    AuditQuery,
    Keyset,
    Listing,
    NewAuditEvent,
    NewDeployToken,
    Page,
    Store,
    storable,
)
from gateway.store.sqlite import migrations

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def user(store: Store, name: str = "alice") -> int:
    return (
        await store.create_user(
            username=name, name=name.title(), email=f"{name}@x", password_hash=None, is_admin=False, now=NOW
        )
    ).id


def new_token(
    digest: bytes,
    *,
    project_id: int | None = None,
    group_id: int | None = None,
    expires_at: datetime | None = None,
    name: str = "t",
    username: str | None = None,
) -> NewDeployToken:
    return NewDeployToken(
        name=name,
        custom_username=username,
        scopes=("read_repository", "read_registry"),
        expires_at=expires_at,
        token_digest=digest,
        token_encrypted=None,
        creator_id=None,
        project_id=project_id,
        group_id=group_id,
        created_at=NOW,
    )


async def test_migrate_is_idempotent(any_store: Store) -> None:
    latest = max(v for v, _, _ in migrations())
    assert await any_store.schema_version() == latest
    assert await any_store.migrate() == latest


def position(item: Any, order_by: str) -> Keyset:
    """Keyset pagination's cursor past `item` in a list ordered by `order_by` (then id), as the API makes it."""
    return Keyset(None if order_by == "id" else getattr(item, order_by), item.id)


async def walk(fetch: Callable[[Keyset | None, int], Awaitable[Page[Any]]], order_by: str, size: int) -> list[Any]:
    """Every item of a list, page by page past the previous page's last item, each page counted one past its
    size (what keyset pagination asks): the walk ends at the first page that is not followed by more."""
    items: list[Any] = []
    after = None
    for _ in range(50):
        page = await fetch(after, size)
        items += page.items
        if page.total <= size:
            return items
        after = position(page.items[-1], order_by)
    raise AssertionError("the walk does not end")


async def test_users_and_personal_namespace(any_store: Store) -> None:
    uid = await user(any_store)
    u = await any_store.get_user(uid)
    assert u is not None and u.username == "alice" and u.active
    assert (await any_store.get_user_by_username("ALICE")) == u  # case-insensitive
    # ... in ASCII only, as usernames are: PostgreSQL's lower() folds `İ` (U+0130) into `i`.
    for other in ("al\u0130ce", "AL\u0130CE", "al\u0131ce", "\uff41lice"):
        assert await any_store.get_user_by_username(other) is None, other
    ns = await any_store.get_namespace(u.namespace_id)
    assert ns is not None and ns.kind == "user" and ns.owner_id == uid and ns.full_path == "alice"
    with pytest.raises(Conflict):
        await user(any_store, "Alice")
    page = await any_store.list_users(offset=0, limit=10, search="ali")
    assert [x.id for x in page.items] == [uid] and page.total == 1
    assert (await any_store.list_users(offset=0, limit=10, search="%li")).total == 0  # LIKE wildcards are literal
    blocked = await any_store.set_user_state(uid, "blocked")
    assert blocked is not None and not blocked.active


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, ["zed", "anna", "emil", "bo"]),
        ({"descending": True}, ["bo", "emil", "anna", "zed"]),
        # Names folded by str.lower, by code point (É after z), ties ("Anna"/"anna") by id in the same direction.
        ({"order_by": "name"}, ["zed", "anna", "bo", "emil"]),
        ({"order_by": "name", "descending": True}, ["emil", "bo", "anna", "zed"]),
        ({"order_by": "username"}, ["anna", "bo", "emil", "zed"]),
        ({"order_by": "created_at", "descending": True}, ["bo", "emil", "anna", "zed"]),
        # A part of the username or name from 3 characters (folded as str.lower folds them), else all of it;
        # an e-mail address only whole (GitLab's Gitlab::SQL::Pattern and User.search).
        ({"search": "ÉMI"}, ["emil"]),
        ({"search": "ann"}, ["zed", "anna"]),  # zed's name is "Anna"
        ({"search": "BO"}, ["bo"]),
        ({"search": "é"}, []),
        ({"search": "an"}, []),
        ({"search": "emil@CORP.example"}, ["emil"]),
        ({"search": "@corp"}, []),
        ({"search": "emil@corp.example", "search_email": False}, []),
        ({"search": "%%%"}, []),  # no LIKE wildcards
        ({"search": "_n_"}, []),
        # Quotes, placeholders and escapes are text like any other (PostgreSQL writes the pattern into the SQL).
        ({"search": "Bo O'"}, ["bo"]),
        ({"search": "? \\ $1"}, ["bo"]),
        ({"search": "\\x3f"}, []),
        ({"search": "100%"}, ["bo"]),
        ({"search": "\0"}, []),  # PostgreSQL refuses a NUL in text: nothing holds one
    ],
)
async def test_a_page_of_users(any_store: Store, query: dict[str, Any], expected: list[str]) -> None:
    for minute, (username, name, email) in enumerate(
        (
            ("zed", "Anna", "z@x"),
            ("anna", "anna", "a@x"),
            ("emil", "Émile", "EMIL@corp.example"),
            ("bo", "Bo O'Neil? \\ $1 100%", "b@x"),
        )
    ):
        await any_store.create_user(
            username=username,
            name=name,
            email=email,
            password_hash=None,
            is_admin=False,
            now=NOW + timedelta(minutes=minute),
        )
    page = await any_store.list_users(offset=0, limit=10, **query)
    assert ([u.username for u in page.items], page.total) == (expected, len(expected))
    second = await any_store.list_users(offset=1, limit=2, **query)
    assert [u.username for u in second.items] == expected[1:3]
    # Keyset pagination walks the same list, past each page's last user.
    for size in (1, 3):
        walked = await walk(
            lambda after, n: any_store.list_users(offset=0, limit=n, after=after, count_up_to=n + 1, **query),
            query.get("order_by", "id"),
            size,
        )
        assert [u.username for u in walked] == expected


@pytest.mark.parametrize(
    ("email", "found"),
    [("EMIL@corp.example", "emil"), ("emil@CORP.example", "emil"), ("emil@corp", None), ("emil\0@corp.example", None)],
)
async def test_a_user_by_email(any_store: Store, email: str, found: str | None) -> None:
    await any_store.create_user(
        username="emil", name="Émile", email="Emil@Corp.example", password_hash=None, is_admin=False, now=NOW
    )
    user_found = await any_store.find_user_by_email(email)
    assert (user_found.username if user_found else None) == found


@pytest.mark.parametrize("text", ["a\0", "\0", "a\ud800", "\udfff/x"])
@pytest.mark.parametrize(
    "read",
    [
        lambda store, text: store.get_user_by_username(text),
        lambda store, text: store.find_user_by_email(text),
        lambda store, text: store.get_project_by_path(f"g/{text}"),
        lambda store, text: store.get_namespace_by_path(text),
        lambda store, text: store.find_projects_by_paths(["g/p", f"g/{text}"]),
    ],
    ids=["user by username", "user by e-mail", "project by path", "namespace by path", "projects by paths"],
)
async def test_a_read_of_text_no_database_stores_finds_nothing(
    any_store: Store, read: Callable[[Store, str], Awaitable[Any]], text: str
) -> None:
    """A NUL (PostgreSQL refuses one in text) or a lone surrogate (neither driver encodes one) in a lookup: no row
    holds such text, so the read answers nothing, on both databases, instead of failing."""
    await user(any_store, "a")
    found = await read(any_store, text)
    assert found in (None, [])


@pytest.mark.parametrize(
    ("text", "ok"),
    [("plain", True), ("Émile 🦊", True), ("", True), ("a\0b", False), ("\ud800", False), ("x\udc80y", False)],
)
def test_storable_text(text: str, ok: bool) -> None:
    assert storable(text) is ok


async def test_failed_user_creation_leaves_nothing(any_store: Store) -> None:
    await any_store.create_group(name="G", path="taken", parent_id=None, visibility="private", description="", now=NOW)
    with pytest.raises(Conflict):
        await user(any_store, "taken")  # the personal namespace path collides with the group's route
    assert await any_store.count_users() == 0
    assert await any_store.get_user_by_username("taken") is None


async def test_group_tree_and_routes(any_store: Store) -> None:
    root = await any_store.create_group(
        name="R", path="Root", parent_id=None, visibility="private", description="", now=NOW
    )
    parent = root
    for depth in range(2, 21):
        parent = await any_store.create_group(
            name=f"g{depth}", path=f"g{depth}", parent_id=parent.id, visibility="private", description="", now=NOW
        )
    assert parent.depth == 20 and parent.traversal_ids[0] == root.id and parent.traversal_ids[-1] == parent.id
    assert parent.full_path.startswith("Root/g2/g3/")
    found = await any_store.get_namespace_by_path(parent.full_path.upper())
    assert found == parent
    project = await any_store.create_project(
        namespace_id=parent.id, name="P", path="Proj", visibility="internal", description="d", creator_id=None, now=NOW
    )
    assert project.full_path == f"{parent.full_path}/Proj" and project.namespace == parent
    assert await any_store.get_project_by_path(project.full_path.lower()) == project
    assert await any_store.find_projects_by_paths([project.full_path.upper(), "nope/nope"]) == [project]
    # One route per path across groups and projects, case-insensitively (GitLab's routes table).
    with pytest.raises(Conflict):
        await any_store.create_group(
            name="x", path="proj", parent_id=parent.id, visibility="private", description="", now=NOW
        )
    with pytest.raises(Conflict):
        await any_store.create_project(
            namespace_id=root.id, name="x", path="G2", visibility="private", description="", creator_id=None, now=NOW
        )
    with pytest.raises(Conflict):
        await any_store.create_group(
            name="x", path="x", parent_id=999999, visibility="private", description="", now=NOW
        )
    assert [g.id for g in await any_store.list_groups()][:2] == [root.id, root.id + 1]
    assert await any_store.list_projects() == [project]


async def test_memberships(any_store: Store) -> None:
    uid = await user(any_store)
    g = await any_store.create_group(name="G", path="g", parent_id=None, visibility="private", description="", now=NOW)
    sub = await any_store.create_group(
        name="S", path="s", parent_id=g.id, visibility="private", description="", now=NOW
    )
    p = await any_store.create_project(
        namespace_id=sub.id, name="p", path="p", visibility="private", description="", creator_id=None, now=NOW
    )
    m = await any_store.add_member(source_kind="namespace", source_id=g.id, user_id=uid, access_level=30, now=NOW)
    assert m.user.id == uid and m.access_level == 30
    await any_store.add_member(source_kind="project", source_id=p.id, user_id=uid, access_level=20, now=NOW)
    with pytest.raises(Conflict):
        await any_store.add_member(source_kind="project", source_id=p.id, user_id=uid, access_level=40, now=NOW)
    levels = await any_store.access_levels(uid, project_id=p.id, namespace_ids=sub.traversal_ids)
    assert sorted(levels) == [20, 30]
    assert await any_store.access_levels(uid, project_id=None, namespace_ids=[sub.id]) == []
    assert [x.user.id for x in await any_store.list_members("namespace", g.id)] == [uid]


@pytest.mark.parametrize(
    ("namespaces", "expected"),
    [
        (["g"], ["g/a", "g/b"]),
        (["g", "g/s"], ["g/a", "g/b", "g/s/c"]),
        (["g/s", "h"], ["g/s/c", "h/d"]),
        ([], []),
        (["nowhere"], []),
    ],
)
async def test_projects_in_namespaces(any_store: Store, namespaces: list[str], expected: list[str]) -> None:
    g = await any_store.create_group(name="g", path="g", parent_id=None, visibility="private", description="", now=NOW)
    s = await any_store.create_group(name="s", path="s", parent_id=g.id, visibility="private", description="", now=NOW)
    h = await any_store.create_group(name="h", path="h", parent_id=None, visibility="private", description="", now=NOW)
    ids = {"g": g.id, "g/s": s.id, "h": h.id, "nowhere": 999999}
    for path, ns in (("b", g), ("c", s), ("a", g), ("d", h)):  # created out of name order: listed by id
        await any_store.create_project(
            namespace_id=ns.id, name=path, path=path, visibility="private", description="", creator_id=None, now=NOW
        )
    found = await any_store.list_projects_in([ids[n] for n in namespaces])
    assert sorted(p.full_path for p in found) == expected
    assert [p.id for p in found] == sorted(p.id for p in found)


@pytest.mark.parametrize(
    ("root", "expected"),
    [("a", ["a", "a/b", "a/b/c", "a/d"]), ("a/b", ["a/b", "a/b/c"]), ("a/b/c", ["a/b/c"]), ("e", ["e"]), ("x", [])],
)
async def test_a_group_tree(any_store: Store, root: str, expected: list[str]) -> None:
    made: dict[str, Any] = {}
    for path in ("a", "a/b", "e", "a/b/c", "a/d"):  # a child created after its parent's sibling: listed by id
        parent, _, name = path.rpartition("/")
        made[path] = await any_store.create_group(
            name=name,
            path=name,
            parent_id=made[parent].id if parent else None,
            visibility="private",
            description="",
            now=NOW,
        )
    group_id = made[root].id if root in made else 999999
    tree = await any_store.list_group_tree(group_id)
    assert sorted(g.full_path for g in tree) == expected
    assert [g.id for g in tree] == sorted(g.id for g in tree)


# Descriptions: a project's is searched, a group's is not (GitLab's Project.search and Group.search).
DESCRIBED = {"zebra": "Crème brûlée", "deep": "Crème caramel"}


async def listing_world(store: Store) -> dict[str, int]:
    """Projects and groups for page_projects/page_groups: names that fold differently in Python and in ASCII-only
    SQL (É), that sort differently by code point and by locale (é after z), equal once folded (ties), and every
    way a user reaches them (group memberships at two levels, a project membership, the personal namespace)."""
    u = await user(store, "u")
    member = await store.get_user(u)
    assert member is not None

    async def group(name: str, path: str, parent: int | None, visibility: Any) -> int:
        made = await store.create_group(
            name=name, path=path, parent_id=parent, visibility=visibility, description=DESCRIBED.get(path, ""), now=NOW
        )
        return made.id

    ids = {"u": u, "~u": member.namespace_id}
    projects: dict[str, int] = {}
    ids["alpha"] = await group("Alpha", "alpha", None, "private")
    ids["alpha/beta"] = await group("beta", "beta", ids["alpha"], "private")
    ids["emile"] = await group("Émile", "emile", None, "public")
    ids["zeta"] = await group("zeta", "Zeta", None, "private")
    ids["zeta/deep"] = await group("Deep", "deep", ids["zeta"], "private")
    for namespace, name, path, visibility in (
        ("alpha", "Zebra", "zebra", "private"),
        ("alpha/beta", "apple", "apple", "private"),
        ("emile", "Éclair", "eclair", "public"),
        ("emile", "éclat", "eclat", "internal"),
        ("zeta", "Same", "same-1", "private"),
        ("zeta/deep", "same", "same-2", "private"),
        ("zeta", "Banana", "Banana", "private"),
        ("~u", "mine", "mine", "private"),
    ):
        project = await store.create_project(
            namespace_id=ids[namespace],
            name=name,
            path=path,
            visibility=visibility,
            description=DESCRIBED.get(path, ""),
            creator_id=None,
            now=NOW,
        )
        projects[path] = ids[f"project:{path}"] = project.id
    await store.add_member(source_kind="namespace", source_id=ids["alpha"], user_id=u, access_level=10, now=NOW)
    await store.add_member(source_kind="namespace", source_id=ids["zeta"], user_id=u, access_level=40, now=NOW)
    await store.add_member(source_kind="project", source_id=projects["eclat"], user_id=u, access_level=30, now=NOW)
    return ids


EVERY: tuple[Any, ...] = ("private", "internal", "public")


@pytest.mark.parametrize(
    ("listing", "expected"),
    [
        # Folded by str.lower, ordered by code point (é after z), ties by id in the same direction.
        (
            {"open": EVERY, "order_by": "name"},
            ["apple", "Banana", "mine", "same-1", "same-2", "zebra", "eclair", "eclat"],
        ),
        (
            {"open": EVERY, "order_by": "name", "descending": True},
            ["eclat", "eclair", "zebra", "same-2", "same-1", "mine", "Banana", "apple"],
        ),
        (
            {"open": EVERY, "order_by": "path"},
            ["apple", "Banana", "eclair", "eclat", "mine", "same-1", "same-2", "zebra"],
        ),
        (
            {"open": EVERY, "order_by": "id", "descending": True},
            ["mine", "Banana", "same-2", "same-1", "eclat", "eclair", "apple", "zebra"],
        ),
        (
            {"open": EVERY, "order_by": "created_at"},
            ["zebra", "apple", "eclair", "eclat", "same-1", "same-2", "Banana", "mine"],
        ),
        # search: a part of the folded name or path ("ÉCL" folds to "écl": both names hold it, Python's way),
        # from 3 characters; a shorter term only the whole of one (GitLab's Gitlab::SQL::Pattern).
        ({"open": EVERY, "search": "ÉCL"}, ["eclair", "eclat"]),
        ({"open": EVERY, "search": "ana"}, ["Banana"]),
        ({"open": EVERY, "search": "same-"}, ["same-1", "same-2"]),
        ({"open": EVERY, "search": "ap"}, []),
        ({"open": EVERY, "search": "CRÈME"}, ["zebra"]),
        ({"open": EVERY, "search": "%%%"}, []),
        ({"open": EVERY, "search": "_a_"}, []),  # LIKE's wildcards are sought as themselves
        ({"open": EVERY, "search": "a\0"}, []),
        ({"open": EVERY, "visibility": "internal"}, ["eclat"]),
        ({"open": EVERY, "namespace": ("zeta", "emile")}, ["eclair", "eclat", "same-1", "Banana"]),
        ({"open": ("public",)}, ["eclair"]),
        ({"open": ("public", "internal")}, ["eclair", "eclat"]),
        ({}, []),
        # GitLab's id_after / id_before (keyset pagination's cursor), with any order.
        ({"open": EVERY, "after": "eclat"}, ["same-1", "same-2", "Banana", "mine"]),
        ({"open": EVERY, "before": "eclair", "order_by": "name"}, ["apple", "zebra"]),
        ({"open": EVERY, "after": "apple", "before": "same-2"}, ["eclair", "eclat", "same-1"]),
        # A user's memberships: the trees below their groups, their projects; the personal namespace apart.
        ({"member": True}, ["zebra", "apple", "eclat", "same-1", "same-2", "Banana"]),
        ({"member": True, "min_level": 30}, ["eclat", "same-1", "same-2", "Banana"]),
        ({"member": True, "min_level": 40}, ["same-1", "same-2", "Banana"]),
        ({"member": True, "min_level": 50}, []),
        ({"personal": True}, ["mine"]),
        (
            {"open": ("public",), "member": True, "personal": True, "min_level": 40},
            ["eclair", "same-1", "same-2", "Banana", "mine"],
        ),
        (
            {"open": ("public",), "member": True, "visibility": "private", "search": "AmE"},
            ["same-1", "same-2"],
        ),
    ],
)
async def test_a_page_of_projects(any_store: Store, listing: dict[str, Any], expected: list[str]) -> None:
    ids = await listing_world(any_store)
    order = {"order_by": "id"} if "order_by" not in listing else {}
    chosen = Listing(
        open=listing.get("open", ()),
        member_id=ids["u"] if listing.get("member") else None,
        min_level=listing.get("min_level", 0),
        personal_namespace_id=ids["~u"] if listing.get("personal") else None,
        visibility=listing.get("visibility"),
        search=listing.get("search", ""),
        namespace_ids=tuple(ids[n] for n in listing["namespace"]) if "namespace" in listing else None,
        id_after=ids[f"project:{listing['after']}"] if "after" in listing else None,
        id_before=ids[f"project:{listing['before']}"] if "before" in listing else None,
        **{**order, **{k: v for k, v in listing.items() if k in ("order_by", "descending")}},
    )
    whole = await any_store.page_projects(chosen, offset=0, limit=100)
    assert [p.path for p in whole.items] == expected
    assert whole.total == len(expected)
    # Pages cut the same order, each with the whole total.
    pages = [await any_store.page_projects(chosen, offset=o, limit=3) for o in range(0, len(expected) + 3, 3)]
    assert [p.path for page in pages for p in page.items] == expected
    assert {page.total for page in pages} == {len(expected)}


@pytest.mark.parametrize(
    ("listing", "expected"),
    [
        # By folded name, ties (deep, Deep? no: "Alpha"/"alpha" would clash by path) by id ascending either way.
        ({"open": EVERY, "order_by": "name"}, ["alpha", "alpha/beta", "zeta/deep", "zeta", "emile"]),
        (
            {"open": EVERY, "order_by": "name", "descending": True},
            ["emile", "zeta", "zeta/deep", "alpha/beta", "alpha"],
        ),
        ({"open": EVERY, "order_by": "path"}, ["alpha", "alpha/beta", "zeta/deep", "emile", "zeta"]),
        ({"open": EVERY, "order_by": "id", "descending": True}, ["zeta/deep", "zeta", "emile", "alpha/beta", "alpha"]),
        ({"open": EVERY, "top_level_only": True}, ["alpha", "emile", "zeta"]),
        ({"open": EVERY, "parent": "zeta"}, ["zeta/deep"]),
        ({"open": EVERY, "parent": "zeta/deep"}, []),
        ({"open": EVERY, "search": "émi"}, ["emile"]),
        ({"open": EVERY, "search": "\0"}, []),
        ({"open": EVERY, "search": "ZET"}, ["zeta"]),
        ({"open": EVERY, "search": "ze"}, []),
        ({"open": EVERY, "search": "crème"}, []),
        ({"open": ("public",)}, ["emile"]),
        ({"member": True}, ["alpha", "alpha/beta", "zeta", "zeta/deep"]),
        ({"member": True, "min_level": 20}, ["zeta", "zeta/deep"]),
        ({"member": True, "min_level": 20, "top_level_only": True}, ["zeta"]),
        ({"open": ("public",), "member": True, "min_level": 50}, ["emile"]),
        ({"personal": True}, []),  # a personal namespace is not a group
    ],
)
async def test_a_page_of_groups(any_store: Store, listing: dict[str, Any], expected: list[str]) -> None:
    ids = await listing_world(any_store)
    chosen = Listing(
        open=listing.get("open", ()),
        member_id=ids["u"] if listing.get("member") else None,
        min_level=listing.get("min_level", 0),
        personal_namespace_id=ids["~u"] if listing.get("personal") else None,
        search=listing.get("search", ""),
        parent_id=ids[listing["parent"]] if "parent" in listing else None,
        top_level_only=listing.get("top_level_only", False),
        order_by=listing.get("order_by", "id"),
        descending=listing.get("descending", False),
    )
    names = {v: k for k, v in ids.items() if k not in ("u", "~u") and not k.startswith("project:")}
    whole = await any_store.page_groups(chosen, offset=0, limit=100)
    assert [names[g.id] for g in whole.items] == expected
    assert whole.total == len(expected)
    pages = [await any_store.page_groups(chosen, offset=o, limit=2) for o in range(0, len(expected) + 2, 2)]
    assert [names[g.id] for page in pages for g in page.items] == expected
    assert {page.total for page in pages} == {len(expected)}
    if chosen.order_by == "id" or not chosen.descending:  # text keys page by keyset ascending only, as GitLab's
        walked = await walk(
            lambda after, n: any_store.page_groups(replace(chosen, after=after), offset=0, limit=n, count_up_to=n + 1),
            chosen.order_by,
            2,
        )
        assert [names[g.id] for g in walked] == expected


@pytest.mark.parametrize(
    ("offset", "limit", "total"),
    # Counted to one past max(COUNT_LIMIT, the page's end): enough to tell "more than the limit" and "a next page".
    [(0, 2, 4), (2, 2, 5), (4, 3, 8), (6, 2, 8), (20, 2, 8), (0, 0, 4)],
)
async def test_a_lists_total_is_counted_no_further_than_needed(
    any_store: Store, monkeypatch: pytest.MonkeyPatch, offset: int, limit: int, total: int
) -> None:
    monkeypatch.setattr(queries, "COUNT_LIMIT", 3)
    await listing_world(any_store)  # 8 projects, 5 groups
    everything = Listing(open=EVERY)
    projects = await any_store.page_projects(everything, offset=offset, limit=limit)
    assert (len(projects.items), projects.total) == (max(0, min(limit, 8 - offset)), total)
    groups = await any_store.page_groups(everything, offset=offset, limit=limit)
    assert groups.total == min(total, 5)


async def test_a_lists_memberships_answer_as_the_store_does(any_store: Store) -> None:
    """gateway.access.Memberships (one read for a whole list) against store.access_levels (one read per item): the
    same levels for every project and group of a tree, with memberships at several depths, for two users."""
    from gateway.access import Memberships

    a, b = await user(any_store, "a"), await user(any_store, "b")

    async def group(path: str, parent: int | None) -> Any:
        return await any_store.create_group(
            name=path, path=path, parent_id=parent, visibility="private", description="", now=NOW
        )

    root = await group("root", None)
    mid = await group("mid", root.id)
    leaf = await group("leaf", mid.id)
    other = await group("other", None)
    projects = [
        await any_store.create_project(
            namespace_id=ns.id, name=path, path=path, visibility="private", description="", creator_id=None, now=NOW
        )
        for path, ns in (("p0", root), ("p1", mid), ("p2", leaf), ("p3", leaf), ("p4", other))
    ]
    for uid, kind, source, level in (
        (a, "namespace", mid.id, 30),
        (a, "project", projects[2].id, 40),
        (a, "namespace", other.id, 10),
        (b, "namespace", root.id, 20),
        (b, "project", projects[4].id, 50),
    ):
        await any_store.add_member(source_kind=kind, source_id=source, user_id=uid, access_level=level, now=NOW)
    asked = [(p.id, p.namespace.traversal_ids) for p in projects]
    asked += [(None, g.traversal_ids) for g in (root, mid, leaf, other)] + [(None, ()), (None, (999999,))]
    for uid in (a, b):
        memberships = Memberships(uid, await any_store.list_user_memberships(uid))
        for project_id, namespace_ids in asked:
            expected = await any_store.access_levels(uid, project_id=project_id, namespace_ids=namespace_ids)
            got = await memberships.access_levels(uid, project_id=project_id, namespace_ids=namespace_ids)
            assert sorted(got) == sorted(expected), (uid, project_id, namespace_ids)
    of_a = Memberships(a, await any_store.list_user_memberships(a))
    # Not a table of empty answers: both of a's memberships above p2 count.
    assert sorted(await of_a.access_levels(a, project_id=projects[2].id, namespace_ids=leaf.traversal_ids)) == [30, 40]
    with pytest.raises(ValueError, match="memberships of user"):
        await of_a.access_levels(b, project_id=None, namespace_ids=())


async def test_personal_access_tokens(any_store: Store) -> None:
    uid = await user(any_store)
    pat = await any_store.create_personal_access_token(
        user_id=uid, name="n", token_digest=b"d" * 32, scopes=["api", "read_repository"], expires_at=None, now=NOW
    )
    assert pat.scopes == ("api", "read_repository") and not pat.revoked
    assert await any_store.find_personal_access_token(b"d" * 32) == pat
    assert await any_store.find_personal_access_token(b"e" * 32) is None
    with pytest.raises(Conflict):
        await any_store.create_personal_access_token(
            user_id=uid, name="n", token_digest=b"d" * 32, scopes=["api"], expires_at=None, now=NOW
        )
    assert await any_store.revoke_personal_access_token(pat.id)
    found = await any_store.find_personal_access_token(b"d" * 32)
    assert found is not None and found.revoked
    assert [t.id for t in await any_store.list_personal_access_tokens(uid)] == [pat.id]
    got = await any_store.get_personal_access_token(pat.id)
    assert got is not None and got.id == pat.id and got.user_id == uid and got.revoked
    assert await any_store.get_personal_access_token(pat.id + 1000) is None


async def test_deploy_tokens(any_store: Store) -> None:
    g = await any_store.create_group(name="G", path="g", parent_id=None, visibility="private", description="", now=NOW)
    p = await any_store.create_project(
        namespace_id=g.id, name="p", path="p", visibility="private", description="", creator_id=None, now=NOW
    )
    a = await any_store.create_deploy_token(new_token(b"a" * 32, project_id=p.id, username="custom"))
    b = await any_store.create_deploy_token(new_token(b"b" * 32, group_id=g.id))
    assert b.id == a.id + 1  # one instance-wide sequence
    assert a.username == "custom" and b.username == f"gitlab+deploy-token-{b.id}"
    assert a.scopes == ("read_repository", "read_registry")
    assert await any_store.find_deploy_token(b"a" * 32) == a
    assert await any_store.get_deploy_token(b.id) == b
    with pytest.raises(Conflict):
        await any_store.create_deploy_token(new_token(b"a" * 32, project_id=p.id))
    with pytest.raises(Conflict):
        await any_store.create_deploy_token(new_token(b"z" * 32, project_id=999999))
    assert [t.id for t in (await any_store.list_deploy_tokens(project_id=p.id)).items] == [a.id]
    assert [t.id for t in (await any_store.list_deploy_tokens(group_id=g.id)).items] == [b.id]
    assert (await any_store.list_deploy_tokens()).total == 2
    assert await any_store.revoke_deploy_token(a.id)
    assert (await any_store.list_deploy_tokens(project_id=p.id, active_at=NOW)).total == 0
    assert (await any_store.list_deploy_tokens(project_id=p.id)).items[0].revoked
    assert await any_store.delete_deploy_token(b.id)
    assert not await any_store.delete_deploy_token(b.id)
    assert await any_store.get_deploy_token(b.id) is None


async def test_sealed_secrets_are_sealed_again_only_if_unchanged(any_store: Store) -> None:
    """A rotation of the encryption key (encryption_keys.reseal) swaps each sealed secret only if it still holds
    what was read: a token recreated meanwhile keeps what it now holds."""
    g = await any_store.create_group(name="G", path="g", parent_id=None, visibility="private", description="", now=NOW)
    plain = await any_store.create_deploy_token(new_token(b"a" * 32, group_id=g.id))
    sealed = await any_store.create_deploy_token(
        dataclasses.replace(new_token(b"b" * 32, group_id=g.id), token_encrypted=b"sealed by the old key")
    )
    assert await any_store.list_sealed_deploy_tokens() == [(sealed.id, b"sealed by the old key")]
    assert sealed == await any_store.get_deploy_token(sealed.id)  # read once: a cache would hold it now
    assert not await any_store.reseal_deploy_token(sealed.id, b"not what it holds", b"new")
    assert not await any_store.reseal_deploy_token(plain.id, b"", b"new")
    assert await any_store.reseal_deploy_token(sealed.id, b"sealed by the old key", b"sealed by the new key")
    assert await any_store.list_sealed_deploy_tokens() == [(sealed.id, b"sealed by the new key")]
    token = await any_store.get_deploy_token(sealed.id)  # what a lookup returns follows it (the cache is cleared)
    assert token is not None and token.token_encrypted == b"sealed by the new key"


async def test_key_holders_report_refresh_and_age(any_store: Store) -> None:
    """What each running process reports it holds (key_holders.py): one row per process, refreshed in place, stamped
    and aged by the database's clock, listed only while recent, gone when the process stops or when it is stale."""
    await any_store.report_key_holder("host:1:a", ("new", "old"), "kid-1")
    await any_store.report_key_holder("host:2:b", ("old",), "")
    listed = await any_store.list_key_holders(30)
    assert [(h.process, h.encryption_keys, h.registry_kid) for h in listed] == [
        ("host:1:a", ("new", "old"), "kid-1"),
        ("host:2:b", ("old",), ""),
    ]
    assert all(0 <= h.age < 5 for h in listed)
    await asyncio.sleep(0.3)
    assert await any_store.list_key_holders(0.2) == []  # older than that by the database's clock
    await any_store.report_key_holder("host:2:b", ("new",), "kid-2")  # the same process, reporting again
    assert [(h.process, h.encryption_keys) for h in await any_store.list_key_holders(0.2)] == [("host:2:b", ("new",))]
    assert await any_store.delete_stale_key_holders(0.2) == 1  # host:1:a, not heard of since
    await any_store.forget_key_holder("host:2:b")
    assert await any_store.list_key_holders(30) == []


async def test_active_filter_agrees_with_the_one_rule(any_store: Store) -> None:
    """The SQL filter and tokens.is_active must agree at the expiry boundary (GitLab !263037)."""
    g = await any_store.create_group(name="G", path="g", parent_id=None, visibility="private", description="", now=NOW)
    expiries = [
        None,
        NOW - timedelta(microseconds=1),
        NOW,
        NOW + timedelta(microseconds=1),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, tzinfo=UTC),
    ]
    made = [
        await any_store.create_deploy_token(new_token(bytes([i]) * 32, group_id=g.id, expires_at=e))
        for i, e in enumerate(expiries)
    ]
    active = {t.id for t in (await any_store.list_deploy_tokens(group_id=g.id, active_at=NOW)).items}
    assert active == {t.id for t in made if tokens.is_active(t, NOW)}
    assert len(active) == 3


async def test_pagination_and_named_lookup(any_store: Store) -> None:
    g = await any_store.create_group(name="G", path="g", parent_id=None, visibility="private", description="", now=NOW)
    ids = [
        (await any_store.create_deploy_token(new_token(bytes([i]) * 32, group_id=g.id, name=f"n{i % 2}"))).id
        for i in range(7)
    ]
    page = await any_store.list_deploy_tokens(group_id=g.id, offset=3, limit=3)
    assert [t.id for t in page.items] == ids[3:6] and page.total == 7
    named = await any_store.find_named_deploy_token("n0", group_id=g.id, active_at=NOW)
    assert named is not None and named.id == ids[6]
    assert await any_store.find_named_deploy_token("zz", group_id=g.id, active_at=NOW) is None


async def test_owner_membership_is_created_with_the_group_or_project(any_store: Store) -> None:
    uid = await user(any_store)
    g = await any_store.create_group(
        name="G", path="g", parent_id=None, visibility="private", description="", now=NOW, owner_id=uid
    )
    p = await any_store.create_project(
        namespace_id=g.id,
        name="p",
        path="p",
        visibility="private",
        description="",
        creator_id=uid,
        now=NOW,
        owner_id=uid,
    )
    assert [(m.user.id, m.access_level) for m in await any_store.list_members("namespace", g.id)] == [(uid, 50)]
    assert [(m.user.id, m.access_level) for m in await any_store.list_members("project", p.id)] == [(uid, 50)]
    with pytest.raises(Conflict):  # an unknown owner rolls the whole creation back
        await any_store.create_group(
            name="H", path="h", parent_id=None, visibility="private", description="", now=NOW, owner_id=999999
        )
    assert await any_store.get_namespace_by_path("h") is None


async def test_delete_project_frees_its_path(any_store: Store) -> None:
    g = await any_store.create_group(name="G", path="g", parent_id=None, visibility="private", description="", now=NOW)
    p = await any_store.create_project(
        namespace_id=g.id, name="p", path="p", visibility="private", description="", creator_id=None, now=NOW
    )
    await any_store.create_deploy_token(new_token(b"q" * 32, project_id=p.id))
    # a project that owns package names can be deleted too
    await any_store.claim_package_name(format="pypi", name="demo", project_id=p.id, exclusive=True, now=NOW)
    assert await any_store.delete_project(p.id)
    assert await any_store.get_project(p.id) is None
    assert await any_store.find_deploy_token(b"q" * 32) is None
    again = await any_store.create_project(
        namespace_id=g.id, name="p", path="P", visibility="private", description="", creator_id=None, now=NOW
    )
    assert again.id != p.id


@dataclass(frozen=True)
class HotRead:
    """A hot-path read of one process (`read`, its answer seen through `view`), and a write by another (`change`)."""

    make: Callable[[Store], Awaitable[Any]]  # the row(s) the read finds; returns what `change` needs
    read: Callable[[Store], Awaitable[Any]]
    change: Callable[[Store, Any], Awaitable[Any]]
    view: Callable[[Any], Any]


async def _a_token(store: Store) -> Any:
    g = await store.create_group(name="G", path="g", parent_id=None, visibility="private", description="", now=NOW)
    return await store.create_deploy_token(new_token(b"x" * 32, group_id=g.id))


async def _a_claimed_name(store: Store) -> Any:
    g = await store.create_group(name="G", path="g", parent_id=None, visibility="private", description="", now=NOW)
    p = await store.create_project(
        namespace_id=g.id, name="p", path="p", visibility="private", description="", creator_id=None, now=NOW
    )
    await store.claim_package_name(format="pypi", name="x", project_id=p.id, exclusive=True, now=NOW)
    return p


HOT_READS = {
    "deploy token revoked": HotRead(
        _a_token,
        lambda store: store.find_deploy_token(b"x" * 32),
        lambda store, token: store.revoke_deploy_token(token.id),
        lambda found: (found is not None, found is not None and found.revoked),
    ),
    "package name owner's project deleted": HotRead(
        _a_claimed_name,
        lambda store: store.package_name_owners("pypi", "x"),
        lambda store, project: store.delete_project(project.id),
        lambda owners: [o.name for o in owners],
    ),
}


@pytest.mark.parametrize("case", HOT_READS.values(), ids=HOT_READS.keys())
async def test_hot_reads_see_other_writers_within_the_cache_ttl(tmp_path: Path, case: HotRead) -> None:
    """Two processes (two stores on one file): a change by one reaches the other when its entry ages out."""
    from gateway.store.cache import TTLCache
    from gateway.store.sqlite import SQLiteStore

    ticks = [0.0]
    reader = await SQLiteStore(tmp_path / "shared.db", cache=TTLCache(ttl=1.0, clock=lambda: ticks[0])).open()
    writer = await SQLiteStore(tmp_path / "shared.db").open()
    try:
        await writer.migrate()
        made = await case.make(writer)
        before = case.view(await case.read(reader))  # now cached by the reader
        await case.change(writer, made)
        after = case.view(await case.read(writer))  # the writer's own cache was cleared by its write
        assert after != before
        assert case.view(await case.read(reader)) == before  # within the TTL the reader may still see the old
        ticks[0] = 1.0
        assert case.view(await case.read(reader)) == after
    finally:
        await reader.close()
        await writer.close()


MISSES = {
    "deploy token": (
        lambda store: store.find_deploy_token(b"x" * 32),
        _a_token,
    ),
    "package name owners": (
        lambda store: store.package_name_owners("pypi", "x"),
        _a_claimed_name,
    ),
}


@pytest.mark.parametrize(("read", "make"), MISSES.values(), ids=MISSES.keys())
async def test_a_miss_is_not_kept(
    tmp_path: Path, read: Callable[[Store], Awaitable[Any]], make: Callable[[Store], Awaitable[Any]]
) -> None:
    """What another process creates is found at once: the reader's clock never moves here."""
    from gateway.store.cache import TTLCache
    from gateway.store.sqlite import SQLiteStore

    reader = await SQLiteStore(tmp_path / "shared.db", cache=TTLCache(ttl=1.0, clock=lambda: 0.0)).open()
    writer = await SQLiteStore(tmp_path / "shared.db").open()
    try:
        await writer.migrate()
        assert not await read(reader)
        await make(writer)
        assert await read(reader)
    finally:
        await reader.close()
        await writer.close()


async def _seven_users(store: Store) -> Callable[[int, int], Awaitable[Page[Any]]]:
    for i in range(7):
        await user(store, f"user{i}")
    return lambda offset, limit: store.list_users(offset=offset, limit=limit)


async def _seven_tokens(store: Store) -> Callable[[int, int], Awaitable[Page[Any]]]:
    g = await store.create_group(name="G", path="g", parent_id=None, visibility="private", description="", now=NOW)
    for i in range(7):
        await store.create_deploy_token(new_token(bytes([i]) * 32, group_id=g.id))
    return lambda offset, limit: store.list_deploy_tokens(group_id=g.id, offset=offset, limit=limit)


async def _seven_members(store: Store) -> Callable[[int, int], Awaitable[Page[Any]]]:
    g = await store.create_group(name="G", path="g", parent_id=None, visibility="private", description="", now=NOW)
    for i in range(7):
        made = await user(store, f"member{i}")
        await store.add_member(source_kind="namespace", source_id=g.id, user_id=made, access_level=30, now=NOW)
    return lambda offset, limit: store.page_members("namespace", g.id, offset=offset, limit=limit)


def _ident(item: Any) -> int:
    return int(item.user.id if hasattr(item, "user") else item.id)


async def _seven_events(store: Store) -> Callable[[int, int], Awaitable[Page[Any]]]:
    await store.insert_audit_events(
        [NewAuditEvent(NOW, 1, "Project", 7, f"event_{n}", {}) for n in range(7)]  # listed newest (highest id) first
    )
    return lambda offset, limit: store.list_audit_events(AuditQuery(), offset=offset, limit=limit)


@pytest.mark.parametrize(
    "seven", [_seven_users, _seven_tokens, _seven_members, _seven_events], ids=["users", "tokens", "members", "audit"]
)
@pytest.mark.parametrize(
    ("offset", "limit", "count"), [(0, 3, 3), (3, 3, 3), (6, 3, 1), (5, 100, 2), (7, 3, 0), (50, 3, 0), (0, 0, 0)]
)
async def test_a_page_and_the_total_of_every_list(
    any_store: Store,
    seven: Callable[[Store], Awaitable[Callable[[int, int], Awaitable[Page[Any]]]]],
    offset: int,
    limit: int,
    count: int,
) -> None:
    """Every paginated list tells the total of what matches, on a page past the end and with limit 0 too (X-Total;
    the API asks the total alone with limit 0)."""
    listing = await seven(any_store)
    everything = await listing(0, 100)
    page = await listing(offset, limit)
    assert page.total == everything.total == len(everything.items) == 7
    assert [_ident(x) for x in page.items] == [_ident(x) for x in everything.items][offset : offset + limit]
    assert len(page.items) == count


@pytest.mark.parametrize(
    "seven", [_seven_users, _seven_tokens, _seven_members, _seven_events], ids=["users", "tokens", "members", "audit"]
)
@pytest.mark.parametrize(("offset", "limit", "total"), [(0, 2, 4), (2, 3, 6), (4, 3, 7), (9, 3, 7), (0, 0, 4)])
async def test_the_lists_that_grow_without_end_count_no_further_than_a_page_needs(
    any_store: Store,
    monkeypatch: pytest.MonkeyPatch,
    seven: Callable[[Store], Awaitable[Callable[[int, int], Awaitable[Page[Any]]]]],
    offset: int,
    limit: int,
    total: int,
) -> None:
    """Every offset-paged list, like projects and groups: counted to one past max(COUNT_LIMIT, the page's end)."""
    monkeypatch.setattr(queries, "COUNT_LIMIT", 3)
    listing = await seven(any_store)
    assert (await listing(offset, limit)).total == total


@pytest.mark.parametrize(
    ("query", "user_ids", "expected"),
    [
        ("", None, ["ann", "bob", "émile"]),
        ("OB", None, ["bob"]),  # however short: GitLab's members API searches with use_minimum_char_limit: false
        ("b", None, ["ann", "bob"]),
        ("ÉMI", None, ["émile"]),
        ("Anne", None, ["ann"]),  # ann's name is "Anne Bo"
        ("%", None, []),
        ("_", None, []),
        ("a\0", None, []),
        ("", ["bob", "émile", "outsider"], ["bob", "émile"]),
        ("o", ["bob"], ["bob"]),
        ("", [], []),
    ],
)
async def test_a_page_of_members(any_store: Store, query: str, user_ids: list[str] | None, expected: list[str]) -> None:
    g = await any_store.create_group(name="G", path="g", parent_id=None, visibility="private", description="", now=NOW)
    other = await any_store.create_group(
        name="H", path="h", parent_id=None, visibility="private", description="", now=NOW
    )
    ids = {}
    for username, name in (("ann", "Anne Bo"), ("bob", "Bob"), ("émile", "Émile"), ("outsider", "Bob Too")):
        made = await any_store.create_user(
            username=username, name=name, email=f"{len(ids)}@x", password_hash=None, is_admin=False, now=NOW
        )
        ids[username] = made.id
        where = other if username == "outsider" else g
        await any_store.add_member(
            source_kind="namespace", source_id=where.id, user_id=made.id, access_level=30, now=NOW
        )
    chosen = [ids[u] for u in user_ids] if user_ids is not None else None
    page = await any_store.page_members("namespace", g.id, offset=0, limit=10, query=query, user_ids=chosen)
    assert ([m.user.username for m in page.items], page.total) == (expected, len(expected))
    bob = await any_store.get_member("namespace", g.id, ids["bob"])
    assert bob is not None and (bob.user.username, bob.access_level) == ("bob", 30)
    assert await any_store.get_member("namespace", g.id, ids["outsider"]) is None


async def test_an_empty_list_totals_zero(any_store: Store) -> None:
    g = await any_store.create_group(name="G", path="g", parent_id=None, visibility="private", description="", now=NOW)
    assert await any_store.list_deploy_tokens(group_id=g.id, offset=0, limit=20) == Page([], 0)
    assert await any_store.list_deploy_tokens(group_id=g.id, offset=20, limit=20) == Page([], 0)


async def test_a_database_migrated_by_a_newer_release_is_refused(
    any_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This release knowing one migration fewer than the database holds: it must neither serve nor touch it."""
    import importlib

    from gateway.store.migrations import SchemaTooNew

    module = importlib.import_module(type(any_store).__module__)
    known = module.migrations()
    version = await any_store.schema_version()
    assert version == known[-1][0]
    monkeypatch.setattr(module, "migrations", lambda: known[:-1])
    with pytest.raises(SchemaTooNew, match=f"schema version {version}, newer than this gateway's {version - 1}"):
        await any_store.migrate()
    assert await any_store.schema_version() == version
    monkeypatch.undo()
    assert await any_store.migrate() == version  # the release that knows it serves it


async def test_names_written_before_their_keys_are_found_after_the_upgrade(
    blank_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 0008 lowers the names of release 7's rows as the store lowers new ones (Python's str.lower:
    "ÉMILE" folds to "émile" on SQLite, whose own lower() folds ASCII only, and whatever the cluster's locale)."""
    import importlib

    from gateway.store.queries import SharedQueries

    module = importlib.import_module(type(blank_store).__module__)
    known = module.migrations()
    monkeypatch.setattr(module, "migrations", lambda: [m for m in known if m[0] < 8])
    assert await blank_store.migrate() == 7
    store = blank_store
    assert isinstance(store, SharedQueries)
    async with store._tx() as db:  # rows as release 7 wrote them: no lower-case keys
        for name, path in (("ÉMILE Group", "Emile-G"), ("zeta", "zeta")):
            ns = await store._insert(
                db,
                "INSERT INTO namespaces (kind, name, path, full_path, traversal_ids, visibility, description,"
                " created_at) VALUES ('group', ?, ?, ?, ?, 'public', '', ?)",
                *(name, path, path, store._ids(()), store._stamp(NOW)),
                conflict="taken",
            )
            await store._execute(db, "UPDATE namespaces SET traversal_ids = ? WHERE id = ?", store._ids((ns,)), ns)
    monkeypatch.undo()
    assert await store.migrate() == known[-1][0]
    everyone = Listing(open=("private", "internal", "public"), order_by="name")
    assert [g.path for g in (await store.page_groups(everyone, offset=0, limit=10)).items] == ["zeta", "Emile-G"]
    for term in ("émile", "EMILE-g"):
        found = await store.page_groups(Listing(open=everyone.open, search=term), offset=0, limit=10)
        assert [g.path for g in found.items] == ["Emile-G"]
    # A new row written without its keys is refused, not left where no search finds it.
    with pytest.raises(Conflict, match="lower-case keys are required"):
        async with store._tx() as db:
            await store._insert(
                db,
                "INSERT INTO namespaces (kind, name, path, full_path, traversal_ids, visibility, description,"
                " created_at) VALUES ('group', 'x', 'x', 'x', ?, 'public', '', ?)",
                *(store._ids(()), store._stamp(NOW)),
                conflict="refused: lower-case keys are required",
            )
