"""docker-compose.yml rehearsed without a Docker engine: each service runs as the program its image runs (PostgreSQL 15,
the gateway installed from the wheel the Dockerfile builds, nginx, docker-registry), reading the very files the
compose file mounts. Only container names, ports and volume paths are mapped to loopback and a temp folder; then
git, skopeo and the API are used through the load balancer, as a user of the stack would."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp
import pytest

from gateway.bruteforce import REFRESH_INTERVAL
from tests import pg
from tests.compose import ROOT, compose, gateway_config, gateway_services, mounts, serving
from tests.compose_stack import Stack, first_start, prepare, skopeo
from tests.gitcli import git, git_env, make_seed, with_credentials
from tests.oci import build_image
from tests.procs import stop, wait_until
from tests.replicas import Probe, api, basic, request, wait_all
from tests.webui import csrf_of

LIMIT = 1.0  # seconds: a revocation is refused by every replica within this (issue 7)


@pytest.fixture(scope="module")
def stack(postgres: pg.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = prepare(tmp_path_factory.mktemp("compose"), postgres)
    try:
        first_start(stack)
        yield stack
    finally:
        stack.stop()


# --- the tests -----------------------------------------------------------------------------------------------------


def test_the_image_installs_every_file_the_gateway_reads(stack: Stack) -> None:
    with zipfile.ZipFile(stack.image.wheel) as archive:
        packaged = {name for name in archive.namelist() if name.startswith("gateway/")}
    checkout = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "gateway").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert checkout - packaged == set(), "files of gateway/ missing from the wheel (pyproject package-data)"
    assert stack.image.entrypoint == "gateway.cli:main"
    # The stack's processes run that copy, not the checkout.
    probe = [sys.executable, "-c", "import gateway; print(gateway.__file__)"]
    out = subprocess.run(probe, cwd=stack.tmp, env=stack.env("gateway-a"), capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()).is_relative_to(stack.image.site)


def test_init_again_changes_nothing(stack: Stack) -> None:
    """`docker compose up` runs gateway-init at every start: the keys the registry trusts must survive it."""
    config, _ = gateway_config(compose()["services"]["gateway-init"])
    data = next(m for m in mounts(compose()["services"]["gateway-init"]) if m.is_volume)
    local = {
        path: stack.volumes[data.source] / PurePosixPath(path).relative_to(data.target)
        for path in (config.registry.signing_key, config.registry.certificate, config.storage.encryption_key)
    }
    before = {path: hashlib.sha256(file.read_bytes()).hexdigest() for path, file in local.items()}
    again = stack.run("gateway-init")
    assert again.returncode == 0, again.stderr
    assert not re.search(r"glpat-\S+", again.stdout), "a second admin token"
    assert {path: hashlib.sha256(file.read_bytes()).hexdigest() for path, file in local.items()} == before
    assert api(stack.url, stack.root_token, "GET", "/user")["username"] == "root"


@dataclass
class Deployed:
    group: dict[str, Any]
    project: dict[str, Any]
    token: dict[str, Any]


@pytest.fixture(scope="module")
def deployed(stack: Stack) -> Deployed:
    group = api(stack.url, stack.root_token, "POST", "/groups", {"name": "stack", "path": "stack"})
    sub = api(stack.url, stack.root_token, "POST", "/groups", {"name": "sub", "path": "sub", "parent_id": group["id"]})
    project = api(stack.url, stack.root_token, "POST", "/projects", {"name": "app", "namespace_id": sub["id"]})
    scopes = ["read_repository", "read_registry", "write_registry"]
    body = {"name": "stack", "scopes": scopes}
    token = api(stack.url, stack.root_token, "POST", f"/groups/{group['id']}/deploy_tokens", body)
    return Deployed(group, project, token)


def test_links_name_the_load_balancer(stack: Stack, deployed: Deployed) -> None:
    assert deployed.project["web_url"] == f"{stack.url}/stack/sub/app"
    assert deployed.project["http_url_to_repo"] == f"{stack.url}/stack/sub/app.git"


def test_git_through_the_load_balancer_reaches_both_replicas(stack: Stack, deployed: Deployed) -> None:
    env = git_env(stack.tmp / "git-home")
    head = make_seed(env, stack.tmp / "seed")
    remote = deployed.project["http_url_to_repo"]
    git(
        env, "push", "-q", with_credentials(remote, "root", stack.root_token), "HEAD:main", cwd=stack.tmp / "seed"
    ).check()
    token = deployed.token
    for attempt in range(3):
        clone = stack.tmp / f"clone-{attempt}"
        git(env, "clone", "-q", with_credentials(remote, token["username"], token["token"]), str(clone)).check()
        assert git(env, "rev-parse", "HEAD", cwd=clone).check().out.strip() == head
    # Round robin: both replicas served git, from the repositories on the volume they share.
    for name in serving(gateway_services()):

        def served(name: str = name) -> bool:
            return any(path.startswith("/stack/sub/app.git/") for path in stack.access_paths(name))

        assert wait_until(served, timeout=5), name


def test_docker_push_and_pull_through_the_load_balancer(stack: Stack, deployed: Deployed) -> None:
    image = stack.tmp / "oci-image"
    digest = build_image(image, size=512 * 1024)
    creds = f"{deployed.token['username']}:{deployed.token['token']}"
    reference = f"docker://127.0.0.1:{stack.lb_port}/stack/sub/app:v1"
    code, out = asyncio.run(
        skopeo(stack, "copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{image}:v1", reference)
    )
    assert code == 0, out
    pulled = stack.tmp / "pulled"
    code, out = asyncio.run(
        skopeo(stack, "copy", "--src-tls-verify=false", "--src-creds", creds, reference, f"oci:{pulled}:v1")
    )
    assert code == 0, out
    index = json.loads((pulled / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [digest]


async def web_flow(stack: Stack, project: str) -> tuple[str, list[str]]:
    """Sign in as root, open the project's Settings → Repository page and create a deploy token with its form, as a
    browser would (cookies, CSRF tokens); returns the secret the page shows once, and the paths requested."""
    paths: list[str] = []
    jar = aiohttp.CookieJar(unsafe=True)  # cookies of an IP address host
    async with aiohttp.ClientSession(stack.url, cookie_jar=jar) as session:

        async def page(method: str, path: str, **kwargs: Any) -> str:
            paths.append(path)
            async with session.request(method, path, allow_redirects=False, **kwargs) as response:
                body = await response.text()
                assert response.status in (200, 303), (method, path, response.status, body[:300])
                return body

        login = await page("GET", "/-/login")
        form = {"authenticity_token": csrf_of(login), "username": "root", "password": stack.root_password}
        await page("POST", "/-/login", data=form)
        settings = f"/{project}/-/settings/repository"
        for _ in range(2):  # pages rendered by either replica carry a token either accepts
            token = csrf_of(await page("GET", settings))
        form = {"authenticity_token": token, "name": "from the web", "scopes": "read_repository"}
        created = await page("POST", f"{settings}/deploy_token/create", data=form)
    secret = re.search(r"gldt-[A-Za-z0-9_-]{20}", created)
    assert secret is not None, created[:2000]
    return secret.group(0), paths


def test_the_web_ui_through_the_load_balancer_spans_both_replicas(stack: Stack, deployed: Deployed) -> None:
    """The session and its CSRF tokens live in the database and the shared key, not in one replica's memory."""
    secret, paths = asyncio.run(web_flow(stack, deployed.project["path_with_namespace"]))
    for name in serving(gateway_services()):
        # Access lines reach the log within log_output.FLUSH_INTERVAL.
        served = wait_until(lambda name=name: bool(set(paths) & set(stack.access_paths(name))), timeout=5)
        assert served, f"{name} served no page of the flow"
    listed = api(stack.url, stack.root_token, "GET", f"/projects/{deployed.project['id']}/deploy_tokens")
    (made,) = [token for token in listed if token["name"] == "from the web"]
    assert made["scopes"] == ["read_repository"]
    probe = git_probe(stack, basic(made["username"], secret))
    assert request(probe.url, headers=probe.headers) == 200


def git_probe(stack: Stack, headers: dict[str, str]) -> Probe:
    return Probe("git info/refs", f"{stack.url}/stack/sub/app.git/info/refs?service=git-upload-pack", headers)


def jwt_probe(stack: Stack, headers: dict[str, str]) -> Probe:
    return Probe(
        "/jwt/auth", f"{stack.url}/jwt/auth?service=container_registry&scope=repository:stack/sub/app:pull", headers
    )


def test_a_token_deleted_through_one_replica_is_refused_by_all_within_a_second(
    stack: Stack, deployed: Deployed
) -> None:
    group = deployed.group
    body = {"name": "deleted", "scopes": ["read_repository", "read_registry"]}
    token = api(stack.url, stack.root_token, "POST", f"/groups/{group['id']}/deploy_tokens", body)
    probes = [p(stack, basic(token["username"], token["token"])) for p in (git_probe, jwt_probe)]
    wait_all(probes, lambda status: status == 200, repeat=4)  # every replica has read (and cached) the token
    replica = next(iter(stack.replica_ports.values()))
    api(f"http://127.0.0.1:{replica}", stack.root_token, "DELETE", f"/groups/{group['id']}/deploy_tokens/{token['id']}")
    deleted_at = time.monotonic()
    # Every refusal counts towards the client's ban (30 in 180 s): a few rounds a second keep the poll below it.
    since, _ = wait_all(probes, lambda status: status == 401, repeat=2, pause=0.1)
    assert since - deleted_at <= LIMIT


def test_a_client_banned_through_one_replica_is_refused_by_all_until_an_operator_lifts_it(
    stack: Stack, deployed: Deployed
) -> None:
    config, _ = gateway_config(compose()["services"]["gateway-a"])
    wrong = basic(deployed.token["username"], "gldt-" + "x" * 20)
    answers = [request(jwt_probe(stack, wrong).url, headers=wrong) for _ in range(config.bruteforce.max_failures)]
    assert set(answers) <= {401, 403}, answers
    # The ban lives in the database: within a refresh (1 s) every worker of both replicas refuses even the right
    # token, without looking it up.
    right = [p(stack, basic(deployed.token["username"], deployed.token["token"])) for p in (git_probe, jwt_probe)]
    wait_all(right, lambda status: status == 403, repeat=4)
    # `docker compose exec gateway-a gateway bans lift <address>`.
    lifted = stack.run("gateway-a", ["bans", "lift", "127.0.0.1"])
    assert lifted.returncode == 0, lifted.stderr
    wait_all(right, lambda status: status == 200, repeat=4)
    # Through nginx the probes may all land on one replica's workers; every process drops the lifted ban at its
    # next refresh (each second), so after two no worker of either replica still holds it (the next test needs
    # them all: a fresh-clone run met one that had not refreshed yet).
    time.sleep(2 * REFRESH_INTERVAL)


def test_a_replica_down_is_skipped(stack: Stack) -> None:
    """nginx's proxy_next_upstream: while one replica restarts, requests go to the other."""
    name = list(serving(gateway_services()))[-1]
    stop(stack.procs.pop(name))
    try:
        headers = {"PRIVATE-TOKEN": stack.root_token}
        assert [request(f"{stack.url}/api/v4/user", headers=headers) for _ in range(10)] == [200] * 10
    finally:
        stack.start_replica(name)
