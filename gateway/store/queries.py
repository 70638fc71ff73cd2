"""The queries both databases answer alike, written once: SQL with `?` placeholders (the PostgreSQL store numbers
them), rows turned into records by store/rows.py; each store supplies the primitives declared abstract here."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, TypeVar

from gateway.errors import Conflict
from gateway.store.base import (
    DeployToken,
    Member,
    Namespace,
    PackageName,
    PersonalAccessToken,
    Project,
    SourceKind,
    User,
    UserState,
    Visibility,
    WebSession,
)
from gateway.store.cache import TTLCache, project_key
from gateway.store.rows import (
    DT_COLUMNS,
    MEMBER_SELECT,
    NS_COLUMNS,
    PACKAGE_COLUMNS,
    PAT_COLUMNS,
    PROJECT_FROM,
    USER_COLUMNS,
    Rows,
)

T = TypeVar("T")


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
    def _stamp(value: datetime) -> Any:
        """A timestamp as this database takes it as a parameter."""

    @abstractmethod
    def _tx(self, *, clears_cache: bool = True) -> AbstractAsyncContextManager[Any]:
        """A write transaction on one connection."""

    @abstractmethod
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

    @staticmethod
    @abstractmethod
    async def _insert_member(
        db: Any, source_kind: str, source_id: int, user_id: int, access_level: int, now: datetime
    ) -> None:
        """Insert a membership in the transaction of `db` (Conflict when it exists)."""

    async def _cached_row(self, key: Hashable, record: Callable[[Any], T], sql: str, *args: Any) -> T | None:
        """The record of one row through the hot-read cache (single flight); a miss is not kept, so that a row
        written by another process is found at once."""
        if (hit := self._cache.get(key)) is not None:
            return hit  # type: ignore[no-any-return]

        async def read() -> T | None:
            row = await self._row(sql, *args)
            return record(row) if row else None

        return await self._cache.load(key, read)  # type: ignore[no-any-return]

    async def get_user(self, user_id: int) -> User | None:
        sql = f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?"
        return await self._cached_row(("user", user_id), self._records.user, sql, user_id)

    async def get_user_by_username(self, username: str) -> User | None:
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

    async def get_namespace(self, namespace_id: int) -> Namespace | None:
        row = await self._row(f"SELECT {NS_COLUMNS} FROM namespaces n WHERE n.id = ?", namespace_id)
        return self._records.namespace(row) if row else None

    async def get_namespace_by_path(self, full_path: str) -> Namespace | None:
        row = await self._row(f"SELECT {NS_COLUMNS} FROM namespaces n WHERE lower(n.full_path) = lower(?)", full_path)
        return self._records.namespace(row) if row else None

    async def list_groups(self) -> list[Namespace]:
        rows = await self._rows(f"SELECT {NS_COLUMNS} FROM namespaces n WHERE n.kind = 'group' ORDER BY n.id")
        return [self._records.namespace(r) for r in rows]

    async def get_project(self, project_id: int) -> Project | None:
        row = await self._row(f"{PROJECT_FROM} WHERE p.id = ?", project_id)
        return self._records.project(row) if row else None

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
        rows = await self._rows(
            f"SELECT {PACKAGE_COLUMNS} FROM package_names"
            " WHERE format = ? AND name = ? ORDER BY updated_at DESC, project_id DESC",
            format,
            name,
        )
        return [self._records.package_name(r) for r in rows]

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

    async def delete_web_session(self, session_digest: bytes) -> bool:
        return await self._change("DELETE FROM web_sessions WHERE session_digest = ?", session_digest) > 0

    async def delete_expired_web_sessions(self, now: datetime) -> int:
        return await self._change("DELETE FROM web_sessions WHERE expires_at <= ?", self._stamp(now))

    async def purge_audit_events(self, before: datetime) -> int:
        # Audit rows are nothing the hot-read cache holds.
        return await self._change(
            "DELETE FROM audit_events WHERE created_at < ?", self._stamp(before), clears_cache=False
        )
