"""Walking a list's pages as GitLab's clients do: request, then follow the Link header's rel="next" until it is gone."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from yarl import URL


async def walk_next(
    client: TestClient, path: str, query: dict[str, str], headers: dict[str, str], *, cursor: str = "cursor"
) -> list[list[Any]]:
    """Every page's JSON body of a keyset-paginated list (`query` asks for it). Each response must be 200 with
    keyset pagination's headers only (no total, no page numbers), and each next link must keep the request's
    query, add the `cursor` parameter and nothing else (no page)."""
    pages: list[list[Any]] = []
    origin = str(client.make_url(""))
    url = str(client.make_url(path).with_query(query))
    for _ in range(50):
        r = await client.get(url.removeprefix(origin), headers=headers)
        assert r.status == 200, await r.text()
        assert "X-Total" not in r.headers and "X-Page" not in r.headers
        pages.append(await r.json())
        link = r.headers.get("Link")
        if link is None:
            return pages
        assert link.startswith(f"<{origin}") and link.endswith('>; rel="next"'), link
        url = link[1 : -len('>; rel="next"')]
        assert set(URL(url).query.keys()) == {*query, cursor}, url
    raise AssertionError("the next links do not end")
