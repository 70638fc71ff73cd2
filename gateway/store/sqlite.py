"""SQLite implementation of the Store protocol (aiosqlite, WAL, busy timeout, forward-only migrations)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

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

BUSY_TIMEOUT_MS = 5000


def ts(value: datetime | None) -> str | None:
    """Fixed-width UTC text, so that text comparison in SQL is time comparison (years 0001-9999)."""
    if value is None:
        return None
    v = value.astimezone(UTC)
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}Z"


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def parse_ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    # fromisoformat is C and reads the trailing Z since 3.11; strptime cost ~25 µs a call on the hot path.
    return datetime.fromisoformat(value)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every bundled migration, in order."""
    return bundled("sqlite")


_ROWS = Rows(
    Decoding(
        timestamp=parse_ts,
        ids=lambda text: tuple(int(x) for x in text.split("/")),
        words=lambda text: tuple(text.split()),
    )
)

# `gateway store copy` (store/copy.py): the columns SQLite keeps as text, and its 0/1 booleans.
_PORTABLE = copy.converter(
    {
        "ts": parse_ts,
        "bool": bool,
        "words": lambda text: tuple(text.split()),
        "ids": lambda text: tuple(int(x) for x in text.split("/") if x),
        "json": copy.decode_json,
    }
)
_STORED = copy.converter(
    {
        "ts": ts,
        "bool": int,
        "words": " ".join,
        "ids": lambda ids: "/".join(map(str, ids)),
        "json": copy.encode_json,
    }
)


class _CopySide:
    """One connection inside the copy's transaction (copy.Side)."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def batches(self, table: copy.Table) -> AsyncIterator[list[copy.Row]]:
        sql = f"SELECT {', '.join(table.names)} FROM {table.name} ORDER BY {table.key}"
        async with self.db.execute(sql) as cursor:
            while rows := await cursor.fetchmany(copy.BATCH):
                yield _PORTABLE(table, rows)

    async def count(self, table: copy.Table) -> int:
        rows = await self.db.execute_fetchall(f"SELECT count(*) FROM {table.name}")
        return int(next(iter(rows))[0])

    async def load(self, table: copy.Table, rows: Sequence[copy.Row]) -> None:
        marks = ", ".join("?" * len(table.columns))
        sql = f"INSERT INTO {table.name} ({', '.join(table.names)}) VALUES ({marks})"
        await self.db.executemany(sql, _STORED(table, rows))

    async def columns(self, name: str) -> tuple[str, ...]:
        return tuple(str(r[1]) for r in await self.db.execute_fetchall("SELECT * FROM pragma_table_info(?)", (name,)))

    async def id_positions(self, tables: Sequence[copy.Table]) -> dict[str, int]:
        # AUTOINCREMENT keeps the highest id ever handed out in sqlite_sequence (a table that never had a row: none).
        rows = await self.db.execute_fetchall("SELECT name, seq FROM sqlite_sequence")
        seen = {str(name): int(seq) for name, seq in rows}
        return {table.name: seen.get(table.name, 0) for table in tables if table.identity}

    async def set_id_positions(self, tables: Sequence[copy.Table], positions: Mapping[str, int]) -> None:
        for table in tables:
            if table.identity:
                # Never below an id just loaded: the next row must not collide with a copied one.
                await self.db.execute("DELETE FROM sqlite_sequence WHERE name = ?", (table.name,))
                await self.db.execute(
                    f"INSERT INTO sqlite_sequence (name, seq) SELECT ?, max(?, coalesce(max(id), 0)) FROM {table.name}",
                    (table.name, positions.get(table.name, 0)),
                )


class SQLiteStore(SharedQueries):
    """One aiosqlite connection; write transactions are serialised by a lock (SQLite has one writer anyway)."""

    _records = _ROWS

    def __init__(
        self,
        path: Path | str,
        *,
        cache: TTLCache[Any] | None = None,
        busy_timeout: float = BUSY_TIMEOUT_MS / 1000,
        immutable: bool = False,
    ) -> None:
        self.path = str(path)
        # A file nothing changes while it is open (a backup's snapshot): read where nothing may be written, as on
        # read-only storage, where SQLite could not create the -shm file a WAL database is otherwise read through.
        self.immutable = immutable
        # How long a statement waits for another process's lock before it fails (storage.busy_timeout) → 503.
        self.busy_timeout_ms = max(1, round(busy_timeout * 1000))
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        # Hot-path reads (store/cache.py); every write transaction below clears it.
        self._cache: TTLCache[Any] = cache if cache is not None else TTLCache(DEFAULT_TTL)

    async def open(self) -> SQLiteStore:
        if self.path != ":memory:" and not self.immutable:
            # The database holds token digests, password hashes, sessions and the encrypted CI secret: readable by
            # the gateway's user alone, as `gateway init` makes the data folder (a restore, a `store copy --to`, a
            # backup's snapshot create theirs here). SQLite gives its -wal and -shm files the database's mode.
            Path(self.path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        # https://sqlite.org/uri.html: immutable=1 reads the file without locks, journal or -shm, and never writes.
        where = Path(self.path).resolve().as_uri() + "?immutable=1" if self.immutable else self.path
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves so a write never upgrades a read lock.
            self._db = await aiosqlite.connect(
                where, isolation_level=None, timeout=self.busy_timeout_ms / 1000, uri=self.immutable
            )
            await self._db.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            if not self.immutable:
                await self._db.execute("PRAGMA journal_mode = WAL")
                await self._db.execute("PRAGMA synchronous = NORMAL")
            await self._db.execute("PRAGMA foreign_keys = ON")
            # SQLite's own lower() folds ASCII only: migration 0008 fills the lower-case keys of names that were
            # written before it with Python's str.lower, as the store writes every new one.
            await self._db.create_function("unicode_lower", 1, _unicode_lower, deterministic=True)
        except sqlite3.Error as exc:
            # The connection's thread is not a daemon: left open, it would keep the process from exiting (a
            # damaged file would hang `gateway serve` after its error instead of ending it).
            await self.close()
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
    async def _tx(
        self, *, clears_cache: bool = True, begin: str = "BEGIN IMMEDIATE"
    ) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction: all or nothing, so a failed request leaves nothing half-written. Audit and
        last-use writes pass clears_cache=False: they change nothing the hot-read cache must see at once.
        `begin="BEGIN"` (deferred) makes it a read snapshot instead (copy_transaction)."""
        async with self._write_lock:
            db = self.db
            try:
                await db.execute(begin)
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
        if not readable_args(params):
            return []
        # execute_fetchall is one hop to aiosqlite's thread; execute + fetch + close would be three (hot path).
        try:
            return list(await self.db.execute_fetchall(sql, params))
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # a damaged file: said in one line by the CLI, a 500 to a client
            raise StoreError(f"{self.path}: {exc}") from exc

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

    def _clock_sql(self, seconds_ago: str) -> str:
        # ts()'s fixed width (microseconds), so that text comparison stays time comparison.
        return f"strftime('%Y-%m-%dT%H:%M:%f', 'now', '-' || ({seconds_ago}) || ' seconds') || '000Z'"

    def _age_sql(self) -> str:
        return "(julianday('now') - julianday(seen_at)) * 86400.0"

    @staticmethod
    def _words(values: Sequence[str]) -> str:
        return " ".join(values)

    # How many of a search's first matches its plan is chosen by (FTS5 yields a phrase's matches in rowid order, and
    # stops where the LIMIT does: reading them costs little however many there are).
    SEARCH_PROBE = 500
    # The share of rows holding a term from which each row tested in the list's own order wins: the page and its
    # count stop after so many rows (COUNT_LIMIT matches at most), where the index yields every match before any
    # is sorted (100,000 users all named "User …": 1.3 ms against 40 to 88 ms; at 6 % of them, 18 ms against 10).
    SEARCH_DENSE = 0.25

    async def _contains_any(self, table: str, alias: str, keys: Sequence[str], term: str) -> tuple[str, list[Any]]:
        # The rows whose keys hold the term, looked up in the table's FTS5 trigram index (migration 0009): one
        # phrase of the term's trigrams, in those columns only, matches exactly the keys holding it (the index is
        # case-sensitive, keys and term both lowered already). Inside an FTS5 string only `"` is special (doubled);
        # the term has 3 characters or more, so it has a trigram to look up. Its first matches choose the plan.
        search = f"{table}_search"
        match = f"{{{' '.join(keys)}}} : " + '"' + term.replace('"', '""') + '"'
        probe = f"SELECT rowid FROM {search} WHERE {search} MATCH ? ORDER BY rowid LIMIT {self.SEARCH_PROBE}"
        ids = [row[0] for row in await self._rows(probe, match)]
        each, each_args = self._each_key(alias, keys, term)
        if len(ids) < self.SEARCH_PROBE:
            # Every match is known: those rows by their key, each tested again by the page's own statement (a row
            # renamed since is not listed; one made since is not, as if the list were read a moment earlier).
            return (f"({alias}.id IN ({','.join(map(str, ids))}) AND {each})", each_args) if ids else ("1 = 0", [])
        if len(ids) / (ids[-1] - ids[0] + 1) >= self.SEARCH_DENSE:
            return each, each_args  # a common term: the rows in the list's order, each tested
        return f"{alias}.id IN (SELECT rowid FROM {search} WHERE {search} MATCH ?)", [match]

    @staticmethod
    def _ids(values: Sequence[int]) -> str:
        return "/".join(map(str, values))

    async def _insert(self, db: aiosqlite.Connection, sql: str, *args: Any, conflict: str) -> int:
        try:
            cur = await db.execute(sql, args)
        except sqlite3.IntegrityError as exc:
            raise Conflict(conflict) from exc
        return int(cur.lastrowid or 0)

    async def _execute(self, db: aiosqlite.Connection, sql: str, *args: Any, conflict: str | None = None) -> int:
        try:
            cur = await db.execute(sql, args)
        except sqlite3.IntegrityError as exc:
            if conflict is None:
                raise
            raise Conflict(conflict) from exc
        return int(cur.rowcount)

    async def _execute_many(self, db: aiosqlite.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await db.executemany(sql, rows)

    async def _tx_row(self, db: aiosqlite.Connection, sql: str, *args: Any) -> Any:
        return next(iter(await db.execute_fetchall(sql, args)), None)

    async def _lock_package_name(self, db: aiosqlite.Connection, key: str) -> None:
        """Nothing to do: BEGIN IMMEDIATE holds the database's one write lock, so the claims of a name (their check
        and their insert) already run one after the other. No row lock either (_FOR_UPDATE)."""

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def integrity_problems(self) -> list[str]:
        """What SQLite's own check of the whole file (PRAGMA integrity_check: every page, index and constraint)
        finds wrong; none when it is whole."""
        return [str(row[0]) for row in await self._all("PRAGMA integrity_check") if row[0] != "ok"]

    async def schema_version(self) -> int:
        row = await self._one("SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'")
        if row is None:
            return 0
        row = await self._one("SELECT max(version) FROM schema_version")
        return int(row[0] or 0)

    async def migrate(self, *, upto: int | None = None) -> int:
        """Apply every migration newer than the schema version (up to `upto`: a copy of an earlier release's
        database, store/copy.py), all in one transaction; return the version."""
        # A database already at this release's schema is only read: a command that merely reads (ci-variables,
        # users tokens) works while another process holds the write lock (found by a review).
        current = await self.schema_version()
        refuse_newer(current, migrations())
        wanted = migrations()[-1][0] if upto is None else min(upto, migrations()[-1][0])
        if current and current >= wanted:
            return current
        async with self._write_lock:
            db = self.db
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"database is busy: {exc}") from exc
            try:
                await db.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                    " applied_at TEXT NOT NULL)"
                )
                async with db.execute("SELECT coalesce(max(version), 0) FROM schema_version") as cur:
                    row = await cur.fetchone()
                current = int(row[0]) if row else 0
                refuse_newer(current, migrations())
                for version, name, sql in migrations():
                    if version <= current or (upto is not None and version > upto):
                        continue
                    # executescript would COMMIT our transaction; run statement by statement instead.
                    for statement in _statements(sql):
                        await db.execute(statement)
                    await db.execute(
                        "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                        (version, name, ts(datetime.now(UTC))),
                    )
                    current = version
            except BaseException as exc:
                with suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise StoreUnavailable(f"database error: {exc}") from exc
                raise
            await db.execute("COMMIT")
            return current

    @asynccontextmanager
    async def copy_transaction(self, *, write: bool) -> AsyncIterator[copy.Side]:
        """Reading: a snapshot (WAL readers see the database as of their first read, whatever commits meanwhile).
        Writing: one transaction, committed only if the whole copy succeeded."""
        async with self._tx(begin="BEGIN IMMEDIATE" if write else "BEGIN") as db:
            try:
                yield _CopySide(db)
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"a copied row breaks a constraint: {exc}") from exc
            except sqlite3.Error as exc:
                if isinstance(exc, sqlite3.OperationalError):
                    raise  # _tx: the database's trouble (503)
                raise StoreError(f"SQLite refused a copied row: {exc}") from exc

    # --- what the databases answer differently (queries.py has the rest) ------------------------------------

    async def find_projects_by_paths(self, full_paths: Sequence[str]) -> list[Project]:
        if not full_paths:
            return []

        async def read(paths: list[str]) -> list[Project]:
            marks = ", ".join("lower(?)" for _ in paths)
            rows = await self._all(f"{PROJECT_FROM} WHERE lower(p.full_path) IN ({marks})", paths)
            return [_ROWS.project(r) for r in rows]

        return await projects_by_paths(self._cache, full_paths, read)

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
        if (hit := self._cache.fresh(key)) is not None:
            return list(hit)

        async def read() -> tuple[int, ...]:
            rows = await self._all(
                f"SELECT access_level FROM members WHERE user_id = ? AND ({' OR '.join(clauses)})", params
            )
            return tuple(int(r[0]) for r in rows)

        # "No membership" is kept too: it ages out like the rest.
        return list(await self._cache.load(key, read, keep=always))

    async def list_projects_in(self, namespace_ids: Sequence[int]) -> list[Project]:
        if not namespace_ids:
            return []
        marks = ", ".join("?" for _ in namespace_ids)
        rows = await self._all(f"{PROJECT_FROM} WHERE p.namespace_id IN ({marks}) ORDER BY p.id", list(namespace_ids))
        return [_ROWS.project(r) for r in rows]

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


def _statements(sql: str) -> list[str]:
    """Split a migration into statements, as SQLite's own parser ends them (sqlite3.complete_statement: a trigger's
    body holds ';' of its own); our migrations keep "--" out of literals."""
    statements, pending = [], ""
    for line in sql.splitlines():
        pending += line.split("--", 1)[0] + "\n"
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete statement at the end of a migration: {pending.strip()[:80]}")
    return statements
