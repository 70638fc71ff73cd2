"""Projects API (GitLab's lib/api/projects.rb): list visible projects, create one with its bare repository, get one."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace
from typing import Any, cast

from aiohttp import web

from gateway import access, repositories
from gateway.api import entities, pagination
from gateway.api.common import (
    bool_param,
    caller,
    choice_param,
    display_name_ok,
    find_project,
    int_param,
    invalid,
    optional_caller,
    params,
    raise_denied,
    string_param,
)
from gateway.app import CLOCK, CONFIG, STORE
from gateway.errors import Conflict, ParamError
from gateway.namespaces import path_problem
from gateway.policy import INSUFFICIENT_SCOPE, Denied, Deny, Operation, Target
from gateway.principals import Principal
from gateway.store.base import VISIBILITIES, ListOrder, Namespace, Project, Store, Visibility
from gateway.users import MEMBER_LEVELS, AccessLevel

MAX_NAME = 255
MAX_DESCRIPTION = 2000
# lib/gitlab/regex.rb project_name_regex and its message.
NAME_MESSAGE = (
    "can contain only letters, digits, emoji, '_', '.', '+', dashes, or spaces. "
    "It must start with a letter, digit, emoji, or '_'."
)
# order_by values Grape accepts for project lists; nothing is ever updated here, so the times are created_at.
PROJECT_ORDER = ("id", "name", "path", "created_at", "updated_at", "last_activity_at", "similarity")
_LIST_ORDER: dict[str, ListOrder] = {
    "id": "id",
    "name": "name",
    "similarity": "name",  # a search's closeness is not ranked here: by name, as without a search
    "path": "path",
    "created_at": "created_at",
    "updated_at": "created_at",
    "last_activity_at": "created_at",
}


async def full_name(store: Store, ns: Namespace) -> str:
    """A namespace's human name with its ancestors' ("Top / Sub"); a personal namespace is its user's name. The
    ancestors come through the hot-read cache (namespaces never change): a page asks for a few, not every group."""
    if ns.kind != "group":
        return ns.name
    names = []
    for group_id in ns.traversal_ids:
        group = ns if group_id == ns.id else await store.get_namespace(group_id)
        names.append(group.name if group is not None else "")
    return " / ".join(names)


async def present(request: web.Request, projects: list[Project]) -> list[dict[str, Any]]:
    store = request.app[STORE]
    base = entities.base_url(request)
    return [entities.project(p, base, await full_name(store, p.namespace)) for p in projects]


def min_access_level(p: dict[str, Any]) -> int | None:
    level = int_param(p, "min_access_level")
    if level is not None and level not in MEMBER_LEVELS:
        raise ParamError("min_access_level does not have a valid value")
    return level


async def listing(
    request: web.Request, principal: Principal, *, namespace_ids: tuple[int, ...] | None = None
) -> web.Response:
    """The projects the caller may see (in `namespace_ids` only, if given), filtered, ordered and paginated as
    GitLab does (order_by=created_at, sort=desc by default; ties broken by id in the same direction): one query, so
    that a page costs the same in an instance of fifty projects as in one of fifty thousand."""
    p: dict[str, Any] = dict(request.query)
    search = string_param(p, "search") or ""  # any case: the store lowers it
    visibility = cast(Visibility | None, choice_param(p, "visibility", VISIBILITIES))
    membership = bool_param(p, "membership") or False
    owned = bool_param(p, "owned") or False
    min_level = min_access_level(p) or 0
    order_by = choice_param(p, "order_by", PROJECT_ORDER) or "created_at"
    descending = choice_param(p, "sort", ("asc", "desc"), "desc") == "desc"
    keyset = choice_param(p, "pagination", ("offset", "keyset"), "offset") == "keyset"
    id_after, id_before = int_param(p, "id_after"), int_param(p, "id_before")
    pr = pagination.page_request(request)
    if keyset and order_by != "id":
        # lib/api/helpers/pagination_strategies.rb: keyset pagination follows the primary key only.
        return pagination.keyset_unavailable()

    # membership, owned and min_access_level keep the projects where the caller's level is at least theirs.
    floor = max(min_level, AccessLevel.OWNER if owned else 0, AccessLevel.GUEST if membership else 0)
    chosen = replace(
        access.list_scope(principal, "project", Operation.READ_PROJECT, min_level=floor),
        visibility=visibility,
        search=search,
        namespace_ids=namespace_ids,
        id_after=id_after,
        id_before=id_before,
        order_by=_LIST_ORDER[order_by],
        descending=descending,
    )
    store = request.app[STORE]
    if keyset:
        # Each page starts past the last one's end, however deep: no offset, no total (one row more tells the rest).
        page = await store.page_projects(chosen, offset=0, limit=pr.per_page, count_up_to=pr.per_page + 1)
        last = page.items[-1].id if page.items and page.total > pr.per_page else None
        after = None if last is None else {"id_before" if descending else "id_after": str(last)}
        return pagination.respond_keyset(request, await present(request, page.items), after)
    page = await store.page_projects(chosen, offset=pr.offset, limit=pr.per_page)
    return pagination.respond(request, await present(request, page.items), page.total, pr)


async def list_projects(request: web.Request) -> web.Response:
    """GET /projects: every project the caller can see (public ones for anonymous callers)."""
    return await listing(request, await optional_caller(request))


async def get(request: web.Request) -> web.Response:
    """GET /projects/:id (numeric id or URL-encoded full path)."""
    principal = await optional_caller(request)
    project = await find_project(request, principal, Operation.READ_PROJECT)
    return web.json_response((await present(request, [project]))[0])


def path_from_name(name: str) -> str:
    """GitLab derives a missing path from the name: lower case, ASCII, every other run of characters one dash."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9_.-]+", "-", ascii_name.lower())).strip("-.")


def _problems(name: str, path: str, visibility: str, description: str, ns: Namespace) -> dict[str, list[str]]:
    """The Project model's validations, per attribute, as render_validation_error! reports them."""
    errors: dict[str, list[str]] = {}
    if not name.strip():
        errors["name"] = ["can't be blank"]
    elif len(name) > MAX_NAME:
        errors["name"] = [f"is too long (maximum is {MAX_NAME} characters)"]
    elif not display_name_ok(name, extra="+"):
        errors["name"] = [NAME_MESSAGE]
    problem = path_problem(path)
    if problem:
        errors["path"] = [problem]
    if ns.kind == "group" and VISIBILITIES.index(visibility) > VISIBILITIES.index(ns.visibility):
        # Project#visibility_level_allowed_by_group
        errors["visibility_level"] = [f"{visibility} is not allowed in a {ns.visibility} group."]
    if len(description) > MAX_DESCRIPTION:
        errors["description"] = [f"is too long (maximum is {MAX_DESCRIPTION} characters)"]
    return errors


async def create(request: web.Request) -> web.Response:
    """POST /projects: name and/or path, namespace_id (default: the caller's personal namespace), visibility,
    description. 201 with the project; its bare repository is created for the embedded git backend."""
    principal = await caller(request)
    p = await params(request)
    name = string_param(p, "name")
    path = string_param(p, "path")
    if not name and not path:
        raise ParamError("name, path are missing, at least one parameter must be provided")
    namespace_id = int_param(p, "namespace_id")
    visibility = cast(Visibility, choice_param(p, "visibility", VISIBILITIES, "private"))
    description = string_param(p, "description", max_len=MAX_DESCRIPTION) or ""
    path = path or path_from_name(name or "")
    name = name or path

    store = request.app[STORE]
    ns = await store.get_namespace(namespace_id if namespace_id is not None else principal.user.namespace_id)
    if ns is None:
        return invalid({"namespace": ["is not valid"]})
    decision = await access.authorize(store, principal, Target.of_group(ns), Operation.CREATE_PROJECT)
    if isinstance(decision, Denied):
        if decision.kind is Deny.UNAUTHENTICATED or decision.reason == INSUFFICIENT_SCOPE:
            raise_denied(decision, "404 Namespace Not Found")
        # Projects::CreateService: a namespace the user may not create in (or cannot see) "is not valid".
        return invalid({"namespace": ["is not valid"]})

    errors = _problems(name, path, visibility, description, ns)
    if errors:
        return invalid(errors)
    now = request.app[CLOCK].now()
    try:
        project = await store.create_project(
            namespace_id=ns.id,
            name=name,
            path=path,
            visibility=visibility,
            description=description,
            creator_id=principal.user.id,
            now=now,
            # Projects::CreateService#setup_authorizations: a personal project's owner is its Owner member.
            owner_id=ns.owner_id if ns.kind == "user" else None,
        )
    except Conflict:
        return invalid({"path": ["has already been taken"]})
    try:
        await repositories.create_bare(request.app[CONFIG], project.full_path)
    except BaseException:
        # No project without its repository: undo the row so the path can be used again.
        await store.delete_project(project.id)
        raise
    return web.json_response((await present(request, [project]))[0], status=201)
