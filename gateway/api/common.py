"""What every REST v4 handler needs: the caller, request parameters, `:id` resolution, GitLab's error shapes."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway import access, credentials, principals
from gateway.app import CLOCK, HASHER, STORE
from gateway.errors import BadRequest, Forbidden, NotFound, ParamError, Unauthorized
from gateway.middleware import PRINCIPAL
from gateway.namespaces import parse_ref
from gateway.policy import Denied, Deny, Operation, Target
from gateway.principals import UserPrincipal
from gateway.store.base import Namespace, Project


async def caller(request: web.Request) -> UserPrincipal:
    """The authenticated user (PRIVATE-TOKEN or Bearer PAT). Anything else → 401 {"message":"401 Unauthorized"}."""
    creds = credentials.from_headers(request.headers)
    if creds is None:
        raise Unauthorized("401 Unauthorized")
    principal = await principals.identify(
        request.app[STORE], request.app[HASHER], creds, request.app[CLOCK].now(), principals.Mode.API
    )
    if not isinstance(principal, UserPrincipal):
        raise Unauthorized("401 Unauthorized")
    request[PRINCIPAL] = principals.describe(principal)
    return principal


async def params(request: web.Request) -> dict[str, Any]:
    """Grape-style parameters: the query string, then a JSON object or form body on top."""
    merged: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        if key.endswith("[]"):
            merged[key[:-2]] = list(values)
        else:
            merged[key] = values[-1]
    if request.method in ("POST", "PUT", "PATCH") and request.body_exists:
        ctype = request.content_type
        if ctype == "application/json":
            raw = await request.read()
            if raw.strip():
                try:
                    body = json.loads(raw)
                except (ValueError, UnicodeDecodeError):
                    raise BadRequest("400 Bad request - the body is not valid JSON") from None
                if not isinstance(body, dict):
                    raise BadRequest("400 Bad request - the body must be a JSON object")
                merged.update(body)
        elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key in form:
                values = [v for v in form.getall(key) if isinstance(v, str)]
                if key.endswith("[]"):
                    merged[key[:-2]] = values
                elif values:
                    merged[key] = values[-1]
        elif ctype not in ("", "application/octet-stream", "text/plain"):
            raise BadRequest(f"400 Bad request - unsupported Content-Type {ctype[:64]}")
    return merged


def string_param(p: dict[str, Any], key: str, *, required: bool = False, max_len: int = 255) -> str | None:
    value = p.get(key)
    if value is None:
        if required:
            raise ParamError(f"{key} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ParamError(f"{key} is invalid")
    text = str(value)
    if required and not text.strip():
        raise ParamError(f"{key} is empty")
    if len(text) > max_len * 4:  # bounded long before validation messages about length
        raise ParamError(f"{key} is invalid")
    return text


def int_param(p: dict[str, Any], key: str, *, required: bool = False) -> int | None:
    value = p.get(key)
    if value is None or value == "":
        if required:
            raise ParamError(f"{key} is missing")
        return None
    if isinstance(value, bool):
        raise ParamError(f"{key} is invalid")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 19:
        return int(value)
    raise ParamError(f"{key} is invalid")


def bool_param(p: dict[str, Any], key: str) -> bool | None:
    value = p.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "t"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no", "f"):
        return False
    raise ParamError(f"{key} is invalid")


def raise_denied(decision: Denied, not_found: str) -> None:
    if decision.kind is Deny.NOT_FOUND:
        raise NotFound(not_found)
    if decision.kind is Deny.UNAUTHENTICATED:
        raise Unauthorized("401 Unauthorized")
    raise Forbidden("403 Forbidden")


async def find_project(request: web.Request, principal: UserPrincipal, op: Operation) -> Project:
    """The project named by `:id`, if the caller may perform `op` on it (404 when it cannot even see it)."""
    store = request.app[STORE]
    ref = parse_ref(request.match_info["id"], project=True)
    project = None
    if isinstance(ref, int):
        project = await store.get_project(ref)
    elif ref is not None:
        project = await store.get_project_by_path(ref)
    if project is None:
        raise NotFound("404 Project Not Found")
    target = Target.of_project(project)
    visible = await access.authorize(store, principal, target, Operation.READ_PROJECT)
    if isinstance(visible, Denied):
        raise_denied(visible, "404 Project Not Found")
    decision = await access.authorize(store, principal, target, op)
    if isinstance(decision, Denied):
        raise_denied(decision, "404 Project Not Found")
    return project


async def find_group(request: web.Request, principal: UserPrincipal, op: Operation) -> Namespace:
    """The group named by `:id` (id or URL-encoded full path), if the caller may perform `op` on it."""
    store = request.app[STORE]
    ref = parse_ref(request.match_info["id"], project=False)
    group = None
    if isinstance(ref, int):
        group = await store.get_namespace(ref)
    elif ref is not None:
        group = await store.get_namespace_by_path(ref)
    if group is None or group.kind != "group":
        raise NotFound("404 Group Not Found")
    target = Target.of_group(group)
    visible = await access.authorize(store, principal, target, Operation.READ_GROUP)
    if isinstance(visible, Denied):
        raise_denied(visible, "404 Group Not Found")
    decision = await access.authorize(store, principal, target, op)
    if isinstance(decision, Denied):
        raise_denied(decision, "404 Group Not Found")
    return group


def path_id(request: web.Request, key: str) -> int:
    """A numeric path parameter such as :token_id; anything else is GitLab's 404."""
    raw = request.match_info[key]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise NotFound("404 Not found")
    return int(raw)
