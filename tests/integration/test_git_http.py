"""git smart HTTP through the in-process gateway (embedded backend) with the real `git` client.

The gateway listens on a loopback port (aiohttp test server); git runs as an async subprocess against it.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from gateway import repositories
from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.config import Config
from gateway.middleware import GIT_UNAUTHORIZED
from gateway.secretbox import SecretBox
from gateway.store.base import Namespace, Project
from gateway.store.sqlite import SQLiteStore
from gateway.tokens import Created
from gateway.users import AccessLevel
from tests.conftest import T0
from tests.gitcli import (
    agit,
    bare_head,
    commit_file,
    git,
    git_env,
    helper_args,
    make_seed,
    protocol_args,
    push_direct,
    with_credentials,
)
from tests.world import Actor, World

NOT_FOUND = "The project you were looking for could not be found or you don't have permission to view it."
EXPIRES = T0 + timedelta(hours=1)


@dataclass
class Scene:
    world: World
    env: dict[str, str]
    seed: Path
    head: str
    tanuki: Namespace
    sub: Namespace
    other: Namespace
    awesome: Project  # tanuki/awesome, private
    deep: Project  # tanuki/sub/deep, private
    thing: Project  # other/thing, private
    open: Project  # tanuki/open, public
    tokens: dict[str, Created]
    developer: Actor
    reporter: Actor
    outsider: Actor
    read_only: Actor  # a Developer whose PAT has read_repository only

    def bare(self, project: Project) -> Path:
        path = repositories.locate(self.world.config, project.full_path)
        assert path is not None
        return path


@pytest.fixture
async def client(
    aiohttp_client: Any, aiohttp_server: Any, config: Config, store: SQLiteStore, clock: FixedClock, box: SecretBox
) -> TestClient:
    """The gateway as `gateway serve` runs it: auto_decompress=False, so gzip bodies reach http-backend untouched.

    aiohttp_client(app, server_kwargs=...) silently drops server_kwargs (aiohttp 3.14 TestServer keeps them out of
    the runner), so the server is started here with the keyword where it takes effect.
    """
    app = create_app(config, store=store, clock=clock, box=box)
    return await aiohttp_client(await aiohttp_server(app, auto_decompress=False))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return git_env(tmp_path / "home")


@dataclass(frozen=True)
class Template:
    seed: Path  # a working repository
    head: str
    bare: Path  # its content as a bare, repacked repository


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """Built once: every test copies the bare repository instead of pushing and repacking again."""
    base = tmp_path_factory.mktemp("git-template")
    env = git_env(base / "home")
    seed = base / "seed"
    # 150 branches: negotiation bodies exceed 1 KiB, so git sends them gzip-compressed (git.md §1).
    head = make_seed(env, seed, branches=150)
    bare = base / "template.git"
    git(env, "init", "-q", "--bare", str(bare)).check()
    push_direct(env, seed, bare, "HEAD:refs/heads/main", "refs/heads/br-*:refs/heads/br-*")
    # Few files to copy per test: refs packed, sample hooks gone.
    git(env, "--git-dir", str(bare), "pack-refs", "--all").check()
    shutil.rmtree(bare / "hooks")
    return Template(seed, head, bare)


@pytest.fixture
async def scene(world: World, env: dict[str, str], template: Template) -> Scene:
    tanuki = await world.group("tanuki")
    sub = await world.group("sub", tanuki)
    other = await world.group("other")
    awesome = await world.project("awesome", tanuki)
    deep = await world.project("deep", sub)
    thing = await world.project("thing", other)
    public = await world.project("open", tanuki, visibility="public")
    for project in (awesome, deep, thing, public):
        bare = repositories.locate(world.config, project.full_path)
        assert bare is not None
        shutil.rmtree(bare)
        shutil.copytree(template.bare, bare, symlinks=True)
    seed, head = template.seed, template.head
    tokens = {
        "project": await world.deploy_token(awesome),
        "custom": await world.deploy_token(awesome, username="ci-bot"),
        "thing": await world.deploy_token(thing),
        "tanuki_group": await world.deploy_token(tanuki),
        "sub_group": await world.deploy_token(sub),
        "other_group": await world.deploy_token(other),
        "packages": await world.deploy_token(awesome, ("read_package_registry", "write_package_registry")),
        "registry": await world.deploy_token(awesome, ("read_registry",)),
        "all_scopes": await world.deploy_token(
            awesome, ("read_repository", "read_registry", "write_registry", "write_package_registry")
        ),
        "expiring": await world.deploy_token(awesome, expires_at=EXPIRES),
        "revoked": await world.deploy_token(awesome),
    }
    await world.store.revoke_deploy_token(tokens["revoked"].token.id)
    developer = await world.user("dev", scopes=("write_repository",))
    # Both scopes: a push by the reporter is refused for the role, not for the token.
    reporter = await world.user("rep", scopes=("read_repository", "write_repository"))
    read_only = await world.user("devro", scopes=("read_repository",))
    outsider = await world.user("outsider", scopes=("read_repository",))
    await world.member(developer, tanuki, AccessLevel.DEVELOPER)
    await world.member(read_only, tanuki, AccessLevel.DEVELOPER)
    await world.member(reporter, awesome, AccessLevel.REPORTER)
    return Scene(
        world,
        env,
        seed,
        head,
        tanuki,
        sub,
        other,
        awesome,
        deep,
        thing,
        public,
        tokens,
        developer,
        reporter,
        outsider,
        read_only,
    )


def token_creds(name: str) -> Callable[[Scene], tuple[str, str]]:
    return lambda s: (s.tokens[name].token.username, s.tokens[name].secret)


def basic(username: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()}


UNAUTHORIZED_GIT = ("remote: HTTP Basic: Access denied.", "fatal: Authentication failed for")
NOT_FOUND_GIT = (f"remote: {NOT_FOUND}", "not found")


def forbidden_git(message: str) -> tuple[str, ...]:
    return (f"remote: {message}", "The requested URL returned error: 403")


@dataclass(frozen=True)
class Case:
    id: str
    creds: Callable[[Scene], tuple[str, str] | None]
    path: str
    op: Literal["read", "write"]
    status: int  # of the info/refs request carrying these credentials
    git_says: tuple[str, ...] = ()  # lines git prints; empty: git succeeds
    at: Callable[[], object] | None = None  # moves the clock before the request


CASES = [
    # --- deploy tokens: who reaches what (gitlab-behaviour.md §4, §5) ---
    Case("project-token", token_creds("project"), "tanuki/awesome", "read", 200),
    Case("custom-username", token_creds("custom"), "tanuki/awesome", "read", 200),
    Case("case-insensitive-path-no-suffix", token_creds("project"), "TANUKI/Awesome", "read", 200),
    Case("parent-group-token-to-subgroup-project", token_creds("tanuki_group"), "tanuki/sub/deep", "read", 200),
    Case("subgroup-token-to-parent-project", token_creds("sub_group"), "tanuki/awesome", "read", 401, UNAUTHORIZED_GIT),
    Case("sibling-group-token", token_creds("other_group"), "tanuki/awesome", "read", 401, UNAUTHORIZED_GIT),
    Case("other-project-token", token_creds("thing"), "tanuki/awesome", "read", 401, UNAUTHORIZED_GIT),
    Case(
        "wrong-username",
        lambda s: ("gitlab+deploy-token-999", s.tokens["project"].secret),
        "tanuki/awesome",
        "read",
        401,
        UNAUTHORIZED_GIT,
    ),
    Case(
        "username-case-differs",
        lambda s: ("CI-BOT", s.tokens["custom"].secret),
        "tanuki/awesome",
        "read",
        401,
        UNAUTHORIZED_GIT,
    ),
    Case(
        "wrong-token",
        lambda s: (s.tokens["project"].token.username, "gldt-" + "x" * 20),
        "tanuki/awesome",
        "read",
        401,
        UNAUTHORIZED_GIT,
    ),
    Case("revoked", token_creds("revoked"), "tanuki/awesome", "read", 401, UNAUTHORIZED_GIT),
    Case(
        "valid-until-the-last-microsecond",
        token_creds("expiring"),
        "tanuki/awesome",
        "read",
        200,
        at=lambda: EXPIRES - timedelta(microseconds=1),
    ),
    Case(
        "expired-at-the-instant",
        token_creds("expiring"),
        "tanuki/awesome",
        "read",
        401,
        UNAUTHORIZED_GIT,
        at=lambda: EXPIRES,
    ),
    Case("package-only-token", token_creds("packages"), "tanuki/awesome", "read", 401, UNAUTHORIZED_GIT),
    Case(
        "registry-only-token",
        token_creds("registry"),
        "tanuki/awesome",
        "read",
        403,
        forbidden_git("You are not allowed to download code."),
    ),
    Case(
        "deploy-token-push",
        token_creds("all_scopes"),
        "tanuki/awesome",
        "write",
        403,
        forbidden_git("You are not allowed to upload code."),
    ),
    Case("unknown-project-with-token", token_creds("project"), "tanuki/nope", "read", 404, NOT_FOUND_GIT),
    # --- anonymous ---
    Case(
        "anonymous-private",
        lambda s: None,
        "tanuki/awesome",
        "read",
        401,
        ("could not read Username", "terminal prompts disabled"),
    ),
    Case(
        "anonymous-unknown-project",
        lambda s: None,
        "tanuki/nope",
        "read",
        401,
        ("could not read Username", "terminal prompts disabled"),
    ),
    Case("anonymous-public", lambda s: None, "tanuki/open", "read", 200),
    # --- users: personal access tokens by role ---
    Case("developer-pat-push", lambda s: (s.developer.user.username, s.developer.pat), "tanuki/awesome", "write", 200),
    Case("reporter-pat-read", lambda s: (s.reporter.user.username, s.reporter.pat), "tanuki/awesome", "read", 200),
    Case(
        "reporter-pat-push",
        lambda s: (s.reporter.user.username, s.reporter.pat),
        "tanuki/awesome",
        "write",
        403,
        forbidden_git("You are not allowed to push code to this project."),
    ),
    Case(
        "developer-read-only-pat-push",
        lambda s: (s.read_only.user.username, s.read_only.pat),
        "tanuki/awesome",
        "write",
        403,
        forbidden_git("You are not allowed to upload code."),
    ),
    Case(
        "non-member-pat",
        lambda s: (s.outsider.user.username, s.outsider.pat),
        "tanuki/awesome",
        "read",
        404,
        NOT_FOUND_GIT,
    ),
    Case("user-password", lambda s: (s.developer.user.username, s.developer.password), "tanuki/awesome", "read", 200),
    Case(
        "wrong-password",
        lambda s: (s.developer.user.username, "not-the-password"),
        "tanuki/awesome",
        "read",
        401,
        UNAUTHORIZED_GIT,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_access_matrix(client: TestClient, scene: Scene, case: Case, tmp_path: Path) -> None:
    if case.at is not None:
        scene.world.clock.set(case.at())  # type: ignore[arg-type]
    creds = case.creds(scene)
    service = "git-upload-pack" if case.op == "read" else "git-receive-pack"

    # 1. What the server answers to the authenticated info/refs request (git's second request).
    r = await client.get(f"/{case.path}.git/info/refs?service={service}", headers=basic(*creds) if creds else {})
    assert r.status == case.status, await r.text()
    if case.status == 200:
        assert r.headers["Content-Type"] == f"application/x-{service}-advertisement"
    else:
        assert r.headers["Content-Type"].startswith("text/plain")
        body = await r.text()
        expected = {401: GIT_UNAUTHORIZED, 404: NOT_FOUND}.get(case.status)
        if expected:
            assert body.strip() == expected
        assert ("WWW-Authenticate" in r.headers) == (case.status == 401)
        if case.status == 401:
            assert r.headers["WWW-Authenticate"] == 'Basic realm="GitLab"'

    # 2. What a real git client does and shows with the same credentials in its URL.
    url = str(client.make_url(f"/{case.path}.git"))
    if creds:
        url = with_credentials(url, *creds)
    if case.op == "read":
        result = await agit(scene.env, "ls-remote", url)
    else:
        work = tmp_path / "work"
        await agit(scene.env, "clone", "-q", str(scene.seed), str(work))
        commit_file(scene.env, work, "new.txt", "pushed\n")
        result = await agit(scene.env, "push", url, "HEAD:refs/heads/pushed", cwd=work)
    if not case.git_says:
        assert result.code == 0, result.err
        if case.op == "read":
            assert f"{scene.head}\trefs/heads/main" in result.out
        else:
            project = await scene.world.store.get_project_by_path(case.path)
            assert project is not None
            pushed = await agit(scene.env, "--git-dir", str(scene.bare(project)), "rev-parse", "refs/heads/pushed")
            assert pushed.out.strip() == (await agit(scene.env, "rev-parse", "HEAD", cwd=work)).out.strip()
    else:
        assert result.code != 0
        for line in case.git_says:
            assert line in result.err, result.err
    for secret in (creds[1],) if creds else ():
        assert secret not in result.err  # git must not echo the token, nor may the gateway's messages


@pytest.mark.parametrize("version", [0, 2])
@pytest.mark.parametrize("delivery", ["url", "helper"])
async def test_clone_fetch_ls_remote(
    client: TestClient, scene: Scene, version: int, delivery: str, tmp_path: Path
) -> None:
    token = scene.tokens["tanuki_group"]
    url = str(client.make_url(f"/{scene.deep.full_path}.git"))
    args = protocol_args(version)
    if delivery == "url":
        url = with_credentials(url, token.token.username, token.secret)
    else:
        args += helper_args(token.token.username, token.secret)
    trace = tmp_path / "packet.trace"
    env = scene.env | {
        "GIT_TRACE_PACKET": str(trace),
        "GIT_TRACE_CURL": str(tmp_path / "curl.trace"),
        "GIT_TRACE_CURL_NO_DATA": "1",
    }

    clone = tmp_path / "clone"
    (await agit(env, *args, "clone", "-q", url, str(clone))).check()
    assert (await agit(env, "rev-parse", "HEAD", cwd=clone)).out.strip() == scene.head
    # The server spoke the protocol the client asked for: Git-Protocol reached http-backend as GIT_PROTOCOL.
    assert ("version 2" in trace.read_text()) == (version == 2)
    curl = (tmp_path / "curl.trace").read_text()
    assert "Content-Encoding: gzip" in curl  # the gzip negotiation body passed through unmodified
    if delivery == "helper":
        assert token.secret not in url

    # A new commit on the server; fetch brings exactly it.
    work = tmp_path / "work"
    (await agit(env, "clone", "-q", str(scene.seed), str(work))).check()
    new_head = commit_file(env, work, "later.txt", "later\n")
    push_direct(env, work, scene.bare(scene.deep))
    (await agit(env, *args, "fetch", "-q", "origin", cwd=clone)).check()
    assert (await agit(env, "rev-parse", "origin/main", cwd=clone)).out.strip() == new_head

    listing = (await agit(env, *args, "ls-remote", url, cwd=clone)).check().out
    assert f"{new_head}\trefs/heads/main" in listing
    assert "refs/heads/br-149" in listing


@pytest.mark.parametrize("service", ["git-upload-pack", "git-receive-pack"])
async def test_protocol_v2_header_selects_the_protocol(client: TestClient, scene: Scene, service: str) -> None:
    """Git-Protocol → GIT_PROTOCOL (receive-pack has no v2: it stays v0 either way)."""
    creds = basic(scene.developer.user.username, scene.developer.pat)
    url = f"/tanuki/awesome.git/info/refs?service={service}"
    v0 = await (await client.get(url, headers=creds)).read()
    v2 = await (await client.get(url, headers=creds | {"Git-Protocol": "version=2"})).read()
    assert v0.startswith(f"001e# service={service}\n".encode() if service == "git-upload-pack" else b"001f# service=")
    assert b"version 2" not in v0
    assert (b"version 2" in v2) == (service == "git-upload-pack")


async def test_dumb_protocol_is_refused(client: TestClient, scene: Scene) -> None:
    creds = basic(scene.developer.user.username, scene.developer.pat)
    r = await client.get("/tanuki/awesome.git/info/refs", headers=creds)
    assert r.status == 403
    assert "dumb Git HTTP protocol is not supported" in await r.text()
    anonymous = await client.get("/tanuki/awesome.git/info/refs")
    assert anonymous.status == 401  # challenged first, like every other request on a private project
    r = await client.get("/tanuki/awesome.git/HEAD", headers=creds)
    assert r.status == 404


EVIL_PATHS = [
    "/../../../etc.git/info/refs",
    "/tanuki/../../etc.git/info/refs",
    "/%2e%2e/%2e%2e/etc.git/info/refs",
    "/tanuki/%2E%2E/other/thing.git/info/refs",
    "/tanuki/awesome%00.git/info/refs",
    "/tanuki/awesome%2500.git/info/refs",
    "/tanuki/%252e%252e/x.git/info/refs",
    "/tanuki/.%2e/x.git/info/refs",
    "/tanuki//awesome.git/info/refs",
    "/tanuki/./awesome.git/info/refs",
    "/tanuki%5c..%5cx.git/info/refs",
    "/tanuki/awesome.git/../../etc/info/refs",
    "/awesome.git/info/refs",
]


@pytest.fixture
async def developer(world: World) -> Actor:
    """Just enough for path tests: tanuki/awesome and other/thing exist, a Developer of both."""
    tanuki, other = await world.group("tanuki"), await world.group("other")
    await world.project("awesome", tanuki)
    await world.project("thing", other)
    actor = await world.user("dev", scopes=("write_repository",))
    await world.member(actor, tanuki, AccessLevel.DEVELOPER)
    await world.member(actor, other, AccessLevel.DEVELOPER)
    return actor


@pytest.mark.parametrize("path", EVIL_PATHS)
@pytest.mark.parametrize("who", ["anonymous", "developer"])
async def test_paths_never_leave_the_repositories_root(
    client: TestClient, developer: Actor, path: str, who: str
) -> None:
    headers = basic(developer.user.username, developer.pat) if who == "developer" else {}
    url = URL(str(client.make_url("/")) + path.lstrip("/") + "?service=git-upload-pack", encoded=True)
    r = await client.session.get(url, headers=headers)
    assert r.status == (401 if who == "anonymous" else 404), await r.text()
    assert r.headers["Content-Type"].startswith("text/plain")


async def test_symlinked_repository_outside_the_root_is_not_served(
    client: TestClient, scene: Scene, config: Config, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.git"
    await agit(scene.env, "init", "-q", "--bare", str(outside))
    project = await scene.world.store.create_project(
        namespace_id=scene.tanuki.id,
        name="escape",
        path="escape",
        visibility="private",
        description="",
        creator_id=None,
        now=T0,
    )
    link = Path(config.git.repositories) / "tanuki" / "escape.git"
    link.symlink_to(outside, target_is_directory=True)
    assert repositories.locate(config, project.full_path) is None
    r = await client.get(
        "/tanuki/escape.git/info/refs?service=git-upload-pack",
        headers=basic(scene.developer.user.username, scene.developer.pat),
    )
    assert r.status == 404
    assert not (outside / "refs" / "heads" / "main").exists()


async def test_missing_repository_is_created_on_first_use(client: TestClient, scene: Scene, config: Config) -> None:
    project = await scene.world.store.create_project(
        namespace_id=scene.tanuki.id,
        name="late",
        path="late",
        visibility="private",
        description="",
        creator_id=None,
        now=T0,
    )
    bare = Path(config.git.repositories) / "tanuki" / "late.git"
    assert not bare.exists()
    r = await client.get(
        f"/{project.full_path}.git/info/refs?service=git-upload-pack",
        headers=basic(scene.developer.user.username, scene.developer.pat),
    )
    assert r.status == 200
    assert (bare / "HEAD").is_file()
    assert os.path.getsize(bare / "config") > 0


async def test_push_by_developer_updates_the_repository(client: TestClient, scene: Scene, tmp_path: Path) -> None:
    """A push larger than http.postBuffer: the 4-byte probe, then a chunked body without Content-Length."""
    work = tmp_path / "work"
    (await agit(scene.env, "clone", "-q", str(scene.seed), str(work))).check()
    (work / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    await agit(scene.env, "add", "big.bin", cwd=work)
    await agit(scene.env, "commit", "-qm", "big", cwd=work)
    head = (await agit(scene.env, "rev-parse", "HEAD", cwd=work)).out.strip()
    url = with_credentials(
        str(client.make_url("/tanuki/awesome.git")), scene.developer.user.username, scene.developer.pat
    )
    trace = tmp_path / "curl.trace"
    env = scene.env | {"GIT_TRACE_CURL": str(trace), "GIT_TRACE_CURL_NO_DATA": "1"}
    (await agit(env, "push", "-q", url, "HEAD:main", cwd=work)).check()
    assert bare_head(scene.env, scene.bare(scene.awesome)) == head
    assert "Transfer-Encoding: chunked" in trace.read_text()


async def test_clone_works_even_if_the_server_inflates_bodies(
    aiohttp_client: Any,
    config: Config,
    store: SQLiteStore,
    clock: FixedClock,
    box: SecretBox,
    scene: Scene,
    tmp_path: Path,
) -> None:
    """A server left at aiohttp's default auto_decompress=True hands over inflated bytes under
    `Content-Encoding: gzip`; the bridge notices (no gzip magic) and drops the stale headers (git.md §2)."""
    inflating = await aiohttp_client(create_app(config, store=store, clock=clock, box=box))
    token = scene.tokens["project"]
    url = with_credentials(str(inflating.make_url("/tanuki/awesome.git")), token.token.username, token.secret)
    env = scene.env | {"GIT_TRACE_CURL": str(tmp_path / "curl.trace"), "GIT_TRACE_CURL_NO_DATA": "1"}
    (await agit(env, *protocol_args(2), "clone", "-q", url, str(tmp_path / "clone"))).check()
    assert "Content-Encoding: gzip" in (tmp_path / "curl.trace").read_text()
