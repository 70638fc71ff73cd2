"""Driving the web UI without a browser (aiohttp test client): sign in, read CSRF tokens, post forms like a browser."""

from __future__ import annotations

import re
from html import unescape

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from tests.world import Actor

SESSION_COOKIE = "_gateway_session"
LOGIN_COOKIE = "_gateway_login_csrf"
_CSRF_RE = re.compile(r'name="authenticity_token" value="([^"]*)"')


def csrf_of(html: str) -> str:
    found = _CSRF_RE.search(html)
    assert found, "no CSRF token on the page"
    return unescape(found.group(1))


def cookie(client: TestClient, name: str) -> str | None:
    for morsel in client.session.cookie_jar:
        if morsel.key == name:
            return morsel.value
    return None


async def sign_in(
    client: TestClient, actor: Actor, *, password: str | None = None, headers: dict[str, str] | None = None
) -> ClientResponse:
    """The sign-in page, then its form posted with the page's CSRF token (redirects not followed)."""
    page = await client.get("/-/login")
    assert page.status == 200
    return await client.post(
        "/-/login",
        data={
            "authenticity_token": csrf_of(await page.text()),
            "username": actor.user.username,
            "password": actor.password if password is None else password,
        },
        headers=headers,
        allow_redirects=False,
    )


async def signed_in(client: TestClient, actor: Actor) -> None:
    client.session.cookie_jar.clear()
    response = await sign_in(client, actor)
    assert response.status == 303, await response.text()


async def form_token(client: TestClient, path: str) -> str:
    """The CSRF token of a signed-in page's forms."""
    page = await client.get(path)
    assert page.status == 200, await page.text()
    return csrf_of(await page.text())


async def post_form(
    client: TestClient, path: str, fields: dict[str, str | list[str]], *, token: str | None = None, page: str = "/"
) -> ClientResponse:
    """A form POST as the browser sends it (repeated keys for lists), with the CSRF token of `page`."""
    data: list[tuple[str, str]] = []
    for key, value in fields.items():
        data.extend((key, v) for v in (value if isinstance(value, list) else [value]))
    data.append(("authenticity_token", token if token is not None else await form_token(client, page)))
    return await client.post(path, data=data, allow_redirects=False)
