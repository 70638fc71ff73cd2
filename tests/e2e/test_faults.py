"""Faults with real processes around the real gateway (`python -m gateway serve`): its git child killed mid-clone,
a git client killed mid-clone, SIGTERM during transfers (with and without workers), a SQLite database locked by
another process, PostgreSQL stopped and started again under a running gateway."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway import config as config_module
from gateway import repositories
from gateway.middleware import STORE_UNAVAILABLE
from gateway.store.cache import DEFAULT_TTL
from gateway.users import AccessLevel
from tests import pg
from tests.gitcli import GIT, agit, bare_head, git_env, make_random_repo, push_direct, with_credentials
from tests.procs import children, processes, wait_until
from tests.servers import Gateway, GitUpstream, init_gateway, start_gateway, start_git_upstream, write_config
from tests.world import installed_world

SIZE = 64 * 1024 * 1024  # more than every buffer between the gateway and a client that stopped reading
BLOCK = os.urandom(1024 * 1024)
DIGEST = hashlib.sha256(BLOCK * (SIZE // len(BLOCK))).hexdigest()
SCOPES = ("read_repository", "read_registry", "write_registry", "read_package_registry", "write_package_registry")


@dataclass
class Site:
    """What populate() made: one project, a deploy token with every scope, an admin's API token."""

    project_path: str
    project_id: int
    username: str
    secret: str
    admin_pat: str


async def populate(config_file: Path, *, repo_megabytes: int = 0, home: Path | None = None) -> Site:
    """Users, a project and tokens written straight into the gateway's database (SQLite or PostgreSQL)."""
    async with installed_world(config_file) as world:
        config = world.config
        group = await world.group("tanuki")
        project = await world.project("awesome", group)
        token = await world.deploy_token(project, SCOPES)
        admin = await world.user("boss", admin=True)
        await world.member(admin, group, AccessLevel.OWNER)
    if repo_megabytes:
        assert home is not None
        env = git_env(home)
        make_random_repo(env, home / "seed", megabytes=repo_megabytes)
        bare = repositories.locate(config, project.full_path)
        assert bare is not None
        push_direct(env, home / "seed", bare)
    return Site(project.full_path, project.id, token.token.username, token.secret, admin.pat)


async def deploy(base: Path, *args: str, **sections: dict[str, Any]) -> tuple[Gateway, Site]:
    config = write_config(base, sections=sections)
    init_gateway(config)
    site = await populate(config)
    return start_gateway(config, *args), site


@pytest.fixture
def started() -> Iterator[list[Gateway]]:
    gateways: list[Gateway] = []
    try:
        yield gateways
    finally:
        for gateway in gateways:
            gateway.stop()


def basic(site: Site) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{site.username}:{site.secret}".encode()).decode()}


def package_url(gateway: Gateway, site: Site, name: str) -> str:
    return f"{gateway.url}/api/v4/projects/{site.project_id}/packages/generic/pkg/1.0.0/{name}"


async def payload() -> AsyncIterator[bytes]:
    for _ in range(SIZE // len(BLOCK)):
        yield BLOCK


def refused(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


# --- graceful shutdown ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2], ids=["single", "workers"])
@pytest.mark.parametrize(
    ("deadline", "pause", "completes"),
    # Past the deadline but before twice it: aiohttp alone would wait twice (cli.serve cuts at the deadline).
    [(30.0, 0.0, True), (2.0, 3.0, False)],
    ids=["within-deadline", "past-deadline"],
)
async def test_sigterm_lets_transfers_finish_within_the_deadline_and_refuses_new_connections(
    tmp_path: Path, started: list[Gateway], workers: int, deadline: float, pause: float, completes: bool
) -> None:
    gateway, site = await deploy(tmp_path / "gw", "--workers", str(workers), server={"shutdown_timeout": deadline})
    started.append(gateway)
    headers = {"Deploy-Token": site.secret}
    async with aiohttp.ClientSession() as session:
        async with session.put(package_url(gateway, site, "big.bin"), data=payload(), headers=headers) as r:
            assert r.status == 201, await r.text()
        async with session.get(package_url(gateway, site, "big.bin"), headers=headers) as r:
            assert r.status == 200
            digest = hashlib.sha256(await r.content.readexactly(1024 * 1024))
            os.kill(gateway.pid, signal.SIGTERM)  # the supervisor when there are workers; it forwards
            # New connections are refused while the transfer goes on (not queued in a backlog nobody reads).
            assert await asyncio.to_thread(wait_until, lambda: refused(gateway.url), 10.0)
            await asyncio.sleep(pause)  # a slow client: still reading when the deadline passes
            if completes:
                async for chunk in r.content.iter_chunked(1024 * 1024):
                    digest.update(chunk)
                assert digest.hexdigest() == DIGEST
            else:
                with pytest.raises(aiohttp.ClientPayloadError):  # cut, and the client can tell
                    async for chunk in r.content.iter_chunked(1024 * 1024):
                        digest.update(chunk)
    assert gateway.proc.popen.wait(30) == 0, gateway.proc.log_tail()
    assert not children(gateway.pid)


# --- the embedded git backend: its child killed, its client killed ---------------------------------------------------


@pytest.fixture(scope="module")
def git_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Site, dict[str, str], str]]:
    """One gateway with a 40 MB repository for the git tests: the pack is as large as the repository (random
    content), so a clone is still streaming when a process dies."""
    base = tmp_path_factory.mktemp("git-faults")
    config = write_config(base / "gw")
    init_gateway(config)
    site = asyncio.run(populate(config, repo_megabytes=40, home=base / "home"))
    env = git_env(base / "home")
    bare = repositories.locate(config_module.load(config), site.project_path)
    assert bare is not None
    gateway = start_gateway(config)
    try:
        yield gateway, site, env, bare_head(env, bare)
    finally:
        gateway.stop()


def clone_url(gateway: Gateway, site: Site) -> str:
    return with_credentials(f"{gateway.url}/{site.project_path}.git", site.username, site.secret)


def git_children(gateway: Gateway) -> list[Any]:
    return children(gateway.pid, "git")


async def start_clone(env: dict[str, str], url: str, dest: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        GIT, "clone", "-q", "--bare", url, str(dest), env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,  # its own group: killing the client reaches git-remote-http too
    )  # fmt: skip


async def wait_for_pack(gateway: Gateway) -> int:
    """The pid of the http-backend child streaming the pack, seen in one snapshot with pack-objects under it: the
    ref advertisement before it runs upload-pack too, briefly, and is gone by a second look."""
    found: list[int] = []

    def packing() -> bool:
        procs = git_children(gateway)
        backends = [p.pid for p in procs if p.ppid == gateway.pid and "git-http-backend" in p.cmdline]
        if len(backends) == 1 and any("pack-objects" in p.cmdline for p in procs):
            found[:] = backends
            return True
        return False

    assert await asyncio.to_thread(wait_until, packing, 30.0, 0.005), "no pack being made under the gateway"
    return found[0]


@pytest.mark.parametrize(
    ("victim", "must_fail"),
    [
        ("group", True),  # the whole backend dies (OOM killer, crash): the pack stops mid-stream
        ("pack-objects", True),  # the pack's producer dies: upload-pack reports it in-band
        # http-backend alone: its upload-pack child keeps writing to the same pipe and may finish the pack.
        ("http-backend", False),
    ],
)
async def test_git_backend_killed_mid_clone_never_leaves_a_broken_clone(
    git_site: tuple[Gateway, Site, dict[str, str], str], tmp_path: Path, victim: str, must_fail: bool
) -> None:
    gateway, site, env, head = git_site
    clone = await start_clone(env, clone_url(gateway, site), tmp_path / "cut.git")
    try:
        backend = await wait_for_pack(gateway)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(clone.pid, signal.SIGKILL)
        await clone.communicate()  # its pipes closed here, not by the garbage collector in a later test
        raise
    if victim == "group":
        os.killpg(backend, signal.SIGKILL)
    elif victim == "pack-objects":
        assert await asyncio.to_thread(
            wait_until, lambda: any("pack-objects" in p.cmdline for p in git_children(gateway)), 30.0, 0.005
        )
        for p in git_children(gateway):
            if "pack-objects" in p.cmdline:
                os.kill(p.pid, signal.SIGKILL)
    else:
        os.kill(backend, signal.SIGKILL)
    _, err = await clone.communicate()
    if must_fail:
        assert clone.returncode != 0, "a clone whose backend died mid-pack must fail"
        assert b"fatal" in err or b"error" in err, err
    if clone.returncode != 0:
        assert not (tmp_path / "cut.git").exists()  # git removed the partial clone: nothing looks cloned
    else:  # the pack was complete after all: then the clone is whole
        assert (await agit(env, "--git-dir", str(tmp_path / "cut.git"), "fsck", "--full")).code == 0
        assert bare_head(env, tmp_path / "cut.git") == head
    assert await asyncio.to_thread(wait_until, lambda: not git_children(gateway)), git_children(gateway)
    # The gateway is unharmed: the next clone is complete.
    done = await agit(env, "clone", "-q", "--bare", clone_url(gateway, site), str(tmp_path / "good.git"))
    assert done.check().code == 0
    assert bare_head(env, tmp_path / "good.git") == head


# --- an upstream git server (nginx + fcgiwrap) dying mid-pack: the pack stream is relayed close-delimited ----------


@pytest.fixture(scope="module")
def upstream_site(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, GitUpstream, Site, dict[str, str], str]]:
    """A gateway forwarding git to nginx + fcgiwrap + http-backend (fastcgi_buffering on, as operators run it),
    which holds a 40 MB repository: a clone is still streaming when a process dies."""
    base = tmp_path_factory.mktemp("git-upstream-faults")
    upstream = start_git_upstream(base / "upstream", buffering=True)
    try:
        config = write_config(base / "gw", git={"backend": upstream.url})
        init_gateway(config)
        site = asyncio.run(populate(config))
        env = git_env(base / "home")
        make_random_repo(env, base / "seed", megabytes=40)
        bare = upstream.create_bare(site.project_path)
        push_direct(env, base / "seed", bare)
        gateway = start_gateway(config)
        try:
            yield gateway, upstream, site, env, bare_head(env, bare)
        finally:
            gateway.stop()
    finally:
        upstream.stop()


@pytest.mark.parametrize("victim", ["pack-objects", "cgi-tree", "nginx-worker"])
async def test_upstream_dying_mid_pack_fails_the_clone(
    upstream_site: tuple[Gateway, GitUpstream, Site, dict[str, str], str], tmp_path: Path, victim: str
) -> None:
    """git-upload-pack's answer comes over HTTP/1.0, ended by nginx closing the connection (proxy.forward
    `unframed`): an upstream that dies mid-pack may look like a complete HTTP body to the gateway (fcgiwrap ends the
    request normally when its CGI dies; a killed nginx worker's socket closes). git's own framing must still fail
    the clone, and nothing may look cloned."""
    gateway, upstream, site, env, head = upstream_site
    fcgiwrap, nginx = upstream.procs[0].pid, upstream.procs[1].pid
    clone = await start_clone(env, clone_url(gateway, site), tmp_path / "cut.git")
    packing: list[Any] = []

    def pack_being_made() -> bool:
        packing[:] = [p for p in children(fcgiwrap) if "pack-objects" in p.cmdline]
        return bool(packing)

    if not await asyncio.to_thread(wait_until, pack_being_made, 30.0, 0.002):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(clone.pid, signal.SIGKILL)
        await clone.communicate()
        raise AssertionError("no pack being made upstream")
    if victim == "pack-objects":
        targets = [p.pid for p in packing]
    elif victim == "cgi-tree":  # http-backend, upload-pack, pack-objects: fcgiwrap itself lives on
        targets = [p.pid for p in children(fcgiwrap, "git")]
    else:  # the worker relaying this clone (nginx's master starts another)
        targets = [p.pid for p in children(nginx) if "worker" in p.cmdline]
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _, err = await clone.communicate()
    assert clone.returncode != 0, "a clone whose upstream died mid-pack must fail"
    assert b"fatal" in err or b"error" in err, err
    assert not (tmp_path / "cut.git").exists()  # git removed the partial clone: nothing looks cloned
    # The gateway and the upstream are unharmed: the next clone is complete.
    assert await asyncio.to_thread(wait_until, lambda: len(children(nginx, "worker")) >= 1, 10.0)
    done = await agit(env, "clone", "-q", "--bare", clone_url(gateway, site), str(tmp_path / "good.git"))
    assert done.check().code == 0
    assert bare_head(env, tmp_path / "good.git") == head


async def test_git_client_killed_mid_clone_leaves_no_backend_process(
    git_site: tuple[Gateway, Site, dict[str, str], str], tmp_path: Path
) -> None:
    gateway, site, env, _ = git_site
    clone = await start_clone(env, clone_url(gateway, site), tmp_path / "gone.git")
    await wait_for_pack(gateway)
    os.killpg(clone.pid, signal.SIGKILL)  # git and git-remote-http vanish: their connection closes
    await clone.wait()
    # http-backend, upload-pack and pack-objects are all killed with their process group.
    assert await asyncio.to_thread(wait_until, lambda: not git_children(gateway)), git_children(gateway)


# --- the database: SQLite locked by another process, PostgreSQL stopped and started --------------------------------


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None = None


def calls(site: Site, *, writes: bool) -> dict[str, Call]:
    """One request per family that needs the database; `writes`: requests that write to it."""
    if writes:
        return {
            "api": Call(
                "POST",
                f"/api/v4/projects/{site.project_id}/deploy_tokens",
                {"PRIVATE-TOKEN": site.admin_pat, "Content-Type": "application/json"},
                b'{"name": "x", "scopes": ["read_repository"]}',
            ),
            # The generic upload records which project owns the package name.
            "packages": Call(
                "PUT",
                f"/api/v4/projects/{site.project_id}/packages/generic/new/1.0.0/f.txt",
                {"Deploy-Token": site.secret},
                b"hello",
            ),
        }
    return {
        "api": Call("GET", f"/api/v4/projects/{site.project_id}/deploy_tokens", {"PRIVATE-TOKEN": site.admin_pat}),
        "git": Call("GET", f"/{site.project_path}.git/info/refs?service=git-upload-pack", basic(site)),
        "registry_auth": Call(
            "GET", f"/jwt/auth?service=container_registry&scope=repository:{site.project_path}:pull", basic(site)
        ),
        "packages": Call("GET", f"/api/v4/projects/{site.project_id}/packages/generic/pkg/1.0.0/none.bin", basic(site)),
    }


OK = {"api": (200, 201), "git": (200,), "registry_auth": (200,), "packages": (201, 404)}


async def send(session: aiohttp.ClientSession, gateway: Gateway, call: Call) -> tuple[int, str, str, str]:
    """(status, content type, the message in the family's error shape or the body, Retry-After)."""
    async with session.request(call.method, gateway.url + call.path, headers=call.headers, data=call.body) as r:
        text = await r.text()
        message = text
        if r.status >= 500 and r.content_type == "application/json":
            body = await r.json()
            # registry_auth: the distribution spec's {"errors": [...]}; API and packages: GitLab's {"message"}.
            message = body["errors"][0]["message"] if "errors" in body else body["message"]
            if "errors" in body:
                assert body["errors"][0]["code"] == "UNAVAILABLE"
        return r.status, r.content_type, message.strip(), r.headers.get("Retry-After", "")


SHAPES = {"api": "application/json", "git": "text/plain", "registry_auth": "application/json",
          "packages": "application/json"}  # fmt: skip


async def assert_unavailable(session: aiohttp.ClientSession, gateway: Gateway, requests: dict[str, Call]) -> None:
    for family, call in requests.items():
        status, content_type, message, retry_after = await send(session, gateway, call)
        assert (status, content_type, message) == (503, SHAPES[family], STORE_UNAVAILABLE), family
        assert retry_after.isdigit(), family


async def assert_served(session: aiohttp.ClientSession, gateway: Gateway, requests: dict[str, Call]) -> None:
    for family, call in requests.items():
        status, _, body, _ = await send(session, gateway, call)
        assert status in OK[family], (family, status, body)


class Locker:
    """Another process holding SQLite's write lock (`BEGIN EXCLUSIVE`, as a sqlite3 shell or a backup would)."""

    def __init__(self, database: Path) -> None:
        script = (
            "import sqlite3, sys; db = sqlite3.connect(sys.argv[1], isolation_level=None);"
            " db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == b"locked\n"

    def release(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()  # its read() returns, it exits, the lock goes with it
        self.proc.stdout.close()
        assert self.proc.wait(10) == 0


async def test_sqlite_locked_by_another_process_is_503_for_writes_and_reads_go_on(
    tmp_path: Path, started: list[Gateway]
) -> None:
    gateway, site = await deploy(tmp_path / "gw", storage={"busy_timeout": 0.5})
    started.append(gateway)
    database = config_module.sqlite_path(config_module.load(gateway.config))
    async with aiohttp.ClientSession() as session:
        locker = Locker(database)
        try:
            await assert_unavailable(session, gateway, calls(site, writes=True))
            # WAL: readers never wait for a writer, so cloning and token requests keep working meanwhile.
            await assert_served(session, gateway, calls(site, writes=False))
        finally:
            locker.release()
        # The lock is gone: the same writes succeed, with no restart.
        await assert_served(session, gateway, calls(site, writes=True))
    assert "store unavailable" in gateway.proc.log.read_text()


@pytest.fixture
def cluster() -> Iterator[pg.Cluster]:
    with pg.running_cluster() as running:
        yield running


@pytest.mark.parametrize("workers", [1, 2], ids=["single", "workers"])
async def test_postgres_stopped_is_503_on_every_family_and_the_gateway_recovers_when_it_is_back(
    tmp_path: Path, started: list[Gateway], cluster: pg.Cluster, workers: int
) -> None:
    """With workers, each one is also killed during the outage: a worker started then serves the 503s too, and
    recovers with the others (found by a README walkthrough: it exited at once, until the supervisor gave up)."""
    dsn = await cluster.create_database("faults")
    gateway, site = await deploy(tmp_path / "gw", "--workers", str(workers), storage={"database": dsn, "pool_size": 2})
    started.append(gateway)
    reads, writes = calls(site, writes=False), calls(site, writes=True)
    async with aiohttp.ClientSession() as session:
        await assert_served(session, gateway, reads)
        await cluster.checkpoint()  # the site just made must survive the crash (a durable server's commits do)
        cluster.halt_server()
        await asyncio.sleep(DEFAULT_TTL + 0.1)  # past the hot-read cache: every request asks the database
        await assert_unavailable(session, gateway, reads | writes)
        if workers > 1:

            def live() -> list[int]:  # the workers (their signing processes are theirs, not the supervisor's)
                return [p.pid for p in processes() if p.ppid == gateway.pid and p.state not in ("Z", "X")]

            for pid in live():
                os.kill(pid, signal.SIGKILL)
                assert wait_until(lambda gone=pid: len(live()) == workers and gone not in live()), (
                    gateway.proc.log_tail()
                )
            await asyncio.sleep(1)  # what a worker that cannot start would do meanwhile: exit, again and again
            assert len(live()) == workers, gateway.proc.log_tail()
            for _ in range(3):  # new connections: each worker's share
                await assert_unavailable(session, gateway, reads | writes)
        cluster.start_server()
        # Back on the same address: the pool replaces its dead connections; the very next requests succeed.
        await assert_served(session, gateway, reads | writes)
    gateway.proc.assert_running()
    log = gateway.proc.log.read_text()
    assert "store unavailable" in log and cluster.password not in log
