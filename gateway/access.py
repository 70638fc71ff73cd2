"""The last two steps every family shares: load the principal's memberships on a target, then ask policy."""

from __future__ import annotations

from gateway import policy
from gateway.policy import Decision, Operation, Target
from gateway.principals import Principal, UserPrincipal
from gateway.store.base import Store


async def levels(store: Store, principal: Principal, target: Target) -> list[int]:
    """The user's membership levels on the target and every group above it (one query; none for tokens)."""
    if not isinstance(principal, UserPrincipal) or target.kind == "instance" or principal.user.is_admin:
        return []
    return await store.access_levels(
        principal.user.id,
        project_id=target.id if target.kind == "project" else None,
        namespace_ids=target.groups or ((target.id,) if target.kind == "group" else ()),
    )


async def authorize(store: Store, principal: Principal, target: Target, op: Operation) -> Decision:
    return policy.decide(principal, target, op, await levels(store, principal, target))
