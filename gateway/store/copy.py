"""Copy every row of one store into a new, empty one (`gateway store copy`): SQLite to PostgreSQL when a team
outgrows one machine, or back. Ids, digests and id sequences carry over, so every token keeps working unchanged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from gateway.errors import StoreError

# How a column's value travels between the two databases (store/rows.py has the same split for records): SQLite
# keeps timestamps, word lists and ancestry ids as text, PostgreSQL in native types. A portable row holds Python
# values: int, str, bool, aware datetime, bytes, tuple of words, tuple of ids, a decoded JSON value.
Kind = Literal["int", "text", "bool", "ts", "bytes", "words", "ids", "json"]
Row = tuple[Any, ...]
BATCH = 5000  # rows per read and per write: memory stays flat whatever the size of the database


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, Kind], ...]
    key: str  # ORDER BY: a stable order, parents before children (an id is handed out after its parent's)
    identity: bool = False  # `id` comes from a sequence whose position must carry over (never reuse a deleted id)
    copied: bool = True  # False: the state of the processes running on the source, which a copy does not run

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)


def _table(name: str, key: str, columns: str, *, identity: bool = False, copied: bool = True) -> Table:
    """A table from its `column:kind` list (kind int unless given)."""
    parsed = []
    for spec in columns.split():
        column, _, kind = spec.partition(":")
        parsed.append((column, kind or "int"))
    return Table(name, tuple(parsed), key, identity, copied)  # type: ignore[arg-type]


# Every table of the schema (migrations 0001-0009) but schema_version, in foreign-key order; not SQLite's search
# indexes, which its triggers fill as rows are loaded. A new migration that adds a table or a column must add it here:
# tests/store/test_copy.py compares this list with both schemas.
TABLES: tuple[Table, ...] = (
    _table(
        "namespaces",
        "id",
        "id kind:text name:text path:text full_path:text parent_id traversal_ids:ids visibility:text"
        " description:text created_at:ts owner_id name_lower:text path_lower:text",
        identity=True,
    ),
    _table(
        "users",
        "id",
        "id username:text name:text email:text password_hash:text is_admin:bool state:text created_at:ts namespace_id"
        " username_lower:text name_lower:text email_lower:text",
        identity=True,
    ),
    _table(
        "projects",
        "id",
        "id namespace_id name:text path:text full_path:text visibility:text description:text created_at:ts creator_id"
        " name_lower:text path_lower:text description_lower:text",
        identity=True,
    ),
    _table("routes", "path_lower", "path_lower:text source_kind:text source_id"),
    _table(
        "members",
        "user_id, source_kind, source_id",
        "source_kind:text source_id user_id access_level created_at:ts",
    ),
    _table(
        "personal_access_tokens",
        "id",
        "id user_id name:text token_digest:bytes scopes:words expires_at:ts revoked:bool created_at:ts"
        " last_used_at:ts last_used_ips:words",
        identity=True,
    ),
    _table(
        "deploy_tokens",
        "id",
        "id name:text username:text token_digest:bytes token_encrypted:bytes scopes:words expires_at:ts revoked:bool"
        " created_at:ts creator_id project_id group_id last_used_at:ts last_used_ips:words",
        identity=True,
    ),
    _table("package_names", "format, name, project_id", "format:text name:text project_id created_at:ts updated_at:ts"),
    _table("web_sessions", "session_digest", "session_digest:bytes user_id created_at:ts expires_at:ts"),
    _table(
        "auth_failures",
        "address",
        "address:text failures window_start:ts updated_at:ts banned_until:ts",
    ),
    _table(
        "audit_events",
        "id",
        "id created_at:ts author_id entity_type:text entity_id event_name:text details:json",
        identity=True,
    ),
    # Last: added by migration 0010, after every table an earlier release may hold. Not copied: the processes that
    # reported do not run on the copy (a restored installation listed the old machine's as live, then as quiet for
    # a day, and a rotation step there could wait on them: found by a README walkthrough).
    _table("key_holders", "process", "process:text encryption_keys:text registry_kid:text seen_at:ts", copied=False),
)


def converter(kinds: Mapping[Kind, Callable[[Any], Any]]) -> Callable[[Table, Iterable[Sequence[Any]]], list[Row]]:
    """A converter of a batch of rows from one conversion per kind (a kind not named passes unchanged); None stays
    None. Only the columns that change are touched: a million rows must not pay a call per value."""
    plans: dict[Table, list[tuple[int, Callable[[Any], Any]]]] = {}

    def convert(table: Table, rows: Iterable[Sequence[Any]]) -> list[Row]:
        plan = plans.get(table)  # by the whole table: an earlier schema's has fewer columns
        if plan is None:
            plan = plans[table] = [(i, kinds[kind]) for i, (_, kind) in enumerate(table.columns) if kind in kinds]
        out: list[Row] = []
        for row in rows:
            values = list(row)
            for i, change in plan:
                if (value := values[i]) is not None:
                    values[i] = change(value)
            out.append(tuple(values))
        return out

    return convert


def decode_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def encode_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class Side(Protocol):
    """One store inside one transaction of the copy: a snapshot to read, or the target's all-or-nothing write."""

    async def columns(self, name: str) -> tuple[str, ...]: ...  # the table's columns; none: no such table
    def batches(self, table: Table) -> AsyncIterator[list[Row]]: ...
    async def count(self, table: Table) -> int: ...
    async def load(self, table: Table, rows: Sequence[Row]) -> None: ...
    async def id_positions(self, tables: Sequence[Table]) -> dict[str, int]: ...
    async def set_id_positions(self, tables: Sequence[Table], positions: Mapping[str, int]) -> None: ...


class Copyable(Protocol):
    async def migrate(self, *, upto: int | None = None) -> int: ...
    async def schema_version(self) -> int: ...
    def copy_transaction(self, *, write: bool) -> AbstractAsyncContextManager[Side]: ...


@dataclass(frozen=True)
class Copied:
    rows: dict[str, int]  # table → rows copied
    id_positions: dict[str, int]  # table → highest id ever handed out, now the target's too
    found: int  # the source's schema version: the rows were copied at it
    version: int  # the target's after the copy: later than `found` when the source is an earlier release's


class NotEmpty(StoreError):
    """The target already holds data: the copy never merges into, or overwrites, a database in use."""


class SchemaMismatch(StoreError):
    """The two databases cannot be copied one into the other at the same schema version."""


async def schema_tables(side: Side) -> list[Table]:
    """TABLES as they are in `side`'s database: an earlier release's schema lacks the tables and columns that later
    migrations add (migrations only ever add them, never drop or rename, so each is a part of TABLES)."""
    tables = []
    for table in TABLES:
        held = set(await side.columns(table.name))
        if held - set(table.names):
            unknown = ", ".join(sorted(held - set(table.names)))
            raise SchemaMismatch(f"{table.name}: columns this gateway does not know: {unknown}")
        if held:
            columns = tuple(c for c in table.columns if c[0] in held)
            tables.append(Table(table.name, columns, table.key, table.identity, table.copied))
    return tables


async def copy_store(
    source: Copyable, target: Copyable, *, progress: Callable[[str, int], None] | None = None
) -> Copied:
    """Copy every row of `source` into `target`, which is migrated first and must be empty.

    One snapshot of the source (writes made meanwhile are not copied, and never half of one) and one transaction
    on the target: a failure leaves the target as empty as it was. `progress(table, rows)` after each table.

    A source of an earlier release is copied as it is, into a target migrated only as far as the source's schema;
    the target is then migrated the rest of the way, as `gateway migrate` would have migrated the source itself.
    So the source is only ever read (an old backup, a database on read-only storage, an old installation's
    PostgreSQL), and each later migration fills what it adds (migration 0008's search keys) on the target.
    """
    found = await source.schema_version()
    if found == 0:
        raise SchemaMismatch("the source database holds no gateway schema: nothing to copy (check storage.database)")
    at = await target.migrate(upto=found)
    if at < found:
        raise SchemaMismatch(
            f"the source database is at schema version {found}, newer than this gateway's {at}:"
            " copy it with the newer gateway"
        )
    if at > found:
        raise SchemaMismatch(
            f"the target database is already at schema version {at}, the source at {found}: copy into a new database"
            " (do not run `gateway init` or `gateway migrate` on it first), or run `gateway migrate` on the source"
        )
    counts: dict[str, int] = {}
    async with source.copy_transaction(write=False) as src, target.copy_transaction(write=True) as dst:
        tables = await schema_tables(src)
        if tables != await schema_tables(dst):
            raise SchemaMismatch(f"the two databases differ at schema version {found}: was either changed by hand?")
        for table in tables:
            if held := await dst.count(table):
                raise NotEmpty(
                    f"the target database is not empty ({table.name}: {held} rows): copy only into a new database"
                    " (do not run `gateway init` on it first)"
                )
        for table in (t for t in tables if t.copied):
            copied = 0
            async for batch in src.batches(table):
                await dst.load(table, batch)
                copied += len(batch)
            # Read back inside the same transaction: a row silently dropped would fail here, not in production.
            if (landed := await dst.count(table)) != copied:
                raise StoreError(f"{table.name}: {copied} rows read but {landed} written")
            counts[table.name] = copied
            if progress is not None:
                progress(table.name, copied)
        positions = await src.id_positions(tables)
        await dst.set_id_positions(tables, positions)
    try:
        version = await target.migrate()
    except StoreError as exc:
        # The rows are in, at the source's schema: what is left is what `gateway migrate` does on any installation.
        raise StoreError(
            f"the rows were copied at schema version {found}, but migrating them on: {exc};"
            " `gateway migrate` on the target finishes it"
        ) from exc
    return Copied(counts, positions, found, version)
