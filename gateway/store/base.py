"""The Store protocol and the frozen records it returns; SQLite and PostgreSQL both implement it.

Only gateway/store/ runs SQL; everything above it speaks in these records and domain-named methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

if TYPE_CHECKING:
    from gateway.store.copy import Side

NamespaceKind = Literal["group", "user"]
Visibility = Literal["private", "internal", "public"]
UserState = Literal["active", "blocked"]
SourceKind = Literal["project", "namespace"]

T = TypeVar("T")

VISIBILITIES: tuple[Visibility, ...] = ("private", "internal", "public")


def storable(text: str) -> bool:
    """Text both databases store: no NUL (PostgreSQL refuses one in text) and no lone surrogate (a JSON "\\ud800"
    escape, which neither driver encodes). Inputs are checked with this before anything is written; a read asked
    to match such text finds nothing."""
    if "\0" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def readable_args(args: Sequence[Any]) -> bool:
    """Whether a read's parameters (and the items of list parameters) are all storable text or not text: when not,
    no row can match, and the read answers nothing without asking the database."""
    for arg in args:
        if isinstance(arg, str) and not storable(arg):
            return False
        if isinstance(arg, list | tuple) and not readable_args(arg):
            return False
    return True


@dataclass(frozen=True)
class User:
    id: int
    username: str
    name: str
    email: str
    password_hash: str | None
    is_admin: bool
    state: UserState
    created_at: datetime
    namespace_id: int

    @property
    def active(self) -> bool:
        return self.state == "active"


@dataclass(frozen=True)
class Namespace:
    """A group or a user's personal namespace; `traversal_ids` runs from the root to this namespace."""

    id: int
    kind: NamespaceKind
    name: str
    path: str
    full_path: str
    parent_id: int | None
    traversal_ids: tuple[int, ...]
    visibility: Visibility
    description: str
    created_at: datetime
    owner_id: int | None  # the user of a personal namespace

    @property
    def depth(self) -> int:
        return len(self.traversal_ids)


@dataclass(frozen=True)
class Project:
    id: int
    name: str
    path: str
    full_path: str
    namespace: Namespace
    visibility: Visibility
    description: str
    created_at: datetime
    creator_id: int | None


@dataclass(frozen=True)
class Member:
    source_kind: SourceKind
    source_id: int
    user: User
    access_level: int
    created_at: datetime


@dataclass(frozen=True)
class PersonalAccessToken:
    id: int
    user_id: int
    name: str
    scopes: tuple[str, ...]
    expires_at: datetime | None
    revoked: bool
    created_at: datetime
    last_used_at: datetime | None
    # The most recent distinct client addresses, newest first (GitLab keeps five; gateway/last_use.py).
    last_used_ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeployToken:
    """A project or group deploy token; exactly one of project_id and group_id is set."""

    id: int
    name: str
    custom_username: str | None
    scopes: tuple[str, ...]
    expires_at: datetime | None
    revoked: bool
    created_at: datetime
    creator_id: int | None
    project_id: int | None
    group_id: int | None
    token_encrypted: bytes | None  # only for `gitlab-deploy-token` (CI variables need the plaintext)
    # Written at most once a minute per token (gateway/last_use.py); not GitLab fields, shown after them.
    last_used_at: datetime | None = None
    last_used_ips: tuple[str, ...] = ()

    @property
    def username(self) -> str:
        """The effective username: the custom one, else GitLab's default `gitlab+deploy-token-{id}`."""
        return self.custom_username or f"gitlab+deploy-token-{self.id}"


@dataclass(frozen=True)
class NewDeployToken:
    name: str
    custom_username: str | None
    scopes: tuple[str, ...]
    expires_at: datetime | None
    token_digest: bytes
    token_encrypted: bytes | None
    creator_id: int | None
    project_id: int | None
    group_id: int | None
    created_at: datetime


@dataclass(frozen=True)
class PackageName:
    """A package name recorded for a project (docs/packages.md: ownership of names in flat backends)."""

    format: str
    name: str
    project_id: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class WebSession:
    """A signed-in browser (web UI); the store knows it only by the SHA-256 digest of the cookie's session id."""

    user_id: int
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class AuthFailures:
    """Failed authentications counted for one client address (gateway/bruteforce.py), and its ban if any."""

    address: str
    failures: int  # since window_start
    window_start: datetime
    updated_at: datetime  # the last failure (or the ban)
    banned_until: datetime | None


@dataclass(frozen=True)
class KeyHolder:
    """The keys one running gateway process holds, as it last reported them (gateway/key_holders.py)."""

    process: str  # host:pid:nonce
    encryption_keys: tuple[str, ...]  # key ids, the one it seals with first
    registry_kid: str  # "" without a registry signing key
    age: float  # seconds since its report, by the database's clock (replicas' clocks may disagree)


@dataclass(frozen=True)
class NewAuditEvent:
    """An audit event to record (gateway/audit.py); `details` is JSON-serialisable and never holds a secret."""

    created_at: datetime
    author_id: int  # a user id, or GitLab's pseudo-authors: -1 unauthenticated, -2 a deploy token
    entity_type: str  # "Project", "Group", "User" or "Gitlab::Audit::InstanceScope"
    entity_id: int
    event_name: str
    details: dict[str, Any]


@dataclass(frozen=True)
class AuditEvent(NewAuditEvent):
    id: int = 0


@dataclass(frozen=True)
class AuditQuery:
    """Filters of the audit events API: every given one must hold (created_* inclusive, as GitLab's)."""

    entity_type: str | None = None
    entity_id: int | None = None
    author_id: int | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    id_before: int | None = None  # only events older than this one (keyset pagination's cursor)


TokenKind = Literal["deploy_token", "personal_access_token"]


@dataclass(frozen=True)
class TokenUse:
    """A token's last use as one process saw it: when, and its recent client addresses (newest first)."""

    kind: TokenKind
    token_id: int
    at: datetime
    ips: tuple[str, ...]


# A list's total is counted this far and no further; past it, the API leaves the total out (GitLab's offset
# pagination: "for performance reasons, if a query returns more than 10,000 records" no x-total, x-total-pages or
# rel="last").
COUNT_LIMIT = 10_000
# A search term this long matches a part of a name, a shorter one only a whole name (GitLab's Gitlab::SQL::Pattern
# MIN_CHARS_FOR_PARTIAL_MATCHING): one or two letters would match most of an instance, and no trigram index serves
# them.
MIN_CHARS_FOR_PARTIAL_MATCHING = 3


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int  # page_projects and page_groups: counted up to past COUNT_LIMIT and past this page's end


ListOrder = Literal["id", "name", "path", "created_at"]
UserOrder = Literal["id", "name", "username", "created_at"]


@dataclass(frozen=True)
class Keyset:
    """Keyset pagination's cursor: the previous page's last item, by the list's order key (a name in any case, or a
    time; None when the list is ordered by id) and its id. The next page starts past it, however deep."""

    key: str | datetime | None
    id: int


@dataclass(frozen=True)
class Listing:
    """One page of a project or group list (GET /projects, GET /groups, a group's projects and subgroups), chosen,
    ordered and cut in the database. What it may hold is policy's (policy.list_reach): every item of the `open`
    visibilities, and those a user's memberships reach (the trees below their groups, their projects) or their
    personal namespace holds (its user is its Owner). The rest narrows that, as the API's filters do."""

    open: tuple[Visibility, ...] = ()
    member_id: int | None = None  # whose memberships reach further
    min_level: int = 0  # only memberships at this access level or above reach
    personal_namespace_id: int | None = None  # whose projects are the caller's own
    visibility: Visibility | None = None
    # The item's name or path (a project's description too), in any case: a part of one, or all of one if shorter than
    # MIN_CHARS_FOR_PARTIAL_MATCHING.
    search: str = ""
    namespace_ids: tuple[int, ...] | None = None  # projects: only those directly in these namespaces
    id_after: int | None = None  # projects: only ids above this (GitLab's id_after; keyset pagination's cursor)
    id_before: int | None = None  # projects: only ids below this
    parent_id: int | None = None  # groups: only the children of this group
    top_level_only: bool = False  # groups: only those without a parent
    after: Keyset | None = None  # groups: only those past this cursor in the listing's order
    order_by: ListOrder = "id"
    descending: bool = False


class Store(Protocol):
    """Persistence of the domain. Methods raise Conflict on uniqueness violations, StoreUnavailable on outages."""

    # lifecycle
    async def migrate(self, *, upto: int | None = None) -> int: ...
    async def schema_version(self) -> int: ...
    async def close(self) -> None: ...
    # one transaction of `gateway store copy` (store/copy.py): a consistent snapshot, or an all-or-nothing load
    def copy_transaction(self, *, write: bool) -> AbstractAsyncContextManager[Side]: ...

    # users and personal access tokens
    async def create_user(
        self, *, username: str, name: str, email: str, password_hash: str | None, is_admin: bool, now: datetime
    ) -> User: ...
    async def get_user(self, user_id: int) -> User | None: ...
    async def get_user_by_username(self, username: str) -> User | None: ...
    async def list_users(
        self,
        *,
        offset: int,
        limit: int,
        search: str = "",
        search_email: bool = True,
        order_by: UserOrder = "id",
        descending: bool = False,
        after: Keyset | None = None,
        count_up_to: int | None = None,
    ) -> Page[User]:
        """A page of users: `search` (any case) a part of the username or name (the whole of it if shorter than
        MIN_CHARS_FOR_PARTIAL_MATCHING), or with `search_email` the whole e-mail address; ordered by `order_by`
        (text case-insensitively), ties by id in the same direction; only those past `after` in that order; the
        total counted up to `count_up_to` (default: past COUNT_LIMIT and past this page)."""
        ...

    async def find_user_by_email(self, email: str) -> User | None:
        """The user with this e-mail address, compared in lower case."""
        ...

    async def count_users(self) -> int: ...
    async def set_user_state(self, user_id: int, state: UserState) -> User | None: ...
    async def create_personal_access_token(
        self,
        *,
        user_id: int,
        name: str,
        token_digest: bytes,
        scopes: Sequence[str],
        expires_at: datetime | None,
        now: datetime,
    ) -> PersonalAccessToken: ...
    async def find_personal_access_token(self, token_digest: bytes) -> PersonalAccessToken | None: ...
    async def list_personal_access_tokens(self, user_id: int) -> list[PersonalAccessToken]: ...
    async def get_personal_access_token(self, token_id: int) -> PersonalAccessToken | None: ...
    async def revoke_personal_access_token(self, token_id: int) -> bool: ...

    # groups, personal namespaces and projects (owner_id: a user made Owner member in the same transaction)
    async def create_group(
        self,
        *,
        name: str,
        path: str,
        parent_id: int | None,
        visibility: Visibility,
        description: str,
        now: datetime,
        owner_id: int | None = None,
    ) -> Namespace: ...
    async def get_namespace(self, namespace_id: int) -> Namespace | None: ...
    async def get_namespace_by_path(self, full_path: str) -> Namespace | None: ...
    async def list_groups(self) -> list[Namespace]: ...
    async def page_groups(
        self, listing: Listing, *, offset: int, limit: int, count_up_to: int | None = None
    ) -> Page[Namespace]:
        """The groups `listing` chooses, ordered by its key (case-insensitive for text, ties by id ascending); the
        total counted up to `count_up_to` (default: past COUNT_LIMIT and past this page)."""
        ...

    async def list_group_tree(self, group_id: int) -> list[Namespace]:
        """The group and every group below it, ordered by id (none for an unknown id or a personal namespace)."""
        ...

    async def create_project(
        self,
        *,
        namespace_id: int,
        name: str,
        path: str,
        visibility: Visibility,
        description: str,
        creator_id: int | None,
        now: datetime,
        owner_id: int | None = None,
    ) -> Project: ...
    async def delete_project(self, project_id: int) -> bool: ...
    async def get_project(self, project_id: int) -> Project | None: ...
    async def get_project_by_path(self, full_path: str) -> Project | None: ...
    async def find_projects_by_paths(self, full_paths: Sequence[str]) -> list[Project]: ...
    async def list_projects(self) -> list[Project]: ...
    async def page_projects(
        self, listing: Listing, *, offset: int, limit: int, count_up_to: int | None = None
    ) -> Page[Project]:
        """The projects `listing` chooses, ordered by its key (case-insensitive for text), ties by id in the same
        direction; the total counted up to `count_up_to` (default: past COUNT_LIMIT and past this page)."""
        ...

    async def list_projects_in(self, namespace_ids: Sequence[int]) -> list[Project]:
        """The projects directly in these namespaces, ordered by id (a group's listings read its tree, not all)."""
        ...

    # memberships
    async def add_member(
        self, *, source_kind: SourceKind, source_id: int, user_id: int, access_level: int, now: datetime
    ) -> Member: ...
    async def list_members(self, source_kind: SourceKind, source_id: int) -> list[Member]: ...
    async def get_member(self, source_kind: SourceKind, source_id: int, user_id: int) -> Member | None: ...
    async def page_members(
        self,
        source_kind: SourceKind,
        source_id: int,
        *,
        offset: int,
        limit: int,
        query: str = "",
        user_ids: Sequence[int] | None = None,
    ) -> Page[Member]:
        """A page of one project's or group's direct members, by user id: `query` (any case, any length, as GitLab's
        members API) a part of the username or name, `user_ids` those users only; the total counted up to past
        COUNT_LIMIT and past this page."""
        ...

    async def list_user_memberships(self, user_id: int) -> list[Member]:
        """Every direct membership of one user (projects and groups), ordered by source kind then id."""
        ...

    async def access_levels(
        self, user_id: int, *, project_id: int | None, namespace_ids: Sequence[int]
    ) -> list[int]: ...

    # deploy tokens
    async def create_deploy_token(self, new: NewDeployToken) -> DeployToken: ...
    async def get_deploy_token(self, token_id: int) -> DeployToken | None: ...
    async def find_deploy_token(self, token_digest: bytes) -> DeployToken | None: ...
    async def list_deploy_tokens(
        self,
        *,
        project_id: int | None = None,
        group_id: int | None = None,
        active_at: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> Page[DeployToken]:
        """A page of deploy tokens by id; the total counted up to past COUNT_LIMIT and past this page."""
        ...

    async def find_named_deploy_token(
        self, name: str, *, project_id: int | None = None, group_id: int | None = None, active_at: datetime
    ) -> DeployToken | None: ...
    async def revoke_deploy_token(self, token_id: int) -> bool: ...
    async def delete_deploy_token(self, token_id: int) -> bool: ...
    async def report_key_holder(self, process: str, encryption_keys: Sequence[str], registry_kid: str) -> None:
        """Record (or refresh) what keys a running process holds, stamped by the database's clock."""
        ...

    async def list_key_holders(self, within: float) -> list[KeyHolder]:
        """The processes that reported within the last `within` seconds (the database's clock), by process."""
        ...

    async def forget_key_holder(self, process: str) -> None: ...
    async def delete_stale_key_holders(self, older_than: float) -> int: ...
    async def list_sealed_deploy_tokens(self) -> list[tuple[int, bytes]]:
        """(id, sealed secret) of every token whose secret is kept sealed (`gitlab-deploy-token`), by id."""
        ...

    async def reseal_deploy_token(self, token_id: int, sealed: bytes, resealed: bytes) -> bool:
        """Replace a token's sealed secret if it still is `sealed` (rotating the encryption key); whether it was."""
        ...

    # web UI sessions (web/sessions.py): keyed by the SHA-256 digest of the session id, never the id itself
    async def create_web_session(
        self, *, session_digest: bytes, user_id: int, created_at: datetime, expires_at: datetime
    ) -> None: ...
    async def get_web_session(self, session_digest: bytes) -> WebSession | None: ...
    async def delete_web_session(self, session_digest: bytes) -> bool: ...
    async def delete_expired_web_sessions(self, now: datetime) -> int: ...

    # failed authentications per client address (gateway/bruteforce.py): one write per failure, none per success
    # of an address without failures; these writes leave the hot-read cache alone (it holds nothing of theirs)
    async def record_auth_failure(self, address: str, *, now: datetime, window_start_after: datetime) -> int:
        """Count one failure of `address` and return its failures in the current window, this one included; a
        window that started at or before `window_start_after` is over and a new one starts `now` (atomic)."""
        ...

    async def ban_address(self, address: str, *, until: datetime, now: datetime) -> None:
        """Ban `address` until `until`; its count starts again from zero."""
        ...

    async def clear_auth_failures(self, address: str, *, now: datetime, lift_ban: bool = False) -> bool:
        """Forget the failures of `address` (a success), unless it is banned at `now` and `lift_ban` is False (an
        operator's `gateway bans lift`); True if a row went."""
        ...

    async def list_auth_failures(self, *, now: datetime, updated_since: datetime, limit: int) -> list[AuthFailures]:
        """Addresses banned at `now` or with a failure after `updated_since`, most recently updated first."""
        ...

    async def delete_stale_auth_failures(self, *, now: datetime, updated_before: datetime) -> int:
        """Drop addresses not banned at `now` whose last failure is before `updated_before`; return how many."""
        ...

    # package names (docs/packages.md)
    async def claim_package_name(
        self, *, format: str, name: str, project_id: int, exclusive: bool, now: datetime
    ) -> int:
        """Record that `project_id` uploads `name`; return the owner. With `exclusive`, a name another project
        holds is not recorded and that project's id is returned (atomic: two claims never both win)."""
        ...

    async def package_name_owners(self, format: str, name: str) -> list[PackageName]:
        """Every project holding `name`, most recent upload first."""
        ...

    async def list_package_names(self, format: str, project_ids: Sequence[int]) -> list[PackageName]:
        """The names held by these projects, ordered by name then project."""
        ...

    # audit trail and last use (gateway/audit.py, gateway/last_use.py): these writes leave the hot-read cache
    # alone (they change nothing it holds that matters within its lifetime)
    async def insert_audit_events(self, events: Sequence[NewAuditEvent]) -> None:
        """Append events in one transaction, in order."""
        ...

    async def list_audit_events(
        self, query: AuditQuery, *, offset: int, limit: int, count_up_to: int | None = None
    ) -> Page[AuditEvent]:
        """Matching events, newest first (id descending); the total counted up to `count_up_to` (default: past
        COUNT_LIMIT and past this page)."""
        ...

    async def get_audit_event(self, event_id: int) -> AuditEvent | None: ...
    async def purge_audit_events(self, before: datetime) -> int:
        """Delete events created before `before` (retention); return how many."""
        ...

    async def record_token_use(self, use: TokenUse, *, min_interval: float, keep_ips: int) -> bool:
        """Store a token's last use unless the stored one is less than `min_interval` seconds older (another
        process wrote it); the stored addresses are merged behind the new ones, `keep_ips` at most. True if
        written; False also when the token no longer exists."""
        ...
