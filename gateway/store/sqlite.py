"""SQLite implementation of the Store protocol (aiosqlite, WAL, busy timeout, forward-only migrations)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.errors import Conflict, StoreUnavailable
from gateway.store.base import (
    AuditEvent,
    AuditQuery,
    AuthFailures,
    DeployToken,
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
    Visibility,
)
from gateway.store.cache import DEFAULT_TTL, TTLCache, always, projects_by_paths
from gateway.store.migrations import bundled
from gateway.store.queries import SharedQueries
from gateway.store.rows import (
    AUDIT_COLUMNS,
    AUTH_FAILURE_COLUMNS,
    DT_COLUMNS,
    PACKAGE_COLUMNS,
    PAT_COLUMNS,
    PROJECT_FROM,
    TOKEN_TABLES,
    USER_COLUMNS,
    Decoding,
    Rows,
)

BUSY_TIMEOUT_MS = 5000


def ts(value: datetime | None) -> str | None:
    """Fixed-width UTC text, so that text comparison in SQL is time comparison (years 0001-9999)."""
    if value is None:
        return None
    v = value.astimezone(UTC)
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}Z"


def parse_ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    # fromisoformat is C and reads the trailing Z since 3.11; strptime cost ~25 µs a call on the hot path.
    return datetime.fromisoformat(value)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every bundled migration, in order."""
    return bundled("sqlite")


def merge_ips(new: Sequence[str], old: Sequence[str], keep: int) -> tuple[str, ...]:
    """The newest addresses first, then the stored ones not among them, `keep` at most (GitLab keeps five)."""
    return tuple(dict.fromkeys([*new, *old]))[:keep]


_ROWS = Rows(
    Decoding(
        timestamp=parse_ts,
        ids=lambda text: tuple(int(x) for x in text.split("/")),
        words=lambda text: tuple(text.split()),
    )
)


class SQLiteStore(SharedQueries):
    """One aiosqlite connection; write transactions are serialised by a lock (SQLite has one writer anyway)."""

    _records = _ROWS

    def __init__(
        self, path: Path | str, *, cache: TTLCache[Any] | None = None, busy_timeout: float = BUSY_TIMEOUT_MS / 1000
    ) -> None:
        self.path = str(path)
        # How long a statement waits for another process's lock before it fails (storage.busy_timeout) → 503.
        self.busy_timeout_ms = max(1, round(busy_timeout * 1000))
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        # Hot-path reads (store/cache.py); every write transaction below clears it.
        self._cache: TTLCache[Any] = cache if cache is not None else TTLCache(DEFAULT_TTL)

    async def open(self) -> SQLiteStore:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves so a write never upgrades a read lock.
            self._db = await aiosqlite.connect(self.path, isolation_level=None, timeout=self.busy_timeout_ms / 1000)
            await self._db.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            await self._db.execute("PRAGMA journal_mode = WAL")
            await self._db.execute("PRAGMA synchronous = NORMAL")
            await self._db.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open database: {exc}") from exc
        return self

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreUnavailable("database is not open")
        return self._db

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    # --- plumbing -------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def _tx(self, *, clears_cache: bool = True) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction: all or nothing, so a failed request leaves nothing half-written. Audit and
        last-use writes pass clears_cache=False: they change nothing the hot-read cache must see at once."""
        async with self._write_lock:
            db = self.db
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"database is busy: {exc}") from exc
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException as exc:
                # SQLite may have rolled back already (SQLITE_FULL, SQLITE_IOERR): then ROLLBACK itself fails.
                with suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    # Locked, disk full, I/O error: the database's trouble, not the request's (503, not 500).
                    raise StoreUnavailable(f"database error: {exc}") from exc
                raise
            finally:
                if clears_cache:
                    self._cache.clear()

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        # execute_fetchall is one hop to aiosqlite's thread; execute + fetch + close would be three (hot path).
        try:
            return list(await self.db.execute_fetchall(sql, params))
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._all(sql, params)
        return rows[0] if rows else None

    async def _row(self, sql: str, *args: Any) -> Any:
        return await self._one(sql, args)

    async def _rows(self, sql: str, *args: Any) -> list[Any]:
        return await self._all(sql, args)

    async def _change(self, sql: str, *args: Any, clears_cache: bool = True) -> int:
        async with self._tx(clears_cache=clears_cache) as db:
            cur = await db.execute(sql, args)
            return int(cur.rowcount)

    _stamp = staticmethod(ts)

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def schema_version(self) -> int:
        row = await self._one("SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'")
        if row is None:
            return 0
        row = await self._one("SELECT max(version) FROM schema_version")
        return int(row[0] or 0)

    async def migrate(self) -> int:
        """Apply every migration newer than the schema version, each in its own transaction; return the version."""
        async with self._write_lock:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                await db.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                    " applied_at TEXT NOT NULL)"
                )
                async with db.execute("SELECT coalesce(max(version), 0) FROM schema_version") as cur:
                    row = await cur.fetchone()
                current = int(row[0]) if row else 0
                for version, name, sql in migrations():
                    if version <= current:
                        continue
                    # executescript would COMMIT our transaction; run statement by statement instead.
                    for statement in _statements(sql):
                        await db.execute(statement)
                    await db.execute(
                        "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                        (version, name, ts(datetime.now(UTC))),
                    )
                    current = version
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")
            return current

    # --- users ------------------------------------------------------------------------------------------------

    async def create_user(
        self, *, username: str, name: str, email: str, password_hash: str | None, is_admin: bool, now: datetime
    ) -> User:
        async with self._tx() as db:
            ns_id = await self._insert_namespace(
                db, kind="user", name=name, path=username, parent=None, visibility="private", description="", now=now
            )
            try:
                cur = await db.execute(
                    "INSERT INTO users (username, name, email, password_hash, is_admin, state, created_at,"
                    " namespace_id) VALUES (?, ?, ?, ?, ?, 'active', ?, ?)",
                    (username, name, email, password_hash, int(is_admin), ts(now), ns_id),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict("Username has already been taken") from exc
            user_id = cur.lastrowid
            await db.execute("UPDATE namespaces SET owner_id = ? WHERE id = ?", (user_id, ns_id))
        user = await self.get_user(int(user_id or 0))
        assert user is not None
        return user

    async def list_users(self, *, offset: int, limit: int, search: str | None = None) -> Page[User]:
        where, params = "", []
        if search:
            where = "WHERE lower(u.username) LIKE ? OR lower(u.name) LIKE ? OR lower(u.email) LIKE ?"
            like = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where = where.replace("LIKE ?", "LIKE ? ESCAPE '\\'")
            params = [like, like, like]
        total = (await self._one(f"SELECT count(*) FROM users u {where}", params))[0]
        rows = await self._all(
            f"SELECT {USER_COLUMNS} FROM users u {where} ORDER BY u.id LIMIT ? OFFSET ?", [*params, limit, offset]
        )
        return Page([_ROWS.user(r) for r in rows], int(total))

    # --- personal access tokens -------------------------------------------------------------------------------

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
            try:
                cur = await db.execute(
                    "INSERT INTO personal_access_tokens (user_id, name, token_digest, scopes, expires_at, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (user_id, name, token_digest, " ".join(scopes), ts(expires_at), ts(now)),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict("token digest collision") from exc
            token_id = cur.lastrowid
        row = await self._one(f"SELECT {PAT_COLUMNS} FROM personal_access_tokens WHERE id = ?", (token_id,))
        return _ROWS.personal_access_token(row)

    # --- namespaces and projects ------------------------------------------------------------------------------

    async def _insert_route(self, db: aiosqlite.Connection, path: str, kind: str, source_id: int) -> None:
        try:
            await db.execute(
                "INSERT INTO routes (path_lower, source_kind, source_id) VALUES (?, ?, ?)",
                (path.lower(), kind, source_id),
            )
        except sqlite3.IntegrityError as exc:
            raise Conflict("has already been taken") from exc

    async def _insert_namespace(
        self,
        db: aiosqlite.Connection,
        *,
        kind: str,
        name: str,
        path: str,
        parent: Namespace | None,
        visibility: Visibility,
        description: str,
        now: datetime,
    ) -> int:
        full_path = f"{parent.full_path}/{path}" if parent else path
        try:
            cur = await db.execute(
                "INSERT INTO namespaces (kind, name, path, full_path, parent_id, traversal_ids, visibility,"
                " description, created_at) VALUES (?, ?, ?, ?, ?, '', ?, ?, ?)",
                (kind, name, path, full_path, parent.id if parent else None, visibility, description, ts(now)),
            )
        except sqlite3.IntegrityError as exc:
            raise Conflict("has already been taken") from exc
        ns_id = int(cur.lastrowid or 0)
        traversal = (*parent.traversal_ids, ns_id) if parent else (ns_id,)
        await db.execute("UPDATE namespaces SET traversal_ids = ? WHERE id = ?", ("/".join(map(str, traversal)), ns_id))
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
            try:
                cur = await db.execute(
                    "INSERT INTO projects (namespace_id, name, path, full_path, visibility, description, created_at,"
                    " creator_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (namespace_id, name, path, full_path, visibility, description, ts(now), creator_id),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict("has already been taken") from exc
            project_id = int(cur.lastrowid or 0)
            await self._insert_route(db, full_path, "project", project_id)
            if owner_id is not None:
                await self._insert_member(db, "project", project_id, owner_id, 50, now)
        project = await self.get_project(project_id)
        assert project is not None
        return project

    async def delete_project(self, project_id: int) -> bool:
        async with self._tx() as db:
            await db.execute("DELETE FROM deploy_tokens WHERE project_id = ?", (project_id,))
            await db.execute("DELETE FROM package_names WHERE project_id = ?", (project_id,))
            await db.execute("DELETE FROM members WHERE source_kind = 'project' AND source_id = ?", (project_id,))
            await db.execute("DELETE FROM routes WHERE source_kind = 'project' AND source_id = ?", (project_id,))
            cur = await db.execute("DELETE FROM projects WHERE id = ?", (project_id,))
            return cur.rowcount > 0

    async def find_projects_by_paths(self, full_paths: Sequence[str]) -> list[Project]:
        if not full_paths:
            return []

        async def read(paths: list[str]) -> list[Project]:
            marks = ", ".join("lower(?)" for _ in paths)
            rows = await self._all(f"{PROJECT_FROM} WHERE lower(p.full_path) IN ({marks})", paths)
            return [_ROWS.project(r) for r in rows]

        return await projects_by_paths(self._cache, full_paths, read)

    # --- memberships ------------------------------------------------------------------------------------------

    async def add_member(
        self, *, source_kind: SourceKind, source_id: int, user_id: int, access_level: int, now: datetime
    ) -> Member:
        async with self._tx() as db:
            await self._insert_member(db, source_kind, source_id, user_id, access_level, now)
        members = await self.list_members(source_kind, source_id)
        return next(m for m in members if m.user.id == user_id)

    @staticmethod
    async def _insert_member(
        db: aiosqlite.Connection, source_kind: str, source_id: int, user_id: int, access_level: int, now: datetime
    ) -> None:
        try:
            await db.execute(
                "INSERT INTO members (source_kind, source_id, user_id, access_level, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (source_kind, source_id, user_id, access_level, ts(now)),
            )
        except sqlite3.IntegrityError as exc:
            raise Conflict("Member already exists") from exc

    async def access_levels(self, user_id: int, *, project_id: int | None, namespace_ids: Sequence[int]) -> list[int]:
        clauses, params = [], [user_id]
        if project_id is not None:
            clauses.append("(source_kind = 'project' AND source_id = ?)")
            params.append(project_id)
        if namespace_ids:
            clauses.append(f"(source_kind = 'namespace' AND source_id IN ({', '.join('?' for _ in namespace_ids)}))")
            params.extend(namespace_ids)
        if not clauses:
            return []
        key = ("levels", user_id, project_id, tuple(namespace_ids))
        if (hit := self._cache.get(key)) is not None:
            return list(hit)

        async def read() -> tuple[int, ...]:
            rows = await self._all(
                f"SELECT access_level FROM members WHERE user_id = ? AND ({' OR '.join(clauses)})", params
            )
            return tuple(int(r[0]) for r in rows)

        # "No membership" is kept too: it ages out like the rest.
        return list(await self._cache.load(key, read, keep=always))

    # --- deploy tokens ----------------------------------------------------------------------------------------

    async def create_deploy_token(self, new: NewDeployToken) -> DeployToken:
        async with self._tx() as db:
            try:
                cur = await db.execute(
                    "INSERT INTO deploy_tokens (name, username, token_digest, token_encrypted, scopes, expires_at,"
                    " created_at, creator_id, project_id, group_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        new.name,
                        new.custom_username,
                        new.token_digest,
                        new.token_encrypted,
                        " ".join(new.scopes),
                        ts(new.expires_at),
                        ts(new.created_at),
                        new.creator_id,
                        new.project_id,
                        new.group_id,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict("token digest collision or dangling holder") from exc
            token_id = int(cur.lastrowid or 0)
        token = await self.get_deploy_token(token_id)
        assert token is not None
        return token

    @staticmethod
    def _holder_filter(
        project_id: int | None, group_id: int | None, active_at: datetime | None
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if project_id is not None:
            clauses.append("project_id = ?")
            params.append(project_id)
        if group_id is not None:
            clauses.append("group_id = ?")
            params.append(group_id)
        if active_at is not None:
            # The one rule of tokens.is_active, in SQL: not revoked and (no expiry or now < expires_at).
            clauses.append("revoked = 0 AND (expires_at IS NULL OR ? < expires_at)")
            params.append(ts(active_at))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    async def list_deploy_tokens(
        self,
        *,
        project_id: int | None = None,
        group_id: int | None = None,
        active_at: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> Page[DeployToken]:
        where, params = self._holder_filter(project_id, group_id, active_at)
        total = (await self._one(f"SELECT count(*) FROM deploy_tokens{where}", params))[0]
        rows = await self._all(
            f"SELECT {DT_COLUMNS} FROM deploy_tokens{where} ORDER BY id LIMIT ? OFFSET ?", [*params, limit, offset]
        )
        return Page([_ROWS.deploy_token(r) for r in rows], int(total))

    async def find_named_deploy_token(
        self, name: str, *, project_id: int | None = None, group_id: int | None = None, active_at: datetime
    ) -> DeployToken | None:
        where, params = self._holder_filter(project_id, group_id, active_at)
        row = await self._one(
            f"SELECT {DT_COLUMNS} FROM deploy_tokens{where} AND name = ? ORDER BY id DESC LIMIT 1", [*params, name]
        )
        return _ROWS.deploy_token(row) if row else None

    # --- web UI sessions --------------------------------------------------------------------------------------

    async def create_web_session(
        self, *, session_digest: bytes, user_id: int, created_at: datetime, expires_at: datetime
    ) -> None:
        async with self._tx() as db:
            try:
                await db.execute(
                    "INSERT INTO web_sessions (session_digest, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                    (session_digest, user_id, ts(created_at), ts(expires_at)),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict("session digest collision or unknown user") from exc

    # --- failed authentications per client address (gateway/bruteforce.py) -----------------------------------
    # The hot-read cache holds nothing of auth_failures: clearing it on each failure would let a guesser slow
    # every other client down.

    async def record_auth_failure(self, address: str, *, now: datetime, window_start_after: datetime) -> int:
        async with self._tx(clears_cache=False) as db:
            # SET expressions read the row as it was before the update (SQL semantics), so both CASEs agree.
            rows = await db.execute_fetchall(
                "INSERT INTO auth_failures (address, failures, window_start, updated_at) VALUES (?1, 1, ?2, ?2)"
                " ON CONFLICT (address) DO UPDATE SET"
                " failures = CASE WHEN window_start <= ?3 THEN 1 ELSE failures + 1 END,"
                " window_start = CASE WHEN window_start <= ?3 THEN ?2 ELSE window_start END,"
                " updated_at = ?2"
                " RETURNING failures",
                (address, ts(now), ts(window_start_after)),
            )
        return int(next(iter(rows))[0])

    async def ban_address(self, address: str, *, until: datetime, now: datetime) -> None:
        async with self._tx(clears_cache=False) as db:
            await db.execute(
                "INSERT INTO auth_failures (address, failures, window_start, updated_at, banned_until)"
                " VALUES (?1, 0, ?2, ?2, ?3)"
                " ON CONFLICT (address) DO UPDATE SET failures = 0, window_start = ?2, updated_at = ?2,"
                " banned_until = ?3",
                (address, ts(now), ts(until)),
            )

    async def clear_auth_failures(self, address: str, *, now: datetime, lift_ban: bool = False) -> bool:
        async with self._tx(clears_cache=False) as db:
            cur = await db.execute(
                "DELETE FROM auth_failures WHERE address = ? AND (? OR banned_until IS NULL OR banned_until <= ?)",
                (address, lift_ban, ts(now)),
            )
            return cur.rowcount > 0

    async def list_auth_failures(self, *, now: datetime, updated_since: datetime, limit: int) -> list[AuthFailures]:
        rows = await self._all(
            f"SELECT {AUTH_FAILURE_COLUMNS} FROM auth_failures"
            " WHERE banned_until > ? OR updated_at > ? ORDER BY updated_at DESC LIMIT ?",
            (ts(now), ts(updated_since), limit),
        )
        return [_ROWS.auth_failures(r) for r in rows]

    async def delete_stale_auth_failures(self, *, now: datetime, updated_before: datetime) -> int:
        async with self._tx(clears_cache=False) as db:
            cur = await db.execute(
                "DELETE FROM auth_failures WHERE updated_at < ? AND (banned_until IS NULL OR banned_until <= ?)",
                (ts(updated_before), ts(now)),
            )
            return cur.rowcount

    # --- package names ----------------------------------------------------------------------------------------

    async def claim_package_name(
        self, *, format: str, name: str, project_id: int, exclusive: bool, now: datetime
    ) -> int:
        async with self._tx() as db:
            # BEGIN IMMEDIATE holds the write lock: the check and the insert are one atomic step.
            if exclusive:
                async with db.execute(
                    "SELECT project_id FROM package_names WHERE format = ? AND name = ? AND project_id <> ?"
                    " ORDER BY created_at LIMIT 1",
                    (format, name, project_id),
                ) as cur:
                    other = await cur.fetchone()
                if other is not None:
                    return int(other[0])
            try:
                await db.execute(
                    "INSERT INTO package_names (format, name, project_id, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (format, name, project_id) DO UPDATE SET updated_at = excluded.updated_at",
                    (format, name, project_id, ts(now), ts(now)),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict("package name of an unknown project or format") from exc
        return project_id

    async def list_package_names(self, format: str, project_ids: Sequence[int]) -> list[PackageName]:
        if not project_ids:
            return []
        marks = ", ".join("?" for _ in project_ids)
        rows = await self._all(
            f"SELECT {PACKAGE_COLUMNS} FROM package_names"
            f" WHERE format = ? AND project_id IN ({marks}) ORDER BY name, project_id",
            [format, *project_ids],
        )
        return [_ROWS.package_name(r) for r in rows]

    # --- audit trail and last use ----------------------------------------------------------------------------

    async def insert_audit_events(self, events: Sequence[NewAuditEvent]) -> None:
        if not events:
            return
        rows = [
            (ts(e.created_at), e.author_id, e.entity_type, e.entity_id, e.event_name, json.dumps(e.details))
            for e in events
        ]
        async with self._tx(clears_cache=False) as db:
            await db.executemany(
                "INSERT INTO audit_events (created_at, author_id, entity_type, entity_id, event_name, details)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    async def list_audit_events(self, query: AuditQuery, *, offset: int, limit: int) -> Page[AuditEvent]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("entity_type = ?", query.entity_type),
            ("entity_id = ?", query.entity_id),
            ("author_id = ?", query.author_id),
            ("created_at >= ?", ts(query.created_after)),
            ("created_at <= ?", ts(query.created_before)),
        ):
            if value is not None:
                clauses.append(column)
                params.append(value)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        total = (await self._one(f"SELECT count(*) FROM audit_events{where}", params))[0]
        rows = await self._all(
            f"SELECT {AUDIT_COLUMNS} FROM audit_events{where} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return Page([_ROWS.audit_event(r) for r in rows], int(total))

    async def get_audit_event(self, event_id: int) -> AuditEvent | None:
        row = await self._one(f"SELECT {AUDIT_COLUMNS} FROM audit_events WHERE id = ?", (event_id,))
        return _ROWS.audit_event(row) if row else None

    async def record_token_use(self, use: TokenUse, *, min_interval: float, keep_ips: int) -> bool:
        table = TOKEN_TABLES[use.kind]
        async with self._tx(clears_cache=False) as db:
            select = f"SELECT last_used_at, last_used_ips FROM {table} WHERE id = ?"
            async with db.execute(select, (use.token_id,)) as cur:
                row = await cur.fetchone()
            if row is None:
                return False
            stored = parse_ts(row[0])
            if stored is not None and (use.at - stored).total_seconds() < min_interval:
                return False
            ips = merge_ips(use.ips, row[1].split(), keep_ips)
            await db.execute(
                f"UPDATE {table} SET last_used_at = ?, last_used_ips = ? WHERE id = ?",
                (ts(use.at), " ".join(ips), use.token_id),
            )
            return True


def _statements(sql: str) -> list[str]:
    """Split a migration into statements; our migrations keep ';' out of literals and comments."""
    lines = [line.split("--", 1)[0] for line in sql.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
