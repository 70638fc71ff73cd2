"""policy.decide as properties: random principals (anonymous; users with random PAT scopes, roles and ancestries;
deploy tokens with random scopes held by random projects or groups), random targets and every Operation.

Each decision is compared with a reference of GitLab's rules written here from the docs (shared/ARCHITECTURE.md
"Domain rules", shared/notes/gitlab-behaviour.md §4-6, GitLab's permissions and PAT scope tables), in the other
direction from gateway.policy's tables (scope → abilities rather than operation → scopes) and with reach taken from
how the token's holder relates to the target rather than from ids. Invariants come on top: deploy tokens never push
code, delete images, list the catalog or use the API; every grant is monotone in role, scopes and visibility.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy import (
    INSTANCE,
    Allowed,
    Denied,
    Deny,
    Operation,
    Target,
    decide,
    list_reach,
    reaches,
    registry_operation,
)
from gateway.principals import ANONYMOUS, Anonymous, DeployTokenPrincipal, Principal, UserPrincipal
from gateway.store.base import DeployToken, User, Visibility
from tests.fuzz.seed import FUZZ, examples

O = Operation  # noqa: E741
T0 = datetime(2026, 1, 1, tzinfo=UTC)
VISIBILITY_ORDER: tuple[Visibility, ...] = ("private", "internal", "public")
ROLES = (0, 10, 20, 30, 40, 50)  # no access, Guest, Reporter, Developer, Maintainer, Owner

# --- the reference ------------------------------------------------------------------------------------------------

# Deploy token scopes → what they allow on a project the token reaches (seed 001 "Limiting scopes"; §5):
# write_package_registry also reads; no scope pushes code, deletes images or lists the catalog.
TOKEN_ABILITIES: dict[str, frozenset[Operation]] = {
    "read_repository": frozenset({O.GIT_READ}),
    "read_registry": frozenset({O.REGISTRY_PULL}),
    "write_registry": frozenset({O.REGISTRY_PUSH}),
    "read_package_registry": frozenset({O.PACKAGE_READ}),
    "write_package_registry": frozenset({O.PACKAGE_READ, O.PACKAGE_WRITE}),
}
PACKAGE_SCOPES = frozenset({"read_package_registry", "write_package_registry"})
# git and the registry log a token in with Basic auth; a token with package scopes only cannot log in (§5.1).
LOGIN_OPERATIONS = frozenset(
    {O.GIT_READ, O.GIT_WRITE, O.REGISTRY_PULL, O.REGISTRY_PUSH, O.REGISTRY_DELETE, O.REGISTRY_CATALOG}
)

# Personal access token scopes → the abilities they leave to the user's role (GitLab's PAT scope table).
API_READS = frozenset(
    {
        O.READ_PROJECT,
        O.READ_GROUP,
        O.READ_MEMBERS,
        O.READ_PROJECT_DEPLOY_TOKENS,
        O.READ_GROUP_DEPLOY_TOKENS,
        O.LIST_ALL_DEPLOY_TOKENS,
        O.READ_PROJECT_AUDIT_EVENTS,
        O.READ_GROUP_AUDIT_EVENTS,
        O.READ_OWN_AUDIT_EVENTS,
        O.READ_USERS,
        O.PACKAGE_READ,
    }
)
PAT_ABILITIES: dict[str, frozenset[Operation]] = {
    "api": frozenset(Operation),
    "read_api": API_READS,
    "read_repository": frozenset({O.GIT_READ}),
    "write_repository": frozenset({O.GIT_READ, O.GIT_WRITE}),
    "read_registry": frozenset({O.REGISTRY_PULL, O.REGISTRY_CATALOG}),
    "write_registry": frozenset({O.REGISTRY_PULL, O.REGISTRY_PUSH, O.REGISTRY_DELETE}),
}

# The role a user needs in the project or group (GitLab's permissions table; Architecture "Domain rules").
MIN_ROLE: dict[Operation, int] = {
    O.READ_PROJECT: 10,
    O.READ_GROUP: 10,
    O.READ_MEMBERS: 10,
    O.GIT_READ: 20,
    O.REGISTRY_PULL: 20,
    O.PACKAGE_READ: 20,
    O.GIT_WRITE: 30,
    O.REGISTRY_PUSH: 30,
    O.PACKAGE_WRITE: 30,
    O.CREATE_PROJECT: 30,
    O.REGISTRY_DELETE: 40,
    O.CREATE_SUBGROUP: 40,
    O.MANAGE_PROJECT_MEMBERS: 40,
    O.READ_PROJECT_DEPLOY_TOKENS: 40,
    O.MANAGE_PROJECT_DEPLOY_TOKENS: 40,
    O.READ_GROUP_DEPLOY_TOKENS: 40,
    O.MANAGE_GROUP_MEMBERS: 50,
    O.GRANT_OWNER: 50,
    O.MANAGE_GROUP_DEPLOY_TOKENS: 50,
    # GitLab's audit events API: Developers see their own events, Maintainers a project's, Owners a group's.
    O.READ_OWN_AUDIT_EVENTS: 30,
    O.READ_PROJECT_AUDIT_EVENTS: 40,
    O.READ_GROUP_AUDIT_EVENTS: 50,
}
# Reads that a public target opens to everyone, and an internal one to every signed-in user.
OPEN_READS = frozenset({O.GIT_READ, O.REGISTRY_PULL, O.PACKAGE_READ, O.READ_PROJECT, O.READ_GROUP, O.READ_MEMBERS})
SIGNED_IN = frozenset({O.READ_USERS, O.CREATE_GROUP})  # instance level, any signed-in user
ADMIN_ONLY = frozenset({O.ADMIN, O.LIST_ALL_DEPLOY_TOKENS, O.REGISTRY_CATALOG})  # instance level

# How a deploy token's holder relates to the target (§4), and whether the token reaches it.
Relation = Literal[
    "own project",
    "another project",
    "group of the project",
    "ancestor of the project's group",
    "group outside the project's ancestry",
    "group token, personal project",
    "the group itself",
    "ancestor of the group",
    "another group",
    "project token, group target",
    "instance",
]
REACHES: frozenset[Relation] = frozenset(
    {"own project", "group of the project", "ancestor of the project's group", "the group itself"}
)


@dataclass(frozen=True)
class Case:
    principal: Principal
    target: Target
    levels: tuple[int, ...]
    relation: Relation | None = None  # deploy tokens only


def expected(case: Case, op: Operation) -> bool:
    """GitLab's answer, from the reference tables above."""
    p, t = case.principal, case.target
    public_read = op in OPEN_READS and t.kind != "instance" and t.visibility == "public"
    if isinstance(p, Anonymous):
        return public_read
    if isinstance(p, DeployTokenPrincipal):
        scopes = set(p.token.scopes)
        if op in LOGIN_OPERATIONS and scopes <= PACKAGE_SCOPES:
            return False
        abilities = frozenset().union(*(TOKEN_ABILITIES[s] for s in scopes))
        if op in abilities and case.relation in REACHES:
            return True
        # Public projects: anyone pulls images and reads packages; git still needs a token that reaches (§5.1).
        return public_read and op in (O.REGISTRY_PULL, O.PACKAGE_READ)
    assert isinstance(p, UserPrincipal)
    user = p.user
    if not user.active:
        return False
    if p.scopes is not None and op not in frozenset().union(*(PAT_ABILITIES[s] for s in p.scopes)):
        return False
    if t.kind == "instance":
        return op in SIGNED_IN or (user.is_admin and op in ADMIN_ONLY)
    if user.is_admin:
        return True
    role = max(case.levels, default=0)
    if t.personal_owner_id == user.id:
        role = 50  # a personal namespace's user owns it and its projects
    if t.visibility == "private" and role < 10:
        return False
    if op in OPEN_READS and t.visibility in ("public", "internal"):
        return True
    if op is O.CREATE_PROJECT and t.personal_owner_id is not None:
        return t.personal_owner_id == user.id
    return op in MIN_ROLE and role >= MIN_ROLE[op]


# --- strategies ---------------------------------------------------------------------------------------------------

visibility = st.sampled_from(VISIBILITY_ORDER)
ancestry = st.lists(st.integers(1, 40), min_size=1, max_size=6, unique=True).map(tuple)


@st.composite
def targets(draw: st.DrawFn) -> Target:
    kind = draw(st.sampled_from(("project", "project", "group", "instance")))
    if kind == "instance":
        return INSTANCE
    if draw(st.integers(0, 3)) == 0:  # a personal namespace (no groups above it)
        owner = draw(st.integers(1, 4))
        return Target(kind, draw(st.integers(100, 104)), draw(visibility), (), owner)  # type: ignore[arg-type]
    groups = draw(ancestry)
    target_id = draw(st.integers(100, 104)) if kind == "project" else groups[-1]
    return Target(kind, target_id, draw(visibility), groups)  # type: ignore[arg-type]


def user(uid: int, *, admin: bool = False, blocked: bool = False) -> User:
    return User(uid, f"u{uid}", "U", "u@x", None, admin, "blocked" if blocked else "active", T0, 1000 + uid)


pat_scopes = st.frozensets(st.sampled_from(tuple(PAT_ABILITIES)), max_size=6)


@st.composite
def users(draw: st.DrawFn) -> UserPrincipal:
    scopes = draw(st.one_of(st.none(), pat_scopes))  # None: a password or a UI session (the user's full rights)
    u = user(draw(st.integers(1, 4)), admin=draw(st.integers(0, 5)) == 0, blocked=draw(st.integers(0, 7)) == 0)
    via = "password" if scopes is None else "pat"
    return UserPrincipal(u, scopes, via)  # type: ignore[arg-type]


token_scopes = st.lists(st.sampled_from(tuple(TOKEN_ABILITIES)), min_size=1, max_size=5, unique=True).map(tuple)


def token(scopes: tuple[str, ...], *, project: int | None = None, group: int | None = None) -> DeployTokenPrincipal:
    return DeployTokenPrincipal(DeployToken(7, "t", None, scopes, None, False, T0, None, project, group, None))


@st.composite
def deploy_token_cases(draw: st.DrawFn) -> Case:
    """A token and a target, built from a relation between the token's holder and the target."""
    t = draw(targets())
    scopes = draw(token_scopes)
    outside = st.integers(41, 60)  # group ids that are never in a drawn ancestry
    relation: Relation
    if t.kind == "instance":
        relation = "instance"
        principal = token(scopes, project=draw(st.integers(100, 104)))
    elif t.kind == "project":
        relation = draw(
            st.sampled_from(
                ("own project", "another project")
                + (
                    ("group token, personal project",)
                    if not t.groups
                    else (
                        "group of the project",
                        "ancestor of the project's group",
                        "group outside the project's ancestry",
                    )
                )
            )
        )
        if relation == "own project":
            principal = token(scopes, project=t.id)
        elif relation == "another project":
            principal = token(scopes, project=draw(st.integers(105, 110)))
        elif relation == "group of the project":
            principal = token(scopes, group=t.groups[-1])
        elif relation == "ancestor of the project's group":
            principal = token(scopes, group=draw(st.sampled_from(t.groups)))
        else:
            principal = token(scopes, group=draw(outside))
    else:
        relation = draw(
            st.sampled_from(
                ("the group itself", "another group", "project token, group target")
                + (("ancestor of the group",) if len(t.groups) > 1 else ())
            )
        )
        if relation == "the group itself":
            principal = token(scopes, group=t.id)
        elif relation == "ancestor of the group":
            principal = token(scopes, group=draw(st.sampled_from(t.groups[:-1])))
        elif relation == "another group":
            principal = token(scopes, group=draw(outside))
        else:
            principal = token(scopes, project=draw(st.integers(100, 104)))
    if relation == "ancestor of the project's group" and principal.token.group_id == t.groups[-1]:
        relation = "group of the project"
    return Case(principal, t, (), relation)


@st.composite
def user_cases(draw: st.DrawFn) -> Case:
    # Memberships anywhere along the target's ancestry (or on the project itself): policy sees their levels.
    levels = draw(st.lists(st.sampled_from(ROLES), max_size=4).map(tuple))
    return Case(draw(users()), draw(targets()), levels)


cases = st.one_of(st.builds(Case, st.just(ANONYMOUS), targets(), st.just(())), user_cases(), deploy_token_cases())
operations = st.sampled_from(tuple(Operation))


def allowed(case: Case, op: Operation) -> bool:
    return isinstance(decide(case.principal, case.target, op, case.levels), Allowed)


# --- properties ---------------------------------------------------------------------------------------------------


@given(case=cases)
@settings(FUZZ, max_examples=examples(500))
def test_decisions_match_the_reference(case: Case) -> None:
    for op in Operation:
        decision = decide(case.principal, case.target, op, case.levels)
        assert isinstance(decision, Allowed | Denied)
        assert isinstance(decision, Allowed) == expected(case, op), (op, decision)


@given(case=deploy_token_cases())
@settings(FUZZ, max_examples=examples(400))
def test_deploy_tokens(case: Case) -> None:
    """Reach follows the holder's relation to the target; a token never pushes code, deletes images, lists the
    catalog or manages anything; what it may do it does on a target it reaches, or reads because it is public."""
    assert isinstance(case.principal, DeployTokenPrincipal)
    assert reaches(case.principal, case.target) == (case.relation in REACHES), case.relation
    token_ops = frozenset({O.GIT_READ, O.REGISTRY_PULL, O.REGISTRY_PUSH, O.PACKAGE_READ, O.PACKAGE_WRITE})
    for op in Operation:
        if not allowed(case, op):
            continue
        assert op in token_ops, op
        public_read = case.target.visibility == "public" and op in (O.REGISTRY_PULL, O.PACKAGE_READ)
        assert case.relation in REACHES or public_read, (op, case.relation)


@given(case=cases, extra=st.sampled_from(ROLES))
@settings(FUZZ, max_examples=examples(400))
def test_monotone_in_role(case: Case, extra: int) -> None:
    """One more membership (at any level) never takes an ability away."""
    more = replace(case, levels=(*case.levels, extra))
    for op in Operation:
        assert not allowed(case, op) or allowed(more, op), op


@given(case=user_cases(), extra=pat_scopes)
@settings(FUZZ, max_examples=examples(400))
def test_monotone_in_pat_scopes(case: Case, extra: frozenset[str]) -> None:
    """A PAT with more scopes never does less; a password (the user's full rights) does at least as much."""
    p = case.principal
    assert isinstance(p, UserPrincipal)
    wider = replace(case, principal=replace(p, scopes=None if p.scopes is None else p.scopes | extra))
    full = replace(case, principal=replace(p, scopes=None, via="password"))
    for op in Operation:
        if allowed(case, op):
            assert allowed(wider, op) and allowed(full, op), op


@given(case=deploy_token_cases(), extra=token_scopes)
@settings(FUZZ, max_examples=examples(300))
def test_monotone_in_deploy_token_scopes(case: Case, extra: tuple[str, ...]) -> None:
    p = case.principal
    assert isinstance(p, DeployTokenPrincipal)
    scopes = tuple(dict.fromkeys((*p.token.scopes, *extra)))
    wider = replace(case, principal=DeployTokenPrincipal(replace(p.token, scopes=scopes)))
    for op in Operation:
        assert not allowed(case, op) or allowed(wider, op), op


@given(case=cases)
@settings(FUZZ, max_examples=examples(300))
def test_monotone_in_visibility(case: Case) -> None:
    """Opening a target up (private → internal → public) never takes an ability away."""
    if case.target.kind == "instance":
        return
    rank = VISIBILITY_ORDER.index(case.target.visibility)
    for wider in VISIBILITY_ORDER[rank + 1 :]:
        opened = replace(case, target=replace(case.target, visibility=wider))
        for op in Operation:
            assert not allowed(case, op) or allowed(opened, op), (op, wider)


@given(case=user_cases())
@settings(FUZZ, max_examples=examples(300))
def test_administrators_do_at_least_as_much(case: Case) -> None:
    p = case.principal
    assert isinstance(p, UserPrincipal)
    admin = replace(case, principal=replace(p, user=replace(p.user, is_admin=True)))
    for op in Operation:
        assert not allowed(case, op) or allowed(admin, op), op


@given(case=user_cases())
@settings(FUZZ, max_examples=examples(300))
def test_blocked_users_get_nothing(case: Case) -> None:
    p = case.principal
    assert isinstance(p, UserPrincipal)
    blocked = replace(case, principal=replace(p, user=replace(p.user, state="blocked")))
    for op in Operation:
        decision = decide(blocked.principal, blocked.target, op, blocked.levels)
        assert isinstance(decision, Denied) and decision.kind is Deny.UNAUTHENTICATED, op


@given(target=targets())
@settings(FUZZ, max_examples=examples(200))
def test_anonymous_visitors_only_read_public_targets(target: Target) -> None:
    for op in Operation:
        decision = decide(ANONYMOUS, target, op)
        if isinstance(decision, Allowed):
            assert op in OPEN_READS and target.visibility == "public" and target.kind != "instance", op
        else:
            # Denials of anonymous requests challenge for credentials (401), never reveal a 403/404 distinction.
            assert decision.kind is Deny.UNAUTHENTICATED, op


# The operations lists select in the database (GET /projects, GET /groups, the web landing page).
LISTED = {
    "project": (O.READ_PROJECT, O.READ_PROJECT_DEPLOY_TOKENS, O.MANAGE_PROJECT_DEPLOY_TOKENS),
    "group": (O.READ_GROUP, O.READ_GROUP_DEPLOY_TOKENS, O.MANAGE_GROUP_DEPLOY_TOKENS),
}


@given(case=cases)
@settings(FUZZ, max_examples=examples(500))
def test_a_lists_reach_is_what_decide_allows(case: Case) -> None:
    """Lists select policy.list_reach in the database instead of asking decide about every item: for every
    principal, target and set of membership levels, decide allows a listed operation exactly when the target is
    within that reach (open by visibility, a membership at the reach's level, the personal namespace)."""
    t = case.target
    if t.kind not in LISTED:
        return
    user = case.principal.user if isinstance(case.principal, UserPrincipal) else None
    for op in LISTED[t.kind]:
        reach = list_reach(case.principal, t.kind, op)
        within = (
            t.visibility in reach.open
            or (reach.member_level is not None and max(case.levels, default=0) >= reach.member_level)
            or (reach.own_namespace and user is not None and t.personal_owner_id == user.id)
        )
        assert allowed(case, op) == within, (op, reach)


@given(action=st.one_of(st.sampled_from(("pull", "push", "delete", "*", "PULL", "")), st.text(max_size=8)))
@settings(FUZZ, max_examples=examples(200))
def test_registry_actions(action: str) -> None:
    """Only pull, push and delete name an operation; `*` and anything else is never granted."""
    op = registry_operation(action)
    expected_ops = {"pull": O.REGISTRY_PULL, "push": O.REGISTRY_PUSH, "delete": O.REGISTRY_DELETE}
    assert op == expected_ops.get(action)
