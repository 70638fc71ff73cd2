"""The last two steps every family shares: load the principal's memberships on a target, then ask policy.

Every decision that gates a request goes through authorize() or decide() here and is noted for the audit trail
(audit.decided); visible() is for filtering lists, which are not decisions of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, Protocol

from gateway import audit, policy
from gateway.policy import Decision, Operation, Target
from gateway.principals import Principal, UserPrincipal
from gateway.store.base import Listing, Member, Store


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


def list_scope(
    principal: Principal, kind: Literal["project", "group"], op: Operation, *, min_level: int = 0
) -> Listing:
    """What a list may hold, as policy.list_reach says, for the store to select (Listing); with a `min_level` (the
    API's membership, owned and min_access_level filters) only what a membership at that level or above opens."""
    reach = policy.list_reach(principal, kind, op)
    user = principal.user if isinstance(principal, UserPrincipal) else None
    return Listing(
        open=() if min_level else reach.open,
        member_id=user.id if user is not None and reach.member_level is not None else None,
        min_level=max(min_level, reach.member_level or 0),
        personal_namespace_id=user.namespace_id if user is not None and reach.own_namespace else None,
    )


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
