"""Web UI sessions: a random session id in an HttpOnly cookie, only its SHA-256 digest in the store (so every replica
sees the same sessions and a copy of the database signs nobody in), and the user it belongs to."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aiohttp import web

from gateway.app import CLOCK, CONFIG, STORE
from gateway.clients import CLIENTS
from gateway.errors import Conflict
from gateway.middleware import PRINCIPAL
from gateway.principals import UserPrincipal, describe
from gateway.store.base import Store, User
from gateway.web import csrf

COOKIE = "_gateway_session"
# An absolute lifetime: a stolen cookie stops working at the latest this long after sign-in (OWASP session
# management: absolute timeout of a few hours for sensitive applications).
TTL = timedelta(hours=8)
# 32 random bytes, URL-safe base64: anything else in the cookie is not even looked up.
_ID_RE = re.compile(r"\A[A-Za-z0-9_-]{43}\Z")


class SignInRequired(Exception):
    """No valid session: the page handler answers with a redirect to the sign-in page."""


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str
    id: str = field(repr=False)  # the cookie's secret; never logged

    @property
    def principal(self) -> UserPrincipal:
        return UserPrincipal(self.user, None, "session")


def new_id() -> str:
    return secrets.token_urlsafe(32)


def digest(session_id: str) -> bytes:
    """What the store keeps: the id has 256 random bits, so a fast hash is enough (as for deploy tokens)."""
    return hashlib.sha256(session_id.encode("ascii")).digest()


def is_https(request: web.Request) -> bool:
    """Behind TLS: the request itself, a trusted TLS-terminating proxy's X-Forwarded-Proto, or the public URL the
    operator configured."""
    return request.app[CLIENTS].scheme(request) == "https" or request.app[CONFIG].server.external_url.startswith(
        "https:"
    )


def set_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str, *, path: str = "/") -> None:
    # HttpOnly: page scripts never see it; SameSite=Lax: not sent on cross-site POSTs (CSRF defence in depth);
    # no Max-Age: a browser session cookie, the server-side expiry is the real limit.
    response.set_cookie(name, value, path=path, httponly=True, samesite="Lax", secure=is_https(request))


def clear_cookie(response: web.StreamResponse, request: web.Request, name: str, *, path: str = "/") -> None:
    response.del_cookie(name, path=path, secure=is_https(request), httponly=True, samesite="Lax")


def cookie_id(request: web.Request) -> str | None:
    """The well-formed session id the browser sent, if any (valid or not)."""
    value = request.cookies.get(COOKIE, "")
    return value if _ID_RE.match(value) else None


async def start(store: Store, user: User, now: datetime) -> str:
    """A fresh session for a user who just proved their password; returns the id for the cookie."""
    await store.delete_expired_web_sessions(now)  # housekeeping on the rare write path, not on every page
    for _attempt in range(3):
        session_id = new_id()
        try:
            await store.create_web_session(
                session_digest=digest(session_id), user_id=user.id, created_at=now, expires_at=now + TTL
            )
        except Conflict:
            continue
        return session_id
    raise Conflict("could not create a unique session")


async def current(request: web.Request) -> Session | None:
    """The signed-in session of this request: known, not expired, and its user still active."""
    session_id = cookie_id(request)
    if session_id is None:
        return None
    store = request.app[STORE]
    record = await store.get_web_session(digest(session_id))
    if record is None or request.app[CLOCK].now() >= record.expires_at:
        return None
    user = await store.get_user(record.user_id)
    if user is None or not user.active:  # a blocked user is signed out everywhere at once
        return None
    session = Session(user=user, csrf_token=csrf.token_for(session_id), id=session_id)
    request[PRINCIPAL] = describe(session.principal) + "/session"
    return session


async def require(request: web.Request) -> Session:
    session = await current(request)
    if session is None:
        raise SignInRequired()
    return session


async def end(store: Store, session_id: str) -> None:
    await store.delete_web_session(digest(session_id))
