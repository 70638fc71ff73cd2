"""SQLite's search indexes (FTS5 trigram, migration 0009): kept in step with their tables as rows come and go, and
read by a search instead of every row."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest

from gateway.store.base import Listing
from gateway.store.seed import seed_users
from gateway.store.sqlite import SQLiteStore

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SEARCHES = ("users_search", "namespaces_search", "projects_search")


async def integrity(store: SQLiteStore) -> None:
    """FTS5's own check that an external-content index holds exactly its table's rows (rank 1: compared with the
    table, not only with itself); it raises otherwise."""
    for search in SEARCHES:
        check = f"INSERT INTO {search} ({search}, rank) VALUES ('integrity-check', 1)"  # noqa: S608 (constant names)
        await store.db.execute(check)


async def test_the_indexes_follow_inserts_and_deletes(store: SQLiteStore) -> None:
    await seed_users(store, count=30, now=NOW)
    group = await store.create_group(
        name="Needle Group", path="needle", parent_id=None, visibility="public", description="", now=NOW
    )
    kept = await store.create_project(
        namespace_id=group.id,
        name="Haystack",
        path="hay",
        visibility="public",
        description="Straw",
        creator_id=None,
        now=NOW,
    )
    gone = await store.create_project(
        namespace_id=group.id,
        name="Needle",
        path="needle",
        visibility="public",
        description="",
        creator_id=None,
        now=NOW,
    )
    await integrity(store)
    found = await store.page_projects(Listing(open=("public",), search="EEDL"), offset=0, limit=10)
    assert [p.id for p in found.items] == [gone.id]
    assert await store.delete_project(gone.id)
    await integrity(store)  # the delete trigger took the row's trigrams out
    found = await store.page_projects(Listing(open=("public",), search="straw"), offset=0, limit=10)
    assert [p.id for p in found.items] == [kept.id]
    assert (await store.page_projects(Listing(open=("public",), search="needle"), offset=0, limit=10)).items == []


async def test_a_corrupted_index_is_caught_by_the_check(store: SQLiteStore) -> None:
    """The check above can fail: an index entry that no row backs is reported."""
    await store.db.execute("INSERT INTO users_search (rowid, username_lower, name_lower) VALUES (999, 'xyz', 'abc')")
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        await integrity(store)


@pytest.mark.parametrize(
    ("search", "index"),
    [("users", "users_search"), ("groups", "namespaces_search"), ("projects", "projects_search")],
)
async def test_a_search_reads_its_index(store: SQLiteStore, search: str, index: str) -> None:
    """The statement a 3-character search runs looks the term up in the index, not in every row."""
    statements: list[str] = []
    await store.db.set_trace_callback(statements.append)
    if search == "users":
        await store.list_users(offset=0, limit=20, search="abc")
    elif search == "groups":
        await store.page_groups(Listing(open=("public",), search="abc"), offset=0, limit=20)
    else:
        await store.page_projects(Listing(open=("public",), search="abc"), offset=0, limit=20)
    await store.db.set_trace_callback(None)
    [statement] = [s for s in statements if "MATCH" in s]
    plan = await store.db.execute_fetchall(f"EXPLAIN QUERY PLAN {statement}")
    assert any(f"SCAN {index} VIRTUAL TABLE" in row[-1] for row in plan), plan


@pytest.mark.parametrize(
    ("term", "plan"),
    [
        ("seed-user-7", "ids"),  # fewer matches than the probe reads: those rows by their key
        ("zzz", "none"),
        ("seed-user-3", "index"),  # more, and spread thin (3, 30, 31, 32, ...): the index
        ("user", "scan"),  # every row: each row tested, in the list's order
        ("SEED-USER-1", "scan"),  # 1 and 10-19 of the first ids: dense
    ],
)
@pytest.mark.parametrize("order_by", ["id", "name"])
async def test_a_search_plan_is_chosen_by_its_first_matches(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, term: str, plan: str, order_by: str
) -> None:
    """The plan a search takes (SQLiteStore._contains_any) follows how many rows hold the term, and how densely;
    whichever it takes, the pages list exactly the users that hold it, each once, in order, with the right total."""
    monkeypatch.setattr(SQLiteStore, "SEARCH_PROBE", 4)
    await seed_users(store, count=40, now=NOW)
    everyone = (await store.list_users(offset=0, limit=100, order_by=order_by)).items
    expected = [u.id for u in everyone if term.lower() in u.username.lower() or term.lower() in u.name.lower()]
    statements: list[str] = []
    await store.db.set_trace_callback(statements.append)
    pages = [
        await store.list_users(offset=offset, limit=5, search=term, search_email=False, order_by=order_by)
        for offset in range(0, 45, 5)
    ]
    await store.db.set_trace_callback(None)
    assert [u.id for page in pages for u in page.items] == expected
    assert {page.total for page in pages} == {len(expected)}
    [page_statement, *_] = [s for s in statements if "FROM users u" in s]
    taken = (
        "index"
        if "MATCH" in page_statement
        else "none"
        if "1 = 0" in page_statement
        else "ids"
        if "u.id IN (" in page_statement
        else "scan"
    )
    assert taken == plan, page_statement
