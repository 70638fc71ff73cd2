"""/-/metrics: who may scrape it, what each kind of request moves (requests, authentications, tokens, backends, bytes),
labels from closed sets only, X-Request-Id on streamed answers, and one scrape summing every worker of
`gateway serve --workers 2`.

In process the counters are module globals shared by every test: each test compares a scrape before and after.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.routes import ROUTES
from gateway.secretbox import SecretBox
from gateway.signing_keys import SigningKey, generate_key, self_signed_certificate
from gateway.store.sqlite import SQLiteStore
from tests.conftest import make_config, start_server
from tests.procs import stop, wait_until
from tests.replicas import request
from tests.servers import Served, init_gateway, write_config
from tests.world import Actor, World

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
MakeClient = Callable[..., Awaitable[TestClient]]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: TestClient) -> Samples:
    resp = await client.get("/-/metrics")
    assert resp.status == 200, await resp.text()
    return parse(await resp.text())


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


@pytest.fixture
def signing_key() -> SigningKey:
    key = generate_key("ES256")
    return SigningKey(key, self_signed_certificate(key, "test", datetime.now(UTC)))


@pytest.fixture
async def make_client(
    aiohttp_client: Any, tmp_path: Path, store: SQLiteStore, clock: FixedClock, box: SecretBox, signing_key: SigningKey
) -> MakeClient:
    """make_client(**config sections) → a client of the gateway with that configuration."""

    async def make(**sections: dict[str, Any]) -> TestClient:
        config = make_config(tmp_path, **sections)
        app = create_app(config, store=store, clock=clock, box=box, signing_key=signing_key)
        client: TestClient = await aiohttp_client(await start_server(app))
        return client

    return make


# --- who may scrape ---------------------------------------------------------------------------------------------

TRUSTED = {"trusted_proxies": ["127.0.0.1"]}


@pytest.mark.parametrize(
    ("sections", "headers", "status"),
    [
        ({}, {}, 200),  # loopback is allowed by default (GitLab's monitoring allowlist default)
        ({"metrics": {"allowed_ips": ["10.0.0.0/8"]}}, {}, 404),
        ({"metrics": {"allowed_ips": ["127.0.0.1"]}}, {}, 200),  # a bare address is a /32
        ({"metrics": {"enabled": False}}, {}, 404),
        # Behind a trusted proxy the forwarded client is checked, not the proxy.
        ({"server": TRUSTED}, {"X-Forwarded-For": "203.0.113.7"}, 404),
        ({"server": TRUSTED}, {"X-Forwarded-For": "127.0.0.1"}, 200),
        # From an untrusted peer the header is ignored: a client cannot claim to be loopback, or to be someone else.
        ({"metrics": {"allowed_ips": ["203.0.113.0/24"]}}, {"X-Forwarded-For": "203.0.113.7"}, 404),
        ({}, {"X-Forwarded-For": "203.0.113.7"}, 200),
    ],
    ids=["default", "not-allowed", "bare-address", "disabled", "proxied-outsider", "proxied-local", "forged", "xff"],
)
async def test_who_may_scrape(
    make_client: MakeClient, sections: dict[str, Any], headers: dict[str, str], status: int
) -> None:
    client = await make_client(**sections)
    resp = await client.get("/-/metrics", headers=headers)
    assert resp.status == status
    if status == 200:
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert "gateway_http_requests_total" in await resp.text()
    else:
        assert "gateway_" not in await resp.text()


# --- what requests move -----------------------------------------------------------------------------------------


async def cast(world: World) -> dict[str, Any]:
    group = await world.group("g")
    project = await world.project("p", group)
    admin = await world.user("boss", admin=True)
    return {
        "project": project,
        "admin": admin,
        "deploy": await world.deploy_token(project, ("read_repository", "read_registry")),
    }


# (method, path, headers of who, family, status, authentication (mode, outcome) or None)
Row = tuple[str, str, Callable[[dict[str, Any]], dict[str, str]], str, int, tuple[str, str] | None]
ROWS: list[Row] = [
    ("GET", "/-/health", lambda c: {}, "ops", 200, None),
    ("GET", "/api/v4/user", lambda c: {"PRIVATE-TOKEN": c["admin"].pat}, "api", 200, ("api", "pat")),
    ("GET", "/api/v4/user", lambda c: {"PRIVATE-TOKEN": "glpat-wrongwrongwrongwron"}, "api", 401, ("api", "failed")),
    ("GET", "/api/v4/user", lambda c: {}, "api", 401, None),  # no credentials: nothing to check
    (
        "GET",
        "/g/p.git/info/refs?service=git-upload-pack",
        lambda c: basic(c["deploy"].token.username, c["deploy"].secret),
        "git",
        200,
        ("login", "deploy_token"),
    ),
    (
        "GET",
        "/g/p.git/info/refs?service=git-upload-pack",
        lambda c: basic("boss", c["admin"].password),
        "git",
        200,
        ("login", "password"),
    ),
    (
        "GET",
        "/jwt/auth?service=container_registry&scope=repository:g/p:pull",
        lambda c: basic(c["deploy"].token.username, "gldt-wrongwrongwrongwron"),
        "registry_auth",
        401,
        ("login", "failed"),
    ),
    ("GET", "/nothing/here", lambda c: {}, "ops", 404, None),
]


@pytest.mark.parametrize("row", ROWS, ids=[f"{r[3]}-{r[4]}-{r[5][1] if r[5] else 'none'}" for r in ROWS])
async def test_requests_and_authentications_are_counted(make_client: MakeClient, world: World, row: Row) -> None:
    method, path, who, family, status, auth = row
    client = await make_client()
    c = await cast(world)
    before = await scrape(client)
    resp = await client.request(method, path, headers=who(c))
    await resp.read()
    assert resp.status == status
    after = await scrape(client)

    def moved(name: str) -> dict[frozenset[tuple[str, str]], float]:
        changes = {k[1]: after[k] - before.get(k, 0.0) for k in after if k[0] == name}
        return {labels: n for labels, n in changes.items() if n}

    # The first scrape is counted as well (ops 200); nothing else moved.
    expected = Counter({frozenset({("family", family), ("status", str(status))}): 1})
    expected[frozenset({("family", "ops"), ("status", "200")})] += 1
    assert moved("gateway_http_requests_total") == dict(expected)
    durations: Counter[frozenset[tuple[str, str]]] = Counter()
    for labels, n in expected.items():
        durations[frozenset({("family", dict(labels)["family"])})] += n
    assert moved("gateway_http_request_duration_seconds_count") == dict(durations)
    auths = moved("gateway_authentications_total")
    assert auths == ({frozenset({("mode", auth[0]), ("outcome", auth[1])}): 1} if auth else {})


async def test_tokens_issued(make_client: MakeClient, world: World) -> None:
    client = await make_client()
    c = await cast(world)
    admin: Actor = c["admin"]
    project = c["project"]
    before = await scrape(client)
    resp = await client.post(
        f"/api/v4/projects/{project.id}/deploy_tokens",
        json={"name": "ci", "scopes": ["read_repository"]},
        headers=admin.headers,
    )
    assert resp.status == 201
    resp = await client.post(
        f"/api/v4/users/{admin.user.id}/personal_access_tokens",
        json={"name": "ci", "scopes": ["api"]},
        headers=admin.headers,
    )
    assert resp.status == 201
    jwt_auth = "/jwt/auth?service=container_registry&scope=repository:g/p:pull"
    for _ in range(2):  # the second is the same token again, from the short reuse cache
        resp = await client.get(jwt_auth, headers=basic(c["deploy"].token.username, c["deploy"].secret))
        assert resp.status == 200
    form = {
        "grant_type": "password",
        "service": "container_registry",
        "access_type": "offline",
        "username": "boss",
        "password": admin.password,
        "scope": "repository:g/p:pull",
    }
    resp = await client.post("/jwt/auth", data=form)
    assert resp.status == 200 and "refresh_token" in await resp.json()
    after = await scrape(client)
    issued = {dict(k[1])["kind"]: after[k] - before.get(k, 0.0) for k in after if k[0] == "gateway_tokens_issued_total"}
    assert {kind: n for kind, n in issued.items() if n} == {
        "deploy_token": 1,
        "personal_access_token": 1,
        "registry_jwt_minted": 2,  # the deploy token's, then admin's
        "registry_jwt_reused": 1,
        "refresh_token": 1,
    }


# --- backends and bytes ------------------------------------------------------------------------------------------

PAYLOAD = hashlib.sha256(b"seed").digest() * 4096  # 128 KiB


@pytest.fixture
async def generic_backend() -> AsyncIterator[str]:
    """A file store behind the gateway (the backend is not the point here: the gateway's accounting is)."""
    stored: dict[str, bytes] = {}

    async def put(request: web.Request) -> web.Response:
        stored[request.path] = await request.read()
        return web.Response(status=201)

    async def get(request: web.Request) -> web.Response:
        return web.Response(body=stored.get(request.path, PAYLOAD))

    app = web.Application()
    app.router.add_put("/{tail:.*}", put)
    app.router.add_get("/{tail:.*}", get)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("/"))
    finally:
        await server.close()


async def test_backend_latency_errors_and_bytes(make_client: MakeClient, world: World, generic_backend: str) -> None:
    c = await cast(world)
    writer = await world.deploy_token(c["project"], ("write_package_registry",))
    url = f"/api/v4/projects/{c['project'].id}/packages/generic/tool/1.0.0/tool.bin"
    headers = {"Deploy-Token": writer.secret}
    up = PAYLOAD[: 100 * 1024]

    client = await make_client(packages={"generic": {"backend": generic_backend}})
    before = await scrape(client)
    assert (await client.put(url, data=up, headers=headers)).status == 201
    resp = await client.get(url, headers=headers)
    assert resp.status == 200 and await resp.read() == up
    assert resp.headers["X-Request-Id"]  # a streamed answer: its headers left before the middleware saw it
    after = await scrape(client)

    def delta(samples: Samples, name: str, **labels: str) -> float:
        return value(samples, name, **labels) - value(before, name, **labels)

    label = {"backend": "generic_package"}
    assert delta(after, "gateway_backend_response_seconds_count", **label) == 2
    assert delta(after, "gateway_streamed_bytes_total", **label, direction="upload") == len(up)
    assert delta(after, "gateway_streamed_bytes_total", **label, direction="download") == len(up)

    # The same backend gone: counted as unreachable, answered 502.
    dead = await make_client(packages={"generic": {"backend": "http://127.0.0.1:9/"}})
    assert (await dead.get(url, headers=headers)).status == 502
    failed = await scrape(dead)
    assert delta(failed, "gateway_backend_errors_total", **label, kind="unreachable") == 1
    assert delta(failed, "gateway_http_requests_total", family="packages", status="502") == 1


async def test_embedded_git_bytes_and_request_id(make_client: MakeClient, world: World) -> None:
    client = await make_client()
    c = await cast(world)
    before = await scrape(client)
    resp = await client.get(
        "/g/p.git/info/refs?service=git-upload-pack",
        headers={**basic(c["deploy"].token.username, c["deploy"].secret), "X-Request-Id": "trace-42"},
    )
    body = await resp.read()
    assert resp.status == 200 and body.startswith(b"001e# service=git-upload-pack")
    assert resp.headers["X-Request-Id"] == "trace-42"  # streamed by the CGI bridge, still stamped
    after = await scrape(client)
    download = ("gateway_streamed_bytes_total", frozenset({("backend", "git"), ("direction", "download")}))
    assert after[download] - before.get(download, 0.0) == len(body)
    count = ("gateway_backend_response_seconds_count", frozenset({("backend", "git")}))
    assert after[count] - before.get(count, 0.0) == 1


# --- bounded labels -----------------------------------------------------------------------------------------------

VOCABULARY = {
    "family": {route.name.split(".", 1)[0] for route in ROUTES},
    "mode": {"login", "packages", "api", "web"},
    "outcome": {"anonymous", "deploy_token", "pat", "password", "session", "failed"},
    "backend": {"git", "registry", "pypi_package", "npm_package", "maven_package", "generic_package"},
    "direction": {"upload", "download"},
    "kind": {
        "timeout",
        "unreachable",
        "failed",
        "mid_response",
        "exit_status",
        "deploy_token",
        "personal_access_token",
        "registry_jwt_minted",
        "registry_jwt_reused",
        "refresh_token",
    },
    "le": None,  # histogram bucket bounds: numbers
    "status": None,  # HTTP status codes: three digits
}


async def test_labels_come_from_closed_sets(make_client: MakeClient, world: World) -> None:
    """Never a path, a username or an address: each label's values belong to a fixed vocabulary."""
    client = await make_client()
    c = await cast(world)
    for path in ("/g/p.git/info/refs", "/api/v4/projects/g%2Fp", "/some/secret-ish/path", "/-/metrics"):
        await (await client.get(path, headers=basic("boss", c["admin"].password))).read()
    resp = await client.get("/-/metrics")
    text = await resp.text()
    for (name, labels), _ in parse(text).items():
        if not name.startswith("gateway_"):
            continue
        for key, val in labels:
            allowed = VOCABULARY[key]
            if key == "status":
                assert val.isdigit() and len(val) == 3, (name, key, val)
            elif key == "le":
                float(val)
            else:
                assert allowed is not None and val in allowed, (name, key, val)
    for leak in ("boss", "secret-ish", "g/p", "127.0.0.1", c["admin"].password):
        assert leak not in "\n".join(line for line in text.splitlines() if line.startswith("gateway_"))


# --- several workers ----------------------------------------------------------------------------------------------


def metrics_dir(pid: int) -> Path:
    """The directory of a worker's metric files: the one it has mapped into memory."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        path = line.split(maxsplit=5)[-1]
        if "/gateway-metrics-" in path and path.endswith(".db"):
            return Path(path).parent
    raise AssertionError(f"worker {pid} maps no metric file")


def scrape_url(url: str) -> Samples:
    with urllib.request.urlopen(f"{url}/-/metrics", timeout=10) as resp:  # noqa: S310 - a loopback test URL
        return parse(resp.read().decode())


def test_one_scrape_sums_every_worker(tmp_path: Path) -> None:
    """`serve --workers 2`: each request lands on one worker, yet any scrape reports them all (multiprocess mode),
    a dead worker's counts stay counted, and the run's metric files go when the server stops."""
    config = write_config(tmp_path / "install")
    init_gateway(config)
    server = Served(config, "--listen", "127.0.0.1:0", "--workers", "2")
    try:
        pids = server.wait_workers(2)
        requests = 20  # below the brute-force threshold (30 failures) the hardening work adds
        bad = {"PRIVATE-TOKEN": "glpat-wrongwrongwrongwron"}
        assert [request(f"{server.url}/api/v4/user", headers=bad) for _ in range(requests)] == [401] * requests
        # Both workers answered some (fresh connections, SO_REUSEPORT); their lines reach the log within
        # log_output.FLUSH_INTERVAL.
        assert wait_until(
            lambda: {e.get("worker") for e in server.entries() if e.get("route") == "api.user.current"} == {0, 1}, 10
        )
        for _ in range(6):  # scrapes land on either worker: every one sums both
            samples = scrape_url(server.url)
            assert value(samples, "gateway_http_requests_total", family="api", status="401") == requests
            assert value(samples, "gateway_authentications_total", mode="api", outcome="failed") == requests
        files = metrics_dir(pids[0])
        assert files == metrics_dir(pids[1])

        os.kill(pids[0], signal.SIGKILL)  # its counts were the server's: they stay in the sum
        assert wait_until(lambda: len(server.workers()) == 2 and pids[0] not in server.workers(), 20)
        for _ in range(4):
            assert value(scrape_url(server.url), "gateway_http_requests_total", family="api", status="401") == requests
    finally:
        stop(server.proc)
    assert not files.exists()
