"""Users API (GitLab's lib/api/users.rb, personal_access_tokens.rb): the caller, the user list, admin-only creation
of users and of their personal access tokens, and revoking a token (its owner or an administrator)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from functools import partial
from typing import Any, cast

from aiohttp import web

from gateway import access, audit, metrics, namespaces, tokens, users
from gateway.api import entities, pagination
from gateway.api.common import (
    bool_param,
    caller,
    choice_param,
    conflict,
    invalid,
    params,
    raise_denied,
    required_string,
    string_param,
)
from gateway.app import AUDIT, CLOCK, HASHER, STORE
from gateway.errors import BadRequest, NotFound, ParamError
from gateway.policy import INSTANCE, INSUFFICIENT_SCOPE, Denied, Operation, user_target
from gateway.principals import UserPrincipal
from gateway.store.base import Keyset, PersonalAccessToken, Store, User, UserOrder

MAX_NAME = 255
MAX_EMAIL = 255
# GET /users: order_by values Grape accepts; ids are ordered in the store, the rest in memory.
USER_ORDER = ("id", "name", "username", "created_at", "updated_at")


def _allow(principal: UserPrincipal, op: Operation) -> None:
    decision = access.decide(principal, INSTANCE, op)
    if isinstance(decision, Denied):
        raise_denied(decision, "404 User Not Found")


def _user_id(request: web.Request) -> int:
    """`:user_id` is an Integer parameter in Grape: anything else is {"error":"id is invalid"}."""
    raw = request.match_info["user_id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise ParamError("id is invalid")
    return int(raw)


def _listed(user: User, principal: UserPrincipal, base: str) -> dict[str, Any]:
    # Administrators get UserWithAdmin (email, is_admin, ...), everyone else UserBasic (users.rb).
    if principal.user.is_admin:
        return entities.user_full(user, base, with_private=True)
    return entities.user_basic(user, base)


async def current(request: web.Request) -> web.Response:
    """GET /user: the caller, with the private fields only they (and admins) see."""
    principal = await caller(request)
    _allow(principal, Operation.READ_USERS)
    return web.json_response(entities.user_full(principal.user, entities.base_url(request), with_private=True))


async def list_users(request: web.Request) -> web.Response:
    """GET /users: any signed-in user; `username=` (exact, case-insensitive) and `search=` filters; paginated,
    newest first by default (order_by=id, sort=desc), by offset or by keyset (pagination=keyset, any order, as
    GitLab's CursorBasedKeyset has for User). Only administrators search by e-mail address (GitLab's User.search);
    the page is chosen, ordered and cut in the database."""
    principal = await caller(request)
    _allow(principal, Operation.READ_USERS)
    p: dict[str, Any] = dict(request.query)
    username = string_param(p, "username")
    search = string_param(p, "search") or ""  # any case: the store lowers it
    order_by = choice_param(p, "order_by", USER_ORDER) or "id"
    descending = choice_param(p, "sort", ("asc", "desc"), "desc") == "desc"
    keyset = choice_param(p, "pagination", ("offset", "keyset"), "offset") == "keyset"
    pr = pagination.page_request(request)
    store = request.app[STORE]
    base = entities.base_url(request)

    if username is not None:
        user = await store.get_user_by_username(username) if username else None
        matched = [user] if user is not None else []
        if keyset:  # one user at most: there is never a next page
            return pagination.respond_keyset(request, [_listed(u, principal, base) for u in matched], None)
        page = pagination.slice_page(matched, pr)
        return pagination.respond(request, [_listed(u, principal, base) for u in page], len(matched), pr)

    # users are never updated here: updated_at is created_at
    key = cast(UserOrder, "created_at" if order_by == "updated_at" else order_by)
    chosen = partial(
        store.list_users, search=search, search_email=principal.user.is_admin, order_by=key, descending=descending
    )
    if keyset:
        # Each page starts past the last one's end, however deep: no offset, no total (one row more tells the rest).
        after = _cursor_position(p, order_by)
        found = await chosen(offset=0, limit=pr.per_page, after=after, count_up_to=pr.per_page + 1)
        cursor = pagination.next_cursor(
            found.items, found.total, pr.per_page, partial(_cursor_values, order_by=order_by)
        )
        return pagination.respond_keyset(request, [_listed(u, principal, base) for u in found.items], cursor)
    found = await chosen(offset=pr.offset, limit=pr.per_page)
    return pagination.respond(request, [_listed(u, principal, base) for u in found.items], found.total, pr)


def _cursor_values(user: User, order_by: str) -> dict[str, str]:
    """What keyset pagination's cursor holds of a page's last user: its order value and id, as GitLab's does."""
    values = {"id": str(user.id)}
    if order_by in ("name", "username"):
        values[order_by] = getattr(user, order_by)
    elif order_by in ("created_at", "updated_at"):
        values[order_by] = user.created_at.isoformat()
    return values


def _cursor_position(p: dict[str, Any], order_by: str) -> Keyset | None:
    """The position a `cursor` names in a list ordered by `order_by`, or None for the first page. A cursor made for
    another order (or by hand) is 400 "cursor is invalid"."""
    keys = ("id",) if order_by == "id" else ("id", order_by)
    values = pagination.decode_cursor(string_param(p, "cursor") or "", keys)
    if values is None:
        return None
    if order_by == "id":
        return Keyset(None, int(values["id"]))
    if order_by in ("name", "username"):
        return Keyset(values[order_by], int(values["id"]))
    try:
        moment = datetime.fromisoformat(values[order_by])
    except ValueError as exc:
        raise ParamError("cursor is invalid") from exc
    if moment.tzinfo is None:
        raise ParamError("cursor is invalid")
    return Keyset(moment, int(values["id"]))


async def get(request: web.Request) -> web.Response:
    """GET /users/:id: public fields, and the private ones for administrators."""
    principal = await caller(request)
    _allow(principal, Operation.READ_USERS)
    user = await request.app[STORE].get_user(_user_id(request))
    if user is None:
        raise NotFound("404 User Not Found")
    base = entities.base_url(request)
    return web.json_response(entities.user_full(user, base, with_private=principal.user.is_admin))


def _user_problems(username: str, name: str, email: str, password: str | None) -> dict[str, list[str]]:
    """The User model's validations, per attribute, as render_validation_error! reports them."""
    errors: dict[str, list[str]] = {}
    problem = namespaces.path_problem(username, top_level=True)
    if problem:
        errors["username"] = [problem]
    if not name.strip():
        errors["name"] = ["can't be blank"]
    elif len(name) > MAX_NAME:
        errors["name"] = [f"is too long (maximum is {MAX_NAME} characters)"]
    if not email.strip():
        errors["email"] = ["can't be blank"]
    elif len(email) > MAX_EMAIL:
        errors["email"] = [f"is too long (maximum is {MAX_EMAIL} characters)"]
    elif not users.EMAIL_RE.match(email):
        errors["email"] = ["is invalid"]
    if password is not None and len(password) < users.MIN_PASSWORD:
        errors["password"] = [f"is too short (minimum is {users.MIN_PASSWORD} characters)"]
    elif password is not None and len(password) > users.MAX_PASSWORD:
        errors["password"] = [f"is too long (maximum is {users.MAX_PASSWORD} characters)"]
    return errors


async def _email_taken(store: Store, email: str) -> bool:
    return await store.find_user_by_email(email) is not None


async def create(request: web.Request) -> web.Response:
    """POST /users (administrators): username, name, email, password (or reset_password/force_random_password,
    which leave the user without a password: no e-mail is sent here), admin. 201 with the admin entity."""
    principal = await caller(request)
    _allow(principal, Operation.ADMIN)
    p = await params(request)
    email = required_string(p, "email")
    name = required_string(p, "name")
    username = required_string(p, "username")
    password = string_param(p, "password", max_len=users.MAX_PASSWORD)
    if password is None and not bool_param(p, "reset_password") and not bool_param(p, "force_random_password"):
        raise ParamError(
            "password, reset_password, force_random_password are missing, at least one parameter must be provided"
        )
    is_admin = bool_param(p, "admin") or False
    errors = _user_problems(username, name, email, password)
    if errors:
        return invalid(errors)
    store = request.app[STORE]
    # users.rb answers duplicates with 409, e-mail first.
    if await _email_taken(store, email):
        return conflict("Email has already been taken")
    if await store.get_user_by_username(username) is not None:
        return conflict("Username has already been taken")
    user = await users.create_user(
        store,
        request.app[HASHER],
        username=username,
        name=name,
        email=email,
        password=password,
        is_admin=is_admin,
        now=request.app[CLOCK].now(),
    )
    await request.app[AUDIT].record_change(request, principal, audit.user_created(user))
    return web.json_response(entities.user_full(user, entities.base_url(request), with_private=True), status=201)


def _pat_expiry(value: object) -> datetime | None:
    """expires_at is a Date in Grape: a datetime counts by its day; the token stops at 00:00 UTC of that day."""
    parsed = tokens.parse_expires_at(value)
    return None if parsed is None else datetime.combine(parsed.date(), time(0, 0), tzinfo=UTC)


async def create_pat(request: web.Request) -> web.Response:
    """POST /users/:user_id/personal_access_tokens (administrators): name, scopes, expires_at → 201 with `token`."""
    principal = await caller(request)
    _allow(principal, Operation.ADMIN)
    user_id = _user_id(request)
    p = await params(request)
    name = required_string(p, "name")
    if "scopes" not in p:
        raise ParamError("scopes is missing")
    scopes = users.parse_pat_scopes(p["scopes"])
    expires_at = _pat_expiry(p.get("expires_at"))
    store = request.app[STORE]
    user = await store.get_user(user_id)
    if user is None:
        raise NotFound("404 User Not Found")
    if not name.strip():
        return invalid({"name": ["can't be blank"]})
    if len(name) > MAX_NAME:
        return invalid({"name": [f"is too long (maximum is {MAX_NAME} characters)"]})
    now = request.app[CLOCK].now()
    created = await users.create_pat(store, user=user, name=name, scopes=scopes, expires_at=expires_at, now=now)
    metrics.token_issued("personal_access_token")
    pat = created.token
    await request.app[AUDIT].record_change(request, principal, audit.pat_created(pat, user))
    return web.json_response(entities.personal_access_token(pat, now, created.secret), status=201)


async def list_pats(request: web.Request) -> web.Response:
    """GET /personal_access_tokens: the caller's tokens; administrators any user's with `user_id` (GitLab's
    PersonalAccessTokensFinder), with last_used_at and last_used_ips."""
    principal = await caller(request)
    _allow(principal, Operation.READ_USERS)
    raw = request.query.get("user_id")
    user_id = principal.user.id
    if raw:
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
            raise ParamError("user_id is invalid")
        if int(raw) != principal.user.id:
            _allow(principal, Operation.ADMIN)
        user_id = int(raw)
    pr = pagination.page_request(request)
    now = request.app[CLOCK].now()
    pats = await request.app[STORE].list_personal_access_tokens(user_id)
    page = [entities.personal_access_token(t, now) for t in pagination.slice_page(pats, pr)]
    return pagination.respond(request, page, len(pats), pr)


async def current_pat(request: web.Request) -> web.Response:
    """GET /personal_access_tokens/self: the token this request authenticated with."""
    principal = await caller(request)
    pats = await request.app[STORE].list_personal_access_tokens(principal.user.id)
    pat = next((t for t in pats if t.id == principal.token_id), None)
    if pat is None:
        raise NotFound("404 Not Found")
    return web.json_response(entities.personal_access_token(pat, request.app[CLOCK].now()))


async def revoke_pat(request: web.Request) -> web.Response:
    """DELETE /personal_access_tokens/:id: its owner or an administrator revokes it → 204; another user's → 400
    (GitLab's RevokeService answers "not permitted" with bad_request!); an unknown id → 404."""
    principal = await caller(request)
    raw = request.match_info["token_id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise ParamError("id is invalid")
    pat = await request.app[STORE].get_personal_access_token(int(raw))
    if pat is None:
        raise NotFound("404 Not Found")
    return await _revoke(request, principal, pat)


async def revoke_current_pat(request: web.Request) -> web.Response:
    """DELETE /personal_access_tokens/self: the token this request authenticated with (a leaked token revokes
    itself in one request); a password or session is no token → 400."""
    principal = await caller(request)
    pat = None
    if principal.token_id is not None:
        pat = await request.app[STORE].get_personal_access_token(principal.token_id)
    if pat is None:
        raise BadRequest("400 Bad request")
    return await _revoke(request, principal, pat)


async def _revoke(request: web.Request, principal: UserPrincipal, pat: PersonalAccessToken) -> web.Response:
    decision = access.decide(principal, user_target(pat.user_id), Operation.REVOKE_PERSONAL_ACCESS_TOKEN)
    if isinstance(decision, Denied):
        if decision.reason == INSUFFICIENT_SCOPE:  # the caller's token lacks `api`: 403, as every API write
            raise_denied(decision, "404 Not Found")
        raise BadRequest("400 Bad request")
    store = request.app[STORE]
    await store.revoke_personal_access_token(pat.id)
    owner = await store.get_user(pat.user_id)
    await request.app[AUDIT].record_change(request, principal, audit.pat_revoked(pat, owner))
    return web.Response(status=204)
