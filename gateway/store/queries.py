"""The queries both databases answer alike, written once: SQL with `?` placeholders (the PostgreSQL store numbers
them), rows turned into records by store/rows.py; each store supplies the primitives declared abstract here."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, TypeVar

from gateway.errors import Conflict
from gateway.store.base import (
    COUNT_LIMIT,
    MIN_CHARS_FOR_PARTIAL_MATCHING,
    VISIBILITIES,
    AuditEvent,
    AuditQuery,
    AuthFailures,
    DeployToken,
    KeyHolder,
    Keyset,
    Listing,
    Member,
    Namespace,
    NewAuditEvent,
    NewDeployToken,
    PackageName,
    Page,
    PersonalAccessToken,
    Project,
    SourceKind,
    TokenUse,
    User,
    UserOrder,
    UserState,
    Visibility,
    WebSession,
    storable,
)
from gateway.store.cache import TTLCache, project_key
from gateway.store.rows import (
    AUDIT_COLUMNS,
    AUTH_FAILURE_COLUMNS,
    DT_COLUMNS,
    KEY_HOLDER_COLUMNS,
    MEMBER_COLUMNS,
    MEMBER_SELECT,
    NS_COLUMNS,
    PACKAGE_COLUMNS,
    PAT_COLUMNS,
    PROJECT_COLUMNS,
    PROJECT_FROM,
    TOKEN_TABLES,
    USER_COLUMNS,
    Rows,
)

T = TypeVar("T")


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


def _literals(visibilities: Sequence[Visibility]) -> str:
    if not set(visibilities) <= set(VISIBILITIES):
        raise ValueError(f"not visibilities: {visibilities!r}")
    return ", ".join(f"'{v}'" for v in visibilities)


def _count_up_to(offset: int, limit: int) -> int:
    """How far a list's total is counted: past COUNT_LIMIT (GitLab then leaves the total out, and the cost of a page
    stops growing with the instance), and past the page's end (the next page's existence is still known)."""
    return max(COUNT_LIMIT, offset + limit) + 1


def _partial(term: str) -> bool:
    """Whether a search term matches a part of a name, or only a whole one."""
    return len(term) >= MIN_CHARS_FOR_PARTIAL_MATCHING


def _lower(*texts: str) -> tuple[str, ...]:
    """The lower-case keys stored beside names and paths (migration 0008): lowered here, by Python, so that both
    databases hold the same keys whatever their locale."""
    return tuple(text.lower() for text in texts)


def _direction(listing: Listing) -> str:
    return "DESC" if listing.descending else "ASC"


class SharedQueries(ABC):
    """The Store methods whose SQL and sequencing are the same on SQLite and PostgreSQL."""

    _cache: TTLCache[Any]
    _records: Rows

    @abstractmethod
    async def _row(self, sql: str, *args: Any) -> Any:
        """The first row of a read (`?` placeholders), or None."""

    @abstractmethod
    async def _rows(self, sql: str, *args: Any) -> list[Any]:
        """Every row of a read (`?` placeholders)."""

    @abstractmethod
    async def _change(self, sql: str, *args: Any, clears_cache: bool = True) -> int:
        """One statement (`?` placeholders) in its own write transaction; the number of rows it changed."""

    @staticmethod
    @abstractmethod
    def _stamp(value: datetime | None) -> Any:
        """A timestamp (None stays None) as this database takes it as a parameter."""

    @abstractmethod
    def _tx(self, *, clears_cache: bool = True) -> AbstractAsyncContextManager[Any]:
        """A write transaction on one connection."""

    @abstractmethod
    async def _insert(self, db: Any, sql: str, *args: Any, conflict: str) -> int:
        """An INSERT (`?` placeholders, no RETURNING) in the transaction of `db`; the new row's id. A violated
        constraint (unique, foreign key) is Conflict(conflict)."""

    @abstractmethod
    async def _execute(self, db: Any, sql: str, *args: Any, conflict: str | None = None) -> int:
        """One statement (`?` placeholders) in the transaction of `db`; the number of rows it changed."""

    @abstractmethod
    async def _execute_many(self, db: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement (`?` placeholders) once per row of parameters, in the transaction of `db`."""

    @abstractmethod
    async def _tx_row(self, db: Any, sql: str, *args: Any) -> Any:
        """The first row a statement (`?` placeholders) returns in the transaction of `db`, or None."""

    @staticmethod
    @abstractmethod
    def _words(values: Sequence[str]) -> Any:
        """A list of words (scopes, addresses) as this database stores it (rows.Decoding.words reads it back)."""

    @staticmethod
    @abstractmethod
    def _ids(values: Sequence[int]) -> Any:
        """Namespace ancestry ids as this database stores them (rows.Decoding.ids reads them back)."""

    @abstractmethod
    async def _lock_package_name(self, db: Any, key: str) -> None:
        """Queue the claims of one package name (claim_package_name): each transaction waits here for the
        previous one's end."""

    # How a read-modify-write transaction locks the row it read, where its database needs to be told.
    _FOR_UPDATE = ""

    @staticmethod
    def _contains(column: str, term: str) -> tuple[str, list[Any]]:
        """SQL true when the text `column` holds `term` (storable text), and its arguments."""
        return f"instr({column}, ?) > 0", [term]

    # SQL true when the column `{0}` holds one of the values the SELECT `{1}` returns.
    _AMONG = "{0} IN ({1})"

    async def _cached_row(self, key: Hashable, record: Callable[[Any], T], sql: str, *args: Any) -> T | None:
        """The record of one row through the hot-read cache (single flight); a miss is not kept, so that a row
        written by another process is found at once."""
        if (hit := self._cache.fresh(key)) is not None:
            return hit  # type: ignore[no-any-return]

        async def read() -> T | None:
            row = await self._row(sql, *args)
            return record(row) if row else None

        return await self._cache.load(key, read)  # type: ignore[no-any-return]

    async def _page(
        self,
        columns: str,
        source: str,
        where: str,
        args: Sequence[Any],
        order: str,
        offset: int,
        limit: int,
        *,
        join: str = "",
        count_up_to: int | None = None,
    ) -> tuple[list[Any], int]:
        """One page of rows and the number of all the rows `where` matches, in one statement: one round trip
        rather than two, and a total that agrees with the page (one snapshot; a write between two statements could
        make them disagree). The total rides on every row as a last column (an uncorrelated subquery, computed once);
        a page past the end has no row to carry it, so only then is it counted apart. `join` (tables the columns
        read besides `source`, whose last word is its alias) is joined to the page's rows only: neither the total
        nor the ordering reads it for every row that matches. With `count_up_to`, counting stops there."""
        # The bounds are written into the statement, not passed: PostgreSQL's generic plan (settled on after five
        # calls) takes an unknown LIMIT for a tenth of the rows, and would walk a whole table down the list's order
        # rather than read the few rows a search's index finds (20 ms, not 2, at 100,000 users).
        cut = f"LIMIT {int(limit)} OFFSET {int(offset)}"
        matching = f"{source}{where}"
        if count_up_to is not None:
            matching = f"(SELECT 1 FROM {source}{where} LIMIT {int(count_up_to)}) counted"
        count = f"(SELECT count(*) FROM {matching})"
        if join:
            alias = source.split()[-1]
            page = f"SELECT {alias}.* FROM {source}{where} ORDER BY {order} {cut}"
            sql = f"SELECT {columns}, {count} FROM ({page}) {alias} {join} ORDER BY {order}"
        else:
            sql = f"SELECT {columns}, {count} FROM {source}{where} ORDER BY {order} {cut}"
        rows = await self._rows(sql, *args, *args)
        if rows:
            first = rows[0]
            return rows, int(first[len(first) - 1])
        if offset == 0 and limit > 0:
            return [], 0  # nothing matches
        # Past the end, or `limit=0` (callers ask the total alone that way).
        return [], int((await self._row(f"SELECT count(*) FROM {matching}", *args))[0])

    async def get_user(self, user_id: int) -> User | None:
        sql = f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?"
        return await self._cached_row(("user", user_id), self._records.user, sql, user_id)

    async def get_user_by_username(self, username: str) -> User | None:
        if not username.isascii():
            # Every username is ASCII (a namespace path); PostgreSQL's lower() would fold `İ` into `i` and find
            # alice by `alİce`, which the per-username limits key apart (found by a review).
            return None
        row = await self._row(f"SELECT {USER_COLUMNS} FROM users u WHERE lower(u.username) = lower(?)", username)
        return self._records.user(row) if row else None

    async def find_personal_access_token(self, token_digest: bytes) -> PersonalAccessToken | None:
        sql = f"SELECT {PAT_COLUMNS} FROM personal_access_tokens WHERE token_digest = ?"
        return await self._cached_row(("pat", token_digest), self._records.personal_access_token, sql, token_digest)

    async def list_personal_access_tokens(self, user_id: int) -> list[PersonalAccessToken]:
        rows = await self._rows(
            f"SELECT {PAT_COLUMNS} FROM personal_access_tokens WHERE user_id = ? ORDER BY id", user_id
        )
        return [self._records.personal_access_token(r) for r in rows]

    async def get_personal_access_token(self, token_id: int) -> PersonalAccessToken | None:
        row = await self._row(f"SELECT {PAT_COLUMNS} FROM personal_access_tokens WHERE id = ?", token_id)
        return self._records.personal_access_token(row) if row else None

    async def create_group(
        self,
        *,
        name: str,
        path: str,
        parent_id: int | None,
        visibility: Visibility,
        description: str,
        now: datetime,
        owner_id: int | None = None,
    ) -> Namespace:
        parent = await self.get_namespace(parent_id) if parent_id is not None else None
        if parent_id is not None and (parent is None or parent.kind != "group"):
            raise Conflict("parent group does not exist")
        async with self._tx() as db:
            ns_id = await self._insert_namespace(
                db,
                kind="group",
                name=name,
                path=path,
                parent=parent,
                visibility=visibility,
                description=description,
                now=now,
            )
            if owner_id is not None:
                await self._insert_member(db, "namespace", ns_id, owner_id, 50, now)
        ns = await self.get_namespace(ns_id)
        assert ns is not None
        return ns

    # Namespaces through the hot-read cache, like projects: every call on /groups/:id and the group-level package
    # endpoints starts with one. A namespace is never changed or deleted once created, and a miss is not kept.
    async def get_namespace(self, namespace_id: int) -> Namespace | None:
        sql = f"SELECT {NS_COLUMNS} FROM namespaces n WHERE n.id = ?"
        return await self._cached_row(("namespace-id", namespace_id), self._records.namespace, sql, namespace_id)

    async def get_namespace_by_path(self, full_path: str) -> Namespace | None:
        sql = f"SELECT {NS_COLUMNS} FROM namespaces n WHERE lower(n.full_path) = lower(?)"
        key = ("namespace-path", full_path.lower())
        return await self._cached_row(key, self._records.namespace, sql, full_path)

    async def list_groups(self) -> list[Namespace]:
        rows = await self._rows(f"SELECT {NS_COLUMNS} FROM namespaces n WHERE n.kind = 'group' ORDER BY n.id")
        return [self._records.namespace(r) for r in rows]

    async def page_groups(
        self, listing: Listing, *, offset: int, limit: int, count_up_to: int | None = None
    ) -> Page[Namespace]:
        where, args = await self._chosen(listing, "n", ["n.kind = 'group'"])
        if listing.parent_id is not None:
            where.append("n.parent_id = ?")
            args.append(listing.parent_id)
        if listing.top_level_only:
            where.append("n.parent_id IS NULL")
        key = None if listing.order_by == "id" else self._text_key("n", listing)
        # Ties by id ascending whatever the direction (GitLab's groups.rb order_groups).
        order = f"n.id {_direction(listing)}" if key is None else f"{key} {_direction(listing)}, n.id ASC"
        if listing.after is not None:
            if key is not None and listing.descending:
                raise ValueError("keyset pagination of groups by a descending text key: ties go up, the key down")
            past, past_args = self._past(key, "n.id", listing.after, listing.descending)
            where.append(past)
            args.extend(past_args)
        rows, total = await self._page(
            NS_COLUMNS,
            "namespaces n",
            f" WHERE {' AND '.join(where)}",
            args,
            order,
            offset,
            limit,
            count_up_to=count_up_to or _count_up_to(offset, limit),
        )
        return Page([self._records.namespace(r) for r in rows], total)

    async def list_group_tree(self, group_id: int) -> list[Namespace]:
        # Walked down the parent index: the cost of the subtree, not of every group of the instance.
        rows = await self._rows(
            "WITH RECURSIVE tree (id) AS (SELECT CAST(? AS BIGINT)"
            " UNION ALL SELECT c.id FROM namespaces c JOIN tree t ON c.parent_id = t.id)"
            f" SELECT {NS_COLUMNS} FROM namespaces n JOIN tree ON n.id = tree.id WHERE n.kind = 'group' ORDER BY n.id",
            group_id,
        )
        return [self._records.namespace(r) for r in rows]

    async def page_projects(
        self, listing: Listing, *, offset: int, limit: int, count_up_to: int | None = None
    ) -> Page[Project]:
        where, args = await self._chosen(listing, "p", [])
        if listing.namespace_ids is not None:
            where.append(f"p.namespace_id IN ({_marks(listing.namespace_ids)})")
            args.extend(listing.namespace_ids)
        for bound, operator in ((listing.id_after, ">"), (listing.id_before, "<")):
            if bound is not None:
                where.append(f"p.id {operator} ?")
                args.append(bound)
        direction = _direction(listing)
        if listing.order_by == "id":
            order = f"p.id {direction}"
        elif listing.order_by == "created_at":
            order = f"p.created_at {direction}, p.id {direction}"
        else:
            order = f"{self._text_key('p', listing)} {direction}, p.id {direction}"
        rows, total = await self._page(
            PROJECT_COLUMNS,
            "projects p",
            f" WHERE {' AND '.join(where) or '1 = 1'}",
            args,
            order,
            offset,
            limit,
            join="JOIN namespaces n ON n.id = p.namespace_id",
            count_up_to=count_up_to or _count_up_to(offset, limit),
        )
        return Page([self._records.project(r) for r in rows], total)

    def _past(self, key: str | None, id_column: str, after: Keyset, descending: bool) -> tuple[str, list[Any]]:
        """The condition (and its arguments) that a row lies past keyset pagination's cursor `after`, in a list
        ordered by `key` (a lower-case key column, or a time; None for id alone) then by id, both in one direction:
        a row-value comparison, which both databases answer by seeking the (key, id) index."""
        operator = "<" if descending else ">"
        if key is None:
            return f"{id_column} {operator} ?", [after.id]
        if isinstance(after.key, datetime):
            return f"({key}, {id_column}) {operator} (?, ?)", [self._stamp(after.key), after.id]
        if after.key is None or not storable(after.key):
            return "1 = 0", []  # no key holds such text (the databases refuse it): nothing lies past it
        return f"({key}, {id_column}) {operator} (?, ?)", [*_lower(after.key), after.id]

    @staticmethod
    def _text_key(table: str, listing: Listing) -> str:
        return f"{table}.{'path' if listing.order_by == 'path' else 'name'}_lower"

    async def _matching(self, term: str, table: str, alias: str, keys: Sequence[str]) -> tuple[str, list[Any]]:
        """The condition (and its arguments) that one of the lower-case `keys` of `table` (aliased `alias`) matches a
        search `term`, as GitLab's Gitlab::SQL::Pattern has it: a part of the key if the term has
        MIN_CHARS_FOR_PARTIAL_MATCHING characters or more, else the whole key; case-insensitively."""
        if not storable(term):
            return "1 = 0", []  # no name holds such text, and the databases refuse it
        term = term.lower()
        if _partial(term):
            return await self._contains_any(table, alias, keys, term)
        return f"({' OR '.join(f'{alias}.{key} = ?' for key in keys)})", [term] * len(keys)

    async def _contains_any(self, table: str, alias: str, keys: Sequence[str], term: str) -> tuple[str, list[Any]]:
        """SQL true when one of the `keys` of `table` holds `term` (storable, lower-case, of
        MIN_CHARS_FOR_PARTIAL_MATCHING characters or more), and its arguments: by default each key tested (which
        PostgreSQL's planner serves from the trigram indexes or by a scan, as the term's statistics say)."""
        return self._each_key(alias, keys, term)

    def _each_key(self, alias: str, keys: Sequence[str], term: str) -> tuple[str, list[Any]]:
        """SQL true when one of the `keys` (of the table aliased `alias`) holds `term`, each tested on the row."""
        tests = [self._contains(f"{alias}.{key}", term) for key in keys]
        return f"({' OR '.join(sql for sql, _ in tests)})", [arg for _, args in tests for arg in args]

    async def _chosen(self, listing: Listing, table: str, where: list[str]) -> tuple[list[str], list[Any]]:
        """The conditions (joined by AND) and their arguments that choose a listing's projects (`table` p) or groups
        (n): what policy shows (listing.open, the memberships' reach, the personal namespace), then its filters."""
        args: list[Any] = []
        items = "projects" if table == "p" else "namespaces"
        if not set(VISIBILITIES) <= set(listing.open):
            # The ids each path opens, united: every branch is read down an index (visibility, namespace, a user's
            # memberships), where one OR of them would test every row of the instance.
            ids = []
            if listing.open:
                # Written out, not parameters: a prepared statement's generic plan then knows how few rows they
                # select (PostgreSQL re-plans every call when a parameter might select most of the table).
                kind = "" if table == "p" else "kind = 'group' AND "
                ids.append(f"SELECT id FROM {items} WHERE {kind}visibility IN ({_literals(listing.open)})")
            if listing.member_id is not None:
                # The trees below the groups the user is a member of (a membership holds for every descendant),
                # walked down the parent index.
                ids.append(
                    f"SELECT id FROM {items} WHERE {'namespace_id' if table == 'p' else 'id'} IN ("
                    "WITH RECURSIVE tree (id) AS (SELECT m.source_id FROM members m"
                    " JOIN namespaces g ON g.id = m.source_id AND g.kind = 'group'"
                    " WHERE m.user_id = ? AND m.source_kind = 'namespace' AND m.access_level >= ?"
                    " UNION SELECT c.id FROM namespaces c JOIN tree t ON c.parent_id = t.id) SELECT id FROM tree)"
                )
                args.extend((listing.member_id, listing.min_level))
                if table == "p":
                    ids.append(
                        "SELECT source_id FROM members"
                        " WHERE user_id = ? AND source_kind = 'project' AND access_level >= ?"
                    )
                    args.extend((listing.member_id, listing.min_level))
            if listing.personal_namespace_id is not None and table == "p":
                ids.append("SELECT id FROM projects WHERE namespace_id = ?")
                args.append(listing.personal_namespace_id)
            where.append(self._AMONG.format(f"{table}.id", " UNION ".join(ids)) if ids else "1 = 0")
        if listing.visibility is not None:
            where.append(f"{table}.visibility = ?")
            args.append(listing.visibility)
        if listing.search:
            # A project's description too, as GitLab's Project.search (a group's name and path only, as Group.search).
            keys = ("name_lower", "path_lower", "description_lower") if table == "p" else ("name_lower", "path_lower")
            found, found_args = await self._matching(listing.search, items, table, keys)
            where.append(found)
            args.extend(found_args)
        return where, args

    async def get_project(self, project_id: int) -> Project | None:
        # Through the hot-read cache like a lookup by path: every API call on /projects/:id starts here.
        sql = f"{PROJECT_FROM} WHERE p.id = ?"
        return await self._cached_row(("project-id", project_id), self._records.project, sql, project_id)

    async def get_project_by_path(self, full_path: str) -> Project | None:
        sql = f"{PROJECT_FROM} WHERE lower(p.full_path) = lower(?)"
        return await self._cached_row(project_key(full_path), self._records.project, sql, full_path)

    async def list_projects(self) -> list[Project]:
        rows = await self._rows(f"{PROJECT_FROM} ORDER BY p.id")
        return [self._records.project(r) for r in rows]

    async def list_members(self, source_kind: SourceKind, source_id: int) -> list[Member]:
        rows = await self._rows(
            f"{MEMBER_SELECT} WHERE m.source_kind = ? AND m.source_id = ? ORDER BY u.id", source_kind, source_id
        )
        return [self._records.member(r) for r in rows]

    async def get_member(self, source_kind: SourceKind, source_id: int, user_id: int) -> Member | None:
        row = await self._row(
            f"{MEMBER_SELECT} WHERE m.source_kind = ? AND m.source_id = ? AND m.user_id = ?",
            *(source_kind, source_id, user_id),
        )
        return self._records.member(row) if row else None

    async def page_members(
        self,
        source_kind: SourceKind,
        source_id: int,
        *,
        offset: int,
        limit: int,
        query: str = "",
        user_ids: Sequence[int] | None = None,
    ) -> Page[Member]:
        where = ["m.source_kind = ?", "m.source_id = ?"]
        args: list[Any] = [source_kind, source_id]
        if not storable(query):
            where.append("1 = 0")  # no name holds such text, and the databases refuse it
        elif query:
            # A part of either, however short (GitLab's members API searches with use_minimum_char_limit: false):
            # each key tested, never a trigram index (a term under 3 characters has no trigram to look up).
            found, found_args = self._each_key("u", ("username_lower", "name_lower"), query.lower())
            where.append(found)
            args.extend(found_args)
        if user_ids is not None:
            where.append(f"m.user_id IN ({_marks(user_ids)})" if user_ids else "1 = 0")
            args.extend(user_ids)
        rows, total = await self._page(
            MEMBER_COLUMNS,
            "members m JOIN users u ON u.id = m.user_id",
            f" WHERE {' AND '.join(where)}",
            args,
            "u.id",
            offset,
            limit,
            count_up_to=_count_up_to(offset, limit),
        )
        return Page([self._records.member(r) for r in rows], total)

    async def list_user_memberships(self, user_id: int) -> list[Member]:
        rows = await self._rows(f"{MEMBER_SELECT} WHERE m.user_id = ? ORDER BY m.source_kind, m.source_id", user_id)
        return [self._records.member(r) for r in rows]

    async def get_deploy_token(self, token_id: int) -> DeployToken | None:
        row = await self._row(f"SELECT {DT_COLUMNS} FROM deploy_tokens WHERE id = ?", token_id)
        return self._records.deploy_token(row) if row else None

    async def find_deploy_token(self, token_digest: bytes) -> DeployToken | None:
        sql = f"SELECT {DT_COLUMNS} FROM deploy_tokens WHERE token_digest = ?"
        return await self._cached_row(("deploy_token", token_digest), self._records.deploy_token, sql, token_digest)

    async def get_web_session(self, session_digest: bytes) -> WebSession | None:
        row = await self._row(
            "SELECT user_id, created_at, expires_at FROM web_sessions WHERE session_digest = ?", session_digest
        )
        if row is None:
            return None
        return WebSession(
            user_id=row[0], created_at=self._records.must_ts(row[1]), expires_at=self._records.must_ts(row[2])
        )

    async def package_name_owners(self, format: str, name: str) -> list[PackageName]:
        # Read on every file a flat package backend serves (pip and npm installs ask for many): through the
        # hot-read cache. An unclaimed name is not kept, like every miss: a claim by another process counts at once.
        key = ("package-owners", format, name)
        if (hit := self._cache.fresh(key)) is not None:
            return list(hit)

        async def read() -> tuple[PackageName, ...]:
            rows = await self._rows(
                f"SELECT {PACKAGE_COLUMNS} FROM package_names"
                " WHERE format = ? AND name = ? ORDER BY updated_at DESC, project_id DESC",
                format,
                name,
            )
            return tuple(self._records.package_name(r) for r in rows)

        return list(await self._cache.load(key, read, keep=bool))

    async def count_users(self) -> int:
        return int((await self._row("SELECT count(*) FROM users"))[0])

    async def set_user_state(self, user_id: int, state: UserState) -> User | None:
        await self._change("UPDATE users SET state = ? WHERE id = ?", state, user_id)
        return await self.get_user(user_id)

    async def revoke_personal_access_token(self, token_id: int) -> bool:
        return await self._change("UPDATE personal_access_tokens SET revoked = TRUE WHERE id = ?", token_id) > 0

    async def revoke_deploy_token(self, token_id: int) -> bool:
        return await self._change("UPDATE deploy_tokens SET revoked = TRUE WHERE id = ?", token_id) > 0

    async def delete_deploy_token(self, token_id: int) -> bool:
        return await self._change("DELETE FROM deploy_tokens WHERE id = ?", token_id) > 0

    # --- the keys each running process holds (gateway/key_holders.py) ------------------------------------------
    # Nothing the hot-read cache holds: a report every few seconds per process must not clear it. Stamped and aged
    # by one clock, the database's (_clock_sql): a replica whose clock is behind must not look stopped.

    @abstractmethod
    def _clock_sql(self, seconds_ago: str) -> str:
        """SQL for the database's time now, minus `seconds_ago` (an SQL expression), in key_holders.seen_at's type."""

    @abstractmethod
    def _age_sql(self) -> str:
        """SQL for the seconds since key_holders.seen_at, by the database's clock."""

    async def report_key_holder(self, process: str, encryption_keys: Sequence[str], registry_kid: str) -> None:
        await self._change(
            f"INSERT INTO key_holders ({KEY_HOLDER_COLUMNS}) VALUES (?, ?, ?, {self._clock_sql('0')})"
            " ON CONFLICT (process) DO UPDATE SET encryption_keys = excluded.encryption_keys,"
            " registry_kid = excluded.registry_kid, seen_at = excluded.seen_at",
            *(process, " ".join(encryption_keys), registry_kid),
            clears_cache=False,
        )

    async def list_key_holders(self, within: float) -> list[KeyHolder]:
        rows = await self._rows(
            f"SELECT process, encryption_keys, registry_kid, {self._age_sql()} FROM key_holders"
            f" WHERE seen_at >= {self._clock_sql('?')} ORDER BY process",
            float(within),
        )
        return [self._records.key_holder(row) for row in rows]

    async def forget_key_holder(self, process: str) -> None:
        await self._change("DELETE FROM key_holders WHERE process = ?", process, clears_cache=False)

    async def delete_stale_key_holders(self, older_than: float) -> int:
        return await self._change(
            f"DELETE FROM key_holders WHERE seen_at < {self._clock_sql('?')}", float(older_than), clears_cache=False
        )

    async def list_sealed_deploy_tokens(self) -> list[tuple[int, bytes]]:
        rows = await self._rows(
            "SELECT id, token_encrypted FROM deploy_tokens WHERE token_encrypted IS NOT NULL ORDER BY id"
        )
        return [(int(row[0]), bytes(row[1])) for row in rows]

    async def reseal_deploy_token(self, token_id: int, sealed: bytes, resealed: bytes) -> bool:
        # Compared with what was read: a token deleted or recreated meanwhile keeps what it now holds.
        return (
            await self._change(
                "UPDATE deploy_tokens SET token_encrypted = ? WHERE id = ? AND token_encrypted = ?",
                resealed,
                token_id,
                sealed,
            )
            > 0
        )

    async def delete_web_session(self, session_digest: bytes) -> bool:
        return await self._change("DELETE FROM web_sessions WHERE session_digest = ?", session_digest) > 0

    async def delete_expired_web_sessions(self, now: datetime) -> int:
        return await self._change("DELETE FROM web_sessions WHERE expires_at <= ?", self._stamp(now))

    async def purge_audit_events(self, before: datetime) -> int:
        # Audit rows are nothing the hot-read cache holds.
        return await self._change(
            "DELETE FROM audit_events WHERE created_at < ?", self._stamp(before), clears_cache=False
        )

    # --- writes of several statements, written once on the primitives above --------------------------------

    async def create_user(
        self, *, username: str, name: str, email: str, password_hash: str | None, is_admin: bool, now: datetime
    ) -> User:
        async with self._tx() as db:
            ns_id = await self._insert_namespace(
                db, kind="user", name=name, path=username, parent=None, visibility="private", description="", now=now
            )
            user_id = await self._insert(
                db,
                "INSERT INTO users (username, name, email, password_hash, is_admin, state, created_at, namespace_id,"
                " username_lower, name_lower, email_lower) VALUES (?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?)",
                *(username, name, email, password_hash, is_admin, self._stamp(now), ns_id),
                *_lower(username, name, email),
                conflict="Username has already been taken",
            )
            await self._execute(db, "UPDATE namespaces SET owner_id = ? WHERE id = ?", user_id, ns_id)
        user = await self.get_user(user_id)
        assert user is not None
        return user

    async def list_users(
        self,
        *,
        offset: int,
        limit: int,
        search: str = "",
        search_email: bool = True,
        order_by: UserOrder = "id",
        descending: bool = False,
        after: Keyset | None = None,
        count_up_to: int | None = None,
    ) -> Page[User]:
        where, args = "", list[Any]()
        if not storable(search):
            where = " WHERE 1 = 0"  # no user's fields hold such text, and the databases refuse it
        elif search:
            found, args = await self._matching(search, "users", "u", ("username_lower", "name_lower"))
            if search_email:
                # An address is matched whole, never a part of it (GitLab's User.search): a part would list
                # everyone at a domain.
                found = f"({found} OR u.email_lower = ?)"
                args.append(search.lower())
            where = f" WHERE {found}"
        direction = "DESC" if descending else "ASC"
        key = {"name": "u.name_lower", "username": "u.username_lower", "created_at": "u.created_at"}.get(order_by)
        order = f"{key} {direction}, u.id {direction}" if key else f"u.id {direction}"
        if after is not None:
            past, past_args = self._past(key, "u.id", after, descending)
            where = f"{where} AND {past}" if where else f" WHERE {past}"
            args.extend(past_args)
        rows, total = await self._page(
            USER_COLUMNS,
            "users u",
            where,
            args,
            order,
            offset,
            limit,
            count_up_to=count_up_to or _count_up_to(offset, limit),
        )
        return Page([self._records.user(r) for r in rows], total)

    async def find_user_by_email(self, email: str) -> User | None:
        row = await self._row(f"SELECT {USER_COLUMNS} FROM users u WHERE u.email_lower = ?", email.lower())
        return self._records.user(row) if row else None

    async def create_personal_access_token(
        self,
        *,
        user_id: int,
        name: str,
        token_digest: bytes,
        scopes: Sequence[str],
        expires_at: datetime | None,
        now: datetime,
    ) -> PersonalAccessToken:
        async with self._tx() as db:
            token_id = await self._insert(
                db,
                "INSERT INTO personal_access_tokens (user_id, name, token_digest, scopes, expires_at, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                *(user_id, name, token_digest, self._words(scopes), self._stamp(expires_at), self._stamp(now)),
                conflict="token digest collision",
            )
        token = await self.get_personal_access_token(token_id)
        assert token is not None
        return token

    async def _insert_route(self, db: Any, path: str, kind: str, source_id: int) -> None:
        await self._execute(
            db,
            "INSERT INTO routes (path_lower, source_kind, source_id) VALUES (lower(?), ?, ?)",
            *(path, kind, source_id),
            conflict="has already been taken",
        )

    async def _insert_namespace(
        self,
        db: Any,
        *,
        kind: str,
        name: str,
        path: str,
        parent: Namespace | None,
        visibility: Visibility,
        description: str,
        now: datetime,
    ) -> int:
        """Insert a namespace and its route in the transaction of `db`; its id."""
        full_path = f"{parent.full_path}/{path}" if parent else path
        ns_id = await self._insert(
            db,
            "INSERT INTO namespaces (kind, name, path, full_path, parent_id, traversal_ids, visibility, description,"
            " created_at, name_lower, path_lower) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            *(kind, name, path, full_path, parent.id if parent else None, self._ids(()), visibility, description),
            self._stamp(now),
            *_lower(name, path),
            conflict="has already been taken",
        )
        # GitLab's traversal_ids: the ancestry from the root, this namespace's own id last.
        traversal = (*parent.traversal_ids, ns_id) if parent else (ns_id,)
        await self._execute(db, "UPDATE namespaces SET traversal_ids = ? WHERE id = ?", self._ids(traversal), ns_id)
        await self._insert_route(db, full_path, "namespace", ns_id)
        return ns_id

    async def create_project(
        self,
        *,
        namespace_id: int,
        name: str,
        path: str,
        visibility: Visibility,
        description: str,
        creator_id: int | None,
        now: datetime,
        owner_id: int | None = None,
    ) -> Project:
        ns = await self.get_namespace(namespace_id)
        if ns is None:
            raise Conflict("namespace does not exist")
        full_path = f"{ns.full_path}/{path}"
        async with self._tx() as db:
            project_id = await self._insert(
                db,
                "INSERT INTO projects (namespace_id, name, path, full_path, visibility, description, created_at,"
                " creator_id, name_lower, path_lower, description_lower) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                *(namespace_id, name, path, full_path, visibility, description, self._stamp(now), creator_id),
                *_lower(name, path, description),
                conflict="has already been taken",
            )
            await self._insert_route(db, full_path, "project", project_id)
            if owner_id is not None:
                await self._insert_member(db, "project", project_id, owner_id, 50, now)
        project = await self.get_project(project_id)
        assert project is not None
        return project

    async def delete_project(self, project_id: int) -> bool:
        async with self._tx() as db:
            for sql in (
                "DELETE FROM deploy_tokens WHERE project_id = ?",
                "DELETE FROM package_names WHERE project_id = ?",
                "DELETE FROM members WHERE source_kind = 'project' AND source_id = ?",
                "DELETE FROM routes WHERE source_kind = 'project' AND source_id = ?",
            ):
                await self._execute(db, sql, project_id)
            return await self._execute(db, "DELETE FROM projects WHERE id = ?", project_id) > 0

    async def add_member(
        self, *, source_kind: SourceKind, source_id: int, user_id: int, access_level: int, now: datetime
    ) -> Member:
        async with self._tx() as db:
            await self._insert_member(db, source_kind, source_id, user_id, access_level, now)
        member = await self.get_member(source_kind, source_id, user_id)
        assert member is not None
        return member

    async def _insert_member(
        self, db: Any, source_kind: str, source_id: int, user_id: int, access_level: int, now: datetime
    ) -> None:
        await self._execute(
            db,
            "INSERT INTO members (source_kind, source_id, user_id, access_level, created_at) VALUES (?, ?, ?, ?, ?)",
            *(source_kind, source_id, user_id, access_level, self._stamp(now)),
            conflict="Member already exists",
        )

    async def create_deploy_token(self, new: NewDeployToken) -> DeployToken:
        async with self._tx() as db:
            token_id = await self._insert(
                db,
                "INSERT INTO deploy_tokens (name, username, token_digest, token_encrypted, scopes, expires_at,"
                " created_at, creator_id, project_id, group_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                *(new.name, new.custom_username, new.token_digest, new.token_encrypted, self._words(new.scopes)),
                *(self._stamp(new.expires_at), self._stamp(new.created_at), new.creator_id, new.project_id),
                new.group_id,
                conflict="token digest collision or dangling holder",
            )
        token = await self.get_deploy_token(token_id)
        assert token is not None
        return token

    def _holder_filter(
        self, project_id: int | None, group_id: int | None, active_at: datetime | None
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if project_id is not None:
            clauses.append("project_id = ?")
            args.append(project_id)
        if group_id is not None:
            clauses.append("group_id = ?")
            args.append(group_id)
        if active_at is not None:
            # The one rule of tokens.is_active, in SQL: not revoked and (no expiry or now < expires_at).
            clauses.append("revoked = FALSE AND (expires_at IS NULL OR ? < expires_at)")
            args.append(self._stamp(active_at))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    async def list_deploy_tokens(
        self,
        *,
        project_id: int | None = None,
        group_id: int | None = None,
        active_at: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> Page[DeployToken]:
        where, args = self._holder_filter(project_id, group_id, active_at)
        rows, total = await self._page(
            DT_COLUMNS, "deploy_tokens", where, args, "id", offset, limit, count_up_to=_count_up_to(offset, limit)
        )
        return Page([self._records.deploy_token(r) for r in rows], total)

    async def find_named_deploy_token(
        self, name: str, *, project_id: int | None = None, group_id: int | None = None, active_at: datetime
    ) -> DeployToken | None:
        where, args = self._holder_filter(project_id, group_id, active_at)
        row = await self._row(
            f"SELECT {DT_COLUMNS} FROM deploy_tokens{where} AND name = ? ORDER BY id DESC LIMIT 1", *args, name
        )
        return self._records.deploy_token(row) if row else None

    async def create_web_session(
        self, *, session_digest: bytes, user_id: int, created_at: datetime, expires_at: datetime
    ) -> None:
        async with self._tx() as db:
            await self._execute(
                db,
                "INSERT INTO web_sessions (session_digest, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                *(session_digest, user_id, self._stamp(created_at), self._stamp(expires_at)),
                conflict="session digest collision or unknown user",
            )

    # --- failed authentications per client address (gateway/bruteforce.py) -----------------------------------
    # The hot-read cache holds nothing of auth_failures: clearing it on each failure would let a guesser slow
    # every other client down.

    async def record_auth_failure(self, address: str, *, now: datetime, window_start_after: datetime) -> int:
        at, after = self._stamp(now), self._stamp(window_start_after)
        async with self._tx(clears_cache=False) as db:
            # One atomic upsert, so that concurrent failures of one address (several replicas) are counted one
            # after the other. SET expressions read the row as it was before the update (SQL semantics).
            row = await self._tx_row(
                db,
                "INSERT INTO auth_failures AS f (address, failures, window_start, updated_at) VALUES (?, 1, ?, ?)"
                " ON CONFLICT (address) DO UPDATE SET"
                " failures = CASE WHEN f.window_start <= ? THEN 1 ELSE f.failures + 1 END,"
                " window_start = CASE WHEN f.window_start <= ? THEN excluded.window_start ELSE f.window_start END,"
                " updated_at = excluded.updated_at"
                " RETURNING failures",
                *(address, at, at, after, after),
            )
        return int(row[0])

    async def ban_address(self, address: str, *, until: datetime, now: datetime) -> None:
        async with self._tx(clears_cache=False) as db:
            await self._execute(
                db,
                "INSERT INTO auth_failures (address, failures, window_start, updated_at, banned_until)"
                " VALUES (?, 0, ?, ?, ?)"
                " ON CONFLICT (address) DO UPDATE SET failures = 0, window_start = excluded.window_start,"
                " updated_at = excluded.updated_at, banned_until = excluded.banned_until",
                *(address, self._stamp(now), self._stamp(now), self._stamp(until)),
            )

    async def clear_auth_failures(self, address: str, *, now: datetime, lift_ban: bool = False) -> bool:
        sql = "DELETE FROM auth_failures WHERE address = ? AND (? OR banned_until IS NULL OR banned_until <= ?)"
        return await self._change(sql, address, lift_ban, self._stamp(now), clears_cache=False) > 0

    async def list_auth_failures(self, *, now: datetime, updated_since: datetime, limit: int) -> list[AuthFailures]:
        rows = await self._rows(
            f"SELECT {AUTH_FAILURE_COLUMNS} FROM auth_failures"
            " WHERE banned_until > ? OR updated_at > ? ORDER BY updated_at DESC LIMIT ?",
            *(self._stamp(now), self._stamp(updated_since), limit),
        )
        return [self._records.auth_failures(r) for r in rows]

    async def delete_stale_auth_failures(self, *, now: datetime, updated_before: datetime) -> int:
        return await self._change(
            "DELETE FROM auth_failures WHERE updated_at < ? AND (banned_until IS NULL OR banned_until <= ?)",
            *(self._stamp(updated_before), self._stamp(now)),
            clears_cache=False,
        )

    # --- package names ----------------------------------------------------------------------------------------

    async def claim_package_name(
        self, *, format: str, name: str, project_id: int, exclusive: bool, now: datetime
    ) -> int:
        async with self._tx() as db:
            # The primary key (format, name, project_id) + ON CONFLICT makes one project's repeated claim an
            # atomic upsert. "No *other* project holds the name" is a predicate over other rows, which no unique
            # constraint can state while shared names are allowed: the claims of one name queue on a lock first.
            await self._lock_package_name(db, f"{format}/{name}")
            if exclusive:
                other = await self._tx_row(
                    db,
                    "SELECT project_id FROM package_names WHERE format = ? AND name = ? AND project_id <> ?"
                    " ORDER BY created_at, project_id LIMIT 1",
                    *(format, name, project_id),
                )
                if other is not None:
                    return int(other[0])
            await self._execute(
                db,
                "INSERT INTO package_names (format, name, project_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (format, name, project_id) DO UPDATE SET updated_at = excluded.updated_at",
                *(format, name, project_id, self._stamp(now), self._stamp(now)),
                conflict="package name of an unknown project or format",
            )
        return project_id

    # --- audit trail and last use ----------------------------------------------------------------------------

    async def insert_audit_events(self, events: Sequence[NewAuditEvent]) -> None:
        if not events:
            return
        rows = [
            (self._stamp(e.created_at), e.author_id, e.entity_type, e.entity_id, e.event_name, json.dumps(e.details))
            for e in events
        ]
        async with self._tx(clears_cache=False) as db:
            # JSON as text: SQLite stores it so, PostgreSQL's jsonb column parses it (asyncpg sends jsonb as text).
            await self._execute_many(
                db,
                "INSERT INTO audit_events (created_at, author_id, entity_type, entity_id, event_name, details)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    async def list_audit_events(
        self, query: AuditQuery, *, offset: int, limit: int, count_up_to: int | None = None
    ) -> Page[AuditEvent]:
        filters = (
            ("entity_type = ?", query.entity_type),
            ("entity_id = ?", query.entity_id),
            ("author_id = ?", query.author_id),
            ("created_at >= ?", None if query.created_after is None else self._stamp(query.created_after)),
            ("created_at <= ?", None if query.created_before is None else self._stamp(query.created_before)),
            ("id < ?", query.id_before),
        )
        clauses = [clause for clause, value in filters if value is not None]
        args = [value for _, value in filters if value is not None]
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        # An instance's trail grows without end: count no further than a page needs (GitLab's 10,000 rule).
        up_to = count_up_to or _count_up_to(offset, limit)
        rows, total = await self._page(
            AUDIT_COLUMNS, "audit_events", where, args, "id DESC", offset, limit, count_up_to=up_to
        )
        return Page([self._records.audit_event(r) for r in rows], total)

    async def get_audit_event(self, event_id: int) -> AuditEvent | None:
        row = await self._row(f"SELECT {AUDIT_COLUMNS} FROM audit_events WHERE id = ?", event_id)
        return self._records.audit_event(row) if row else None

    async def record_token_use(self, use: TokenUse, *, min_interval: float, keep_ips: int) -> bool:
        table = TOKEN_TABLES[use.kind]
        async with self._tx(clears_cache=False) as db:
            # Read and write under the row's lock: two replicas flushing the same token merge their addresses one
            # after the other.
            row = await self._tx_row(
                db, f"SELECT last_used_at, last_used_ips FROM {table} WHERE id = ?{self._FOR_UPDATE}", use.token_id
            )
            if row is None:
                return False
            stored = self._records.timestamp(row[0])
            if stored is not None and (use.at - stored).total_seconds() < min_interval:
                return False
            # The newest addresses first, then the stored ones not among them, `keep_ips` at most (GitLab: five).
            ips = tuple(dict.fromkeys([*use.ips, *self._records.words(row[1])]))[:keep_ips]
            await self._execute(
                db,
                f"UPDATE {table} SET last_used_at = ?, last_used_ips = ? WHERE id = ?",
                *(self._stamp(use.at), self._words(ips), use.token_id),
            )
            return True
