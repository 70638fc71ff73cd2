"""The audit trail: management changes written as they happen; authentication decisions noted per request, buffered
in memory and written in batches by a background task (never a database write per request); tokens' last use.

Events have the shape of GitLab's audit events (author, entity, details); no secret is ever part of one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway.clients import Clients
from gateway.clock import Clock
from gateway.config import AuditConfig
from gateway.errors import StoreUnavailable
from gateway.last_use import LastUse
from gateway.policy import Allowed, Decision, Denied, Deny, Operation, Target
from gateway.principals import Anonymous, DeployTokenPrincipal, Principal, UserPrincipal, describe
from gateway.store.base import DeployToken, NewAuditEvent, PersonalAccessToken, Store, User

log = logging.getLogger("gateway.audit")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# GitLab's pseudo-authors (lib/gitlab/audit/*_author.rb): ids that are not users.
UNAUTHENTICATED_AUTHOR = -1
DEPLOY_TOKEN_AUTHOR = -2
# This gateway's own: an operator at the command line (`gateway users ...`), who has no user or token.
OPERATOR_AUTHOR = -3
# GitLab's entity for instance-wide events (Gitlab::Audit::InstanceScope, entity_id 1).
INSTANCE_SCOPE = "Gitlab::Audit::InstanceScope"
ENTITY_TYPES = ("User", "Group", "Project", INSTANCE_SCOPE)
USER_AGENT_MAX = 256
PURGE_EVERY = 3600.0  # seconds between two retention purges

# Event names. Management ones are GitLab's audit event types; decisions are this gateway's own.
AUTHENTICATION_FAILED = "authentication_failed"
ACCESS_ALLOWED = "access_allowed"
ACCESS_DENIED = "access_denied"
BANNED_REASON = "client address banned after too many failed authentications"
LOCKED_REASON = "password sign-in of the user locked after too many failures"
_DEPLOY_TOKEN_EVENTS = {
    "created": "deploy_token_created",
    "revoked": "deploy_token_revoked",
    "deleted": "deploy_token_destroyed",
}


@dataclass
class Trail:
    """What one request authenticated and decided; recorded once, when its answer is known (AuditLog.middleware)."""

    presented: bool = False  # credentials were checked (authn.authenticate)
    # Refused before its secret was checked: why (BANNED_REASON, LOCKED_REASON), or "" (bruteforce.py, authn.py).
    banned: str = ""
    principal: Principal | None = None  # None with `presented`: bad credentials
    decisions: list[tuple[Principal, Target, Operation, Decision]] = field(default_factory=list)


# The trail of the request being handled: set by the middleware, so that the places that decide (authn.py,
# access.py) note what they decided without every caller passing the request along.
_trail: ContextVar[Trail | None] = ContextVar("audit_trail", default=None)


def authenticated(principal: Principal | None) -> None:
    """authn.py: the outcome of a credentials check (None: bad credentials)."""
    trail = _trail.get()
    if trail is not None:
        trail.presented, trail.principal = True, principal


def banned(reason: str = BANNED_REASON) -> None:
    """authn.py: the client address is banned, or the user's password locked (LOCKED_REASON); the request is refused
    without checking its secret."""
    trail = _trail.get()
    if trail is not None:
        trail.banned = reason


def decided(principal: Principal, target: Target, op: Operation, decision: Decision) -> None:
    """access.py: a policy decision that gates what the request does."""
    trail = _trail.get()
    if trail is not None:
        trail.decisions.append((principal, target, op, decision))


def entity_of(target: Target) -> tuple[str, int]:
    if target.kind == "project":
        return "Project", target.id
    if target.kind == "group":
        return "Group", target.id
    if target.kind == "user":
        return "User", target.id
    return INSTANCE_SCOPE, 1


def author_of(principal: Principal | None) -> tuple[int, dict[str, Any]]:
    """GitLab's author_id and author details; a deploy token is named by its username, never its secret."""
    if isinstance(principal, UserPrincipal):
        return principal.user.id, {"author_name": principal.user.username, "author_class": "User"}
    if isinstance(principal, DeployTokenPrincipal):
        return DEPLOY_TOKEN_AUTHOR, {"author_name": principal.token.username, "author_class": "DeployToken"}
    return UNAUTHENTICATED_AUTHOR, {"author_name": "An unauthenticated user", "author_class": "Unauthenticated"}


def operator(login: str) -> tuple[int, dict[str, Any]]:
    """The author of a change made at the command line: the operating-system account that ran it."""
    return OPERATOR_AUTHOR, {"author_name": f"gateway CLI ({login})", "author_class": "Operator", "principal": "cli"}


@dataclass(frozen=True)
class Change:
    """A management change as GitLab's audit events describe it: `target` (type, id, name) is the changed object,
    `entity` (type, id) and `entity_path` where the event is listed; `extra` goes into the details as it is."""

    event_name: str
    entity: tuple[str, int]
    entity_path: str
    target: tuple[str, int, str]
    message: str
    extra: dict[str, Any] = field(default_factory=dict)


def change_event(now: datetime, author: tuple[int, dict[str, Any]], change: Change, **context: Any) -> NewAuditEvent:
    """The event of `change`: `author` as from author_of() or operator(), `context` where the change came from."""
    details: dict[str, Any] = {
        **author[1],
        "target_id": change.target[1],
        "target_type": change.target[0],
        "target_details": change.target[2],
        "custom_message": change.message,
        "entity_path": change.entity_path,
        **context,
        **change.extra,
    }
    return NewAuditEvent(now, author[0], change.entity[0], change.entity[1], change.event_name, details)


# --- the management changes recorded both by the API and by the command line: one wording for both ------------


def user_created(user: User) -> Change:
    """GitLab's user_created, on the new user's entity."""
    return Change(
        "user_created",
        ("User", user.id),
        user.username,
        ("User", user.id, user.username),
        f"Created user {user.username}" + (" (administrator)" if user.is_admin else ""),
        {"is_admin": user.is_admin},
    )


def pat_created(pat: PersonalAccessToken, owner: User) -> Change:
    """GitLab's personal_access_token_created, on the token owner's User entity; never the secret."""
    return Change(
        "personal_access_token_created",
        ("User", owner.id),
        owner.username,
        ("PersonalAccessToken", pat.id, pat.name),
        f"Created personal access token with id {pat.id} and scopes {list(pat.scopes)}",
        {
            "scopes": list(pat.scopes),
            "expires_at": pat.expires_at.astimezone(UTC).date().isoformat() if pat.expires_at else None,
        },
    )


def pat_revoked(pat: PersonalAccessToken, owner: User | None) -> Change:
    """GitLab's personal_access_token_revoked, on the owner's User entity (PersonalAccessTokens::RevokeService)."""
    return Change(
        "personal_access_token_revoked",
        ("User", pat.user_id),
        owner.username if owner else "",
        ("PersonalAccessToken", pat.id, pat.name),
        f"Revoked personal access token with id {pat.id}",
    )


def token_of(principal: Principal | None) -> tuple[str | None, int | None]:
    """Which token authenticated: ("deploy_token", id), ("personal_access_token", id) or (None, None)."""
    if isinstance(principal, DeployTokenPrincipal):
        return "deploy_token", principal.token.id
    if isinstance(principal, UserPrincipal) and principal.token_id is not None:
        return "personal_access_token", principal.token_id
    return None, None


def _significant(decisions: Sequence[tuple[Principal, Target, Operation, Decision]]) -> Iterable[int]:
    """Indexes of the decisions worth an event: a passing visibility check followed by the real operation on the
    same target (the API's find_project/find_group) is not one of its own; repeats are one."""
    if len(decisions) == 1:  # /jwt/auth for one action, git, packages: the hot path
        yield 0
        return
    seen: set[tuple[object, ...]] = set()
    for i, (principal, target, op, decision) in enumerate(decisions):
        later_same_target = any(t == target for _, t, _, _ in decisions[i + 1 :])
        if op in (Operation.READ_PROJECT, Operation.READ_GROUP) and decision and later_same_target:
            continue
        key = (describe(principal), target.kind, target.id, op, bool(decision))
        if key not in seen:
            seen.add(key)
            yield i


class AuditLog:
    """One per process: the request middleware, the buffer of decisions and the writer task."""

    def __init__(self, config: AuditConfig, clock: Clock, clients: Clients, last_use: LastUse) -> None:
        self.config, self.clock, self.clients, self.last_use = config, clock, clients, last_use
        self.store: Store | None = None  # set when the store is open (app.py)
        # Identical decisions between two writes are one event with a count: key → (event, count).
        self._pending: dict[tuple[object, ...], tuple[NewAuditEvent, int]] = {}
        self._retry: list[NewAuditEvent] = []  # management events whose direct write failed: never dropped
        self.dropped = 0  # decisions dropped because the buffer was full or the database down
        # Requests not yet recorded: a streamed answer (git, packages) reaches its client before its handler ends.
        self.in_flight = 0
        self._dropped_reported = 0

    # --- the request side (hot path: memory only) -------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        trail = Trail()
        token = _trail.set(trail)
        status = 500
        self.in_flight += 1
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            _trail.reset(token)
            self.in_flight -= 1
            if trail.presented or trail.decisions or trail.banned:
                try:
                    self._finish(request, trail, status)
                except Exception:  # the audit trail must never turn an answer into a failure
                    log.exception("audit: recording a request failed")

    def client(self, request: web.Request) -> tuple[str, str]:
        """The client's address (trusted-proxy aware) and user agent (truncated)."""
        return self.clients.address(request), request.headers.get("User-Agent", "")[:USER_AGENT_MAX]

    def _finish(self, request: web.Request, trail: Trail, status: int) -> None:
        ip, agent = self.client(request)
        now = self.clock.now()
        kind, token_id = token_of(trail.principal)
        if kind is not None and token_id is not None:
            self.last_use.used(kind, token_id, ip, now)  # type: ignore[arg-type]
        mode = self.config.authentication
        if mode == "off":
            return
        route = request.match_info.route.name or "" if request.match_info.route else ""
        common = (ip, agent, route)
        if trail.banned:  # a spray from a banned address: one event per client and route per flush, with a count
            self._note(now, None, None, None, Denied(Deny.FORBIDDEN, trail.banned), common, name=ACCESS_DENIED)
            return
        if trail.presented and trail.principal is None:
            self._note(now, None, None, None, Denied(Deny.UNAUTHENTICATED, "invalid credentials"), common)
            return
        kept = list(_significant(trail.decisions))
        if not kept and trail.principal is not None and not isinstance(trail.principal, Anonymous):
            # Authenticated, and refused or served without a policy decision of its own (an unknown project, a
            # token without the family's scope, a user endpoint): the answer's status says which.
            outcome: Decision = Allowed(f"HTTP {status}") if status < 400 else Denied(Deny.FORBIDDEN, f"HTTP {status}")
            if mode == "all" or not outcome:
                self._note(now, trail.principal, None, None, outcome, common)
            return
        for i in kept:
            principal, target, op, decision = trail.decisions[i]
            if isinstance(principal, Anonymous) and isinstance(decision, Denied):
                continue  # the anonymous probe git and docker send before credentials: a challenge, not a decision
            if mode == "denied" and decision:
                continue
            self._note(now, principal, target, op, decision, common)

    def _note(
        self,
        now: Any,
        principal: Principal | None,
        target: Target | None,
        op: Operation | None,
        decision: Decision,
        common: tuple[str, str, str],
        *,
        name: str | None = None,
    ) -> None:
        who = describe(principal) if principal is not None else "unknown"
        # What makes two decisions the same event (the principal names the token; the rest follows from these).
        key = (who, target, op, bool(decision), decision.reason, common)
        pending = self._pending.get(key)
        if pending is not None:
            self._pending[key] = (pending[0], pending[1] + 1)  # the hot path of a busy client: no new event
            return
        if len(self._pending) >= self.config.max_pending:
            self.dropped += 1
            return
        author_id, author = author_of(principal)
        token_type, token_id = token_of(principal)
        entity_type, entity_id = entity_of(target) if target else (INSTANCE_SCOPE, 1)
        outcome = "allowed" if decision else "denied"
        if name is None:
            name = AUTHENTICATION_FAILED if principal is None else ACCESS_ALLOWED if decision else ACCESS_DENIED
        operation = op.value if op else None
        details: dict[str, Any] = {
            **author,
            "target_id": entity_id,
            "target_type": entity_type,
            "custom_message": f"{outcome} {operation or 'request'}: {decision.reason}",
            "ip_address": common[0],
            "user_agent": common[1],
            "route": common[2],
            "principal": who,
            "token_type": token_type,
            "token_id": token_id,
            "operation": operation,
            "outcome": outcome,
            "reason": decision.reason,
        }
        self._pending[key] = (NewAuditEvent(now, author_id, entity_type, entity_id, name, details), 1)

    # --- management changes (rare: written at once, with the change) ------------------------------------------

    async def record_change(self, request: web.Request, author: UserPrincipal, change: Change) -> None:
        """A management change that has just committed: written now. Should that write fail, the event is kept in
        memory and written with the next batch (never dropped), and the change itself still stands."""
        ip, agent = self.client(request)
        author_id, author_details = author_of(author)
        token_type, token_id = token_of(author)
        route = request.match_info.route.name or "" if request.match_info.route else ""
        event = change_event(
            self.clock.now(),
            (author_id, {**author_details, "principal": describe(author)}),
            change,
            ip_address=ip,
            user_agent=agent,
            route=route,
            token_type=token_type,
            token_id=token_id,
        )
        try:
            assert self.store is not None
            await self.store.insert_audit_events([event])
        except StoreUnavailable as exc:
            log.error("audit: %s not written yet (%s); kept for the next batch", change.event_name, exc)
            self._retry.append(event)

    async def deploy_token_changed(
        self, request: web.Request, author: UserPrincipal, holder: tuple[str, int, str], change: str, token: DeployToken
    ) -> None:
        """A deploy token created, revoked or deleted (API and UI): GitLab's event types and wording, on the token's
        project or group (`holder`: entity type, id, full path); the token's name and username, never its secret."""
        kind = "project" if holder[0] == "Project" else "group"
        described = Change(
            _DEPLOY_TOKEN_EVENTS[change],
            (holder[0], holder[1]),
            holder[2],
            ("DeployToken", token.id, token.name),
            f"{change.capitalize()} {kind} deploy token with name: {token.name} with token_id: {token.id}"
            f" with scopes: {list(token.scopes)}",
            {
                "deploy_token_username": token.username,
                "scopes": list(token.scopes),
                "expires_at": token.expires_at.isoformat() if token.expires_at else None,
            },
        )
        await self.record_change(request, author, described)

    # --- the writer (background task) -------------------------------------------------------------------------

    async def flush(self) -> int:
        """Write buffered events in one batch and tokens' last use; return the number of events written."""
        store = self.store
        if store is None:
            return 0
        pending, self._pending = self._pending, {}
        events = list(self._retry)
        for event, count in pending.values():
            event.details["count"] = count
            events.append(event)
        written = 0
        if events:
            try:
                await store.insert_audit_events(events)
                written = len(events)
                self._retry.clear()
            except StoreUnavailable as exc:
                lost = sum(count for _, count in pending.values())
                self.dropped += lost
                self._retry = self._retry[-self.config.max_pending :]
                log.warning("audit: %d decisions not written: %s", lost, exc)
        if self.dropped > self._dropped_reported:
            log.warning("audit: %d decisions dropped so far (buffer full or database down)", self.dropped)
            self._dropped_reported = self.dropped
        await self.last_use.flush(store, self.clock.now())
        return written

    async def purge(self) -> int:
        """Delete events older than audit.retention_days (by the app clock)."""
        if self.store is None:
            return 0
        cutoff = self.clock.now() - timedelta(days=self.config.retention_days)
        try:
            purged = await self.store.purge_audit_events(cutoff)
        except StoreUnavailable as exc:
            log.warning("audit: retention purge failed: %s", exc)
            return 0
        if purged:
            log.info("audit: %d events older than %d days deleted", purged, self.config.retention_days)
        return purged

    async def run(self) -> None:
        """Flush every audit.flush_interval seconds, purge every hour (and at start)."""
        loop = asyncio.get_running_loop()
        next_purge = loop.time()
        while True:
            try:
                if loop.time() >= next_purge:
                    next_purge = loop.time() + PURGE_EVERY
                    await self.purge()
                await asyncio.sleep(self.config.flush_interval)
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("audit: writer failed; retrying")
