"""HTML of the web UI: a tiny auto-escaping renderer (string.Template over files in templates/), the page layout,
and the security headers every UI response carries."""

from __future__ import annotations

import functools
import html
import string
from collections.abc import Iterable
from importlib import resources

from aiohttp import web

from gateway.web import assets

# No inline script or style anywhere: the CSP allows only our own files, so injected markup cannot run.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class Safe(str):
    """Markup that is already escaped (or built only from escaped parts); render() inserts it as is."""

    __slots__ = ()


def escape(value: object) -> Safe:
    """Text → HTML; quotes escaped too, so the result is safe inside attribute values."""
    if isinstance(value, Safe):
        return value
    return Safe(html.escape(str(value), quote=True))


def join(parts: Iterable[Safe], separator: str = "") -> Safe:
    return Safe(escape(separator).join(escape(p) for p in parts))


@functools.cache
def _template(name: str) -> string.Template:
    text = resources.files("gateway.web").joinpath("templates", name).read_text(encoding="utf-8")
    return string.Template(text)


def render(template: str, /, **values: object) -> Safe:
    """templates/<template> with every $placeholder filled; values are escaped unless they are Safe.

    A placeholder without a value raises KeyError: a template and its caller cannot drift apart silently."""
    return Safe(_template(template).substitute({key: escape(value) for key, value in values.items()}))


EMPTY = Safe("")


def when(condition: object, markup: Safe) -> Safe:
    return markup if condition else EMPTY


def layout(title: str, content: Safe, *, nav: Safe = EMPTY, body_attrs: Safe = EMPTY) -> Safe:
    return render(
        "layout.html",
        title=title,
        content=content,
        nav=nav,
        body_attrs=body_attrs,
        style_url=assets.url("style.css"),
        script_url=assets.url("ui.js"),
    )


def secure(response: web.StreamResponse) -> web.StreamResponse:
    """The security headers of UI pages; pages are private to the signed-in user, so never cached."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def html_response(markup: Safe, status: int = 200) -> web.Response:
    return web.Response(status=status, text=markup, content_type="text/html", charset="utf-8")


def see_other(location: str) -> web.Response:
    """303 after a POST: the browser follows with a GET, so a reload never repeats the POST."""
    return web.Response(status=303, headers={"Location": location})
