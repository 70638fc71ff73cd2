"""Audit events API (GitLab's ee/lib/api/audit_events.rb and the group/project variants): instance events for
administrators; a group's for its Owners, a project's for its Maintainers; Developers see only their own."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway import access, audit
from gateway.api import entities, pagination
from gateway.api.common import caller, choice_param, find_group, find_project, path_id, raise_denied, string_param
from gateway.app import STORE
from gateway.errors import NotFound, ParamError
from gateway.policy import INSTANCE, Denied, Operation, Target
from gateway.principals import UserPrincipal
from gateway.store.base import AuditEvent, AuditQuery


def entity(event: AuditEvent) -> dict[str, Any]:
    """GitLab's AuditEvent entity: id, author_id, entity_id, entity_type, event_name, details, created_at."""
    return {
        "id": event.id,
        "author_id": event.author_id,
        "entity_id": event.entity_id,
        "entity_type": event.entity_type,
        "event_name": event.event_name,
        "details": event.details,
        "created_at": entities.iso(event.created_at),
    }


def _time(request: web.Request, key: str) -> datetime | None:
    """created_after / created_before: ISO 8601 (a date alone is its midnight UTC); anything else is a 400."""
    raw = request.query.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ParamError(f"{key} is invalid") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _query(request: web.Request, fixed: AuditQuery) -> AuditQuery:
    """`fixed` (what the caller may see) narrowed by the time window of the query string."""
    return replace(
        fixed, created_after=_time(request, "created_after"), created_before=_time(request, "created_before")
    )


async def _respond(request: web.Request, query: AuditQuery) -> web.Response:
    """A page of events, newest first: by offset, or by keyset (pagination=keyset, as GitLab's CursorBasedKeyset
    has for AuditEvent: by id descending only), whose next page is read from the cursor on, however deep."""
    p = dict(request.query)
    keyset = choice_param(p, "pagination", ("offset", "keyset"), "offset") == "keyset"
    pr = pagination.page_request(request)
    store = request.app[STORE]
    if not keyset:
        page = await store.list_audit_events(query, offset=pr.offset, limit=pr.per_page)
        return pagination.respond(request, [entity(e) for e in page.items], page.total, pr)
    if p.get("order_by", "id") != "id" or p.get("sort", "desc") != "desc":
        return pagination.keyset_unavailable()
    values = pagination.decode_cursor(string_param(p, "cursor") or "", ("id",))
    if values is not None:
        query = replace(query, id_before=int(values["id"]))
    page = await store.list_audit_events(query, offset=0, limit=pr.per_page, count_up_to=pr.per_page + 1)
    cursor = pagination.next_cursor(page.items, page.total, pr.per_page, lambda e: {"id": str(e.id)})
    return pagination.respond_keyset(request, [entity(e) for e in page.items], cursor)


async def _one(request: web.Request, query: AuditQuery) -> web.Response:
    """One event, if it matches what the caller may see (GitLab's 404 otherwise)."""
    event = await request.app[STORE].get_audit_event(path_id(request, "event_id", "id"))
    if (
        event is None
        or (query.entity_type is not None and event.entity_type != query.entity_type)
        or (query.entity_id is not None and event.entity_id != query.entity_id)
        or (query.author_id is not None and event.author_id != query.author_id)
    ):
        raise NotFound("404 Audit Event Not Found")
    return web.json_response(entity(event))


# --- instance -----------------------------------------------------------------------------------------------------


async def _admin(request: web.Request) -> UserPrincipal:
    principal = await caller(request)
    decision = access.decide(principal, INSTANCE, Operation.ADMIN)
    if isinstance(decision, Denied):
        raise_denied(decision, "404 Not found")
    return principal


async def list_instance(request: web.Request) -> web.Response:
    """GET /audit_events: created_after, created_before, entity_type, entity_id (used only with entity_type)."""
    await _admin(request)
    entity_type = request.query.get("entity_type") or None
    if entity_type is not None and entity_type not in audit.ENTITY_TYPES:
        raise ParamError("entity_type does not have a valid value")
    entity_id = None
    raw_id = request.query.get("entity_id")
    if raw_id:
        if not (raw_id.isascii() and raw_id.isdigit() and len(raw_id) <= 18):
            raise ParamError("entity_id is invalid")
        entity_id = int(raw_id) if entity_type else None  # GitLab's finder ignores it without entity_type
    return await _respond(request, _query(request, AuditQuery(entity_type=entity_type, entity_id=entity_id)))


async def get_instance(request: web.Request) -> web.Response:
    """GET /audit_events/:id."""
    await _admin(request)
    return await _one(request, AuditQuery())


# --- groups and projects: all events for Owners / Maintainers, one's own for Developers ---------------------------


async def _scoped(request: web.Request, kind: str, *, single: bool) -> AuditQuery:
    principal = await caller(request)
    store = request.app[STORE]
    # Developers may list (their own events); a single event needs the full right, as in GitLab.
    everything = Operation.READ_GROUP_AUDIT_EVENTS if kind == "group" else Operation.READ_PROJECT_AUDIT_EVENTS
    if kind == "group":
        group = await find_group(request, principal, everything if single else Operation.READ_OWN_AUDIT_EVENTS)
        target, query = Target.of_group(group), AuditQuery(entity_type="Group", entity_id=group.id)
    else:
        project = await find_project(request, principal, everything if single else Operation.READ_OWN_AUDIT_EVENTS)
        target, query = Target.of_project(project), AuditQuery(entity_type="Project", entity_id=project.id)
    # Which of the two: a filter on what is shown, not a gate (the gate was find_group/find_project's decision).
    if single or await access.visible(store, principal, target, everything):
        return query
    return AuditQuery(entity_type=query.entity_type, entity_id=query.entity_id, author_id=principal.user.id)


async def list_group(request: web.Request) -> web.Response:
    """GET /groups/:id/audit_events: the group's own events (GitLab: not its projects')."""
    return await _respond(request, _query(request, await _scoped(request, "group", single=False)))


async def get_group(request: web.Request) -> web.Response:
    """GET /groups/:id/audit_events/:event_id (group Owners and administrators)."""
    return await _one(request, await _scoped(request, "group", single=True))


async def list_project(request: web.Request) -> web.Response:
    """GET /projects/:id/audit_events."""
    return await _respond(request, _query(request, await _scoped(request, "project", single=False)))


async def get_project(request: web.Request) -> web.Response:
    """GET /projects/:id/audit_events/:event_id (project Maintainers and administrators)."""
    return await _one(request, await _scoped(request, "project", single=True))
