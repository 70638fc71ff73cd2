"""A builder of test worlds (users, groups, projects, memberships, tokens) through the domain functions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway import repositories, tokens, users
from gateway.clock import FixedClock
from gateway.config import Config
from gateway.secretbox import SecretBox
from gateway.store.base import Namespace, Project, Store, User, Visibility
from gateway.tokens import Holder
from gateway.users import AccessLevel, PasswordHasher

# GitLab's answer to a personal access token that lacks a scope (api_guard.rb, RFC 6750 §3.1), as the API sends it.
INSUFFICIENT_API_SCOPE = {
    "error": "insufficient_scope",
    "error_description": "The request requires higher privileges than provided by the access token.",
    "scope": "api",
}


@dataclass(frozen=True)
class Actor:
    user: User
    pat: str  # an `api` personal access token
    password: str

    @property
    def headers(self) -> dict[str, str]:
        return {"PRIVATE-TOKEN": self.pat}


class World:
    def __init__(self, store: Store, clock: FixedClock, box: SecretBox, hasher: PasswordHasher, config: Config):
        self.store, self.clock, self.box, self.hasher, self.config = store, clock, box, hasher, config

    async def user(
        self, username: str, *, admin: bool = False, scopes: tuple[str, ...] = ("api",), password: str | None = None
    ) -> Actor:
        password = password or f"pw-{username}-secret"
        user = await users.create_user(
            self.store,
            self.hasher,
            username=username,
            email=f"{username}@example.com",
            password=password,
            is_admin=admin,
            now=self.clock.now(),
        )
        pat = await users.create_pat(
            self.store, user=user, name="test", scopes=scopes, expires_at=None, now=self.clock.now()
        )
        return Actor(user, pat.secret, password)

    async def group(self, path: str, parent: Namespace | None = None, visibility: Visibility = "private") -> Namespace:
        return await self.store.create_group(
            name=path.capitalize(),
            path=path,
            parent_id=parent.id if parent else None,
            visibility=visibility,
            description="",
            now=self.clock.now(),
        )

    async def project(self, path: str, namespace: Namespace, visibility: Visibility = "private") -> Project:
        project = await self.store.create_project(
            namespace_id=namespace.id,
            name=path,
            path=path,
            visibility=visibility,
            description="",
            creator_id=None,
            now=self.clock.now(),
        )
        await repositories.create_bare(self.config, project.full_path)
        return project

    async def member(self, actor: Actor, source: Project | Namespace, level: AccessLevel) -> None:
        kind = "project" if isinstance(source, Project) else "namespace"
        await self.store.add_member(
            source_kind=kind,
            source_id=source.id,
            user_id=actor.user.id,
            access_level=int(level),
            now=self.clock.now(),
        )

    async def deploy_token(
        self,
        holder: Project | Namespace,
        scopes: tuple[str, ...] = ("read_repository",),
        *,
        name: str = "deploy",
        username: str | None = None,
        expires_at: datetime | None = None,
    ) -> tokens.Created:
        h = Holder(project_id=holder.id) if isinstance(holder, Project) else Holder(group_id=holder.id)
        return await tokens.create(
            self.store,
            self.box,
            holder=h,
            name=name,
            username=username,
            scopes=scopes,
            expires_at=expires_at,
            creator_id=None,
            now=self.clock.now(),
        )


@asynccontextmanager
async def installed_world(config_file: Path) -> AsyncIterator[World]:
    """A World on the database of an installed gateway (its config file, SQLite or PostgreSQL), migrated; for
    writing users, projects and tokens straight into it before or while `gateway serve` runs."""
    from gateway import config as config_module
    from gateway import secretbox
    from gateway.store import open_store

    config = config_module.load(config_file)
    store = await open_store(config)
    try:
        await store.migrate()
        yield World(
            store,
            FixedClock(datetime.now(UTC)),
            secretbox.load(Path(config.storage.encryption_key)),
            PasswordHasher(64, 1),
            config,
        )
    finally:
        await store.close()
