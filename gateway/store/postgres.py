"""PostgreSQL implementation of the Store protocol: a bounded asyncpg pool, forward-only migrations that run once
under an advisory lock when several replicas start together, the same hot-read cache as SQLite (store/cache.py).
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

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
    MEMBER_SELECT,
    PACKAGE_COLUMNS,
    PAT_COLUMNS,
    PROJECT_FROM,
    TOKEN_TABLES,
    USER_COLUMNS,
    Decoding,
    Rows,
)

DEFAULT_POOL_SIZE = 10
CONNECT_TIMEOUT = 10.0  # seconds to open one connection before the store reports itself unavailable
COMMAND_TIMEOUT = 30.0  # seconds for one statement; a hung server becomes a 503, not a hung request
# pg_advisory_lock keys. The one-bigint and the two-int4 forms are separate lock spaces (PostgreSQL docs,
# "Advisory Locks"), so a package-name hash can never collide with the migration key. Advisory locks are
# per database: two gateways on two databases of one cluster do not wait for each other.
MIGRATION_LOCK = 0x6757_6479_7465_6B6E  # an arbitrary fixed key meaning "a gateway migrates this database"
PACKAGE_NAME_LOCK_CLASS = 0x676B_6E6D  # first int4 of the (class, hash) key of package-name claims

# Connection-level failures: the server is down, restarting, refusing us or out of resources → 503, never 500.
# (ConnectionDoesNotExistError, "connection was closed in the middle of operation", is a PostgresConnectionError.)
_OUTAGES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,  # admin shutdown, crash recovery, statement timeout
    asyncpg.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.InvalidAuthorizationSpecificationError,  # wrong password or user (pool reconnects log in again)
    asyncpg.InvalidCatalogNameError,  # the database does not exist
    asyncpg.ReadOnlySQLTransactionError,  # a write reached a standby (failover in progress)
    asyncpg.TransactionRollbackError,  # deadlock or serialization failure: the request may be retried
)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every bundled PostgreSQL migration, in order (numbered like the SQLite ones)."""
    return bundled("postgres")


def _ts(value: datetime | None) -> datetime | None:
    """asyncpg encodes datetime.min/max (aware or not) as -infinity/infinity and decodes those as *naive*
    datetime.min/max; every other timestamptz comes back aware in UTC. Make the two extremes aware too."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _affected(status: str) -> int:
    """Rows affected, from a command status such as 'UPDATE 1' or 'DELETE 3'."""
    return int(status.rsplit(" ", 1)[-1])


@contextmanager
def _conflict(message: str) -> Iterator[None]:
    """A violated constraint (unique, foreign key, check) is a Conflict with a domain message, like SQLite's."""
    try:
        yield
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise Conflict(message) from exc


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook. asyncpg always rolls back an open transaction first; its default reset then sends
    `RESET ALL; UNLISTEN *; CLOSE ALL; pg_advisory_unlock_all()`, a second round trip on every release (half the
    latency of a token lookup). This store leaves no session state behind: no SET, no cursors, no LISTEN (a
    listener needs a dedicated connection, not a pooled one), only transaction-scoped advisory locks besides the
    migration lock, which migrate() releases itself."""


class _Params:
    """Numbered placeholders ($1, $2, ...) for a statement assembled from optional clauses."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


_ROWS = Rows(Decoding(timestamp=_ts, ids=tuple, words=tuple))


@functools.lru_cache(maxsize=256)
def _numbered(sql: str) -> str:
    """A shared query's `?` placeholders as PostgreSQL's $1, $2, ... (store/queries.py: none is inside a literal)."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))


class PostgresStore(SharedQueries):
    """A bounded asyncpg pool; each write is one transaction on one pooled connection and clears the hot cache."""

    _records = _ROWS

    def __init__(self, dsn: str, *, pool_size: int = DEFAULT_POOL_SIZE, cache: TTLCache[Any] | None = None) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.dsn = dsn
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        # Hot-path reads (store/cache.py); every write transaction below clears it.
        self._cache: TTLCache[Any] = cache if cache is not None else TTLCache(DEFAULT_TTL)
        parts = urlsplit(dsn)
        # For messages and logs: where the database is, never who logs in with what password.
        self.where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
        self._password = unquote(parts.password) if parts.password else None

    async def open(self) -> PostgresStore:
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                reset=_keep_session,
            )
        except _OUTAGES as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL at {self.where}: {self._describe(exc)}") from exc
        return self

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable("database is not open")
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    # --- plumbing -------------------------------------------------------------------------------------------

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***")  # belt and braces: no driver message should hold it
        return text

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"PostgreSQL at {self.where} is unavailable: {self._describe(exc)}")

    @asynccontextmanager
    async def _tx(self, *, clears_cache: bool = True) -> AsyncIterator[asyncpg.Connection]:
        """A write transaction on one pooled connection: all or nothing, so a failed request leaves nothing.
        Audit and last-use writes pass clears_cache=False: nothing the hot-read cache holds must change at once."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                yield conn
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise Conflict("conflicts with existing data") from exc
        except _OUTAGES as exc:
            raise self._unavailable(exc) from exc
        finally:
            if clears_cache:
                self._cache.clear()

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        try:
            return list(await self.pool.fetch(sql, *args))
        except _OUTAGES as exc:
            raise self._unavailable(exc) from exc

    async def _fetchrow(self, sql: str, *args: Any) -> Any:
        try:
            return await self.pool.fetchrow(sql, *args)
        except _OUTAGES as exc:
            raise self._unavailable(exc) from exc

    async def _row(self, sql: str, *args: Any) -> Any:
        return await self._fetchrow(_numbered(sql), *args)

    async def _rows(self, sql: str, *args: Any) -> list[Any]:
        return await self._fetch(_numbered(sql), *args)

    async def _change(self, sql: str, *args: Any, clears_cache: bool = True) -> int:
        async with self._tx(clears_cache=clears_cache) as conn:
            status = await conn.execute(_numbered(sql), *args)
        return _affected(status)

    @staticmethod
    def _stamp(value: datetime) -> datetime:
        return value  # asyncpg encodes an aware datetime as timestamptz

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        try:
            return await self.pool.fetchval(sql, *args)
        except _OUTAGES as exc:
            raise self._unavailable(exc) from exc

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def schema_version(self) -> int:
        if await self._fetchval("SELECT to_regclass('schema_version')") is None:
            return 0
        return int(await self._fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))

    async def migrate(self) -> int:
        """Apply every migration newer than the schema version, each in its own transaction; return the version.

        Replicas starting together queue on a session advisory lock: the first migrates, the others then find
        the schema current. The lock is the connection's, so a replica that dies mid-migration releases it.
        """
        try:
            async with self.pool.acquire() as conn:
                await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
                try:
                    await conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY,"
                        " name text NOT NULL, applied_at timestamptz NOT NULL)"
                    )
                    current = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
                    for version, name, sql in migrations():
                        if version <= current:
                            continue
                        async with conn.transaction():
                            await conn.execute(sql)  # no arguments: the simple protocol runs every statement
                            await conn.execute(
                                "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, now())",
                                version,
                                name,
                            )
                        current = version
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        except _OUTAGES as exc:
            raise self._unavailable(exc) from exc
        finally:
            self._cache.clear()
        return current

    # --- users ------------------------------------------------------------------------------------------------

    async def create_user(
        self, *, username: str, name: str, email: str, password_hash: str | None, is_admin: bool, now: datetime
    ) -> User:
        async with self._tx() as conn:
            ns_id = await self._insert_namespace(
                conn, kind="user", name=name, path=username, parent=None, visibility="private", description="", now=now
            )
            with _conflict("Username has already been taken"):
                user_id = await conn.fetchval(
                    "INSERT INTO users (username, name, email, password_hash, is_admin, state, created_at,"
                    " namespace_id) VALUES ($1, $2, $3, $4, $5, 'active', $6, $7) RETURNING id",
                    username,
                    name,
                    email,
                    password_hash,
                    is_admin,
                    now,
                    ns_id,
                )
            await conn.execute("UPDATE namespaces SET owner_id = $1 WHERE id = $2", user_id, ns_id)
        user = await self.get_user(int(user_id))
        assert user is not None
        return user

    async def list_users(self, *, offset: int, limit: int, search: str | None = None) -> Page[User]:
        where, args = "", []
        if search:
            # LIKE wildcards in the search are literal; '\' is the escape (standard_conforming_strings).
            like = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where = (
                "WHERE lower(u.username) LIKE $1 ESCAPE '\\' OR lower(u.name) LIKE $1 ESCAPE '\\'"
                " OR lower(u.email) LIKE $1 ESCAPE '\\'"
            )
            args = [like]
        total = await self._fetchval(f"SELECT count(*) FROM users u {where}", *args)
        n = len(args)
        rows = await self._fetch(
            f"SELECT {USER_COLUMNS} FROM users u {where} ORDER BY u.id LIMIT ${n + 1} OFFSET ${n + 2}",
            *args,
            limit,
            offset,
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
        async with self._tx() as conn:
            with _conflict("token digest collision"):
                row = await conn.fetchrow(
                    "INSERT INTO personal_access_tokens (user_id, name, token_digest, scopes, expires_at, created_at)"
                    f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {PAT_COLUMNS}",
                    user_id,
                    name,
                    token_digest,
                    list(scopes),
                    expires_at,
                    now,
                )
        return _ROWS.personal_access_token(row)

    # --- namespaces and projects ------------------------------------------------------------------------------

    @staticmethod
    async def _insert_route(conn: asyncpg.Connection, path: str, kind: str, source_id: int) -> None:
        with _conflict("has already been taken"):
            await conn.execute(
                "INSERT INTO routes (path_lower, source_kind, source_id) VALUES (lower($1), $2, $3)",
                path,
                kind,
                source_id,
            )

    async def _insert_namespace(
        self,
        conn: asyncpg.Connection,
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
        with _conflict("has already been taken"):
            ns_id = int(
                await conn.fetchval(
                    "INSERT INTO namespaces (kind, name, path, full_path, parent_id, visibility, description,"
                    " created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                    kind,
                    name,
                    path,
                    full_path,
                    parent.id if parent else None,
                    visibility,
                    description,
                    now,
                )
            )
        traversal = [*parent.traversal_ids, ns_id] if parent else [ns_id]
        await conn.execute("UPDATE namespaces SET traversal_ids = $1 WHERE id = $2", traversal, ns_id)
        await self._insert_route(conn, full_path, "namespace", ns_id)
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
        async with self._tx() as conn:
            with _conflict("has already been taken"):
                project_id = int(
                    await conn.fetchval(
                        "INSERT INTO projects (namespace_id, name, path, full_path, visibility, description,"
                        " created_at, creator_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                        namespace_id,
                        name,
                        path,
                        full_path,
                        visibility,
                        description,
                        now,
                        creator_id,
                    )
                )
            await self._insert_route(conn, full_path, "project", project_id)
            if owner_id is not None:
                await self._insert_member(conn, "project", project_id, owner_id, 50, now)
        project = await self.get_project(project_id)
        assert project is not None
        return project

    async def delete_project(self, project_id: int) -> bool:
        async with self._tx() as conn:
            await conn.execute("DELETE FROM deploy_tokens WHERE project_id = $1", project_id)
            await conn.execute("DELETE FROM package_names WHERE project_id = $1", project_id)
            await conn.execute("DELETE FROM members WHERE source_kind = 'project' AND source_id = $1", project_id)
            await conn.execute("DELETE FROM routes WHERE source_kind = 'project' AND source_id = $1", project_id)
            status = await conn.execute("DELETE FROM projects WHERE id = $1", project_id)
        return _affected(status) > 0

    async def find_projects_by_paths(self, full_paths: Sequence[str]) -> list[Project]:
        if not full_paths:
            return []

        async def read(paths: list[str]) -> list[Project]:
            # The array is lowered once (an init plan); each element is then an index probe on lower(full_path).
            rows = await self._fetch(
                f"{PROJECT_FROM} WHERE lower(p.full_path) = ANY(ARRAY(SELECT lower(x) FROM unnest($1::text[]) x))",
                paths,
            )
            return [_ROWS.project(r) for r in rows]

        return await projects_by_paths(self._cache, full_paths, read)

    # --- memberships ------------------------------------------------------------------------------------------

    async def add_member(
        self, *, source_kind: SourceKind, source_id: int, user_id: int, access_level: int, now: datetime
    ) -> Member:
        async with self._tx() as conn:
            await self._insert_member(conn, source_kind, source_id, user_id, access_level, now)
        row = await self._fetchrow(
            f"{MEMBER_SELECT} WHERE m.source_kind = $1 AND m.source_id = $2 AND m.user_id = $3",
            source_kind,
            source_id,
            user_id,
        )
        return _ROWS.member(row)

    @staticmethod
    async def _insert_member(
        conn: asyncpg.Connection, source_kind: str, source_id: int, user_id: int, access_level: int, now: datetime
    ) -> None:
        with _conflict("Member already exists"):
            await conn.execute(
                "INSERT INTO members (source_kind, source_id, user_id, access_level, created_at)"
                " VALUES ($1, $2, $3, $4, $5)",
                source_kind,
                source_id,
                user_id,
                access_level,
                now,
            )

    async def access_levels(self, user_id: int, *, project_id: int | None, namespace_ids: Sequence[int]) -> list[int]:
        if project_id is None and not namespace_ids:
            return []
        key = ("levels", user_id, project_id, tuple(namespace_ids))
        if (hit := self._cache.get(key)) is not None:
            return list(hit)

        async def read() -> tuple[int, ...]:
            # One statement whatever the depth (a prepared plan is reused): the primary key (user_id, ...) finds
            # the user's few memberships; a NULL project_id matches no row.
            rows = await self._fetch(
                "SELECT access_level FROM members WHERE user_id = $1 AND ("
                "(source_kind = 'project' AND source_id = $2)"
                " OR (source_kind = 'namespace' AND source_id = ANY($3::bigint[])))",
                user_id,
                project_id,
                list(namespace_ids),
            )
            return tuple(int(r[0]) for r in rows)

        # "No membership" is kept too: it ages out like the rest.
        return list(await self._cache.load(key, read, keep=always))

    # --- deploy tokens ----------------------------------------------------------------------------------------

    async def create_deploy_token(self, new: NewDeployToken) -> DeployToken:
        async with self._tx() as conn:
            with _conflict("token digest collision or dangling holder"):
                row = await conn.fetchrow(
                    "INSERT INTO deploy_tokens (name, username, token_digest, token_encrypted, scopes, expires_at,"
                    " created_at, creator_id, project_id, group_id)"
                    f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {DT_COLUMNS}",
                    new.name,
                    new.custom_username,
                    new.token_digest,
                    new.token_encrypted,
                    list(new.scopes),
                    new.expires_at,
                    new.created_at,
                    new.creator_id,
                    new.project_id,
                    new.group_id,
                )
        return _ROWS.deploy_token(row)

    @staticmethod
    def _holder_filter(param: _Params, project_id: int | None, group_id: int | None, active_at: datetime | None) -> str:
        clauses: list[str] = []
        if project_id is not None:
            clauses.append(f"project_id = {param(project_id)}")
        if group_id is not None:
            clauses.append(f"group_id = {param(group_id)}")
        if active_at is not None:
            # The one rule of tokens.is_active, in SQL: not revoked and (no expiry or now < expires_at).
            clauses.append(f"NOT revoked AND (expires_at IS NULL OR {param(active_at)} < expires_at)")
        return (" WHERE " + " AND ".join(clauses)) if clauses else ""

    async def list_deploy_tokens(
        self,
        *,
        project_id: int | None = None,
        group_id: int | None = None,
        active_at: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> Page[DeployToken]:
        param = _Params()
        where = self._holder_filter(param, project_id, group_id, active_at)
        total = await self._fetchval(f"SELECT count(*) FROM deploy_tokens{where}", *param.values)
        page = f" ORDER BY id LIMIT {param(limit)} OFFSET {param(offset)}"
        rows = await self._fetch(f"SELECT {DT_COLUMNS} FROM deploy_tokens{where}{page}", *param.values)
        return Page([_ROWS.deploy_token(r) for r in rows], int(total))

    async def find_named_deploy_token(
        self, name: str, *, project_id: int | None = None, group_id: int | None = None, active_at: datetime
    ) -> DeployToken | None:
        param = _Params()
        where = self._holder_filter(param, project_id, group_id, active_at)
        row = await self._fetchrow(
            f"SELECT {DT_COLUMNS} FROM deploy_tokens{where} AND name = {param(name)} ORDER BY id DESC LIMIT 1",
            *param.values,
        )
        return _ROWS.deploy_token(row) if row else None

    # --- web UI sessions --------------------------------------------------------------------------------------

    async def create_web_session(
        self, *, session_digest: bytes, user_id: int, created_at: datetime, expires_at: datetime
    ) -> None:
        async with self._tx() as conn:
            with _conflict("session digest collision or unknown user"):
                await conn.execute(
                    "INSERT INTO web_sessions (session_digest, user_id, created_at, expires_at)"
                    " VALUES ($1, $2, $3, $4)",
                    session_digest,
                    user_id,
                    created_at,
                    expires_at,
                )

    # --- failed authentications per client address (gateway/bruteforce.py) -----------------------------------
    # The hot-read cache holds nothing of auth_failures: clearing it on each failure would let a guesser slow
    # every other client down.

    async def record_auth_failure(self, address: str, *, now: datetime, window_start_after: datetime) -> int:
        async with self._tx(clears_cache=False) as conn:
            # INSERT ... ON CONFLICT DO UPDATE locks the row: concurrent failures of one address from several
            # replicas are counted one after the other. SET expressions read the row as it was.
            failures = await conn.fetchval(
                "INSERT INTO auth_failures AS f (address, failures, window_start, updated_at) VALUES ($1, 1, $2, $2)"
                " ON CONFLICT (address) DO UPDATE SET"
                " failures = CASE WHEN f.window_start <= $3 THEN 1 ELSE f.failures + 1 END,"
                " window_start = CASE WHEN f.window_start <= $3 THEN $2 ELSE f.window_start END,"
                " updated_at = $2"
                " RETURNING failures",
                address,
                now,
                window_start_after,
            )
        return int(failures)

    async def ban_address(self, address: str, *, until: datetime, now: datetime) -> None:
        async with self._tx(clears_cache=False) as conn:
            await conn.execute(
                "INSERT INTO auth_failures (address, failures, window_start, updated_at, banned_until)"
                " VALUES ($1, 0, $2, $2, $3)"
                " ON CONFLICT (address) DO UPDATE SET failures = 0, window_start = $2, updated_at = $2,"
                " banned_until = $3",
                address,
                now,
                until,
            )

    async def clear_auth_failures(self, address: str, *, now: datetime, lift_ban: bool = False) -> bool:
        async with self._tx(clears_cache=False) as conn:
            status = await conn.execute(
                "DELETE FROM auth_failures WHERE address = $1 AND ($3 OR banned_until IS NULL OR banned_until <= $2)",
                address,
                now,
                lift_ban,
            )
        return _affected(status) > 0

    async def list_auth_failures(self, *, now: datetime, updated_since: datetime, limit: int) -> list[AuthFailures]:
        rows = await self._fetch(
            f"SELECT {AUTH_FAILURE_COLUMNS} FROM auth_failures"
            " WHERE banned_until > $1 OR updated_at > $2 ORDER BY updated_at DESC LIMIT $3",
            now,
            updated_since,
            limit,
        )
        return [_ROWS.auth_failures(r) for r in rows]

    async def delete_stale_auth_failures(self, *, now: datetime, updated_before: datetime) -> int:
        async with self._tx(clears_cache=False) as conn:
            status = await conn.execute(
                "DELETE FROM auth_failures WHERE updated_at < $1 AND (banned_until IS NULL OR banned_until <= $2)",
                updated_before,
                now,
            )
        return _affected(status)

    # --- package names ----------------------------------------------------------------------------------------

    async def claim_package_name(
        self, *, format: str, name: str, project_id: int, exclusive: bool, now: datetime
    ) -> int:
        async with self._tx() as conn:
            # The primary key (format, name, project_id) + ON CONFLICT makes one project's repeated claim an
            # atomic upsert. "No *other* project holds the name" is a predicate over other rows, which no unique
            # constraint can state while shared names are allowed, so the claims of one name queue on a
            # transaction advisory lock; under READ COMMITTED the next claimant's check then sees the winner.
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", PACKAGE_NAME_LOCK_CLASS, f"{format}/{name}"
            )
            if exclusive:
                other = await conn.fetchval(
                    "SELECT project_id FROM package_names WHERE format = $1 AND name = $2 AND project_id <> $3"
                    " ORDER BY created_at, project_id LIMIT 1",
                    format,
                    name,
                    project_id,
                )
                if other is not None:
                    return int(other)
            with _conflict("package name of an unknown project or format"):
                await conn.execute(
                    "INSERT INTO package_names (format, name, project_id, created_at, updated_at)"
                    " VALUES ($1, $2, $3, $4, $4)"
                    " ON CONFLICT (format, name, project_id) DO UPDATE SET updated_at = excluded.updated_at",
                    format,
                    name,
                    project_id,
                    now,
                )
        return project_id

    async def list_package_names(self, format: str, project_ids: Sequence[int]) -> list[PackageName]:
        if not project_ids:
            return []
        rows = await self._fetch(
            f"SELECT {PACKAGE_COLUMNS} FROM package_names WHERE format = $1 AND project_id = ANY($2::bigint[])"
            ' ORDER BY name COLLATE "C", project_id',  # byte order, as in SQLite, whatever the database's locale
            format,
            list(project_ids),
        )
        return [_ROWS.package_name(r) for r in rows]

    # --- audit trail and last use ----------------------------------------------------------------------------

    async def insert_audit_events(self, events: Sequence[NewAuditEvent]) -> None:
        if not events:
            return
        rows = [
            (e.created_at, e.author_id, e.entity_type, e.entity_id, e.event_name, json.dumps(e.details)) for e in events
        ]
        async with self._tx(clears_cache=False) as conn:
            await conn.executemany(
                "INSERT INTO audit_events (created_at, author_id, entity_type, entity_id, event_name, details)"
                " VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
                rows,
            )

    async def list_audit_events(self, query: AuditQuery, *, offset: int, limit: int) -> Page[AuditEvent]:
        param = _Params()
        clauses = [
            f"{column} {param(value)}"
            for column, value in (
                ("entity_type =", query.entity_type),
                ("entity_id =", query.entity_id),
                ("author_id =", query.author_id),
                ("created_at >=", query.created_after),
                ("created_at <=", query.created_before),
            )
            if value is not None
        ]
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        total = await self._fetchval(f"SELECT count(*) FROM audit_events{where}", *param.values)
        page = f" ORDER BY id DESC LIMIT {param(limit)} OFFSET {param(offset)}"
        rows = await self._fetch(
            f"SELECT {AUDIT_COLUMNS.replace('details', 'details::text')} FROM audit_events{where}{page}", *param.values
        )
        return Page([_ROWS.audit_event(r) for r in rows], int(total))

    async def get_audit_event(self, event_id: int) -> AuditEvent | None:
        row = await self._fetchrow(
            f"SELECT {AUDIT_COLUMNS.replace('details', 'details::text')} FROM audit_events WHERE id = $1", event_id
        )
        return _ROWS.audit_event(row) if row else None

    async def record_token_use(self, use: TokenUse, *, min_interval: float, keep_ips: int) -> bool:
        table = TOKEN_TABLES[use.kind]
        async with self._tx(clears_cache=False) as conn:
            # FOR UPDATE: two replicas flushing the same token merge their addresses one after the other.
            row = await conn.fetchrow(
                f"SELECT last_used_at, last_used_ips FROM {table} WHERE id = $1 FOR UPDATE", use.token_id
            )
            if row is None:
                return False
            stored = _ts(row[0])
            if stored is not None and (use.at - stored).total_seconds() < min_interval:
                return False
            ips = list(dict.fromkeys([*use.ips, *row[1]]))[:keep_ips]
            await conn.execute(
                f"UPDATE {table} SET last_used_at = $1, last_used_ips = $2 WHERE id = $3", use.at, ips, use.token_id
            )
            return True
