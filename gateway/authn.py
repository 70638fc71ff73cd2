"""Authenticating a request: every place that checks a secret (git, /jwt/auth, packages, API) goes through here.

One funnel, so that what every secret check must do (brute-force limits, last use, audit, metrics) is done once:
  1. admit      a banned client address is refused before its credentials are even read (bruteforce.py)
  2. identify   credentials → principal (principals.py)
  3. settled    the outcome of a presented secret: counted (failure) or the count reset (success)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway import audit, credentials, metrics, principals
from gateway.app import BRUTE_FORCE, CLOCK, HASHER, LOGIN_THROTTLE, PASSWORD_ATTEMPTS, STORE
from gateway.bruteforce import FORBIDDEN_FAMILIES, Banned
from gateway.credentials import Credentials, Malformed
from gateway.login_throttle import LockedOut, username_key
from gateway.middleware import family_of
from gateway.principals import Mode, Principal, UserPrincipal

_FROM_HEADERS = object()


async def authenticate(
    request: web.Request,
    mode: Mode,
    creds: Credentials | Malformed | object | None = _FROM_HEADERS,
) -> Principal | None:
    """The principal behind the request's credentials (or `creds` when given): ANONYMOUS when none were sent,
    None when they are bad. Raises bruteforce.Banned for a banned client address."""
    app = request.app
    client = _admit(request)
    if creds is _FROM_HEADERS:
        creds = credentials.from_headers(request.headers)
    assert creds is None or isinstance(creds, Credentials | Malformed)
    username = principals.password_username(creds, mode)
    if username is None:
        principal = await principals.identify(app[STORE], app[HASHER], creds, app[CLOCK].now(), mode)
        metrics.auth_outcome(mode, principal)
        if creds is not None:
            # Only a presented secret counts: no credentials at all is the anonymous probe every git command starts
            # with. Malformed credentials (bad base64, no colon) are a presented secret that failed.
            await _settled(request, client, principal)
        return principal
    # A password may be checked: one at a time per username and a few per address, each after the failures of
    # the ones before are counted (a burst of guesses meets the ban and the username limit like a sequence).
    async with app[PASSWORD_ATTEMPTS].turn(client, username_key(username)):
        _admit(request)
        limiter, now = app[LOGIN_THROTTLE], app[CLOCK].now()
        wait = limiter.retry_after(username, now)
        if wait:
            audit.banned(audit.LOCKED_REASON)
            raise LockedOut(403 if family_of(request) in FORBIDDEN_FAMILIES else 429, wait)
        principal = await principals.identify(app[STORE], app[HASHER], creds, now, mode)
        metrics.auth_outcome(mode, principal)
        if principal is None:
            limiter.failed(username, now)
        elif isinstance(principal, UserPrincipal) and username_key(principal.user.username) == username_key(username):
            limiter.succeeded(username)  # that user's password, not another credential of the guesser's
        await _settled(request, client, principal)
    return principal


async def authenticate_with(
    request: web.Request, verify: Callable[[], Awaitable[Principal | None]]
) -> Principal | None:
    """A secret that is not a credentials header (the OAuth2 refresh token of /jwt/auth): the same ban check
    first, then `verify()`, then the same accounting."""
    client = _admit(request)
    principal = await verify()
    await _settled(request, client, principal)
    return principal


def _admit(request: web.Request) -> str | None:
    try:
        return request.app[BRUTE_FORCE].admit(request)
    except Banned:
        audit.banned()  # a refusal of its own in the audit trail: no credentials were read, none is recorded
        raise


async def _settled(request: web.Request, client: str | None, principal: Principal | None) -> None:
    """Every presented secret ends here, good or bad: the place for what must follow each secret check."""
    audit.authenticated(principal)  # the audit trail and the token's last use (audit.py), recorded after the answer
    guard = request.app[BRUTE_FORCE]
    if principal is None:
        await guard.failed(client)
    else:
        await guard.succeeded(client)
