"""A builder of test worlds (users, groups, projects, memberships, tokens) through the domain functions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway import access, repositories, tokens, users
from gateway.api.common import member_level
from gateway.clock import FixedClock
from gateway.config import Config
from gateway.policy import Operation, Target
from gateway.principals import ANONYMOUS, Principal, UserPrincipal
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
        self,
        username: str,
        *,
        admin: bool = False,
        scopes: tuple[str, ...] = ("api",),
        password: str | None = None,
        name: str | None = None,
    ) -> Actor:
        password = password or f"pw-{username}-secret"
        user = await users.create_user(
            self.store,
            self.hasher,
            username=username,
            name=name,
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


async def policy_world(world: World) -> dict[str, Actor | None]:
    """Every path by which policy opens a project or a group: visibility, a membership on an ancestor group (at
    several levels), one on the project itself, the personal namespace, being an administrator; and a caller
    whose token lacks the scope to read anything."""
    alice, bob, carol = [await world.user(name) for name in ("alice", "bob", "carol")]
    admin = await world.user("root", admin=True)
    dave = await world.user("dave", scopes=("read_repository",))
    top = await world.group("top")
    sub = await world.group("sub", top)
    deep = await world.group("deep", sub, visibility="internal")
    other = await world.group("other", visibility="public")
    await world.group("lonely", other)
    for path, ns, visibility in (
        ("top-private", top, "private"),
        ("sub-private", sub, "private"),
        ("deep-internal", deep, "internal"),
        ("deep-private", deep, "private"),
        ("other-public", other, "public"),
        ("other-private", other, "private"),
        ("other-direct", other, "private"),
    ):
        await world.project(path, ns, visibility=visibility)
    for actor in (alice, bob, dave):
        personal = await world.store.get_namespace(actor.user.namespace_id)
        assert personal is not None
        await world.project(f"{actor.user.username}-own", personal)
    await world.member(alice, top, AccessLevel.GUEST)
    await world.member(bob, sub, AccessLevel.DEVELOPER)
    await world.member(carol, deep, AccessLevel.OWNER)
    await world.member(dave, top, AccessLevel.MAINTAINER)
    direct = await world.store.get_project_by_path("other/other-direct")
    assert direct is not None
    await world.member(bob, direct, AccessLevel.REPORTER)
    return {"alice": alice, "bob": bob, "carol": carol, "dave": dave, "admin": admin, "anonymous": None}


async def policy_verdict(
    world: World, actor: Actor | None, target: Target, op: Operation, floor: int = 0, *, session: bool = False
) -> bool:
    """What a list must show, item by item: policy's decision, and the caller's membership level for the
    membership, owned and min_access_level filters (the lists' semantics before they were selected in SQL). The
    caller signs in with their token (dave's lacks read_api), or with a web `session` (a user's full rights)."""
    scopes = frozenset({"read_repository"}) if actor is not None and actor.user.username == "dave" else {"api"}
    principal: Principal = ANONYMOUS
    if actor is not None:
        principal = UserPrincipal(actor.user, None, "session") if session else UserPrincipal(actor.user, scopes, "pat")
    if not await access.visible(world.store, principal, target, op):
        return False
    return floor == 0 or await member_level(world.store, principal, target) >= floor
