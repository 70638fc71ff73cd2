"""What every REST v4 handler needs: the caller, request parameters, `:id` resolution, GitLab's error shapes."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from gateway import access, authn, credentials, principals
from gateway.app import STORE
from gateway.errors import BadRequest, Forbidden, InsufficientScope, NotFound, ParamError, Unauthorized
from gateway.middleware import PRINCIPAL, read_form
from gateway.namespaces import parse_ref
from gateway.policy import INSUFFICIENT_SCOPE, Denied, Deny, Operation, Target, effective_level
from gateway.principals import ANONYMOUS, Anonymous, Principal, UserPrincipal
from gateway.store.base import Namespace, Project, storable
from gateway.users import AccessLevel


async def caller(request: web.Request) -> UserPrincipal:
    """The authenticated user (PRIVATE-TOKEN or Bearer PAT). Anything else → 401 {"message":"401 Unauthorized"}."""
    creds = credentials.from_headers(request.headers)
    if creds is None:
        raise Unauthorized("401 Unauthorized")
    principal = await authn.authenticate(request, principals.Mode.API, creds)
    if not isinstance(principal, UserPrincipal):
        raise Unauthorized("401 Unauthorized")
    request[PRINCIPAL] = principals.describe(principal)
    return principal


async def optional_caller(request: web.Request) -> UserPrincipal | Anonymous:
    """Like caller(), but no credentials at all is the anonymous visitor (GitLab's authenticate_non_get! on reads);
    credentials that are sent and bad are still 401."""
    if credentials.from_headers(request.headers) is None:
        return ANONYMOUS
    return await caller(request)


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
                except (ValueError, RecursionError):  # RecursionError: nesting too deep (found by tests/fuzz)
                    raise BadRequest("400 Bad request - the body is not valid JSON") from None
                if not isinstance(body, dict):
                    raise BadRequest("400 Bad request - the body must be a JSON object")
                merged.update(body)
        elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await read_form(request)
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
    if not storable(text):  # a NUL, or a lone surrogate from a JSON "\ud800" escape
        raise ParamError(f"{key} is invalid")
    return text


def required_string(p: dict[str, Any], key: str, *, max_len: int = 255) -> str:
    """Grape's `requires :key, type: String`: the key must be present; a blank value passes to the model's own
    validation ("can't be blank"), as Grape only rejects blanks with allow_blank: false."""
    value = string_param(p, key, max_len=max_len)
    if value is None:
        raise ParamError(f"{key} is missing")
    return value


def int_param(p: dict[str, Any], key: str, *, required: bool = False) -> int | None:
    value = p.get(key)
    if value is None or value == "":
        if required:
            raise ParamError(f"{key} is missing")
        return None
    if isinstance(value, bool):
        raise ParamError(f"{key} is invalid")
    if isinstance(value, int):
        # A JSON number of any size: beyond 64 bits no id exists, and the database refuses it (found by tests/fuzz).
        if -(2**63) <= value < 2**63:
            return value
        raise ParamError(f"{key} is invalid")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 19:
        return int(value)
    raise ParamError(f"{key} is invalid")


def bool_param(p: dict[str, Any], key: str) -> bool | None:
    value = p.get(key)
    if value is None or value == "":  # Grape reads an empty value of a Boolean parameter as absent
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _TRUE:
        return True
    if isinstance(value, str) and value in _FALSE:
        return False
    raise ParamError(f"{key} is invalid")


# Grape's Boolean coercion (dry-types' Params::Bool): exactly these spellings.
_TRUE = frozenset(["1", "on", "On", "ON", "t", "T", "true", "True", "TRUE", "y", "Y", "yes", "Yes", "YES"])
_FALSE = frozenset(["0", "off", "Off", "OFF", "f", "F", "false", "False", "FALSE", "n", "N", "no", "No", "NO"])


def raise_denied(decision: Denied, not_found: str) -> None:
    if decision.reason == INSUFFICIENT_SCOPE:
        raise InsufficientScope(decision.sufficient_scopes)
    if decision.kind is Deny.NOT_FOUND:
        raise NotFound(not_found)
    if decision.kind is Deny.UNAUTHENTICATED:
        raise Unauthorized("401 Unauthorized")
    raise Forbidden("403 Forbidden")


def _id_ref(request: web.Request, *, project: bool) -> int | str | None:
    """The `:id` segment (already percent-decoded once by aiohttp) as a project/group reference."""
    return parse_ref(request.match_info["id"], project=project)


def _raise_invisible(principal: Principal, decision: Denied, not_found: str) -> None:
    # An anonymous visitor asking for a private resource gets GitLab's find_project!/find_group! 404, not a 401.
    if isinstance(principal, Anonymous):
        raise NotFound(not_found)
    raise_denied(decision, not_found)


async def find_project(request: web.Request, principal: Principal, op: Operation) -> Project:
    """The project named by `:id`, if the caller may perform `op` on it (404 when it cannot even see it)."""
    store = request.app[STORE]
    ref = _id_ref(request, project=True)
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
        _raise_invisible(principal, visible, "404 Project Not Found")
    decision = await access.authorize(store, principal, target, op)
    if isinstance(decision, Denied):
        raise_denied(decision, "404 Project Not Found")
    return project


async def find_group(
    request: web.Request, principal: Principal, op: Operation, ref: int | str | None = None
) -> Namespace:
    """The group named by `:id` (id or URL-encoded full path), or by `ref` when given (e.g. a parent_id), if the
    caller may perform `op` on it."""
    store = request.app[STORE]
    if ref is None:
        ref = _id_ref(request, project=False)
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
        _raise_invisible(principal, visible, "404 Group Not Found")
    decision = await access.authorize(store, principal, target, op)
    if isinstance(decision, Denied):
        raise_denied(decision, "404 Group Not Found")
    return group


async def member_level(source: access.Levels, principal: Principal, target: Target) -> int:
    """The caller's effective membership level on a target (0 when none), for list filters such as `membership`,
    `owned` and `min_access_level`. Whether the caller may see the target at all is still policy's decision."""
    if not isinstance(principal, UserPrincipal) or target.kind == "instance":
        return AccessLevel.NO_ACCESS
    levels = await source.access_levels(
        principal.user.id, project_id=target.id if target.kind == "project" else None, namespace_ids=target.groups
    )
    level = effective_level(levels)
    # A personal namespace's user owns it and its projects without a membership row (as in policy.decide).
    return max(level, AccessLevel.OWNER) if target.personal_owner_id == principal.user.id else level


def path_id(request: web.Request, key: str, param: str | None = None) -> int:
    """A numeric path parameter such as :token_id (Grape `type: Integer`): not an integer is 400 "<param> is invalid"
    (GitLab's name of the parameter, `key` by default); an integer no row can have (negative, beyond 64 bits) is 404."""
    raw = request.match_info[key]
    digits = raw[1:] if raw[:1] in ("-", "+") else raw
    if not (digits.isascii() and digits.isdigit()):
        raise ParamError(f"{param or key} is invalid")
    if raw[:1] == "-" or len(digits) > 18:
        raise NotFound("404 Not found")
    return int(digits)


def conflict(message: str) -> web.Response:
    """GitLab's conflict!: 409 {"message": "..."} (e.g. "Member already exists")."""
    return web.json_response({"message": message}, status=409)


def invalid(errors: Mapping[str, Sequence[str]]) -> web.Response:
    """GitLab's render_validation_error!: 400 {"message": {"attribute": ["problem", ...]}}."""
    return web.json_response({"message": {key: list(problems) for key, problems in errors.items()}}, status=400)


def choice_param(p: dict[str, Any], key: str, choices: Sequence[str], default: str | None = None) -> str | None:
    """A parameter limited to `choices` (Grape `values:`); others get {"error":"<key> does not have a valid value"}."""
    value = p.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str) or value not in choices:
        raise ParamError(f"{key} does not have a valid value")
    return value


def display_name_ok(name: str, extra: str) -> bool:
    """GitLab's group/project name regexes (lib/gitlab/regex.rb): the first character a letter, digit, emoji
    (U+00A9..U+1F9FF) or '_'; the rest also dashes (Unicode Pd), spaces, '.' and the `extra` characters."""

    def letter(ch: str) -> bool:
        return ch.isalnum() or ch == "_" or 0xA9 <= ord(ch) <= 0x1F9FF

    if not name or not letter(name[0]):
        return False
    return all(letter(ch) or ch in " ." or ch in extra or unicodedata.category(ch) == "Pd" for ch in name[1:])
