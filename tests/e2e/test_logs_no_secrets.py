"""No secret in any log: the real gateway (`gateway serve`, debug log level) with real backends runs every flow a
deployment sees, then its whole log output is searched for every secret that went through it.

Flows: tokens created through the API (with a PAT), git clone and push, bad credentials everywhere, skopeo login and
copy through the registry, twine upload and pip install, npm publish and install, generic packages with curl, UI
sign-in with a password, the registry's OAuth2 password and refresh flow, and an unparseable request carrying a token.
Secrets: deploy tokens, PATs, passwords (good and bad), the gateway's own backend passwords, JWTs and refresh tokens
issued, session and CSRF cookies, and their Basic (base64) and percent-encoded forms. Backends' logs are searched for
the clients' secrets too: the gateway never hands a client's credentials on.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from gateway import config as config_module
from gateway import secretbox
from gateway.clock import FixedClock
from gateway.store import open_store
from gateway.users import PasswordHasher
from tests import package_clients, procs, servers
from tests.e2e.test_packages_npm import npm, package
from tests.e2e.test_packages_pypi import pip, project_url, twine, wheel
from tests.fuzz.rawhttp import send
from tests.gitcli import agit, commit_file, git_env, with_credentials
from tests.oci import build_image
from tests.package_clients import run
from tests.servers import Gateway, init_gateway, start_gateway, write_config
from tests.webui import LOGIN_COOKIE, SESSION_COOKIE, csrf_of
from tests.world import World

SKOPEO = "/usr/bin/skopeo"
BACKEND_USER, BACKEND_PASSWORD = "gateway", "backend-secret-e2e-logs"
ADMIN_PASSWORD = "admin-password-e2e-logs"
JWT_RE = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}")
TOKEN_RE = re.compile(rb"(?:gldt|glpat)-[A-Za-z0-9_-]{16,}")
SCOPES = ["read_repository", "read_registry", "write_registry", "read_package_registry", "write_package_registry"]


@dataclass
class Run:
    """What the flow used: every secret (to search for) and the gateway under test."""

    gateway: Gateway
    tmp: Path
    secrets: set[str] = field(default_factory=set)
    backend_logs: list[Path] = field(default_factory=list)

    def keep(self, *secrets: str) -> None:
        self.secrets.update(s for s in secrets if s)

    def basic(self, username: str, secret: str) -> dict[str, str]:
        value = base64.b64encode(f"{username}:{secret}".encode()).decode()
        self.keep(secret, value)
        return {"Authorization": f"Basic {value}"}


async def seed_admin(config_file: Path) -> tuple[int, str]:
    """The one thing made directly in the database: an administrator with a password and a PAT (as `gateway init`
    makes root); everything else goes through the API."""
    config = config_module.load(config_file)
    store = await open_store(config)
    try:
        await store.migrate()
        box = secretbox.load(Path(config.storage.encryption_key))
        world = World(store, FixedClock(datetime.now(UTC)), box, PasswordHasher(64, 1), config)
        admin = await world.user("boss", admin=True, password=ADMIN_PASSWORD)
    finally:
        await store.close()
    return admin.user.id, admin.pat


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The gateway's installation (config written, `gateway init` run) and its backends, started once."""
    base = tmp_path_factory.mktemp("logs")
    registry_port = procs.free_port()
    with ExitStack() as stack:
        pypi = stack.enter_context(package_clients.pypiserver(base / "pypi", BACKEND_USER, BACKEND_PASSWORD))
        npm_url = stack.enter_context(package_clients.verdaccio(base / "npm", BACKEND_USER, BACKEND_PASSWORD))
        creds = {"backend_username": BACKEND_USER, "backend_password": BACKEND_PASSWORD}
        config = write_config(
            base / "gateway",
            log_level="debug",
            sections={
                "registry": {"backend": f"http://127.0.0.1:{registry_port}"},
                "packages.pypi": {"backend": pypi, **creds},
                "packages.npm": {"backend": npm_url, **creds},
            },
        )
        init_gateway(config)
        # The registry trusts the key `gateway init` made; its realm is rewritten by the gateway anyway.
        stack.enter_context(
            servers.registry(
                base / "registry", config.parent / "data" / "registry.crt", "http://127.0.0.1:1/jwt/auth", registry_port
            )
        )
        yield {
            "config": config,
            "logs": [
                base / "pypi" / "pypiserver.log",
                base / "npm" / "verdaccio.log",
                base / "registry" / "registry.log",
            ],
        }


async def api(session: aiohttp.ClientSession, r: Run, pat: str, method: str, path: str, body: Any = None) -> Any:
    async with session.request(
        method, f"{r.gateway.url}/api/v4{path}", json=body, headers={"PRIVATE-TOKEN": pat}
    ) as resp:
        assert resp.status in (200, 201), (method, path, resp.status, await resp.text())
        return await resp.json()


async def flow(r: Run, admin_id: int, admin_pat: str) -> None:
    url = r.gateway.url
    host = url.removeprefix("http://")
    tag = uuid.uuid4().hex[:8]
    r.keep(
        admin_pat,
        ADMIN_PASSWORD,
        BACKEND_PASSWORD,
        base64.b64encode(f"{BACKEND_USER}:{BACKEND_PASSWORD}".encode()).decode(),
    )
    async with aiohttp.ClientSession() as http:
        # --- the API with a PAT: a group, a project, a deploy token, another PAT ------------------------------------
        group = await api(http, r, admin_pat, "POST", "/groups", {"name": "Logs", "path": "logs"})
        project = await api(http, r, admin_pat, "POST", "/projects", {"path": "app", "namespace_id": group["id"]})
        made = await api(
            http, r, admin_pat, "POST", f"/projects/{project['id']}/deploy_tokens", {"name": "ci", "scopes": SCOPES}
        )
        deploy_user, deploy = made["username"], made["token"]
        pat = (
            await api(
                http,
                r,
                admin_pat,
                "POST",
                f"/users/{admin_id}/personal_access_tokens",
                {"name": "x", "scopes": ["api"]},
            )
        )["token"]
        r.keep(deploy, pat)
        wrong = ["gldt-" + "w" * 20, "glpat-" + "w" * 20, "wrong-password-e2e-logs"]
        r.keep(*wrong)

        # --- bad credentials on every family ------------------------------------------------------------------------
        pid = project["id"]
        for headers, path in [
            ({"PRIVATE-TOKEN": wrong[1]}, "/api/v4/user"),
            ({"Authorization": f"Bearer {wrong[1]}"}, "/api/v4/user"),
            (r.basic(deploy_user, wrong[0]), "/logs/app.git/info/refs?service=git-upload-pack"),
            (r.basic("boss", wrong[2]), "/jwt/auth?service=container_registry&scope=repository:logs/app:pull"),
            ({"Deploy-Token": wrong[0]}, f"/api/v4/projects/{pid}/packages/generic/x/1.0.0/x.bin"),
            ({"PRIVATE-TOKEN": deploy}, "/api/v4/user"),  # a deploy token where only PATs go
        ]:
            async with http.get(url + path, headers=headers) as resp:
                assert resp.status == 401, (path, resp.status)
        # An unparseable request carrying a token: refused without echoing it (gateway/server.py).
        reply = await send(
            int(url.rsplit(":", 1)[1]), b"GET", b"/api/v4/user", [(b"PRIVATE-TOKEN", pat.encode() + b"\x01")]
        )
        assert reply.status == 400 and pat.encode() not in reply.raw

        # --- registry tokens: GET with Basic, the OAuth2 password and refresh flow ---------------------------------
        scope = "repository:logs/app:pull"
        async with http.get(
            f"{url}/jwt/auth?service=container_registry&scope={scope}", headers=r.basic(deploy_user, deploy)
        ) as resp:
            assert resp.status == 200
            r.keep((await resp.json())["token"])
        form = {"grant_type": "password", "service": "container_registry", "access_type": "offline"}
        form |= {"username": "boss", "password": ADMIN_PASSWORD, "scope": scope}
        async with http.post(f"{url}/jwt/auth", data=form) as resp:
            body = await resp.json()
            assert resp.status == 200, body
        r.keep(body["access_token"], body["refresh_token"])
        refresh = {"grant_type": "refresh_token", "service": "container_registry", "scope": scope}
        async with http.post(f"{url}/jwt/auth", data=refresh | {"refresh_token": body["refresh_token"]}) as resp:
            assert resp.status == 200
            r.keep((await resp.json())["access_token"])

        # --- generic packages with curl (embedded store) -----------------------------------------------------------
        generic = f"{url}/api/v4/projects/{pid}/packages/generic/tool/1.0.0/tool.bin"
        (r.tmp / "tool.bin").write_bytes(b"tool" * 1000)
        rc, out = await run(["curl", "-fsS", "-H", f"Deploy-Token: {deploy}", "-T", r.tmp / "tool.bin", generic])
        assert rc == 0, out
        rc, out = await run(["curl", "-fsS", "-o", r.tmp / "got.bin", "-u", f"{deploy_user}:{deploy}", generic])
        assert rc == 0 and (r.tmp / "got.bin").read_bytes() == b"tool" * 1000, out
        # Streamed answers carry the request id too (their headers leave before the access log is written).
        async with http.get(generic, headers={"Deploy-Token": deploy, "X-Request-Id": "e2e-trace-1"}) as resp:
            assert resp.status == 200 and resp.headers["X-Request-Id"] == "e2e-trace-1"
        async with http.get(f"{url}/v2/") as resp:  # forwarded to the registry
            assert resp.status == 401 and resp.headers["X-Request-Id"]

        # --- the UI: sign in with a password, a settings page, sign out ---------------------------------------------
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as ui:
            async with ui.get(f"{url}/-/login") as page:
                login_csrf = csrf_of(await page.text())
            form = {"authenticity_token": login_csrf, "username": "boss", "password": ADMIN_PASSWORD}
            async with ui.post(f"{url}/-/login", data=form, allow_redirects=False) as resp:
                assert resp.status == 303, await resp.text()
            cookies = {m.key: m.value for m in ui.cookie_jar}
            r.keep(login_csrf, cookies[SESSION_COOKIE], *(v for k, v in cookies.items() if k == LOGIN_COOKIE))
            async with ui.get(f"{url}/logs/app/-/settings/repository") as page:
                assert page.status == 200
                settings_csrf = csrf_of(await page.text())
            r.keep(settings_csrf)
            async with ui.post(
                f"{url}/-/logout", data={"authenticity_token": settings_csrf}, allow_redirects=False
            ) as resp:
                assert resp.status in (302, 303)

    # --- git: clone with the deploy token, push with the PAT, a refused push --------------------------------------
    env = git_env(r.tmp / "git-home")
    repo_url = f"{url}/logs/app.git"
    r.keep(quote(deploy, safe=""), quote(pat, safe=""))
    (await agit(env, "clone", with_credentials(repo_url, deploy_user, deploy), str(r.tmp / "clone"))).check()
    commit_file(env, r.tmp / "clone", "README", "hello\n")
    (
        await agit(env, "push", with_credentials(repo_url, "boss", pat), "HEAD:refs/heads/main", cwd=r.tmp / "clone")
    ).check()
    refused = await agit(
        env, "push", with_credentials(repo_url, deploy_user, deploy), "HEAD:refs/heads/x", cwd=r.tmp / "clone"
    )
    assert refused.code != 0
    (await agit(env, "clone", with_credentials(repo_url, deploy_user, deploy), str(r.tmp / "again"))).check()

    # --- the registry with skopeo: login, push, pull ------------------------------------------------------------
    image = r.tmp / "image"
    build_image(image, size=64 * 1024)
    home = r.tmp / "skopeo-home"
    home.mkdir()
    skopeo_env = {"HOME": str(home), "REGISTRY_AUTH_FILE": str(home / "auth.json")}
    login = [SKOPEO, "login", "--tls-verify=false", "-u", deploy_user, "-p", deploy, host]
    rc, out = await run(login, env=skopeo_env)
    assert rc == 0, out
    r.keep(base64.b64encode(f"{deploy_user}:{deploy}".encode()).decode())
    rc, out = await run(
        [SKOPEO, "copy", "--dest-tls-verify=false", f"oci:{image}:v1", f"docker://{host}/logs/app:v1"], env=skopeo_env
    )
    assert rc == 0, out
    rc, out = await run(
        [SKOPEO, "copy", "--src-tls-verify=false", f"docker://{host}/logs/app:v1", f"dir:{r.tmp / 'pulled'}"],
        env=skopeo_env,
    )
    assert rc == 0, out

    # --- PyPI with twine and pip; npm publish and install --------------------------------------------------------
    name = f"logs-{tag}"
    rc, out = await twine(url, pid, deploy, wheel(r.tmp / "dist", name))
    assert rc == 0, out
    rc, out = await pip(project_url(url, pid, deploy) + "/simple/", r.tmp / "site", name)
    assert rc == 0, out
    rc, out = await npm(package(r.tmp / "npm-src", name), url, pid, deploy, "publish")
    assert rc == 0, out
    consumer = r.tmp / "npm-consumer"
    consumer.mkdir()
    (consumer / "package.json").write_text(
        json.dumps({"name": "c", "version": "1.0.0", "dependencies": {name: "1.0.0"}})
    )
    rc, out = await npm(consumer, url, pid, deploy, "install", "--no-package-lock")
    assert rc == 0, out


def forms(secret: str) -> set[bytes]:
    """A secret as it could show up in a log: as is, percent-encoded, and its SHA-256 digest (what the store keeps
    and looks tokens, PATs and sessions up by), in hex and as Python prints bytes (a logged SQL parameter)."""
    digest = hashlib.sha256(secret.encode()).digest()
    return {secret.encode(), quote(secret, safe="").encode(), digest.hex().encode(), repr(digest)[2:-1].encode()}


async def test_no_secret_in_any_log(backends: dict[str, Any], tmp_path: Path) -> None:
    config: Path = backends["config"]
    admin_id, admin_pat = await seed_admin(config)
    gateway = start_gateway(config)
    r = Run(gateway, tmp_path)
    try:
        await flow(r, admin_id, admin_pat)
    finally:
        gateway.stop()
    await asyncio.sleep(0)
    raw = gateway.proc.log.read_bytes()
    lines = [json.loads(line) for line in raw.splitlines() if line.startswith(b"{")]
    # Searched as written and as logged (the JSON lines decoded: a backslash in a message is doubled on disk).
    log = raw + b"\n".join(json.dumps(e, ensure_ascii=False).encode() for e in lines)
    log += b"\n".join(str(v).encode() for e in lines for v in e.values())
    # The log is the real thing: debug lines, and an access line with a request id for every request.
    access = [e for e in lines if e.get("logger") == "gateway.access"]
    assert len(access) > 50 and all(e["request_id"] for e in access)
    assert [e["route"] for e in access if e["request_id"] == "e2e-trace-1"] == ["packages.generic.get"]
    assert any(e["level"] == "debug" for e in lines)
    assert {e["route"].split(".")[0] for e in access} >= {"api", "git", "registry_auth", "registry", "packages", "web"}

    found = sorted(s for s in r.secrets for form in forms(s) if form in log)
    assert not found, f"secrets in the gateway's log: {[s[:8] + '…' for s in found]}"
    assert not JWT_RE.search(log), JWT_RE.search(log)
    assert not TOKEN_RE.search(log), TOKEN_RE.search(log)
    # The backends only ever see the gateway's own credentials: no client secret reaches them, nor their logs.
    client_secrets = {s for s in r.secrets if not s.startswith("eyJ")} - {BACKEND_PASSWORD}
    client_secrets -= {base64.b64encode(f"{BACKEND_USER}:{BACKEND_PASSWORD}".encode()).decode()}
    for backend_log in backends["logs"]:
        text = backend_log.read_bytes()
        leaked = sorted(s for s in client_secrets for form in forms(s) if form in text)
        assert not leaked, f"client secrets in {backend_log.name}: {[s[:8] + '…' for s in leaked]}"
