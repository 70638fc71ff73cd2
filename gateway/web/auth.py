"""Sign-in and sign-out of the web UI: username and password (Argon2id), a fresh session per sign-in, a login
CSRF cookie, and the failed sign-in limits (the address ban bruteforce.py shares, throttle.py's username limit)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway import audit, metrics
from gateway.app import BRUTE_FORCE, CLOCK, HASHER, LOGIN_THROTTLE, PASSWORD_ATTEMPTS, STORE
from gateway.errors import PayloadTooLarge
from gateway.login_throttle import username_key
from gateway.middleware import PRINCIPAL, read_form
from gateway.principals import UserPrincipal, describe
from gateway.web import csrf, devices, sessions
from gateway.web.pages import CSRF_REFUSED, LOGIN_PATH, RetryLater, page, posted_form, safe_return_to, text
from gateway.web.render import html_response, layout, render, see_other

BAD_CREDENTIALS = "Invalid username or password."  # one message for every failure: usernames are not revealed
TOO_MANY = "Too many failed sign-in attempts. Wait a few minutes and try again."
MAX_FIELD = 1024  # longer usernames or passwords are not worth an Argon2 run


def _login_page(
    request: web.Request, *, token: str, username: str = "", error: str = "", return_to: str = "/", status: int = 200
) -> web.Response:
    content = render(
        "login.html",
        action=LOGIN_PATH,
        csrf_field=csrf.FIELD,
        csrf_token=token,
        username=username,
        return_to=return_to,
        error=render("alert.html", kind="danger", message=error) if error else "",
    )
    response = html_response(layout("Sign in", content), status=status)
    sessions.set_cookie(response, request, csrf.LOGIN_COOKIE, token, path=LOGIN_PATH)
    return response


def _login_token(request: web.Request) -> str:
    existing = request.cookies.get(csrf.LOGIN_COOKIE, "")
    return existing if csrf.is_token(existing) else csrf.new_login_token()


@page
async def login_form(request: web.Request) -> web.StreamResponse:
    return_to = safe_return_to(request.query.get("return_to"))
    if await sessions.current(request) is not None:
        return see_other(return_to)
    return _login_page(request, token=_login_token(request), return_to=return_to)


@page
async def login(request: web.Request) -> web.StreamResponse:
    try:
        form = await read_form(request)
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge("The form is too large.") from None
    username, password = text(form, "username")[:MAX_FIELD], text(form, "password")[:MAX_FIELD]
    return_to = safe_return_to(text(form, "return_to"))
    cookie_token = request.cookies.get(csrf.LOGIN_COOKIE, "")
    if not csrf.matches(cookie_token, form.get(csrf.FIELD)):
        # Login CSRF, or a sign-in page older than its cookie: nothing is checked; a fresh form is offered.
        return _login_page(
            request,
            token=csrf.new_login_token(),
            username=username,
            error=CSRF_REFUSED,
            return_to=return_to,
            status=403,
        )
    app = request.app
    guard, limiter = app[BRUTE_FORCE], app[LOGIN_THROTTLE]
    client = guard.client(request)
    # One check at a time per username and a few per address (password_attempts.py), each after the failures of
    # the ones before are counted, so a burst of guesses meets the limits like a sequence.
    async with app[PASSWORD_ATTEMPTS].turn(client, username_key(username)):
        now = app[CLOCK].now()
        # Refused before the password is even checked: a blocked guesser learns nothing more. The address ban is
        # the one every secret check shares (bruteforce.py); the username limit is every password's (login_throttle).
        banned = guard.retry_after(client)
        if banned:
            audit.banned()
            raise RetryLater(TOO_MANY, banned)
        store = app[STORE]
        user = await store.get_user_by_username(username) if username else None
        locked = limiter.retry_after(username, now)
        # A browser that signed in as this user before is not locked out by others' failures on the name, only by
        # its own (a device's limit: its failures count there too).
        device = devices.known(request, user.id, now) if user is not None else None
        if locked and (device is None or limiter.retry_after(device, now)):
            audit.banned(audit.LOCKED_REASON)
            raise RetryLater(TOO_MANY, locked)
        # Argon2id is slow by design: off the event loop. An unknown user costs the same time (PasswordHasher.verify).
        verified = await asyncio.to_thread(app[HASHER].verify, password, user.password_hash if user else None)
        if not verified or user is None or not user.active:
            audit.authenticated(None)
            metrics.web_sign_in(None)
            limiter.failed(username, now)
            if device is not None:
                limiter.failed(device, now)
            await guard.failed(client)
            return _login_page(
                request, token=cookie_token, username=username, error=BAD_CREDENTIALS, return_to=return_to, status=422
            )
        signed_in = UserPrincipal(user, None, "password")
        audit.authenticated(signed_in)
        metrics.web_sign_in(signed_in)
        limiter.succeeded(username)
        await guard.succeeded(client)

    previous = sessions.cookie_id(request)
    if previous is not None:  # never keep a session id across a sign-in (session fixation)
        await sessions.end(store, previous)
    session_id = await sessions.start(store, user, now)
    request[PRINCIPAL] = describe(UserPrincipal(user, None, "session"))
    response = see_other(return_to)
    sessions.set_cookie(response, request, sessions.COOKIE, session_id)
    devices.remember(response, request, user.id, now)
    sessions.clear_cookie(response, request, csrf.LOGIN_COOKIE, path=LOGIN_PATH)
    return response


@page
async def logout(request: web.Request) -> web.StreamResponse:
    session = await sessions.require(request)
    await posted_form(request, session)
    await sessions.end(request.app[STORE], session.id)
    response = see_other(LOGIN_PATH)
    sessions.clear_cookie(response, request, sessions.COOKIE)
    return response
