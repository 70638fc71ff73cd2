"""The policy table (ARCHITECTURE.md "Domain rules") as parametrized cases over pure records."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.policy import INSTANCE, Allowed, Denied, Deny, Operation, Target, decide, effective_level, user_target
from gateway.principals import ANONYMOUS, DeployTokenPrincipal, Principal, UserPrincipal
from gateway.store.base import DeployToken, User
from gateway.users import AccessLevel as L

T = datetime(2026, 1, 1, tzinfo=UTC)
O = Operation  # noqa: E741

# Group tree: 1 (root) → 2 (sub) → 3 (subsub); 4 is a sibling of 2. Project 10 in group 3, 11 in group 4,
# 12 in group 1, 13 in a personal namespace of user 7.
P_DEEP = Target("project", 10, "private", groups=(1, 2, 3))
P_SIBLING = Target("project", 11, "private", groups=(1, 4))
P_ROOT = Target("project", 12, "private", groups=(1,))
P_PERSONAL = Target("project", 13, "private", personal_owner_id=7)
P_PUBLIC = Target("project", 14, "public", groups=(1, 4))
P_INTERNAL = Target("project", 15, "internal", groups=(1, 4))
G_SUB = Target("group", 2, "private", groups=(1, 2))


def user(uid: int = 7, *, admin: bool = False, state: str = "active") -> User:
    return User(uid, f"u{uid}", "U", "u@x", None, admin, state, T, 100 + uid)  # type: ignore[arg-type]


def person(scopes: tuple[str, ...] | None = None, **kw: object) -> UserPrincipal:
    return UserPrincipal(user(**kw), frozenset(scopes) if scopes is not None else None, "pat" if scopes else "password")  # type: ignore[arg-type]


def token(*scopes: str, project: int | None = None, group: int | None = None) -> DeployTokenPrincipal:
    return DeployTokenPrincipal(DeployToken(1, "t", None, scopes, None, False, T, None, project, group, None))


def verdict(d: Allowed | Denied) -> str:
    return "allow" if isinstance(d, Allowed) else d.kind.value


DEPLOY_CASES = [
    # (principal, target, operation, expected)
    (token("read_repository", project=10), P_DEEP, O.GIT_READ, "allow"),
    (token("read_repository", project=10), P_ROOT, O.GIT_READ, "unauthenticated"),  # other project → 401
    (token("read_registry", project=10), P_DEEP, O.GIT_READ, "forbidden"),  # "You are not allowed to download code."
    (token("read_repository", "write_registry", project=10), P_DEEP, O.GIT_WRITE, "forbidden"),  # never pushes
    (token("read_package_registry", project=10), P_DEEP, O.GIT_READ, "unauthenticated"),  # package-only: no login
    (token("write_package_registry", project=10), P_DEEP, O.REGISTRY_PULL, "unauthenticated"),
    (token("read_repository", group=1), P_DEEP, O.GIT_READ, "allow"),  # parent group token → subgroup project
    (token("read_repository", group=2), P_DEEP, O.GIT_READ, "allow"),
    (token("read_repository", group=3), P_ROOT, O.GIT_READ, "unauthenticated"),  # subgroup token → parent project
    (token("read_repository", group=2), P_SIBLING, O.GIT_READ, "unauthenticated"),  # sibling group
    (token("read_repository", group=1), P_PERSONAL, O.GIT_READ, "unauthenticated"),  # personal namespaces never
    (token("read_registry", project=10), P_DEEP, O.REGISTRY_PULL, "allow"),
    (token("read_registry", project=10), P_DEEP, O.REGISTRY_PUSH, "forbidden"),
    (token("write_registry", project=10), P_DEEP, O.REGISTRY_PUSH, "allow"),
    (token("write_registry", project=10), P_DEEP, O.REGISTRY_PULL, "forbidden"),  # no implied scopes
    (token("write_registry", "read_registry", project=10), P_DEEP, O.REGISTRY_DELETE, "forbidden"),
    (token("read_registry", project=10), INSTANCE, O.REGISTRY_CATALOG, "not_found"),
    (token("read_registry", project=10), P_PUBLIC, O.REGISTRY_PULL, "allow"),  # public projects: anyone pulls
    (token("read_registry", project=10), P_PUBLIC, O.REGISTRY_PUSH, "not_found"),
    (token("read_package_registry", project=10), P_DEEP, O.PACKAGE_READ, "allow"),
    (token("write_package_registry", project=10), P_DEEP, O.PACKAGE_READ, "allow"),  # write implies read
    (token("read_package_registry", project=10), P_DEEP, O.PACKAGE_WRITE, "forbidden"),
    (token("write_package_registry", project=10), P_DEEP, O.PACKAGE_WRITE, "allow"),
    (token("write_package_registry", project=10), P_ROOT, O.PACKAGE_WRITE, "not_found"),
    (token("write_package_registry", group=2), G_SUB, O.PACKAGE_READ, "allow"),  # exact group at group level
    (token("write_package_registry", group=1), G_SUB, O.PACKAGE_READ, "not_found"),  # not descendants
    (token("read_repository", project=10), P_DEEP, O.READ_PROJECT, "forbidden"),  # tokens cannot use the API
    (token("read_repository", project=10), P_DEEP, O.MANAGE_PROJECT_DEPLOY_TOKENS, "forbidden"),
]


@pytest.mark.parametrize(("principal", "target", "op", "expected"), DEPLOY_CASES)
def test_deploy_tokens(principal: Principal, target: Target, op: Operation, expected: str) -> None:
    assert verdict(decide(principal, target, op)) == expected


# (principal, target, op, levels, expected)
USER_CASES = [
    (person(), P_DEEP, O.GIT_READ, [], "not_found"),
    (person(), P_DEEP, O.GIT_READ, [L.GUEST], "forbidden"),
    (person(), P_DEEP, O.GIT_READ, [L.REPORTER], "allow"),
    (person(), P_DEEP, O.GIT_WRITE, [L.REPORTER], "forbidden"),
    (person(), P_DEEP, O.GIT_WRITE, [L.REPORTER, L.DEVELOPER], "allow"),  # highest along the ancestry
    (person(("read_repository",)), P_DEEP, O.GIT_WRITE, [L.OWNER], "forbidden"),
    (person(("write_repository",)), P_DEEP, O.GIT_WRITE, [L.DEVELOPER], "allow"),
    (person(("read_api",)), P_DEEP, O.GIT_READ, [L.OWNER], "unauthenticated"),  # PAT without git scope
    (person(("read_registry",)), P_DEEP, O.REGISTRY_PULL, [L.REPORTER], "allow"),
    (person(("read_registry",)), P_DEEP, O.REGISTRY_PUSH, [L.OWNER], "forbidden"),
    (person(("read_registry",)), P_DEEP, O.GIT_READ, [L.OWNER], "forbidden"),
    (person(), P_DEEP, O.REGISTRY_DELETE, [L.DEVELOPER], "forbidden"),
    (person(), P_DEEP, O.REGISTRY_DELETE, [L.MAINTAINER], "allow"),
    (person(), INSTANCE, O.REGISTRY_CATALOG, [], "forbidden"),
    (person(admin=True), INSTANCE, O.REGISTRY_CATALOG, [], "allow"),
    (person(), P_PUBLIC, O.GIT_READ, [], "allow"),
    (person(), P_INTERNAL, O.GIT_READ, [], "allow"),  # any signed-in user reads internal projects
    (person(), P_INTERNAL, O.GIT_WRITE, [], "forbidden"),
    (person(), P_PERSONAL, O.GIT_WRITE, [], "allow"),  # user 7 owns the personal namespace
    (person(uid=8), P_PERSONAL, O.GIT_READ, [], "not_found"),
    (person(uid=8), P_PERSONAL, O.CREATE_PROJECT, [], "not_found"),
    (person(), P_DEEP, O.READ_PROJECT_DEPLOY_TOKENS, [L.DEVELOPER], "forbidden"),
    (person(), P_DEEP, O.MANAGE_PROJECT_DEPLOY_TOKENS, [L.MAINTAINER], "allow"),
    (person(("read_api",)), P_DEEP, O.READ_PROJECT_DEPLOY_TOKENS, [L.MAINTAINER], "allow"),
    (person(("read_api",)), P_DEEP, O.MANAGE_PROJECT_DEPLOY_TOKENS, [L.MAINTAINER], "forbidden"),
    (person(), G_SUB, O.READ_GROUP_DEPLOY_TOKENS, [L.MAINTAINER], "allow"),
    (person(), G_SUB, O.MANAGE_GROUP_DEPLOY_TOKENS, [L.MAINTAINER], "forbidden"),  # Owner creates/deletes
    (person(), G_SUB, O.MANAGE_GROUP_DEPLOY_TOKENS, [L.OWNER], "allow"),
    (person(), INSTANCE, O.LIST_ALL_DEPLOY_TOKENS, [], "forbidden"),
    (person(admin=True), INSTANCE, O.LIST_ALL_DEPLOY_TOKENS, [], "allow"),
    (person(admin=True), P_DEEP, O.MANAGE_PROJECT_DEPLOY_TOKENS, [], "allow"),
    (person(state="blocked"), P_PUBLIC, O.GIT_READ, [], "unauthenticated"),
    (person(), P_DEEP, O.ADMIN, [L.OWNER], "forbidden"),  # not a project operation
    # Personal access tokens: the owner's (user 7) or an administrator's to revoke; the `api` scope is needed.
    (person(), user_target(7), O.REVOKE_PERSONAL_ACCESS_TOKEN, [], "allow"),
    (person(uid=8), user_target(7), O.REVOKE_PERSONAL_ACCESS_TOKEN, [], "forbidden"),
    (person(uid=8, admin=True), user_target(7), O.REVOKE_PERSONAL_ACCESS_TOKEN, [], "allow"),
    (person(("read_api",)), user_target(7), O.REVOKE_PERSONAL_ACCESS_TOKEN, [], "forbidden"),
    (person(state="blocked"), user_target(7), O.REVOKE_PERSONAL_ACCESS_TOKEN, [], "unauthenticated"),
    (token("read_repository", project=10), user_target(7), O.REVOKE_PERSONAL_ACCESS_TOKEN, [], "not_found"),
]


@pytest.mark.parametrize(("principal", "target", "op", "levels", "expected"), USER_CASES)
def test_users(principal: Principal, target: Target, op: Operation, levels: list[int], expected: str) -> None:
    assert verdict(decide(principal, target, op, levels)) == expected


@pytest.mark.parametrize(
    ("target", "op", "expected"),
    [
        (P_PUBLIC, O.GIT_READ, "allow"),
        (P_PUBLIC, O.REGISTRY_PULL, "allow"),
        (P_PUBLIC, O.PACKAGE_READ, "allow"),
        (P_PUBLIC, O.GIT_WRITE, "unauthenticated"),
        (P_INTERNAL, O.GIT_READ, "unauthenticated"),
        (P_DEEP, O.GIT_READ, "unauthenticated"),
        (INSTANCE, O.LIST_ALL_DEPLOY_TOKENS, "unauthenticated"),
        (user_target(7), O.REVOKE_PERSONAL_ACCESS_TOKEN, "unauthenticated"),
    ],
)
def test_anonymous(target: Target, op: Operation, expected: str) -> None:
    assert verdict(decide(ANONYMOUS, target, op)) == expected


def test_every_operation_is_denied_to_an_unknown_principal() -> None:
    for op in Operation:
        decision = decide(object(), P_PUBLIC, op)  # type: ignore[arg-type]
        assert isinstance(decision, Denied) and decision.kind is Deny.UNAUTHENTICATED


def test_effective_level_is_the_highest() -> None:
    assert effective_level([]) == 0
    assert effective_level([L.GUEST, L.MAINTAINER, L.REPORTER]) == L.MAINTAINER
