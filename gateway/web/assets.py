"""The UI's own static files (stylesheet and the small script behind the copy and revoke buttons): no CDN."""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from aiohttp import web

from gateway.errors import NotFound

PREFIX = "/-/static/"
_TYPES = {"style.css": "text/css", "ui.js": "text/javascript"}


@functools.cache
def _read(name: str) -> bytes:
    return resources.files("gateway.web").joinpath("static", name).read_bytes()


def url(name: str) -> str:
    """The file's URL with a digest of its content: a new release is fetched at once, an old one cached long."""
    return f"{PREFIX}{name}?v={hashlib.sha256(_read(name)).hexdigest()[:12]}"


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    content_type = _TYPES.get(name)
    if content_type is None:  # only the listed files: no path ever reaches the file system
        raise NotFound("The page you were looking for could not be found.")
    return web.Response(
        body=_read(name),
        content_type=content_type,
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )
