"""What every UI handler shares: the page wrapper (security headers, sign-in redirects, styled error pages),
the signed-in navigation bar, and the CSRF check of posted forms."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlencode

from aiohttp import web
from multidict import MultiDictProxy

from gateway.errors import Forbidden, HTTPFailure, PayloadTooLarge
from gateway.middleware import read_form
from gateway.web import csrf, sessions
from gateway.web.render import EMPTY, Safe, html_response, layout, render, secure, see_other

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Form = MultiDictProxy[str | bytes | bytearray | web.FileField]

LOGIN_PATH = "/-/login"
NOT_FOUND = "The page you were looking for could not be found or you don't have permission to view it."
CSRF_REFUSED = "The form could not be verified (it may be out of date). Reload the page and try again."
_TITLES = {400: "Bad request", 403: "Forbidden", 404: "Not found", 413: "Too large", 429: "Too many attempts"}


class RetryLater(HTTPFailure):
    """429 with the seconds to wait (sent as Retry-After)."""

    status = 429

    def __init__(self, message: str, seconds: int) -> None:
        super().__init__(message)
        self.seconds = seconds


def safe_return_to(value: str | None) -> str:
    """A local path to go back to after sign-in; anything that could leave the site becomes "/"."""
    if (
        not value
        or len(value) > 2048
        or not value.startswith("/")
        or value.startswith(("//", "/\\"))
        or any(ch in value for ch in "\\\r\n\t")
        or not value.isprintable()
        or value.startswith(LOGIN_PATH)
    ):
        return "/"
    return value


def login_url(return_to: str) -> str:
    return_to = safe_return_to(return_to)
    return LOGIN_PATH if return_to == "/" else f"{LOGIN_PATH}?{urlencode({'return_to': return_to})}"


def nav(session: sessions.Session) -> Safe:
    return render("nav.html", username=session.user.username, csrf_field=csrf.FIELD, csrf_token=session.csrf_token)


def error_page(status: int, message: str, session: sessions.Session | None = None) -> web.Response:
    title = _TITLES.get(status, "Error")
    content = render("error.html", status=status, title=title, message=message)
    return html_response(layout(f"{status} {title}", content, nav=nav(session) if session else EMPTY), status=status)


def page(handler: Handler) -> Handler:
    """Wrap a UI handler: anonymous visitors go to sign-in, failures become styled pages, all get the headers."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except sessions.SignInRequired:
            back = request.path_qs if request.method == "GET" else "/"
            response = see_other(login_url(back))
        except HTTPFailure as exc:
            # Signed-in visitors keep their navigation (and sign-out button) on error pages too.
            session = await sessions.current(request) if exc.status in (403, 404) else None
            response = error_page(exc.status, exc.message, session)
            if isinstance(exc, RetryLater):
                response.headers["Retry-After"] = str(exc.seconds)
        return secure(response)

    return wrapped


async def posted_form(request: web.Request, session: sessions.Session) -> Form:
    """The form of a signed-in POST, after its CSRF token was checked (403 otherwise)."""
    try:
        form = await read_form(request)
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge("The form is too large.") from None
    if not csrf.matches(session.csrf_token, form.get(csrf.FIELD)):
        raise Forbidden(CSRF_REFUSED)
    return form


def text(form: Form, name: str) -> str:
    """One text field of a form ("" when absent; uploaded files are never text)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


def href(*segments: str) -> str:
    """A URL path from path segments that may contain '/' (full paths) but nothing needing more than quoting."""
    return "/" + "/".join(quote(s, safe="/-._~+") for s in segments)
