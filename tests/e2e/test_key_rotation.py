"""`gateway registry-key rotate / activate / retire` against a real registry (docker-registry 2.8) and real skopeo:
the signing key changes, RSA to P-256, and no token the gateway hands out is refused at any step.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import jwt
import pytest

from gateway import key_watch
from tests import servers
from tests.oci import build_image
from tests.procs import free_port, live, processes, wait_until
from tests.replicas import Replica, basic, deploy_token, init, new_project, start_replica
from tests.servers import run_gateway, write_config

SKOPEO = "/usr/bin/skopeo"


def get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        connection.request("GET", f"{parts.path}?{parts.query}", headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def registry_token(gateway: Replica, credentials: dict[str, str], repository: str) -> str:
    status, body = get(
        f"{gateway.url}/jwt/auth?service=container_registry&scope=repository:{repository}:pull", credentials
    )
    assert status == 200, body
    token: str = json.loads(body)["token"]
    return token


def oauth(gateway: Replica, form: dict[str, str]) -> dict[str, str]:
    """The OAuth2 POST of /jwt/auth, as `docker login` sends it (password grant, offline) and later refreshes."""
    parts = urlsplit(gateway.url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        body = urlencode(form)
        connection.request("POST", "/jwt/auth", body, {"Content-Type": "application/x-www-form-urlencoded"})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    assert response.status == 200, data
    answer: dict[str, str] = json.loads(data)
    return answer


def registry_answer(registry: str, token: str, repository: str) -> int:
    """What the registry itself answers a token: 200, or 401 when it does not trust the key that signed it."""
    return get(f"{registry}/v2/{repository}/tags/list", {"Authorization": f"Bearer {token}"})[0]


def skopeo(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin"), "REGISTRY_AUTH_FILE": str(home / "a.json")}
    return subprocess.run([SKOPEO, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def gateway_says(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_gateway(config, "registry-key", *args)


def bundle(config: Path) -> list[str]:
    """The kids of registry.certificate's certificates, as `registry-key show` lists them, with their roles."""
    shown = gateway_says(config, "show")
    assert shown.returncode == 0, shown.stderr
    return [" ".join(line.split()[:3]) for line in shown.stdout.splitlines() if not line.startswith("process ")]


def signing(config: Path) -> list[str]:
    """The kid each running gateway process reports it signs with (key_holders.py), as `registry-key show` says."""
    shown = gateway_says(config, "show").stdout.splitlines()
    return [line.split()[-1] for line in shown if line.startswith("process ")]


@pytest.mark.parametrize(
    ("algorithm", "switch"),
    [
        ("ES256", "restart"),  # a new algorithm: registry.algorithm changes, replica after replica restarts
        ("RS256", "reload"),  # the same one: SIGHUP, every worker of the running gateway takes the new key
        ("RS256", "watch"),  # no signal: each worker finds the new key file within key_watch.CHECK_INTERVAL
    ],
)
def test_the_signing_key_rotates_while_tokens_keep_working(tmp_path: Path, algorithm: str, switch: str) -> None:
    registry_port = free_port()
    registry = f"http://127.0.0.1:{registry_port}"
    config = write_config(tmp_path / "gw", sections={"registry": {"backend": registry}})
    root = init(config)
    certificate = config.parent / "data" / "registry.crt"
    key_file = config.parent / "data" / "registry.key"
    home = tmp_path / "home"
    home.mkdir()
    image = tmp_path / "image"
    build_image(image, size=64 * 1024)

    @contextmanager
    def registry_running() -> Iterator[None]:
        # The same storage and port each time: a restart, which is when the registry reads its rootcertbundle.
        with servers.registry(tmp_path / "registry", certificate, f"{registry}/unused-realm", registry_port):
            yield

    def pull(via: Replica) -> subprocess.CompletedProcess[str]:
        out = tmp_path / f"pulled-{uuid.uuid4().hex}"
        source = f"docker://{via.url.removeprefix('http://')}/{repository}:v1"
        return skopeo(home, "copy", "--src-tls-verify=false", "--src-creds", creds, source, f"dir:{out}")

    with ExitStack() as stack:
        registry_process = stack.enter_context(ExitStack())
        registry_process.enter_context(registry_running())
        first = start_replica("first", config, workers=2)
        stack.callback(first.stop)
        project = new_project(first.url, root, "team")
        made = deploy_token(first.url, root, project, scopes=("read_registry", "write_registry"))
        credentials = basic(made["username"], made["token"])
        creds = f"{made['username']}:{made['token']}"
        repository = project.path
        destination = f"docker://{first.url.removeprefix('http://')}/{repository}:v1"
        pushed = skopeo(home, "copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{image}:v1", destination)
        assert pushed.returncode == 0, pushed.stderr
        old = registry_token(first, credentials, repository)
        old_kid = jwt.get_unverified_header(old)["kid"]
        # `docker login` keeps a refresh token in place of the password, for a year.
        login = {"grant_type": "password", "service": "container_registry", "access_type": "offline",
                 "username": made["username"], "password": made["token"]}  # fmt: skip
        refresh = oauth(first, login)["refresh_token"]
        assert bundle(config) == [f"active RS256 {old_kid}"]

        # 1. A new key is staged: the bundle lists it, the gateway still signs with the old one.
        mode = certificate.stat().st_mode
        staged = gateway_says(config, "rotate", "--algorithm", algorithm)
        assert staged.returncode == 0, staged.stderr
        assert certificate.stat().st_mode == mode  # the bundle is replaced, readable by the registry as before
        new_kid = staged.stdout.split()[3]
        assert bundle(config) == [f"active RS256 {old_kid}", f"staged {algorithm} {new_kid}"]
        assert (key_file.with_name("registry.key.next").stat().st_mode & 0o777) == 0o600
        assert jwt.get_unverified_header(registry_token(first, credentials, repository))["kid"] == old_kid

        # 2. Activation waits for the registry to trust the new key: it has not restarted, so it does not yet.
        active_key = key_file.read_bytes()
        early = gateway_says(config, "activate")
        assert early.returncode == 1 and "does not trust the staged key yet (HTTP 401" in early.stderr, early.stderr
        assert key_file.read_bytes() == active_key and bundle(config)[1] == f"staged {algorithm} {new_kid}"
        registry_process.close()  # restarted: it reads the bundle of both keys
        registry_process.enter_context(registry_running())
        assert registry_answer(registry, old, repository) == 200
        activated = gateway_says(config, "activate")
        assert activated.returncode == 0, activated.stderr
        assert ('set registry.algorithm = "ES256"' in activated.stderr) == (algorithm == "ES256")
        assert bundle(config) == [f"retiring RS256 {old_kid}", f"active {algorithm} {new_kid}"]
        still = registry_token(first, credentials, repository)  # loaded at start: the old key signs on
        assert jwt.get_unverified_header(still)["kid"] == old_kid
        if switch == "restart":
            # A rolling restart: the replica not yet restarted signs with the old key, the restarted one with the
            # new, and the registry takes the tokens of both.
            config.write_text(config.read_text() + f'algorithm = "{algorithm}"\n')  # [registry]: the last table
            second = start_replica("second", config, workers=2)
            stack.callback(second.stop)
        else:
            if switch == "reload":
                os.kill(first.proc.pid, signal.SIGHUP)  # to the supervisor: every worker reloads
            reloaded = lambda: first.log.read_text().count("registry signing key reloaded: kid") == 2  # noqa: E731
            assert wait_until(reloaded, key_watch.CHECK_INTERVAL + 5), first.log.read_text()[-2000:]
            # Each worker reports the key it signs with: at once after a SIGHUP, else with its next look.
            assert wait_until(lambda: signing(config) == [new_kid, new_kid], key_watch.CHECK_INTERVAL + 5)
            second = first
        fresh = [registry_token(second, credentials, repository) for _ in range(6)]  # both workers answer
        assert {(jwt.get_unverified_header(t)["kid"], jwt.get_unverified_header(t)["alg"]) for t in fresh} == {
            (new_kid, algorithm)
        }
        assert [registry_answer(registry, token, repository) for token in (old, still, fresh[0])] == [200, 200, 200]
        if switch == "restart":
            first.stop()
        assert pull(second).returncode == 0

        # 3. Retirement waits until every process has the new key (even with --now), then out the old key's last
        # tokens (registry.token_ttl), unless told not to.
        at_once = gateway_says(config, "retire", "--now")
        assert at_once.returncode == 1 and "every gateway process loads the key files within" in at_once.stderr
        earlier = time.time() - key_watch.SETTLE - 1  # as if that time had passed: every process has the new key
        os.utime(key_file, (earlier, earlier))
        soon = gateway_says(config, "retire")
        assert soon.returncode == 1 and "tokens the old one signed live registry.token_ttl" in soon.stderr
        retired = gateway_says(config, "retire", "--now")
        assert retired.returncode == 0 and f"retired RS256 key {old_kid}" in retired.stdout, retired.stderr
        assert bundle(config) == [f"active {algorithm} {new_kid}"]
        registry_process.close()
        registry_process.enter_context(registry_running())
        assert registry_answer(registry, old, repository) == 401  # the old key is trusted no more
        assert registry_answer(registry, registry_token(second, credentials, repository), repository) == 200
        pulled = pull(second)
        assert pulled.returncode == 0, pulled.stderr
        # The docker client logged in before the rotation is still logged in: its refresh token gets a token of
        # the new key, which the registry takes.
        scope = f"repository:{repository}:pull"
        grant = {
            "grant_type": "refresh_token",
            "service": "container_registry",
            "refresh_token": refresh,
            "scope": scope,
        }
        refreshed = oauth(second, grant)["access_token"]
        assert jwt.get_unverified_header(refreshed)["kid"] == new_kid
        assert registry_answer(registry, refreshed, repository) == 200
        again = gateway_says(config, "retire")
        assert again.returncode == 0 and "nothing to retire" in again.stdout


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (["activate"], "no key is staged"),
        (["rotate", "rotate"], "a key is staged already"),
        (["rotate", "activate"], "registry.backend is not set, so the registry cannot be asked"),
    ],
)
def test_a_step_out_of_order_is_refused_and_changes_nothing(tmp_path: Path, steps: list[str], message: str) -> None:
    config = write_config(tmp_path / "gw")
    init(config)
    *before, last = steps
    for step in before:
        assert gateway_says(config, step).returncode == 0
    files = {p: p.read_bytes() for p in (config.parent / "data").glob("registry.*")}
    refused = gateway_says(config, last)
    assert refused.returncode == 1 and message in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    assert {p: p.read_bytes() for p in (config.parent / "data").glob("registry.*")} == files


def test_activation_is_refused_when_the_registry_cannot_be_asked(tmp_path: Path) -> None:
    config = write_config(tmp_path / "gw", sections={"registry": {"backend": f"http://127.0.0.1:{free_port()}"}})
    init(config)
    assert gateway_says(config, "rotate").returncode == 0
    refused = gateway_says(config, "activate")
    assert refused.returncode == 1 and "cannot ask the registry" in refused.stderr and "--no-check" in refused.stderr
    assert (config.parent / "data" / "registry.key.next").exists()
    forced = gateway_says(config, "activate", "--no-check")
    assert forced.returncode == 0, forced.stderr
    assert not (config.parent / "data" / "registry.key.next").exists()


def test_a_worker_restarted_before_the_restart_an_activation_needs_keeps_serving(tmp_path: Path) -> None:
    """Activated to another algorithm, the key files need a restart with registry.algorithm changed. A worker that
    dies before that starts again with the key its supervisor loaded (it read the files itself, failed on the
    algorithm, and after six such deaths the supervisor gave up: the whole gateway stopped)."""
    config = write_config(tmp_path / "gw")
    root = init(config)
    gateway = start_replica("gw", config, workers=2)
    try:
        before = registry_token(gateway, basic("root", root), "any/thing")
        assert gateway_says(config, "rotate", "--algorithm", "ES256").returncode == 0
        assert gateway_says(config, "activate", "--no-check").returncode == 0
        for _ in range(3):  # each replacement must start (a failing one dies again and again, and the parent gives up)
            workers = [p.pid for p in processes() if p.ppid == gateway.proc.pid and live(p)]
            os.kill(workers[0], signal.SIGKILL)
            ready = gateway.log.read_text().count("worker ready")
            assert wait_until(lambda r=ready: gateway.log.read_text().count("worker ready") > r, 20)  # type: ignore[misc]
        gateway.proc.assert_running()
        assert "registry signing key not reloaded" in gateway.log.read_text()
        after = registry_token(gateway, basic("root", root), "any/thing")
        assert jwt.get_unverified_header(after)["kid"] == jwt.get_unverified_header(before)["kid"]
    finally:
        gateway.stop()
