"""PostgreSQL implementation of the Store protocol: a bounded asyncpg pool, forward-only migrations that run once
under an advisory lock when several replicas start together, the same hot-read cache as SQLite (store/cache.py).
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from gateway.errors import Conflict, StoreError, StoreUnavailable
from gateway.store import copy
from gateway.store.base import (
    PackageName,
    Project,
    readable_args,
)
from gateway.store.cache import DEFAULT_TTL, TTLCache, always, projects_by_paths
from gateway.store.migrations import bundled, refuse_newer
from gateway.store.queries import SharedQueries
from gateway.store.rows import (
    PACKAGE_COLUMNS,
    PROJECT_FROM,
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


# Migration 0008's search keys (store/queries.py _lower): the columns each table's keys lower.
_SEARCH_KEYS = {
    "users": ("username", "name", "email"),
    "namespaces": ("name", "path"),
    "projects": ("name", "path", "description"),
}
SEARCH_KEY_BATCH = 10_000  # rows per UPDATE: 100,000 users in ten statements, not a round trip per row


async def _fill_search_keys(conn: asyncpg.Connection) -> None:
    """The keys of the rows written before migration 0008 (or copied in at an earlier schema, store/copy.py), lowered
    by Python's str.lower as the store lowers new ones. SQL's lower() folds as the database's locale does (ASCII only
    under "C") or as ICU does: either may differ from Python's, and such a row would not be found by a search."""
    for table, columns in _SEARCH_KEYS.items():
        names = ", ".join(columns)
        arrays = ", ".join(f"${i}::text[]" for i in range(2, len(columns) + 2))
        keys = ", ".join(f"{column}_lower = k.{column}" for column in columns)
        update = f"UPDATE {table} t SET {keys} FROM unnest($1::bigint[], {arrays}) AS k(id, {names}) WHERE t.id = k.id"
        # Down the primary key from where the last batch ended. (Not a cursor: its portal stays open until the
        # transaction ends, and PostgreSQL then refuses the ALTER TABLE that follows on a table "in use".)
        read = f"SELECT id, {names} FROM {table} WHERE id > $1 ORDER BY id LIMIT {SEARCH_KEY_BATCH}"
        last = await conn.fetchval(f"SELECT min(id) - 1 FROM {table}")
        while last is not None and (rows := await conn.fetch(read, last)):
            lowered = ([row[i].lower() for row in rows] for i in range(1, len(columns) + 1))
            await conn.execute(update, [row[0] for row in rows], *lowered)
            last = rows[-1][0]


# A migration's steps that only Python can take, each run in the migration's transaction where its SQL has a line
# `-- python: <step>`: after the statements above that line, before those below it.
_STEPS: dict[str, Callable[[asyncpg.Connection], Awaitable[None]]] = {"fill_search_keys": _fill_search_keys}
_STEP = re.compile(r"^-- python: (\w+)$", re.MULTILINE)


async def _apply(conn: asyncpg.Connection, sql: str) -> None:
    """Run one migration's SQL and Python steps, in order, inside the caller's transaction."""
    for i, part in enumerate(_STEP.split(sql)):  # SQL, a step's name, SQL, ...
        if i % 2:
            await _STEPS[part](conn)
        elif any(line.strip() and not line.lstrip().startswith("--") for line in part.splitlines()):
            # No arguments: the simple protocol runs every statement. (A part of comments only is skipped:
            # asyncpg fails on the empty response PostgreSQL gives it.)
            await conn.execute(part)


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


_ROWS = Rows(Decoding(timestamp=_ts, ids=tuple, words=tuple))

# `gateway store copy` (store/copy.py): asyncpg speaks the portable types but for arrays (lists) and jsonb (text).
_PORTABLE = copy.converter({"ts": _ts, "words": tuple, "ids": tuple, "json": copy.decode_json})
_STORED = copy.converter({"words": list, "ids": list, "json": copy.encode_json})


# The GIN indexes of the schema that take rows in one by one, each name quoted as an identifier.
_GIN_ONE_BY_ONE = (
    "SELECT quote_ident(c.relname) FROM pg_class c JOIN pg_am a ON a.oid = c.relam"
    " WHERE c.relkind = 'i' AND a.amname = 'gin' AND c.relnamespace = current_schema()::regnamespace"
    " AND 'fastupdate=off' = ANY (c.reloptions)"
)


class _CopySide:
    """One pooled connection inside the copy's transaction (copy.Side)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def batches(self, table: copy.Table) -> AsyncIterator[list[copy.Row]]:
        sql = f"SELECT {', '.join(table.names)} FROM {table.name} ORDER BY {table.key}"
        cursor = await self.conn.cursor(sql)
        while records := await cursor.fetch(copy.BATCH):
            yield _PORTABLE(table, records)

    async def count(self, table: copy.Table) -> int:
        return int(await self.conn.fetchval(f"SELECT count(*) FROM {table.name}"))

    async def load(self, table: copy.Table, rows: Sequence[copy.Row]) -> None:
        # COPY writes the given ids into `GENERATED ALWAYS` identity columns, as INSERT ... OVERRIDING SYSTEM VALUE
        # would (PostgreSQL docs, COPY), and is the fastest way in.
        await self.conn.copy_records_to_table(table.name, records=_STORED(table, rows), columns=list(table.names))

    async def _sequence(self, table: copy.Table) -> str:
        return str(await self.conn.fetchval("SELECT pg_get_serial_sequence($1, 'id')", table.name))

    async def columns(self, name: str) -> tuple[str, ...]:
        rows = await self.conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = $1 ORDER BY ordinal_position",
            name,
        )
        return tuple(str(r[0]) for r in rows)

    async def id_positions(self, tables: Sequence[copy.Table]) -> dict[str, int]:
        positions = {}
        for table in tables:
            if table.identity:
                row = await self.conn.fetchrow(f"SELECT last_value, is_called FROM {await self._sequence(table)}")
                # A sequence nothing was drawn from yet holds its start (1) uncalled: position 0.
                positions[table.name] = int(row["last_value"]) - (0 if row["is_called"] else 1)
        return positions

    async def set_id_positions(self, tables: Sequence[copy.Table], positions: Mapping[str, int]) -> None:
        for table in tables:
            if table.identity:
                # Never below an id just loaded: the next row must not collide with a copied one.
                top = max(
                    positions.get(table.name, 0),
                    int(await self.conn.fetchval(f"SELECT coalesce(max(id), 0) FROM {table.name}")),
                )
                if top > 0:
                    await self.conn.execute("SELECT setval($1::regclass, $2)", await self._sequence(table), top)


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

    async def open(self, *, connect: bool = True) -> PostgresStore:
        """Connect the pool; without `connect`, an empty pool whose connections are made as requests need them (a
        worker started while PostgreSQL is down answers 503 until it is back, as the others do)."""
        try:
            self._pool = await self._create_pool(min_size=1 if connect else 0)
        except _OUTAGES as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL at {self.where}: {self._describe(exc)}") from exc
        return self

    async def _create_pool(self, *, min_size: int) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            self.dsn,
            min_size=min_size,
            max_size=self.pool_size,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
            reset=_keep_session,
        )

    @staticmethod
    def _contains(column: str, term: str) -> tuple[str, list[Any]]:
        # A LIKE, which a trigram index serves (migration 0008; strpos could not use one), its pattern written into
        # the statement: as a parameter, the generic plan PostgreSQL settles on after five calls cannot tell how few
        # rows it matches, and walks the whole table down the list's order instead (15 ms, not 2, at 100,000
        # users). An E'' literal: its escapes mean the same whatever standard_conforming_strings says; LIKE's own
        # wildcards in the term are escaped first, to be sought as themselves; a `?` is written as \x3f, which the
        # placeholder numbering (_numbered) does not see. The text is storable (no NUL).
        pattern = "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        literal = pattern.replace("\\", "\\\\").replace("'", "''").replace("?", "\\x3f")
        return f"{column} LIKE E'{literal}'", []

    # The values read once, as an array, and each row found by its index: for `IN (SELECT …)` the planner guesses
    # the size of the set, and at a few thousand rows it would rather scan the whole table than look a few up.
    _AMONG = "{0} = ANY (ARRAY({1}))"

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
        if not readable_args(args):
            return []
        try:
            return list(await self.pool.fetch(sql, *args))
        except _OUTAGES as exc:
            raise self._unavailable(exc) from exc

    async def _fetchrow(self, sql: str, *args: Any) -> Any:
        if not readable_args(args):
            return None
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

    def _clock_sql(self, seconds_ago: str) -> str:
        return f"now() - make_interval(secs => {seconds_ago})"

    def _age_sql(self) -> str:
        return "extract(epoch FROM now() - seen_at)"

    @staticmethod
    def _stamp(value: datetime | None) -> datetime | None:
        return value  # asyncpg encodes an aware datetime as timestamptz

    @staticmethod
    def _words(values: Sequence[str]) -> list[str]:
        return list(values)  # text[]

    @staticmethod
    def _ids(values: Sequence[int]) -> list[int]:
        return list(values)  # bigint[]

    async def _insert(self, db: asyncpg.Connection, sql: str, *args: Any, conflict: str) -> int:
        with _conflict(conflict):
            return int(await db.fetchval(_numbered(sql + " RETURNING id"), *args))

    async def _execute(self, db: asyncpg.Connection, sql: str, *args: Any, conflict: str | None = None) -> int:
        if conflict is None:
            return _affected(await db.execute(_numbered(sql), *args))
        with _conflict(conflict):
            return _affected(await db.execute(_numbered(sql), *args))

    async def _execute_many(self, db: asyncpg.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await db.executemany(_numbered(sql), rows)

    async def _tx_row(self, db: asyncpg.Connection, sql: str, *args: Any) -> Any:
        return await db.fetchrow(_numbered(sql), *args)

    async def _lock_package_name(self, db: asyncpg.Connection, key: str) -> None:
        # Under READ COMMITTED the next claimant's check, once it holds the lock, sees the winner's row.
        await db.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", PACKAGE_NAME_LOCK_CLASS, key)

    _FOR_UPDATE = " FOR UPDATE"

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

    async def migrate(self, *, upto: int | None = None) -> int:
        """Apply every migration newer than the schema version (up to `upto`: a copy of an earlier release's
        database, store/copy.py), each in its own transaction; return the version.

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
                    refuse_newer(current, migrations())
                    for version, name, sql in migrations():
                        if version <= current or (upto is not None and version > upto):
                            continue
                        async with conn.transaction():
                            await _apply(conn, sql)
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

    @staticmethod
    @asynccontextmanager
    async def loading(conn: asyncpg.Connection) -> AsyncIterator[None]:
        """A bulk load inside `conn`'s writing transaction. The trigram indexes take rows in one by one (fastupdate
        off, migration 0009): for a bulk load they gather them in GIN's pending list instead, merged in bulk as it
        fills and once at the end (100,000 users: 4.6 s, not 13.8). Inside the transaction: a failed load leaves the
        option as it was."""
        merged = [r[0] for r in await conn.fetch(_GIN_ONE_BY_ONE)]
        for index in merged:
            await conn.execute(f"ALTER INDEX {index} SET (fastupdate = on)")
        yield
        for index in merged:
            await conn.execute(f"SELECT gin_clean_pending_list('{index}'::regclass)")
            await conn.execute(f"ALTER INDEX {index} SET (fastupdate = off)")

    @asynccontextmanager
    async def copy_transaction(self, *, write: bool) -> AsyncIterator[copy.Side]:
        """Reading: one REPEATABLE READ snapshot, whatever commits meanwhile. Writing: one transaction, committed
        only if the whole copy succeeded."""
        try:
            async with (
                self.pool.acquire() as conn,
                conn.transaction(isolation=None if write else "repeatable_read", readonly=not write),
            ):
                async with self.loading(conn) if write else nullcontext():
                    yield _CopySide(conn)
                if write:
                    # Planner statistics for the loaded rows now, not when autovacuum next comes by: until then the
                    # planner takes the tables for empty and may scan what it would look up (page_projects).
                    await conn.execute("ANALYZE")
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise Conflict(f"a copied row breaks a constraint: {self._describe(exc)}") from exc
        except _OUTAGES as exc:
            raise self._unavailable(exc) from exc
        except asyncpg.PostgresError as exc:
            # A value PostgreSQL cannot hold that SQLite could (a NUL in text): the copy stops, nothing is written.
            raise StoreError(f"PostgreSQL refused a copied row: {self._describe(exc)}") from exc
        finally:
            self._cache.clear()

    # --- what the databases answer differently (queries.py has the rest) ------------------------------------

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

    async def access_levels(self, user_id: int, *, project_id: int | None, namespace_ids: Sequence[int]) -> list[int]:
        if project_id is None and not namespace_ids:
            return []
        key = ("levels", user_id, project_id, tuple(namespace_ids))
        if (hit := self._cache.fresh(key)) is not None:
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

    async def list_projects_in(self, namespace_ids: Sequence[int]) -> list[Project]:
        if not namespace_ids:
            return []
        rows = await self._fetch(
            f"{PROJECT_FROM} WHERE p.namespace_id = ANY($1::bigint[]) ORDER BY p.id", list(namespace_ids)
        )
        return [_ROWS.project(r) for r in rows]

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
