"""GitLab offset pagination: `page`/`per_page` in, X-Total… and Link headers out (offset_pagination.rb)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

from aiohttp import web

from gateway.api.entities import base_url
from gateway.errors import ParamError
from gateway.store.base import COUNT_LIMIT

T = TypeVar("T")

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100


@dataclass(frozen=True)
class PageRequest:
    page: int
    per_page: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


def _positive(request: web.Request, key: str, default: int) -> int:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise ParamError(f"{key} is invalid")
    return int(raw)


def page_request(request: web.Request) -> PageRequest:
    page = max(1, _positive(request, "page", 1))
    per_page = _positive(request, "per_page", DEFAULT_PER_PAGE)
    per_page = DEFAULT_PER_PAGE if per_page < 1 else min(per_page, MAX_PER_PAGE)
    return PageRequest(page, per_page)


def respond(request: web.Request, items: Sequence[Any], total: int, pr: PageRequest) -> web.Response:
    """A JSON list with GitLab's pagination headers; `items` is the current page only. Past COUNT_LIMIT the total
    (which may then be a count that stopped early, though past this page's end) and the last page are left out."""
    total_pages = max(1, -(-total // pr.per_page))
    counted = total <= COUNT_LIMIT
    resp = web.json_response(list(items))
    h = resp.headers
    h["X-Page"] = str(pr.page)
    h["X-Per-Page"] = str(pr.per_page)
    if counted:
        h["X-Total"] = str(total)
        h["X-Total-Pages"] = str(total_pages)
    h["X-Next-Page"] = str(pr.page + 1) if total > pr.offset + pr.per_page else ""
    h["X-Prev-Page"] = str(pr.page - 1) if pr.page > 1 else ""
    # The public origin (external_url, or what the client used through trusted proxies), the path as it was sent
    # (an id such as group%2Fproject stays encoded): clients follow rel="next" as given.
    base = base_url(request) + request.rel_url.raw_path
    query = {k: v for k, v in request.query.items() if k not in ("page", "per_page")}

    def link(page: int, rel: str) -> str:
        return f'<{base}?{urlencode({**query, "page": page, "per_page": pr.per_page})}>; rel="{rel}"'

    links = []
    if pr.page > 1:
        links.append(link(pr.page - 1, "prev"))
    if total > pr.offset + pr.per_page:
        links.append(link(pr.page + 1, "next"))
    links.append(link(1, "first"))
    if counted:
        links.append(link(total_pages, "last"))
    h["Link"] = ", ".join(links)
    return resp


def respond_keyset(request: web.Request, items: Sequence[Any], after: dict[str, str] | None) -> web.Response:
    """A JSON list with keyset pagination's one header: a Link to the next page, the request's query with `after`
    (the cursor past the last item, e.g. id_after) in place of the old cursor; none after the last page."""
    resp = web.json_response(list(items))
    if after is not None:
        base = base_url(request) + request.rel_url.raw_path
        query = {k: v for k, v in request.query.items() if k not in ("id_after", "id_before", "page")}
        resp.headers["Link"] = f'<{base}?{urlencode({**query, **after})}>; rel="next"'
    return resp


def slice_page(items: Sequence[T], pr: PageRequest) -> list[T]:
    return list(items[pr.offset : pr.offset + pr.per_page])
