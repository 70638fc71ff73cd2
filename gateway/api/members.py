"""Members API (GitLab's lib/api/members.rb): list and add the direct members of a project or a group."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import access
from gateway.api import entities, pagination
from gateway.api.common import (
    caller,
    conflict,
    find_group,
    find_project,
    int_param,
    invalid,
    params,
    raise_denied,
    string_param,
)
from gateway.app import AUDIT, CLOCK, STORE
from gateway.audit import Change
from gateway.errors import Conflict, NotFound, ParamError
from gateway.policy import Denied, Operation, Target
from gateway.principals import UserPrincipal
from gateway.store.base import SourceKind, User
from gateway.users import MEMBER_LEVELS, AccessLevel


def _user_ids(p: dict[str, Any]) -> set[int] | None:
    """`user_ids`: an array (user_ids[]=1&user_ids[]=2) or a comma-separated list of integers."""
    raw = p.get("user_ids")
    if raw is None or raw == "":
        return None
    items = raw if isinstance(raw, list) else str(raw).split(",")
    ids = set()
    for item in items:
        text = str(item).strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 18):
            raise ParamError("user_ids is invalid")
        ids.add(int(text))
    return ids


async def _list(request: web.Request, kind: SourceKind, source_id: int) -> web.Response:
    """Direct members only (inherited ones are /members/all in GitLab), filtered by `query` and `user_ids`."""
    p: dict[str, Any] = dict(request.query)
    for key in request.query:
        if key.endswith("[]"):
            p[key[:-2]] = request.query.getall(key)
    query = string_param(p, "query") or ""
    user_ids = _user_ids(p)
    pr = pagination.page_request(request)
    found = await request.app[STORE].page_members(
        kind,
        source_id,
        offset=pr.offset,
        limit=pr.per_page,
        query=query,
        user_ids=sorted(user_ids) if user_ids is not None else None,
    )
    base = entities.base_url(request)
    return pagination.respond(request, [entities.member(m, base) for m in found.items], found.total, pr)


async def list_project_members(request: web.Request) -> web.Response:
    """GET /projects/:id/members."""
    project = await find_project(request, await caller(request), Operation.READ_MEMBERS)
    return await _list(request, "project", project.id)


async def list_group_members(request: web.Request) -> web.Response:
    """GET /groups/:id/members."""
    group = await find_group(request, await caller(request), Operation.READ_MEMBERS)
    return await _list(request, "namespace", group.id)


class _NewMember:
    """The validated parameters of POST …/members (Grape validates before the endpoint looks anything up)."""

    def __init__(self, p: dict[str, Any]) -> None:
        self.access_level = int_param(p, "access_level", required=True) or 0  # 0 fails validation later
        has_id, has_name = p.get("user_id") not in (None, ""), p.get("username") not in (None, "")
        if has_id == has_name:
            raise ParamError(
                "user_id, username are mutually exclusive"
                if has_id
                else "user_id, username are missing, exactly one parameter must be provided"
            )
        self.user_id = int_param(p, "user_id") if has_id else None
        self.username = string_param(p, "username") if has_name else None
        if p.get("expires_at") not in (None, ""):
            # Memberships here never expire; accepting the date silently would keep access the caller meant to end.
            raise ParamError("expires_at is not supported: memberships do not expire on this server")

    async def user(self, request: web.Request) -> User | None:
        store = request.app[STORE]
        if self.user_id is not None:
            return await store.get_user(self.user_id)
        return await store.get_user_by_username(self.username or "")


async def _add(
    request: web.Request,
    principal: UserPrincipal,
    new: _NewMember,
    kind: SourceKind,
    source_id: int,
    target: Target,
    path: str,
) -> web.Response:
    """members.rb order: 409 if already a member, 404 if the user does not exist, then the model's validations."""
    store = request.app[STORE]
    user = await new.user(request)
    if user is not None and await store.get_member(kind, source_id, user.id) is not None:
        return conflict("Member already exists")
    if user is None:
        raise NotFound("404 User Not Found")
    if new.access_level not in MEMBER_LEVELS:
        return invalid({"access_level": ["is not included in the list"]})
    if new.access_level == AccessLevel.OWNER:
        decision = await access.authorize(store, principal, target, Operation.GRANT_OWNER)
        if isinstance(decision, Denied):
            raise_denied(decision, "404 Not found")
    try:
        member = await store.add_member(
            source_kind=kind,
            source_id=source_id,
            user_id=user.id,
            access_level=new.access_level,
            now=request.app[CLOCK].now(),
        )
    except Conflict:  # a concurrent request added the same member first
        return conflict("Member already exists")
    # GitLab's member_created audit event, on the project or group.
    change = Change(
        "member_created",
        ("Project" if kind == "project" else "Group", source_id),
        path,
        ("User", user.id, user.username),
        f"Added member {user.username} with access level {new.access_level}",
        {"access_level": new.access_level},
    )
    await request.app[AUDIT].record_change(request, principal, change)
    return web.json_response(entities.member(member, entities.base_url(request)), status=201)


async def add_project_member(request: web.Request) -> web.Response:
    """POST /projects/:id/members: user_id (or username), access_level 10-50; Maintainer+, Owner to grant Owner."""
    principal = await caller(request)
    new = _NewMember(await params(request))
    project = await find_project(request, principal, Operation.MANAGE_PROJECT_MEMBERS)
    return await _add(request, principal, new, "project", project.id, Target.of_project(project), project.full_path)


async def add_group_member(request: web.Request) -> web.Response:
    """POST /groups/:id/members: user_id (or username), access_level 10-50; group Owners only."""
    principal = await caller(request)
    new = _NewMember(await params(request))
    group = await find_group(request, principal, Operation.MANAGE_GROUP_MEMBERS)
    return await _add(request, principal, new, "namespace", group.id, Target.of_group(group), group.full_path)
