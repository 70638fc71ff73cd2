"""Real git against the real gateway process, with both backends: the embedded `git http-backend` and an upstream
nginx + fcgiwrap + git http-backend that itself demands the gateway's backend credentials."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway import repositories
from gateway.users import AccessLevel
from tests.e2e.conftest import UPSTREAM_PASSWORD, UPSTREAM_USER, GatewayFactory
from tests.gitcli import (
    FAST_PACK,
    bare_head,
    commit_file,
    git,
    git_env,
    helper_args,
    make_random_repo,
    make_seed,
    protocol_args,
    push_direct,
    with_credentials,
)
from tests.servers import Gateway, GitUpstream
from tests.world import installed_world

NOT_FOUND = "The project you were looking for could not be found or you don't have permission to view it."


@dataclass
class Deployment:
    backend: str
    gateway: Gateway
    env: dict[str, str]
    secrets: dict[str, tuple[str, str]]  # name → (username, secret)
    bares: dict[str, Path]  # project full path → its bare repository in the backend

    def url(self, path: str, who: str | None = None) -> str:
        url = f"{self.gateway.url}/{path}.git"
        return with_credentials(url, *self.secrets[who]) if who else url


async def populate(
    config_file: Path, upstream: GitUpstream | None
) -> tuple[dict[str, tuple[str, str]], dict[str, Path]]:
    """Users, groups, projects and tokens written straight into the gateway's database before it starts."""
    async with installed_world(config_file) as world:
        config = world.config
        tanuki = await world.group("tanuki")
        sub = await world.group("sub", tanuki)
        small = await world.project("small", sub)
        big = await world.project("big", tanuki)
        group_token = await world.deploy_token(tanuki)
        packages = await world.deploy_token(small, ("read_package_registry",))
        dev = await world.user("dev", scopes=("write_repository",))
        await world.member(dev, tanuki, AccessLevel.DEVELOPER)
        secrets = {
            "token": (group_token.token.username, group_token.secret),
            "packages": (packages.token.username, packages.secret),
            "dev": (dev.user.username, dev.pat),
            "wrong": (group_token.token.username, "gldt-" + "w" * 20),
        }
        bares: dict[str, Path] = {}
        for project in (small, big):
            if upstream is None:
                bare = repositories.locate(config, project.full_path)
                assert bare is not None and (bare / "HEAD").is_file()
            else:
                bare = upstream.create_bare(project.full_path)
            bares[project.full_path] = bare
        return secrets, bares


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    base = tmp_path_factory.mktemp("git-seed")
    env = git_env(base / "home")
    make_seed(env, base / "seed", branches=150)  # > 1 KiB negotiation: gzip request bodies
    return env, base / "seed"


@pytest.fixture(scope="module", params=["embedded", "upstream"])
def deployment(
    request: pytest.FixtureRequest, gateway_factory: GatewayFactory, seed: tuple[dict[str, str], Path]
) -> Deployment:
    env, seed_repo = seed
    upstream: GitUpstream | None = None
    git_settings: dict[str, str | int | float] = {}
    if request.param == "upstream":
        upstream = request.getfixturevalue("git_upstream")
        git_settings = {
            "backend": upstream.url,
            "backend_username": UPSTREAM_USER,
            "backend_password": UPSTREAM_PASSWORD,
        }
    found: dict[str, object] = {}

    def prepare(config_file: Path) -> None:
        found["secrets"], found["bares"] = asyncio.run(populate(config_file, upstream))

    gateway = gateway_factory(git=git_settings, prepare=prepare)
    secrets: dict[str, tuple[str, str]] = found["secrets"]  # type: ignore[assignment]
    bares: dict[str, Path] = found["bares"]  # type: ignore[assignment]
    push_direct(env, seed_repo, bares["tanuki/sub/small"], "HEAD:refs/heads/main", "refs/heads/br-*:refs/heads/br-*")
    return Deployment(request.param, gateway, env, secrets, bares)


@pytest.mark.parametrize("version", [0, 2])
@pytest.mark.parametrize("delivery", ["url", "helper"])
def test_clone_push_fetch_ls_remote(deployment: Deployment, version: int, delivery: str, tmp_path: Path) -> None:
    env, path = deployment.env, "tanuki/sub/small"
    bare = deployment.bares[path]
    args = protocol_args(version)
    if delivery == "url":
        url = deployment.url(path, "token")
    else:
        url = deployment.url(path)
        args += helper_args(*deployment.secrets["token"])
    trace = tmp_path / "packet.trace"
    traced = env | {"GIT_TRACE_PACKET": str(trace)}

    clone = tmp_path / "clone"
    git(traced, *args, "clone", "-q", url, str(clone)).check()
    assert git(env, "rev-parse", "HEAD", cwd=clone).check().out.strip() == bare_head(env, bare)
    assert ("version 2" in trace.read_text()) == (version == 2)

    # A Developer pushes through the gateway with a personal access token.
    work = tmp_path / "work"
    git(env, "clone", "-q", url if delivery == "url" else deployment.url(path, "dev"), str(work)).check()
    new_head = commit_file(env, work, f"change-{version}-{delivery}.txt", "change\n")
    git(env, "push", "-q", deployment.url(path, "dev"), "HEAD:main", cwd=work).check()
    assert bare_head(env, bare) == new_head

    git(env, *args, "fetch", "-q", "origin", cwd=clone).check()
    assert git(env, "rev-parse", "origin/main", cwd=clone).check().out.strip() == new_head
    listing = git(env, *args, "ls-remote", url, cwd=clone).check().out
    assert f"{new_head}\trefs/heads/main" in listing
    assert "refs/heads/br-149" in listing


@pytest.mark.parametrize("version", [0, 2])
@pytest.mark.parametrize("clone", ["partial", "shallow"])
def test_partial_and_shallow_clones(deployment: Deployment, version: int, clone: str, tmp_path: Path) -> None:
    """`git clone --filter=blob:none` (blobs fetched when a checkout needs them) and `--depth 1` (what CI runners
    fetch, GIT_DEPTH), with a deploy token, in both protocols: the history is there, the left-out part is not, and
    what is left out comes later through the gateway."""
    env, path = deployment.env, "tanuki/sub/small"
    work = tmp_path / "work"
    git(env, "clone", "-q", deployment.url(path, "dev"), str(work)).check()
    git(env, "checkout", "-q", "-b", f"{clone}-{version}", cwd=work).check()
    first = commit_file(env, work, "history.txt", "first version\n")
    last = commit_file(env, work, "history.txt", "second version\n")
    git(env, "push", "-q", "origin", "HEAD", cwd=work).check()
    args = protocol_args(version)
    copy = tmp_path / "copy"
    narrowing = ["--filter=blob:none"] if clone == "partial" else ["--depth", "1"]
    result = git(
        env, *args, "clone", "-q", *narrowing, "-b", f"{clone}-{version}", deployment.url(path, "token"), str(copy)
    )
    assert result.check().err == "", result.err  # no "filtering not recognized by server, ignoring"
    assert (copy / "history.txt").read_text() == "second version\n"
    assert git(env, "rev-parse", "HEAD", cwd=copy).check().out.strip() == last
    if clone == "partial":
        missing = git(env, "rev-list", "--objects", "--all", "--missing=print", cwd=copy).check().out.split()
        assert f"?{git(env, 'rev-parse', f'{first}:history.txt', cwd=work).check().out.strip()}" in missing
        git(env, *args, "checkout", "-q", first, cwd=copy).check()  # the old blob, fetched on demand
    else:
        assert git(env, "rev-parse", "--is-shallow-repository", cwd=copy).check().out.strip() == "true"
        assert git(env, "cat-file", "-e", first, cwd=copy).code != 0
        git(env, *args, "fetch", "-q", "--unshallow", cwd=copy).check()
        git(env, "checkout", "-q", first, cwd=copy).check()
    assert (copy / "history.txt").read_text() == "first version\n"


REFUSALS = [
    # (who, path, operation, what git shows) — the gateway answers before any backend sees the request.
    ("wrong", "tanuki/sub/small", "read", ("remote: HTTP Basic: Access denied.", "Authentication failed")),
    ("packages", "tanuki/sub/small", "read", ("remote: HTTP Basic: Access denied.", "Authentication failed")),
    ("token", "tanuki/sub/small", "write", ("remote: You are not allowed to upload code.", "error: 403")),
    ("token", "tanuki/nothing", "read", (f"remote: {NOT_FOUND}", "not found")),
    (None, "tanuki/sub/small", "read", ("could not read Username", "terminal prompts disabled")),
]


@pytest.mark.parametrize(("who", "path", "op", "shown"), REFUSALS, ids=[f"{r[0]}-{r[2]}-{r[1]}" for r in REFUSALS])
def test_refusals(
    deployment: Deployment, who: str | None, path: str, op: str, shown: tuple[str, ...], tmp_path: Path
) -> None:
    env = deployment.env
    if op == "read":
        result = git(env, "ls-remote", deployment.url(path, who))
    else:
        work = tmp_path / "work"
        git(env, "clone", "-q", deployment.url("tanuki/sub/small", "token"), str(work)).check()
        commit_file(env, work, "refused.txt", "no\n")
        result = git(env, "push", deployment.url(path, who), "HEAD:refs/heads/refused", cwd=work)
    assert result.code != 0
    for line in shown:
        assert line in result.err, result.err


def test_large_repository(deployment: Deployment, tmp_path: Path) -> None:
    """100 MB of random data pushed by a Developer and cloned with a deploy token through the gateway."""
    env, path = deployment.env, "tanuki/big"
    big = tmp_path / "big"
    head = make_random_repo(env, big, megabytes=100)
    git(env, *FAST_PACK, "push", "-q", deployment.url(path, "dev"), "HEAD:main", cwd=big).check()
    assert bare_head(env, deployment.bares[path]) == head
    packs = list((deployment.bares[path] / "objects" / "pack").glob("*.pack"))
    assert sum(p.stat().st_size for p in packs) >= 100 * 1024 * 1024
    clone = tmp_path / "clone"
    git(env, "clone", "-q", "--bare", deployment.url(path, "token"), str(clone)).check()
    assert git(env, "--git-dir", str(clone), "rev-parse", "HEAD").check().out.strip() == head
    shutil.rmtree(clone)


def test_logs_never_contain_secrets(deployment: Deployment) -> None:
    """After everything above ran against this gateway, its log holds no token, password or backend secret."""
    log = deployment.gateway.proc.log.read_text()
    assert '"route": "git.info_refs"' in log  # the access log was written
    for _username, secret in deployment.secrets.values():
        assert secret not in log
    assert UPSTREAM_PASSWORD not in log
