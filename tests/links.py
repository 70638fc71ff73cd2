"""Walking a list's pages as GitLab's clients do: request, then follow the Link header's rel="next" until it is gone."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient


async def walk_next(
    client: TestClient, path: str, query: dict[str, str], headers: dict[str, str]
) -> tuple[list[list[Any]], list[str]]:
    """Every page's JSON body, and the next links followed; each response must be 200 with keyset pagination's
    headers only (no total, no page numbers)."""
    pages: list[list[Any]] = []
    links: list[str] = []
    origin = str(client.make_url(""))
    url: str | None = str(client.make_url(path).with_query(query))
    for _ in range(50):
        assert url is not None
        r = await client.get(url.removeprefix(origin), headers=headers)
        assert r.status == 200, await r.text()
        assert "X-Total" not in r.headers and "X-Page" not in r.headers
        pages.append(await r.json())
        link = r.headers.get("Link")
        if link is None:
            return pages, links
        assert link.startswith(f"<{origin}") and link.endswith('>; rel="next"'), link
        url = link[1 : -len('>; rel="next"')]
        links.append(url)
    raise AssertionError("the next links do not end")
