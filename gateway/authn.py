"""Authenticating a request: every place that checks a secret (git, /jwt/auth, packages, API) goes through here.

One funnel, so that what every secret check must do (brute-force limits, last use, audit, metrics) is done once.
"""

from __future__ import annotations

from aiohttp import web

from gateway import credentials, principals
from gateway.app import CLOCK, HASHER, STORE
from gateway.credentials import Credentials, Malformed
from gateway.principals import Mode, Principal

_FROM_HEADERS = object()


async def authenticate(
    request: web.Request,
    mode: Mode,
    creds: Credentials | Malformed | object | None = _FROM_HEADERS,
) -> Principal | None:
    """The principal behind the request's credentials (or `creds` when given): ANONYMOUS when none were sent,
    None when they are bad."""
    if creds is _FROM_HEADERS:
        creds = credentials.from_headers(request.headers)
    assert creds is None or isinstance(creds, Credentials | Malformed)
    app = request.app
    return await principals.identify(app[STORE], app[HASHER], creds, app[CLOCK].now(), mode)
