"""Deploy Tokens API (lib/api/deploy_tokens.rb): instance list, project and group list/get/create/delete, revoke."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal, TypeVar

from aiohttp import web

from gateway import access, metrics, tokens
from gateway.api import entities, pagination
from gateway.api.common import bool_param, caller, find_group, find_project, params, path_id, raise_denied
from gateway.app import AUDIT, CLOCK, ENCRYPTION, STORE
from gateway.errors import NotFound, ParamError
from gateway.policy import INSTANCE, Denied, Operation
from gateway.principals import UserPrincipal
from gateway.store.base import DeployToken
from gateway.tokens import Holder

Handler = Callable[[web.Request], Awaitable[web.Response]]
T = TypeVar("T")
# (entity type, id, full path) of the project or group holding the tokens: where their audit events belong.
Entity = tuple[str, int, str]


async def _list(request: web.Request, holder: Holder | None) -> web.Response:
    active = bool_param(dict(request.query), "active")
    pr = pagination.page_request(request)
    now = request.app[CLOCK].now()
    page = await request.app[STORE].list_deploy_tokens(
        project_id=holder.project_id if holder else None,
        group_id=holder.group_id if holder else None,
        active_at=now if active else None,
        offset=pr.offset,
        limit=pr.per_page,
    )
    return pagination.respond(request, [entities.deploy_token(t, now) for t in page.items], page.total, pr)


async def _get_held(request: web.Request, holder: Holder) -> DeployToken:
    token = await request.app[STORE].get_deploy_token(path_id(request, "token_id"))
    if token is None or not holder.holds(token):
        raise NotFound("404 Not found")
    return token


def _create_params(p: dict[str, Any]) -> tuple[str, tuple[str, ...], datetime | None, str | None]:
    """name, scopes, expires_at and username, checked as Grape does (lib/api/deploy_tokens.rb): every parameter
    error is reported at once, in declaration order ("name is missing, scopes is missing"). The model's own
    validations (tokens.validate: "Scopes can't be blank") come after, on well-formed parameters only."""
    errors: list[str] = []

    def check(parse: Callable[[], T]) -> T | None:
        try:
            return parse()
        except ParamError as exc:
            errors.append(exc.message)
            return None

    def name() -> str:
        value = p.get("name")
        if value is None:
            raise ParamError("name is missing")
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # Grape coerces a JSON number to the String parameter it declares
        if not isinstance(value, str):
            raise ParamError("name is invalid")
        return value

    def scopes() -> tuple[str, ...]:
        if "scopes" not in p:
            raise ParamError("scopes is missing")
        return tokens.parse_scopes(p["scopes"])

    def username() -> str | None:
        value = p.get("username")
        if value is not None and not isinstance(value, str):
            raise ParamError("username is invalid")
        return value

    given_name, given_scopes = check(name), check(scopes)
    expires_at, given_username = check(lambda: tokens.parse_expires_at(p.get("expires_at"))), check(username)
    if errors:
        raise ParamError(", ".join(errors))
    assert given_name is not None and given_scopes is not None  # their checks passed
    return given_name, given_scopes, expires_at, given_username


async def _create(request: web.Request, holder: Holder, principal: UserPrincipal, entity: Entity) -> web.Response:
    p = await params(request)
    name, scopes, expires_at, username = _create_params(p)
    now = request.app[CLOCK].now()
    created = await tokens.create(
        request.app[STORE],
        request.app[ENCRYPTION].current,
        holder=holder,
        name=name,
        username=username,
        scopes=scopes,
        expires_at=expires_at,
        creator_id=principal.user.id,
        now=now,
    )
    metrics.token_issued("deploy_token")
    await request.app[AUDIT].deploy_token_changed(request, principal, entity, "created", created.token)
    return web.json_response(entities.deploy_token(created.token, now, created.secret), status=201)


# --- instance ---------------------------------------------------------------------------------------------------


async def list_all(request: web.Request) -> web.Response:
    principal = await caller(request)
    decision = access.decide(principal, INSTANCE, Operation.LIST_ALL_DEPLOY_TOKENS)
    if isinstance(decision, Denied):
        raise_denied(decision, "404 Not found")
    return await _list(request, None)


# --- project and group tokens: the same five handlers, resolved against a project or a group --------------------

HolderKind = Literal["project", "group"]
# GitLab: project tokens need Maintainer for everything; group tokens Maintainer to read, Owner to manage.
_OPERATIONS: dict[tuple[HolderKind, bool], Operation] = {
    ("project", False): Operation.READ_PROJECT_DEPLOY_TOKENS,
    ("project", True): Operation.MANAGE_PROJECT_DEPLOY_TOKENS,
    ("group", False): Operation.READ_GROUP_DEPLOY_TOKENS,
    ("group", True): Operation.MANAGE_GROUP_DEPLOY_TOKENS,
}


async def _resolve(request: web.Request, kind: HolderKind, *, manage: bool) -> tuple[UserPrincipal, Holder, Entity]:
    principal = await caller(request)
    op = _OPERATIONS[(kind, manage)]
    if kind == "project":
        project = await find_project(request, principal, op)
        return principal, Holder(project_id=project.id), ("Project", project.id, project.full_path)
    group = await find_group(request, principal, op)
    return principal, Holder(group_id=group.id), ("Group", group.id, group.full_path)


def _handlers(kind: HolderKind) -> tuple[Handler, Handler, Handler, Handler, Handler]:
    """list, get, create, delete (hard, 204) and revoke (kept and listed as revoked, GitLab's UI "Revoke")."""

    async def list_tokens(request: web.Request) -> web.Response:
        _, holder, _ = await _resolve(request, kind, manage=False)
        return await _list(request, holder)

    async def get_token(request: web.Request) -> web.Response:
        _, holder, _ = await _resolve(request, kind, manage=False)
        token = await _get_held(request, holder)
        return web.json_response(entities.deploy_token(token, request.app[CLOCK].now()))

    async def create_token(request: web.Request) -> web.Response:
        principal, holder, entity = await _resolve(request, kind, manage=True)
        return await _create(request, holder, principal, entity)

    async def delete_token(request: web.Request) -> web.Response:
        principal, holder, entity = await _resolve(request, kind, manage=True)
        token = await _get_held(request, holder)
        if await request.app[STORE].delete_deploy_token(token.id):
            await request.app[AUDIT].deploy_token_changed(request, principal, entity, "deleted", token)
        return web.Response(status=204)

    async def revoke_token(request: web.Request) -> web.Response:
        principal, holder, entity = await _resolve(request, kind, manage=True)
        token = await _get_held(request, holder)
        await request.app[STORE].revoke_deploy_token(token.id)
        revoked = await _get_held(request, holder)
        await request.app[AUDIT].deploy_token_changed(request, principal, entity, "revoked", revoked)
        return web.json_response(entities.deploy_token(revoked, request.app[CLOCK].now()))

    return list_tokens, get_token, create_token, delete_token, revoke_token


list_project, get_project_token, create_project_token, delete_project_token, revoke_project_token = _handlers("project")
list_group, get_group_token, create_group_token, delete_group_token, revoke_group_token = _handlers("group")
