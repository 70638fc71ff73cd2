"""Deploy Tokens API (lib/api/deploy_tokens.rb): instance list, project and group list/get/create/delete, revoke."""

from __future__ import annotations

from aiohttp import web

from gateway import tokens
from gateway.api import entities, pagination
from gateway.api.common import bool_param, caller, find_group, find_project, params, path_id, raise_denied
from gateway.app import BOX, CLOCK, STORE
from gateway.errors import NotFound, ParamError
from gateway.policy import INSTANCE, Denied, Operation, decide
from gateway.store.base import DeployToken
from gateway.tokens import Holder


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


async def _create(request: web.Request, holder: Holder, creator_id: int) -> web.Response:
    p = await params(request)
    name = p.get("name")
    if name is None:
        raise ParamError("name is missing")
    if not isinstance(name, str):
        raise ParamError("name is invalid")
    if "scopes" not in p:
        raise ParamError("scopes is missing")
    scopes = tokens.parse_scopes(p["scopes"])
    expires_at = tokens.parse_expires_at(p.get("expires_at"))
    username = p.get("username")
    if username is not None and not isinstance(username, str):
        raise ParamError("username is invalid")
    now = request.app[CLOCK].now()
    created = await tokens.create(
        request.app[STORE],
        request.app[BOX],
        holder=holder,
        name=name,
        username=username,
        scopes=scopes,
        expires_at=expires_at,
        creator_id=creator_id,
        now=now,
    )
    return web.json_response(entities.deploy_token(created.token, now, created.secret), status=201)


# --- instance ---------------------------------------------------------------------------------------------------


async def list_all(request: web.Request) -> web.Response:
    principal = await caller(request)
    decision = decide(principal, INSTANCE, Operation.LIST_ALL_DEPLOY_TOKENS)
    if isinstance(decision, Denied):
        raise_denied(decision, "404 Not found")
    return await _list(request, None)


# --- project ----------------------------------------------------------------------------------------------------


async def list_project(request: web.Request) -> web.Response:
    project = await find_project(request, await caller(request), Operation.READ_PROJECT_DEPLOY_TOKENS)
    return await _list(request, Holder(project_id=project.id))


async def get_project_token(request: web.Request) -> web.Response:
    project = await find_project(request, await caller(request), Operation.READ_PROJECT_DEPLOY_TOKENS)
    token = await _get_held(request, Holder(project_id=project.id))
    return web.json_response(entities.deploy_token(token, request.app[CLOCK].now()))


async def create_project_token(request: web.Request) -> web.Response:
    principal = await caller(request)
    project = await find_project(request, principal, Operation.MANAGE_PROJECT_DEPLOY_TOKENS)
    return await _create(request, Holder(project_id=project.id), principal.user.id)


async def delete_project_token(request: web.Request) -> web.Response:
    project = await find_project(request, await caller(request), Operation.MANAGE_PROJECT_DEPLOY_TOKENS)
    token = await _get_held(request, Holder(project_id=project.id))
    await request.app[STORE].delete_deploy_token(token.id)
    return web.Response(status=204)


async def revoke_project_token(request: web.Request) -> web.Response:
    project = await find_project(request, await caller(request), Operation.MANAGE_PROJECT_DEPLOY_TOKENS)
    token = await _get_held(request, Holder(project_id=project.id))
    await request.app[STORE].revoke_deploy_token(token.id)
    revoked = await _get_held(request, Holder(project_id=project.id))
    return web.json_response(entities.deploy_token(revoked, request.app[CLOCK].now()))


# --- group ------------------------------------------------------------------------------------------------------


async def list_group(request: web.Request) -> web.Response:
    group = await find_group(request, await caller(request), Operation.READ_GROUP_DEPLOY_TOKENS)
    return await _list(request, Holder(group_id=group.id))


async def get_group_token(request: web.Request) -> web.Response:
    group = await find_group(request, await caller(request), Operation.READ_GROUP_DEPLOY_TOKENS)
    token = await _get_held(request, Holder(group_id=group.id))
    return web.json_response(entities.deploy_token(token, request.app[CLOCK].now()))


async def create_group_token(request: web.Request) -> web.Response:
    principal = await caller(request)
    group = await find_group(request, principal, Operation.MANAGE_GROUP_DEPLOY_TOKENS)
    return await _create(request, Holder(group_id=group.id), principal.user.id)


async def delete_group_token(request: web.Request) -> web.Response:
    group = await find_group(request, await caller(request), Operation.MANAGE_GROUP_DEPLOY_TOKENS)
    token = await _get_held(request, Holder(group_id=group.id))
    await request.app[STORE].delete_deploy_token(token.id)
    return web.Response(status=204)


async def revoke_group_token(request: web.Request) -> web.Response:
    group = await find_group(request, await caller(request), Operation.MANAGE_GROUP_DEPLOY_TOKENS)
    token = await _get_held(request, Holder(group_id=group.id))
    await request.app[STORE].revoke_deploy_token(token.id)
    revoked = await _get_held(request, Holder(group_id=group.id))
    return web.json_response(entities.deploy_token(revoked, request.app[CLOCK].now()))
