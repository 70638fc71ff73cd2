"""Rows to records for both databases: the column lists of every SELECT and the order the mappers read them in.

SQLite hands values over as text (timestamps, space-separated lists, `/`-joined ids), PostgreSQL in native types;
a `Decoding` names those three conversions, everything else is shared.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.store.base import (
    AuditEvent,
    AuthFailures,
    DeployToken,
    KeyHolder,
    Member,
    Namespace,
    PackageName,
    PersonalAccessToken,
    Project,
    User,
)

NS_COLUMNS = (
    "n.id, n.kind, n.name, n.path, n.full_path, n.parent_id, n.traversal_ids, n.visibility, n.description,"
    " n.created_at, n.owner_id"
)
USER_COLUMNS = "u.id, u.username, u.name, u.email, u.password_hash, u.is_admin, u.state, u.created_at, u.namespace_id"
PROJECT_COLUMNS = (
    "p.id, p.name, p.path, p.full_path, p.visibility, p.description, p.created_at, p.creator_id, " + NS_COLUMNS
)
PROJECT_FROM = f"SELECT {PROJECT_COLUMNS} FROM projects p JOIN namespaces n ON n.id = p.namespace_id"
DT_COLUMNS = (
    "id, name, username, scopes, expires_at, revoked, created_at, creator_id, project_id, group_id, token_encrypted,"
    " last_used_at, last_used_ips"
)
PAT_COLUMNS = "id, user_id, name, scopes, expires_at, revoked, created_at, last_used_at, last_used_ips"
AUDIT_COLUMNS = "id, created_at, author_id, entity_type, entity_id, event_name, details"
PACKAGE_COLUMNS = "format, name, project_id, created_at, updated_at"
AUTH_FAILURE_COLUMNS = "address, failures, window_start, updated_at, banned_until"
KEY_HOLDER_COLUMNS = "process, encryption_keys, registry_kid, seen_at"
MEMBER_COLUMNS = f"m.source_kind, m.source_id, m.access_level, m.created_at, {USER_COLUMNS}"
MEMBER_SELECT = f"SELECT {MEMBER_COLUMNS} FROM members m JOIN users u ON u.id = m.user_id"
# The table a kind of token lives in (record_token_use).
TOKEN_TABLES = {"deploy_token": "deploy_tokens", "personal_access_token": "personal_access_tokens"}


@dataclass(frozen=True)
class Decoding:
    """How one database hands over what it stores differently: a timestamp (None stays None), the namespace
    ancestry ids, and a list of words (token scopes, last-used addresses)."""

    timestamp: Callable[[Any], datetime | None]
    ids: Callable[[Any], tuple[int, ...]]
    words: Callable[[Any], tuple[str, ...]]


class Rows:
    """The record of each kind of row, read in the order of the column lists above."""

    def __init__(self, decoding: Decoding) -> None:
        self._ts, self._ids, self._words = decoding.timestamp, decoding.ids, decoding.words

    def timestamp(self, value: Any) -> datetime | None:
        return self._ts(value)

    def words(self, value: Any) -> tuple[str, ...]:
        return self._words(value)

    def must_ts(self, value: Any) -> datetime:
        parsed = self._ts(value)
        assert parsed is not None, "a NOT NULL timestamp column"
        return parsed

    def namespace(self, row: Sequence[Any]) -> Namespace:
        return Namespace(
            id=row[0],
            kind=row[1],
            name=row[2],
            path=row[3],
            full_path=row[4],
            parent_id=row[5],
            traversal_ids=self._ids(row[6]),
            visibility=row[7],
            description=row[8],
            created_at=self.must_ts(row[9]),
            owner_id=row[10],
        )

    def user(self, row: Sequence[Any]) -> User:
        return User(
            id=row[0],
            username=row[1],
            name=row[2],
            email=row[3],
            password_hash=row[4],
            is_admin=bool(row[5]),
            state=row[6],
            created_at=self.must_ts(row[7]),
            namespace_id=row[8],
        )

    def project(self, row: Sequence[Any]) -> Project:
        return Project(
            id=row[0],
            name=row[1],
            path=row[2],
            full_path=row[3],
            visibility=row[4],
            description=row[5],
            created_at=self.must_ts(row[6]),
            creator_id=row[7],
            namespace=self.namespace(row[8:]),
        )

    def member(self, row: Sequence[Any]) -> Member:
        return Member(
            source_kind=row[0],
            source_id=row[1],
            access_level=row[2],
            created_at=self.must_ts(row[3]),
            user=self.user(row[4:]),
        )

    def deploy_token(self, row: Sequence[Any]) -> DeployToken:
        return DeployToken(
            id=row[0],
            name=row[1],
            custom_username=row[2],
            scopes=self._words(row[3]),
            expires_at=self._ts(row[4]),
            revoked=bool(row[5]),
            created_at=self.must_ts(row[6]),
            creator_id=row[7],
            project_id=row[8],
            group_id=row[9],
            token_encrypted=row[10],
            last_used_at=self._ts(row[11]),
            last_used_ips=self._words(row[12]),
        )

    def personal_access_token(self, row: Sequence[Any]) -> PersonalAccessToken:
        return PersonalAccessToken(
            id=row[0],
            user_id=row[1],
            name=row[2],
            scopes=self._words(row[3]),
            expires_at=self._ts(row[4]),
            revoked=bool(row[5]),
            created_at=self.must_ts(row[6]),
            last_used_at=self._ts(row[7]),
            last_used_ips=self._words(row[8]),
        )

    def audit_event(self, row: Sequence[Any]) -> AuditEvent:
        return AuditEvent(
            id=row[0],
            created_at=self.must_ts(row[1]),
            author_id=row[2],
            entity_type=row[3],
            entity_id=row[4],
            event_name=row[5],
            details=json.loads(row[6]),  # text in SQLite; asyncpg hands jsonb over as text too
        )

    def package_name(self, row: Sequence[Any]) -> PackageName:
        return PackageName(
            format=row[0],
            name=row[1],
            project_id=row[2],
            created_at=self.must_ts(row[3]),
            updated_at=self.must_ts(row[4]),
        )

    def key_holder(self, row: Sequence[Any]) -> KeyHolder:
        return KeyHolder(process=row[0], encryption_keys=tuple(row[1].split()), registry_kid=row[2], age=float(row[3]))

    def auth_failures(self, row: Sequence[Any]) -> AuthFailures:
        return AuthFailures(
            address=row[0],
            failures=row[1],
            window_start=self.must_ts(row[2]),
            updated_at=self.must_ts(row[3]),
            banned_until=self._ts(row[4]),
        )
