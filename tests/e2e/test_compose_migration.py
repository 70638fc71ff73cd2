"""A single-machine installation (SQLite and ./data, as `scripts/quickstart` leaves it, with a registry) moved into the
docker-compose stack by the very commands of README "From one machine into docker-compose", run against the stack
rehearsed without Docker (tests/compose_stack.py). What was made before works through the load balancer after."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import shlex
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests import pg
from tests.compose import ROOT, compose, gateway_config, mounts
from tests.compose_stack import Stack, prepare, skopeo
from tests.gitcli import git, git_env, make_seed, with_credentials
from tests.oci import build_image
from tests.procs import free_port, start, stop, wait_http
from tests.replicas import api, basic, init
from tests.servers import gateway_env, registry, write_config

HEADING = "### From one machine into docker-compose"
KEYS = ("secret.key", "registry.key", "registry.crt")


def readme_commands() -> list[list[str]]:
    """The shell commands of the section's code block, continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(HEADING) :]
    start = section.index("```bash\n") + len("```bash\n")
    block = section[start : section.index("\n```", start)]
    lines = block.replace("\\\n", " ").splitlines()
    commands = [argv for argv in (shlex.split(line, comments=True) for line in lines) if argv]
    assert commands, "no commands found under " + HEADING
    return commands


@dataclass
class Before:
    """What the old installation held, and how to check it."""

    folder: Path  # next to docker-compose.yml: old-data/, old-registry/
    root: str
    project: dict[str, Any]
    ci: dict[str, Any]  # the token named gitlab-deploy-token
    head: str  # of the repository pushed
    image: str  # the manifest digest pushed
    package: bytes
    keys: dict[str, str]  # file name → SHA-256


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def exchange(method: str, url: str, headers: dict[str, str], body: bytes | None = None) -> tuple[int, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        connection.request(method, parts.path, body, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def old_installation(stack: Stack, base: Path) -> Before:
    """The gateway on its embedded defaults next to a registry trusting its key, used, then stopped; its data folder
    and the registry's storage copied next to docker-compose.yml, as the README's step 0 says."""
    port, registry_port = free_port(), free_port()
    config = write_config(base, sections={"registry": {"backend": f"http://127.0.0.1:{registry_port}"}})
    root = init(config)
    data = base / "data"
    url = f"http://127.0.0.1:{port}"
    env = git_env(base / "git-home")
    with registry(base / "registry", data / "registry.crt", f"{url}/jwt/auth", registry_port):
        argv = [sys.executable, "-m", "gateway", "--config", str(config), "serve", "--listen", f"127.0.0.1:{port}"]
        proc = start("old gateway", argv, log=base / "gateway.log", env=gateway_env(base), cwd=ROOT)
        try:
            wait_http(proc, f"{url}/-/health")
            group = api(url, root, "POST", "/groups", {"name": "team", "path": "team"})
            project = api(url, root, "POST", "/projects", {"name": "app", "namespace_id": group["id"]})
            tokens = f"/projects/{project['id']}/deploy_tokens"
            reads = ["read_repository", "read_registry", "read_package_registry"]
            ci = api(url, root, "POST", tokens, {"name": "gitlab-deploy-token", "scopes": reads})
            writes = ["read_registry", "write_registry", "write_package_registry"]
            writer = api(url, root, "POST", f"/groups/{group['id']}/deploy_tokens", {"name": "ci", "scopes": writes})
            head = make_seed(env, base / "seed")
            remote = with_credentials(project["http_url_to_repo"], "root", root)
            git(env, "push", "-q", remote, "HEAD:main", cwd=base / "seed").check()
            digest = build_image(base / "image", size=256 * 1024)
            creds = f"{writer['username']}:{writer['token']}"
            reference = f"docker://127.0.0.1:{port}/team/app:v1"
            push = ["copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{base / 'image'}:v1", reference]
            code, out = asyncio.run(skopeo(stack, *push))
            assert code == 0, out
            package = os.urandom(300 * 1024)
            file = f"{url}/api/v4/projects/{project['id']}/packages/generic/tool/1.0/tool.bin"
            status, answer = exchange("PUT", file, {"Deploy-Token": writer["token"]}, package)
            assert status == 201, answer
        finally:
            stop(proc)
    moved = base / "checkout"
    shutil.copytree(data, moved / "old-data")
    shutil.copytree(base / "registry" / "data", moved / "old-registry")
    keys = {name: sha256(data / name) for name in KEYS}
    return Before(moved, root, project, ci, head, digest, package, keys)


def run_recipe(stack: Stack, before: Before) -> list[str]:
    """Each README command, done the way the rehearsal runs its service; returns gateway-init's output at `up`."""
    said: list[str] = []
    for argv in readme_commands():
        assert argv[:2] == ["docker", "compose"], argv
        command = argv[2:]
        if command in (["build"], ["up", "-d", "postgres"]):
            continue  # prepare() built the image's wheel and made the postgres service's database
        if command[:1] == ["up"]:
            assert command == ["up", "-d"], command
            init = stack.run("gateway-init")
            assert init.returncode == 0, init.stderr
            said.append(init.stdout + init.stderr)
            stack.start_services()
            continue
        assert command[0] == "run", command
        options, service, args = parse_run(command[1:])
        assert {"--rm", "--no-deps"} <= set(options), command
        if options.get("--entrypoint") == "sh":
            copy_into_volume(stack, before, service, options, args)
            continue
        done = stack.run(service, on_volumes(stack, service, args))
        assert done.returncode == 0, done.stderr
        said.append(done.stdout + done.stderr)
    return said


def on_volumes(stack: Stack, service: str, args: list[str]) -> list[str]:
    """Container paths on a volume of `service` → that volume's folder here."""
    for mount in mounts(compose()["services"][service]):
        if mount.is_volume:
            args = [arg.replace(str(mount.target), str(stack.volumes[mount.source])) for arg in args]
    return args


def parse_run(words: list[str]) -> tuple[dict[str, str], str, list[str]]:
    """`docker compose run` options (flags map to ""), the service, and the command after it."""
    options: dict[str, str] = {}
    while words[0].startswith("-"):
        option, words = words[0], words[1:]
        if option in ("--rm", "--no-deps"):
            options[option] = ""
        else:
            assert option in ("--user", "-v", "--entrypoint"), option
            options[option], words = words[0], words[1:]
    return options, words[0], words[1:]


def copy_into_volume(stack: Stack, before: Before, service: str, options: dict[str, str], args: list[str]) -> None:
    """`sh -c 'cp -a /old/. VOLUME_PATH/ [&& chown …]'` with `-v "$PWD/FOLDER:/old:ro"`: the folder's content into
    the volume's folder here (the chown concerns the container's user only)."""
    assert options.get("--user") == "root", options  # the image's user cannot read a host folder owned by another
    source, target, mode = options["-v"].split(":")
    assert target == "/old" and mode == "ro" and source.startswith("$PWD/"), options
    assert args[0] == "-c", args
    script = shlex.split(args[1])
    assert script[:3] == ["cp", "-a", "/old/."], script
    folder = before.folder / source.removeprefix("$PWD/")
    shutil.copytree(folder, stack.host_path(service, script[3]), dirs_exist_ok=True)


@dataclass
class Moved:
    stack: Stack
    before: Before
    said: list[str]  # by the recipe's gateway commands: `store copy`, then gateway-init at `up`


@pytest.fixture(scope="module")
def moved(postgres: pg.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moved]:
    stack = prepare(tmp_path_factory.mktemp("compose"), postgres)
    try:
        before = old_installation(stack, tmp_path_factory.mktemp("old"))
        yield Moved(stack, before, run_recipe(stack, before))
    finally:
        stack.stop()


def test_the_stack_starts_on_the_old_keys_and_root(moved: Moved) -> None:
    stack, before = moved.stack, moved.before
    copied, init = moved.said
    assert copied.startswith("copied ") and "deploy_tokens" in copied, copied
    assert "glpat-" not in init and "root password" not in init, init  # gateway-init made no second root
    config, _ = gateway_config(compose()["services"]["gateway-init"])
    now = {name: sha256(stack.host_path("gateway-init", f"{config.storage.data_dir}/{name}")) for name in KEYS}
    assert now == before.keys  # nor new keys: the registry trusts the old certificate, the old secrets decrypt
    assert api(stack.url, before.root, "GET", "/user")["username"] == "root"


def test_the_old_deploy_token_clones_pulls_and_downloads_through_the_load_balancer(moved: Moved) -> None:
    stack, before = moved.stack, moved.before
    ci = before.ci
    env = git_env(stack.tmp / "git-home")
    clone = stack.tmp / "clone"
    remote = with_credentials(f"{stack.url}/{before.project['path_with_namespace']}.git", ci["username"], ci["token"])
    git(env, "clone", "-q", remote, str(clone)).check()
    assert git(env, "rev-parse", "HEAD", cwd=clone).check().out.strip() == before.head
    pulled = stack.tmp / "pulled"
    reference = f"docker://127.0.0.1:{stack.lb_port}/team/app:v1"
    creds = f"{ci['username']}:{ci['token']}"
    pull = ["copy", "--src-tls-verify=false", "--src-creds", creds, reference, f"oci:{pulled}:v1"]
    code, out = asyncio.run(skopeo(stack, *pull))
    assert code == 0, out
    index = json.loads((pulled / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [before.image]
    package = f"{stack.url}/api/v4/projects/{before.project['id']}/packages/generic/tool/1.0/tool.bin"
    assert exchange("GET", package, basic(ci["username"], ci["token"])) == (200, before.package)


def test_ci_variables_and_token_ids_carry_over(moved: Moved) -> None:
    stack, before = moved.stack, moved.before
    ci = before.ci
    variables = stack.run("gateway-a", ["ci-variables", before.project["path_with_namespace"]])
    assert variables.returncode == 0, variables.stderr
    assert variables.stdout == f"CI_DEPLOY_USER={ci['username']}\nCI_DEPLOY_PASSWORD={ci['token']}\n"
    tokens = f"/projects/{before.project['id']}/deploy_tokens"
    fresh = api(stack.url, before.root, "POST", tokens, {"name": "after", "scopes": ["read_repository"]})
    assert fresh["id"] == ci["id"] + 2  # after the old group token
    assert fresh["username"] == f"gitlab+deploy-token-{fresh['id']}"


def test_the_copy_run_again_is_refused(moved: Moved) -> None:
    (copy,) = [argv for argv in readme_commands() if "store" in argv]
    again = moved.stack.run("gateway-init", on_volumes(moved.stack, "gateway-init", copy[copy.index("store") :]))
    assert again.returncode == 1 and "the target database is not empty" in again.stderr, again.stderr
