"""GitLab pagination: offset (`page`/`per_page` in, X-Total… and Link headers out; offset_pagination.rb) and keyset
(a Link to the next page only, past an `id_after` or an opaque `cursor`; keyset/paginator.rb)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

from aiohttp import web

from gateway.api.entities import base_url
from gateway.errors import ParamError
from gateway.store.base import COUNT_LIMIT, storable

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


def _integer(request: web.Request, key: str) -> int | None:
    """Grape's Integer coercion of a query parameter: digits with an optional sign; absent or empty is None."""
    raw = request.query.get(key)
    if raw is None or raw == "":
        return None
    digits = raw[1:] if raw[:1] in "+-" else raw
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 9:
        raise ParamError(f"{key} is invalid")
    return int(raw)


def page_request(request: web.Request) -> PageRequest:
    """GitLab's PaginationParams (per_page `except_values: [0]`), then Kaminari: a page below 1 is the first, a
    negative per_page the default, more than MAX_PER_PAGE the maximum."""
    page = _integer(request, "page")
    per_page = _integer(request, "per_page")
    if per_page == 0:
        raise ParamError("per_page has a value not allowed")
    if per_page is None or per_page < 0:
        per_page = DEFAULT_PER_PAGE
    return PageRequest(max(1, page or 1), min(per_page, MAX_PER_PAGE))


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
    # Kaminari's prev_page: none on the first page, nor past the last one (out_of_range?).
    has_prev = pr.page > 1 and (not counted or pr.page <= total_pages)
    h["X-Prev-Page"] = str(pr.page - 1) if has_prev else ""
    # The public origin (external_url, or what the client used through trusted proxies), the path as it was sent
    # (an id such as group%2Fproject stays encoded): clients follow rel="next" as given.
    base = base_url(request) + request.rel_url.raw_path
    query = {k: v for k, v in request.query.items() if k not in ("page", "per_page")}

    def link(page: int, rel: str) -> str:
        return f'<{base}?{urlencode({**query, "page": page, "per_page": pr.per_page})}>; rel="{rel}"'

    links = []
    if has_prev:
        links.append(link(pr.page - 1, "prev"))
    if total > pr.offset + pr.per_page:
        links.append(link(pr.page + 1, "next"))
    links.append(link(1, "first"))
    if counted:
        links.append(link(total_pages, "last"))
    h["Link"] = ", ".join(links)
    return resp


# The cursor's own key for its direction (GitLab's Paginator direction_key): "n" reads on. The REST API only ever
# links forward, so "p" (backward) is not accepted.
_DIRECTION = "_kd"
_FORWARD = "n"
MAX_CURSOR = 4096


def encode_cursor(values: dict[str, str]) -> str:
    """GitLab's Base64CursorConverter: the last item's order values as JSON, URL-safe base64 (padded), e.g.
    {"name": "Alice", "id": "12", "_kd": "n"}. Opaque to clients, which follow the Link header."""
    data = json.dumps({**values, _DIRECTION: _FORWARD}, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(data.encode()).decode("ascii")


def decode_cursor(raw: str, keys: Sequence[str]) -> dict[str, str] | None:
    """The values `encode_cursor` wrote, each of `keys` a string (`id` one of digits: every cursor holds the last
    item's id); None for an empty cursor (the first page). Anything else, whoever made it, is the client's
    mistake: 400 "cursor is invalid", never a server error."""
    if raw == "":
        return None
    try:
        if len(raw) > MAX_CURSOR:
            raise ValueError("too long")
        values = json.loads(base64.urlsafe_b64decode(raw.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise ParamError("cursor is invalid") from exc
    if not isinstance(values, dict) or values.get(_DIRECTION, _FORWARD) != _FORWARD:
        raise ParamError("cursor is invalid")
    found = {key: values.get(key) for key in keys}
    if not all(isinstance(value, str) and storable(value) for value in found.values()):
        raise ParamError("cursor is invalid")
    raw_id = str(found.get("id", "0"))
    if not (raw_id.isascii() and raw_id.isdigit() and len(raw_id) <= 18):
        raise ParamError("cursor is invalid")
    return {key: str(value) for key, value in found.items()}


def keyset_unavailable() -> web.Response:
    """405, as GitLab answers pagination=keyset for an order its keyset pagination does not follow
    (lib/api/helpers/pagination_strategies.rb)."""
    return web.json_response({"error": "Keyset pagination is not yet available for this type of request"}, status=405)


def next_cursor(
    items: Sequence[T], total: int, per_page: int, values: Callable[[T], dict[str, str]]
) -> dict[str, str] | None:
    """The `cursor` of the page after `items` (read as a page and one row more, which `total` counts): the last
    item's order `values`; None on the last page."""
    if not items or total <= per_page:
        return None
    return {"cursor": encode_cursor(values(items[-1]))}


def respond_keyset(request: web.Request, items: Sequence[Any], after: dict[str, str] | None) -> web.Response:
    """A JSON list with keyset pagination's one header: a Link to the next page, the request's query with `after`
    (the position past the last item: id_after, or a cursor) in place of the old one; none after the last page."""
    resp = web.json_response(list(items))
    if after is not None:
        base = base_url(request) + request.rel_url.raw_path
        query = {k: v for k, v in request.query.items() if k not in ("id_after", "id_before", "cursor", "page")}
        resp.headers["Link"] = f'<{base}?{urlencode({**query, **after})}>; rel="next"'
    return resp


def slice_page(items: Sequence[T], pr: PageRequest) -> list[T]:
    return list(items[pr.offset : pr.offset + pr.per_page])
