"""Groups API (GitLab's lib/api/groups.rb): list, create (the creator becomes Owner), get, subgroups, projects."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, cast

from aiohttp import web

from gateway import access
from gateway.api import entities, pagination
from gateway.api import projects as project_api
from gateway.api.common import (
    bool_param,
    caller,
    choice_param,
    display_name_ok,
    find_group,
    int_param,
    optional_caller,
    params,
    raise_denied,
    required_string,
    string_param,
)
from gateway.app import CLOCK, STORE
from gateway.errors import Conflict
from gateway.namespaces import MAX_DEPTH, path_problem
from gateway.policy import INSTANCE, Denied, Operation, Target, decide
from gateway.principals import Principal, UserPrincipal
from gateway.store.base import VISIBILITIES, Keyset, ListOrder, Namespace, Visibility
from gateway.users import AccessLevel

MAX_NAME = 255
MAX_DESCRIPTION = 255
# lib/gitlab/regex.rb group_name_regex and its message.
NAME_MESSAGE = (
    "can contain only letters, digits, emoji, '_', '.', dash, space, parenthesis. "
    "It must start with letter, digit, emoji or '_'."
)
GROUP_ORDER = ("name", "path", "id", "similarity")


def _ruby_inspect(errors: dict[str, list[str]]) -> str:
    """errors.messages as Ruby (< 3.4) prints a Hash: {:path=>["has already been taken"]}."""
    fields = ", ".join(
        f":{key}=>[{', '.join(json.dumps(m, ensure_ascii=False) for m in msgs)}]" for key, msgs in errors.items()
    )
    return "{" + fields + "}"


def _save_failed(errors: dict[str, list[str]]) -> web.Response:
    # groups.rb: render_api_error!("Failed to save group #{group.errors.messages}", 400) — a string, not a hash.
    return web.json_response({"message": f"Failed to save group {_ruby_inspect(errors)}"}, status=400)


async def _present(request: web.Request, groups: list[Namespace]) -> list[dict[str, Any]]:
    store = request.app[STORE]
    base = entities.base_url(request)
    return [entities.group(g, base, await project_api.full_name(store, g)) for g in groups]


async def _detail(request: web.Request, principal: Principal, group: Namespace) -> dict[str, Any]:
    """GroupDetail: the group plus the projects directly in it that the caller can see."""
    store = request.app[STORE]
    visible = []
    levels = await access.for_list(store, principal)
    for project in await store.list_projects_in([group.id]):
        if await access.visible(levels, principal, Target.of_project(project), Operation.READ_PROJECT):
            visible.append(project)
    entity = (await _present(request, [group]))[0]
    return {**entity, "projects": await project_api.present(request, visible), "shared_projects": []}


async def _listing(request: web.Request, principal: Principal, *, parent_id: int | None = None) -> web.Response:
    """GroupsFinder: without all_available a signed-in non-admin sees only groups they belong to (directly or
    through an ancestor); with it, every group they can see; anonymous callers see public groups. Ordered by
    name ascending by default, ties by id ascending; chosen, ordered and cut in one query."""
    p: dict[str, Any] = dict(request.query)
    is_user = isinstance(principal, UserPrincipal)
    all_available = bool_param(p, "all_available")
    if all_available is None or not is_user:
        all_available = not is_user or cast(UserPrincipal, principal).user.is_admin
    owned = bool_param(p, "owned") or False
    min_level = project_api.min_access_level(p) or 0
    search = string_param(p, "search") or ""  # any case: the store lowers it
    top_level_only = bool_param(p, "top_level_only") or False
    order_by = choice_param(p, "order_by", GROUP_ORDER) or "name"
    descending = choice_param(p, "sort", ("asc", "desc"), "asc") == "desc"
    keyset = choice_param(p, "pagination", ("offset", "keyset"), "offset") == "keyset"
    pr = pagination.page_request(request)
    if keyset and (order_by != "name" or descending):
        # lib/gitlab/pagination/cursor_based_keyset.rb: groups are paged by keyset by name ascending only.
        return pagination.keyset_unavailable()

    floor = max(min_level, AccessLevel.OWNER if owned else 0, 0 if all_available else AccessLevel.GUEST)
    chosen = replace(
        access.list_scope(principal, "group", Operation.READ_GROUP, min_level=floor),
        search=search,
        parent_id=parent_id,
        top_level_only=top_level_only,
        order_by="name" if order_by == "similarity" else cast(ListOrder, order_by),
        descending=descending,
    )
    store = request.app[STORE]
    if keyset:
        # Each page starts past the last one's end, however deep: no offset, no total (one row more tells the rest).
        values = pagination.decode_cursor(string_param(p, "cursor") or "", ("name", "id"))
        after = None if values is None else Keyset(values["name"], int(values["id"]))
        page = await store.page_groups(
            replace(chosen, after=after), offset=0, limit=pr.per_page, count_up_to=pr.per_page + 1
        )
        cursor = pagination.next_cursor(
            page.items, page.total, pr.per_page, lambda g: {"name": g.name, "id": str(g.id)}
        )
        return pagination.respond_keyset(request, await _present(request, page.items), cursor)
    page = await store.page_groups(chosen, offset=pr.offset, limit=pr.per_page)
    return pagination.respond(request, await _present(request, page.items), page.total, pr)


async def list_groups(request: web.Request) -> web.Response:
    """GET /groups."""
    return await _listing(request, await optional_caller(request))


async def subgroups(request: web.Request) -> web.Response:
    """GET /groups/:id/subgroups: the direct children of a group, with the same filters as GET /groups."""
    principal = await optional_caller(request)
    parent = await find_group(request, principal, Operation.READ_GROUP)
    return await _listing(request, principal, parent_id=parent.id)


async def get(request: web.Request) -> web.Response:
    """GET /groups/:id (numeric id or URL-encoded full path)."""
    principal = await optional_caller(request)
    group = await find_group(request, principal, Operation.READ_GROUP)
    return web.json_response(await _detail(request, principal, group))


async def projects(request: web.Request) -> web.Response:
    """GET /groups/:id/projects: the group's projects (with include_subgroups=true, its descendants' too)."""
    principal = await optional_caller(request)
    group = await find_group(request, principal, Operation.READ_GROUP)
    deep = bool_param(dict(request.query), "include_subgroups") or False
    store = request.app[STORE]
    tree = tuple(g.id for g in await store.list_group_tree(group.id)) if deep else (group.id,)
    return await project_api.listing(request, principal, namespace_ids=tree)


def _problems(
    name: str, path: str, visibility: Visibility, description: str, parent: Namespace | None
) -> dict[str, list[str]]:
    """The Group model's validations, per attribute."""
    errors: dict[str, list[str]] = {}
    if not name.strip():
        errors["name"] = ["can't be blank"]
    elif len(name) > MAX_NAME:
        errors["name"] = [f"is too long (maximum is {MAX_NAME} characters)"]
    elif not display_name_ok(name, extra="()"):
        errors["name"] = [NAME_MESSAGE]
    problem = path_problem(path, top_level=parent is None)
    if problem:
        errors["path"] = [problem]
    if len(description) > MAX_DESCRIPTION:
        errors["description"] = [f"is too long (maximum is {MAX_DESCRIPTION} characters)"]
    if parent is not None:
        if parent.depth + 1 > MAX_DEPTH:
            errors["parent_id"] = ["has too deep level of nesting"]
        if VISIBILITIES.index(visibility) > VISIBILITIES.index(parent.visibility):
            # Group#visibility_level_allowed_by_parent
            errors["visibility_level"] = [
                f"{visibility} is not allowed since the parent group has a {parent.visibility} visibility."
            ]
    return errors


async def create(request: web.Request) -> web.Response:
    """POST /groups: name, path, parent_id, visibility, description. A subgroup needs CREATE_SUBGROUP on the
    parent, a top-level group CREATE_GROUP; the creator becomes the group's Owner. 201 with GroupDetail."""
    principal = await caller(request)
    p = await params(request)
    name = required_string(p, "name")
    path = required_string(p, "path")
    parent_id = int_param(p, "parent_id")
    visibility = cast(Visibility, choice_param(p, "visibility", VISIBILITIES, "private"))
    description = string_param(p, "description", max_len=MAX_DESCRIPTION) or ""

    parent = None
    if parent_id is not None:
        parent = await find_group(request, principal, Operation.CREATE_SUBGROUP, ref=parent_id)
    else:
        decision = decide(principal, INSTANCE, Operation.CREATE_GROUP)
        if isinstance(decision, Denied):
            raise_denied(decision, "404 Group Not Found")

    errors = _problems(name, path, visibility, description, parent)
    if errors:
        return _save_failed(errors)
    store = request.app[STORE]
    now = request.app[CLOCK].now()
    try:
        group = await store.create_group(
            name=name,
            path=path,
            parent_id=parent.id if parent else None,
            visibility=visibility,
            description=description,
            now=now,
            # Groups::CreateService: the creator is added as Owner (in the same transaction).
            owner_id=principal.user.id,
        )
    except Conflict:
        return _save_failed({"path": ["has already been taken"]})
    return web.json_response(await _detail(request, principal, group), status=201)
