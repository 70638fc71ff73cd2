"""The policy decision (pure): may this principal perform this operation on this target? Deny by default.

The table is ARCHITECTURE.md's "Domain rules" (GitLab's ProjectPolicy, GroupPolicy and lib/gitlab/auth.rb).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from gateway.principals import Anonymous, DeployTokenPrincipal, Principal, UserPrincipal
from gateway.store.base import VISIBILITIES, Namespace, Project, Visibility
from gateway.tokens import PACKAGE_SCOPES
from gateway.users import MEMBER_LEVELS, AccessLevel


class Operation(Enum):
    GIT_READ = "git_read"
    GIT_WRITE = "git_write"
    REGISTRY_PULL = "registry_pull"
    REGISTRY_PUSH = "registry_push"
    REGISTRY_DELETE = "registry_delete"
    REGISTRY_CATALOG = "registry_catalog"
    PACKAGE_READ = "package_read"
    PACKAGE_WRITE = "package_write"
    READ_PROJECT = "read_project"
    READ_GROUP = "read_group"
    CREATE_PROJECT = "create_project"
    CREATE_SUBGROUP = "create_subgroup"
    CREATE_GROUP = "create_group"
    READ_MEMBERS = "read_members"
    MANAGE_PROJECT_MEMBERS = "manage_project_members"
    MANAGE_GROUP_MEMBERS = "manage_group_members"
    # Granting the Owner role (access level 50) to a member: only Owners may (GitLab's :manage_owners).
    GRANT_OWNER = "grant_owner"
    READ_PROJECT_DEPLOY_TOKENS = "read_project_deploy_tokens"
    MANAGE_PROJECT_DEPLOY_TOKENS = "manage_project_deploy_tokens"
    READ_GROUP_DEPLOY_TOKENS = "read_group_deploy_tokens"
    MANAGE_GROUP_DEPLOY_TOKENS = "manage_group_deploy_tokens"
    LIST_ALL_DEPLOY_TOKENS = "list_all_deploy_tokens"
    # Audit events (GitLab's audit events API): every user's on a project (Maintainer) or a group (Owner); one's
    # own events on either (Developer).
    READ_PROJECT_AUDIT_EVENTS = "read_project_audit_events"
    READ_GROUP_AUDIT_EVENTS = "read_group_audit_events"
    READ_OWN_AUDIT_EVENTS = "read_own_audit_events"
    READ_USERS = "read_users"
    # Revoking a personal access token: its owner's, or an administrator's (GitLab's :revoke_token).
    REVOKE_PERSONAL_ACCESS_TOKEN = "revoke_personal_access_token"  # noqa: S105 - an operation name
    ADMIN = "admin"


class Deny(Enum):
    """How a denial shows to the client; the family handler renders it (401 / 404 / 403)."""

    UNAUTHENTICATED = "unauthenticated"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"


@dataclass(frozen=True)
class Allowed:
    reason: str

    def __bool__(self) -> bool:
        return True


@dataclass(frozen=True)
class Denied:
    kind: Deny
    reason: str  # for logs and the audit trail; never shown to clients in detail
    # A scope denial (reason INSUFFICIENT_SCOPE): the token scopes any one of which would have allowed it, which
    # GitLab names in its answer (api_guard.rb, InsufficientScopeError).
    sufficient_scopes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return False


Decision = Allowed | Denied


@dataclass(frozen=True)
class Target:
    """What an operation acts on. `groups` are the ids of every group above the target, root first,
    including the target's own group (a project's namespace group, or the group itself)."""

    kind: Literal["project", "group", "instance", "user"]
    id: int = 0
    visibility: Visibility = "private"
    groups: tuple[int, ...] = ()
    personal_owner_id: int | None = None

    @classmethod
    def of_project(cls, project: Project) -> Target:
        ns = project.namespace
        return cls(
            "project",
            project.id,
            project.visibility,
            groups=ns.traversal_ids if ns.kind == "group" else (),
            personal_owner_id=ns.owner_id if ns.kind == "user" else None,
        )

    @classmethod
    def of_group(cls, group: Namespace) -> Target:
        return cls(
            "group",
            group.id,
            group.visibility,
            groups=group.traversal_ids if group.kind == "group" else (),
            personal_owner_id=group.owner_id if group.kind == "user" else None,
        )


INSTANCE = Target("instance")


def user_target(user_id: int) -> Target:
    """A user as the target of an operation on what belongs to them (their personal access tokens)."""
    return Target("user", user_id)


# The reason of a denial caused by the PAT's scopes rather than the user's role (GitLab: InsufficientScopeError);
# handlers that render role denials specially (e.g. project creation) still answer 403 for it.
INSUFFICIENT_SCOPE = "insufficient_scope"

# Operations that a personal access token may perform, by scope (GitLab: lib/gitlab/auth.rb, API scopes).
_READ_API = frozenset({"api", "read_api"})
_PAT_SCOPES: dict[Operation, frozenset[str]] = {
    Operation.GIT_READ: frozenset({"api", "read_repository", "write_repository"}),
    Operation.GIT_WRITE: frozenset({"api", "write_repository"}),
    Operation.REGISTRY_PULL: frozenset({"api", "read_registry", "write_registry"}),
    Operation.REGISTRY_PUSH: frozenset({"api", "write_registry"}),
    Operation.REGISTRY_DELETE: frozenset({"api", "write_registry"}),
    Operation.REGISTRY_CATALOG: frozenset({"api", "read_registry"}),
    Operation.PACKAGE_READ: _READ_API,
    Operation.PACKAGE_WRITE: frozenset({"api"}),
    Operation.READ_PROJECT: _READ_API,
    Operation.READ_GROUP: _READ_API,
    Operation.READ_MEMBERS: _READ_API,
    Operation.READ_PROJECT_DEPLOY_TOKENS: _READ_API,
    Operation.READ_GROUP_DEPLOY_TOKENS: _READ_API,
    Operation.LIST_ALL_DEPLOY_TOKENS: _READ_API,
    Operation.READ_PROJECT_AUDIT_EVENTS: _READ_API,
    Operation.READ_GROUP_AUDIT_EVENTS: _READ_API,
    Operation.READ_OWN_AUDIT_EVENTS: _READ_API,
    Operation.READ_USERS: _READ_API,
}  # every other operation needs `api`

# Minimum effective access level of a user in the target, for operations that are not open by visibility.
_LEVELS: dict[Operation, AccessLevel] = {
    Operation.GIT_READ: AccessLevel.REPORTER,
    Operation.GIT_WRITE: AccessLevel.DEVELOPER,
    Operation.REGISTRY_PULL: AccessLevel.REPORTER,
    Operation.REGISTRY_PUSH: AccessLevel.DEVELOPER,
    Operation.REGISTRY_DELETE: AccessLevel.MAINTAINER,
    Operation.PACKAGE_READ: AccessLevel.REPORTER,
    Operation.PACKAGE_WRITE: AccessLevel.DEVELOPER,
    Operation.READ_PROJECT: AccessLevel.GUEST,
    Operation.READ_GROUP: AccessLevel.GUEST,
    Operation.READ_MEMBERS: AccessLevel.GUEST,
    Operation.CREATE_PROJECT: AccessLevel.DEVELOPER,
    Operation.CREATE_SUBGROUP: AccessLevel.MAINTAINER,
    Operation.MANAGE_PROJECT_MEMBERS: AccessLevel.MAINTAINER,
    Operation.MANAGE_GROUP_MEMBERS: AccessLevel.OWNER,
    Operation.GRANT_OWNER: AccessLevel.OWNER,
    Operation.READ_PROJECT_DEPLOY_TOKENS: AccessLevel.MAINTAINER,
    Operation.MANAGE_PROJECT_DEPLOY_TOKENS: AccessLevel.MAINTAINER,
    Operation.READ_GROUP_DEPLOY_TOKENS: AccessLevel.MAINTAINER,
    Operation.MANAGE_GROUP_DEPLOY_TOKENS: AccessLevel.OWNER,
    Operation.READ_PROJECT_AUDIT_EVENTS: AccessLevel.MAINTAINER,
    Operation.READ_GROUP_AUDIT_EVENTS: AccessLevel.OWNER,
    Operation.READ_OWN_AUDIT_EVENTS: AccessLevel.DEVELOPER,
}

# Reads that public (anyone) and internal (any signed-in user) visibility open without a membership.
_OPEN_BY_VISIBILITY = frozenset(
    {
        Operation.GIT_READ,
        Operation.REGISTRY_PULL,
        Operation.PACKAGE_READ,
        Operation.READ_PROJECT,
        Operation.READ_GROUP,
        Operation.READ_MEMBERS,
    }
)

# Deploy tokens: the scopes that allow an operation on a target the token reaches (gitlab-behaviour.md §5).
_DEPLOY_SCOPES: dict[Operation, frozenset[str]] = {
    Operation.GIT_READ: frozenset({"read_repository"}),
    Operation.REGISTRY_PULL: frozenset({"read_registry"}),
    Operation.REGISTRY_PUSH: frozenset({"write_registry"}),
    Operation.PACKAGE_READ: frozenset({"read_package_registry", "write_package_registry"}),
    Operation.PACKAGE_WRITE: frozenset({"write_package_registry"}),
}
# Git and the registry log a token in by Basic auth; a token holding only package scopes cannot (auth.rb).
_LOGIN_FAMILIES = frozenset(
    {
        Operation.GIT_READ,
        Operation.GIT_WRITE,
        Operation.REGISTRY_PULL,
        Operation.REGISTRY_PUSH,
        Operation.REGISTRY_DELETE,
        Operation.REGISTRY_CATALOG,
    }
)
_LOGIN_SCOPES = frozenset({"api", "read_repository", "write_repository", "read_registry", "write_registry"})
_GIT_DENIALS = {
    Operation.GIT_READ: "You are not allowed to download code.",
    Operation.GIT_WRITE: "You are not allowed to upload code.",
}


def effective_level(levels: Iterable[int]) -> int:
    """A user's level in a project: the highest of its own membership and every ancestor group's."""
    return max(levels, default=AccessLevel.NO_ACCESS)


def reaches(principal: DeployTokenPrincipal, target: Target) -> bool:
    """Project token: its project. Group token: every project of its group or a descendant group, never a
    project in a personal namespace (§4); at group level (package group endpoints) only the exact group."""
    token = principal.token
    if target.kind == "project":
        if token.project_id is not None:
            return token.project_id == target.id
        return token.group_id in target.groups
    if target.kind == "group":
        return token.group_id is not None and token.group_id == target.id
    return False


def decide(principal: Principal, target: Target, op: Operation, levels: Iterable[int] = ()) -> Decision:
    """Allowed or Denied(kind, reason). `levels` are the user's memberships on the target and its ancestors."""
    if isinstance(principal, DeployTokenPrincipal):
        return _decide_deploy_token(principal, target, op)
    if isinstance(principal, UserPrincipal):
        return _decide_user(principal, target, op, levels)
    if isinstance(principal, Anonymous):
        return _decide_anonymous(target, op)
    return Denied(Deny.UNAUTHENTICATED, "unknown principal")


def _decide_anonymous(target: Target, op: Operation) -> Decision:
    if op in _OPEN_BY_VISIBILITY and target.visibility == "public" and target.kind != "instance":
        return Allowed("public")
    return Denied(Deny.UNAUTHENTICATED, "anonymous")


def _decide_deploy_token(principal: DeployTokenPrincipal, target: Target, op: Operation) -> Decision:
    scopes = set(principal.token.scopes)
    reach = reaches(principal, target)
    if op in _LOGIN_FAMILIES:
        if scopes <= PACKAGE_SCOPES:
            return Denied(Deny.UNAUTHENTICATED, "deploy token holds only package scopes")
        if op in _GIT_DENIALS and not reach:
            # GitLab fails the Basic login itself when the token does not reach the project → 401.
            return Denied(Deny.UNAUTHENTICATED, "deploy token does not reach the project")
    public_read = target.visibility == "public" and op in (Operation.REGISTRY_PULL, Operation.PACKAGE_READ)
    if not reach and not public_read:
        return Denied(Deny.NOT_FOUND, "deploy token does not reach the target")
    allowed_by = _DEPLOY_SCOPES.get(op)
    if allowed_by and scopes & allowed_by and reach:
        return Allowed("deploy token scope")
    if public_read and target.kind != "instance":
        return Allowed("public")
    if op in _GIT_DENIALS:
        return Denied(Deny.FORBIDDEN, _GIT_DENIALS[op])
    return Denied(Deny.FORBIDDEN, f"deploy token may not {op.value}")


def _pat_allows(principal: UserPrincipal, op: Operation) -> bool:
    if principal.scopes is None:  # password or session: the user's full rights
        return True
    return bool(principal.scopes & _PAT_SCOPES.get(op, frozenset({"api"})))


def _decide_user(principal: UserPrincipal, target: Target, op: Operation, levels: Iterable[int]) -> Decision:
    user = principal.user
    if not user.active:
        return Denied(Deny.UNAUTHENTICATED, "user is blocked")
    if not _pat_allows(principal, op):
        if op in _LOGIN_FAMILIES:
            if principal.scopes is not None and not principal.scopes & _LOGIN_SCOPES:
                # A PAT with no git or registry ability fails the Basic login itself (auth.rb abilities_for_scopes).
                return Denied(Deny.UNAUTHENTICATED, "token scope does not allow a login")
            if op in _GIT_DENIALS:
                # git_access.rb: authenticated, but the token's abilities lack this one → auth_upload/auth_download
                return Denied(Deny.FORBIDDEN, _GIT_DENIALS[op])
        return Denied(Deny.FORBIDDEN, INSUFFICIENT_SCOPE, tuple(sorted(_PAT_SCOPES.get(op, frozenset({"api"})))))
    if target.kind == "instance":
        if op is Operation.READ_USERS or op is Operation.CREATE_GROUP:
            return Allowed("signed-in user")
        if user.is_admin and op in (Operation.ADMIN, Operation.LIST_ALL_DEPLOY_TOKENS, Operation.REGISTRY_CATALOG):
            return Allowed("admin")
        return Denied(Deny.FORBIDDEN, "administrator only")
    if target.kind == "user":
        if op is Operation.REVOKE_PERSONAL_ACCESS_TOKEN and target.id == user.id:
            return Allowed("own token")
        if user.is_admin:
            return Allowed("admin")
        return Denied(Deny.FORBIDDEN, "another user's")
    if user.is_admin:
        return Allowed("admin")
    level = effective_level(levels)
    if target.personal_owner_id == user.id:
        level = max(level, AccessLevel.OWNER)
    visible = target.visibility in ("public", "internal") or level >= AccessLevel.GUEST
    if not visible:
        return Denied(Deny.NOT_FOUND, "target not visible to the user")
    if op in _OPEN_BY_VISIBILITY and target.visibility in ("public", "internal"):
        return Allowed(f"{target.visibility} {target.kind}")
    if op is Operation.CREATE_PROJECT and target.personal_owner_id is not None:
        # Only the owner creates projects in a personal namespace.
        return (
            Allowed("own namespace")
            if target.personal_owner_id == user.id
            else Denied(Deny.FORBIDDEN, "not the namespace owner")
        )
    required = _LEVELS.get(op)
    if required is None:
        return Denied(Deny.FORBIDDEN, f"{op.value} is not a {target.kind} operation")
    if level >= required:
        return Allowed(f"access level {level} >= {int(required)}")
    if op is Operation.GIT_WRITE:
        return Denied(Deny.FORBIDDEN, "You are not allowed to push code to this project.")
    if op is Operation.GIT_READ:
        return Denied(Deny.FORBIDDEN, "You are not allowed to download code.")
    return Denied(Deny.FORBIDDEN, f"access level {level} < {int(required)}")


@dataclass(frozen=True)
class ListReach:
    """What decide() shows a principal of one kind of target, as a database can select it: every target of the
    `open` visibilities, and a user's further ones through a membership at `member_level` or above (None: none
    does), or in their `own_namespace`."""

    open: tuple[Visibility, ...]
    member_level: int | None
    own_namespace: bool


def list_reach(principal: Principal, kind: Literal["project", "group"], op: Operation) -> ListReach:
    """Read off decide() itself, so that a list and a decision cannot disagree on a rule: a visibility is open when
    decide allows a target of it nobody is a member of; memberships reach from the least level at which decide
    allows a private target; the personal namespace when it allows a private target there. A list selects this in
    the database instead of asking decide about every item; it rests on decide having no path to a target but these
    (tests compare each list with decide's verdict on every item)."""
    open_ = tuple(v for v in VISIBILITIES if decide(principal, Target(kind, visibility=v), op))
    if not isinstance(principal, UserPrincipal):
        return ListReach(open_, member_level=None, own_namespace=False)
    private = Target(kind, visibility="private")
    own = Target(kind, visibility="private", personal_owner_id=principal.user.id)
    member_level = next((level for level in sorted(MEMBER_LEVELS) if decide(principal, private, op, (level,))), None)
    return ListReach(open_, member_level, own_namespace=bool(decide(principal, own, op)))


_REGISTRY_ACTIONS = {
    "pull": Operation.REGISTRY_PULL,
    "push": Operation.REGISTRY_PUSH,
    "delete": Operation.REGISTRY_DELETE,
}


def registry_operation(action: str) -> Operation | None:
    """The operation behind a registry action; `*` and unknown actions map to nothing (never granted)."""
    return _REGISTRY_ACTIONS.get(action)
