"""The URLs the gateway hands back (pagination Link, web_url) name the origin the client used: server.external_url,
else a trusted proxy's X-Forwarded-Proto / X-Forwarded-Host, else the connection's own. An untrusted peer cannot
choose it, and a forwarded host that is no host is ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.secretbox import SecretBox
from gateway.store.sqlite import SQLiteStore
from tests.conftest import make_config, start_server
from tests.world import World

TLS_PROXY = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gitlab.example.com"}

# (id, trusted_proxies, external_url, headers sent, expected origin; "SELF" = http://127.0.0.1:<port>)
CASES: list[tuple[str, list[str], str, dict[str, str], str]] = [
    ("direct", [], "", {}, "SELF"),
    ("untrusted-peer-names-an-origin", [], "", TLS_PROXY, "SELF"),
    ("trusted-tls-proxy", ["127.0.0.1"], "", TLS_PROXY, "https://gitlab.example.com"),
    ("trusted-proxy-range", ["127.0.0.0/8"], "", {"X-Forwarded-Proto": "https"}, "https://SELFHOST"),
    ("chain-leftmost-is-the-clients", ["127.0.0.1"], "", {"X-Forwarded-Proto": "https, http"}, "https://SELFHOST"),
    ("unknown-proto-ignored", ["127.0.0.1"], "", {"X-Forwarded-Proto": "gopher"}, "SELF"),
    ("not-a-host-ignored", ["127.0.0.1"], "", {"X-Forwarded-Host": "evil.example/path?x"}, "SELF"),
    ("ipv6-literal-host", ["127.0.0.1"], "", {"X-Forwarded-Host": "[2001:db8::1]:8443"}, "http://[2001:db8::1]:8443"),
    ("external-url-wins", ["127.0.0.1"], "https://gw.example.org/", TLS_PROXY, "https://gw.example.org"),
    ("external-url-without-proxy", [], "https://gw.example.org", {}, "https://gw.example.org"),
]


@pytest.mark.parametrize(("trusted", "external", "sent", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_urls_handed_back_name_the_clients_origin(
    tmp_path: Path,
    aiohttp_client: Any,
    store: SQLiteStore,
    clock: FixedClock,
    box: SecretBox,
    world: World,
    trusted: list[str],
    external: str,
    sent: dict[str, str],
    expected: str,
) -> None:
    config = make_config(tmp_path, server={"trusted_proxies": trusted, "external_url": external})
    client = await aiohttp_client(await start_server(create_app(config, store=store, clock=clock, box=box)))
    host = f"127.0.0.1:{client.port}"
    expected = expected.replace("SELFHOST", host).replace("SELF", f"http://{host}")
    admin = await world.user("root", admin=True)
    group = await world.group("tanuki")
    project = await world.project("awesome", group)
    for name in ("a", "b"):
        await world.deploy_token(project, name=name)

    r = await client.get(
        "/api/v4/projects/tanuki%2Fawesome/deploy_tokens", params={"per_page": "1"}, headers={**admin.headers, **sent}
    )
    assert r.status == 200
    links = [part.split(";")[0].strip()[1:-1] for part in r.headers["Link"].split(",")]
    page_url = f"{expected}/api/v4/projects/tanuki%2Fawesome/deploy_tokens?"
    assert links and all(link.startswith(page_url) for link in links)

    r = await client.get(f"/api/v4/projects/{project.id}", headers={**admin.headers, **sent})
    assert (await r.json())["web_url"] == f"{expected}/tanuki/awesome"
