"""The last two steps every family shares: load the principal's memberships on a target, then ask policy.

Every decision that gates a request goes through authorize() or decide() here and is noted for the audit trail
(audit.decided); visible() is for filtering lists, which are not decisions of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from gateway import audit, policy
from gateway.policy import Decision, Operation, Target
from gateway.principals import Principal, UserPrincipal
from gateway.store.base import Member, Namespace, Project, Store, User


class Levels(Protocol):
    """Where membership levels are read: the store, or a list's Memberships."""

    async def access_levels(
        self, user_id: int, *, project_id: int | None, namespace_ids: Sequence[int]
    ) -> list[int]: ...


class Memberships:
    """One user's direct memberships, read once, answering store.access_levels in memory: a list checks each of its
    items, and one query for the whole list costs less than one per item (thousands, for GET /projects)."""

    def __init__(self, user_id: int, members: Iterable[Member]) -> None:
        self.user_id = user_id
        self._levels = {(m.source_kind, m.source_id): m.access_level for m in members if m.user.id == user_id}

    async def access_levels(self, user_id: int, *, project_id: int | None, namespace_ids: Sequence[int]) -> list[int]:
        if user_id != self.user_id:
            raise ValueError(f"memberships of user {self.user_id} asked for user {user_id}")
        sources = [("namespace", n) for n in namespace_ids]
        if project_id is not None:
            sources.append(("project", project_id))
        return [self._levels[s] for s in sources if s in self._levels]


async def within_reach(store: Store, user: User) -> tuple[list[Project], list[Namespace]]:
    """The projects and groups a user's memberships can open, by id: the trees below their groups, their projects,
    their personal namespace's projects. A list narrows its candidates with this (never fewer than policy opens
    through a membership); policy still decides each one."""
    memberships = await store.list_user_memberships(user.id)
    groups: dict[int, Namespace] = {}
    for group_id in {m.source_id for m in memberships if m.source_kind == "namespace"}:
        groups.update((g.id, g) for g in await store.list_group_tree(group_id))
    projects = {p.id: p for p in await store.list_projects_in(sorted({*groups, user.namespace_id}))}
    for project_id in {m.source_id for m in memberships if m.source_kind == "project"} - projects.keys():
        if (project := await store.get_project(project_id)) is not None:
            projects[project_id] = project
    return [projects[i] for i in sorted(projects)], [groups[i] for i in sorted(groups)]


async def for_list(store: Store, principal: Principal) -> Levels:
    """What a list's per-item checks (visible(), membership filters) read levels from."""
    if isinstance(principal, UserPrincipal):
        return Memberships(principal.user.id, await store.list_user_memberships(principal.user.id))
    return store


async def levels(store: Levels, principal: Principal, target: Target) -> list[int]:
    """The user's membership levels on the target and every group above it (one query; none for tokens)."""
    if not isinstance(principal, UserPrincipal) or target.kind in ("instance", "user") or principal.user.is_admin:
        return []
    return await store.access_levels(
        principal.user.id,
        project_id=target.id if target.kind == "project" else None,
        namespace_ids=target.groups or ((target.id,) if target.kind == "group" else ()),
    )


def decide(principal: Principal, target: Target, op: Operation, member_levels: Iterable[int] = ()) -> Decision:
    """policy.decide, noted for the audit trail (for callers that loaded the levels themselves, or need none)."""
    decision = policy.decide(principal, target, op, member_levels)
    audit.decided(principal, target, op, decision)
    return decision


async def authorize(store: Store, principal: Principal, target: Target, op: Operation) -> Decision:
    return decide(principal, target, op, await levels(store, principal, target))


async def visible(store: Levels, principal: Principal, target: Target, op: Operation) -> bool:
    """Whether a list shows this item to the principal: policy's answer, not an audited decision."""
    return bool(policy.decide(principal, target, op, await levels(store, principal, target)))
