"""The last two steps every family shares: load the principal's memberships on a target, then ask policy.

Every decision that gates a request goes through authorize() or decide() here and is noted for the audit trail
(audit.decided); visible() is for filtering lists, which are not decisions of their own.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway import audit, policy
from gateway.policy import Decision, Operation, Target
from gateway.principals import Principal, UserPrincipal
from gateway.store.base import Store


async def levels(store: Store, principal: Principal, target: Target) -> list[int]:
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


async def visible(store: Store, principal: Principal, target: Target, op: Operation) -> bool:
    """Whether a list shows this item to the principal: policy's answer, not an audited decision."""
    return bool(policy.decide(principal, target, op, await levels(store, principal, target)))
