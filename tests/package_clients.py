"""Helpers of the package e2e tests: the gateway served in process on a free loopback port, real clients run
without blocking its event loop, the tools' locations (installed by scripts/install-test-deps), a test world, and
the package servers (pypiserver, verdaccio) started as processes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.config import Config
from gateway.secretbox import SecretBox
from gateway.store.base import Namespace, Project
from gateway.store.sqlite import SQLiteStore
from gateway.users import AccessLevel
from tests import procs
from tests.world import World

REPO = Path(__file__).resolve().parents[1]
# pypiserver and twine live in their own venv, not the project's (scripts/install-test-deps creates it).
PYPI_TOOLS = Path(os.environ.get("PACKAGE_TOOLS_VENV", REPO / ".venv-packages"))
NPM_HOST = REPO / "tests" / "e2e" / "npm-host"
INSTALL_HINT = "run scripts/install-test-deps"


def require(path: Path) -> Path:
    """A tool the test needs: missing means the test fails (CI installs it), it never skips."""
    assert path.exists(), f"{path} is missing: {INSTALL_HINT}"
    return path


@asynccontextmanager
async def serve(config: Config, store: SQLiteStore, clock: FixedClock, box: SecretBox) -> AsyncIterator[str]:
    """The gateway on 127.0.0.1:<free port> in this event loop; yields its origin http://127.0.0.1:PORT."""
    app = create_app(config, store=store, clock=clock, box=box)
    runner = web.AppRunner(app, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def run(
    argv: Sequence[str | Path], *, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 180
) -> tuple[int, str]:
    """Run a client to completion in a child process (the gateway keeps serving); returns (exit code, output)."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    proc = await asyncio.create_subprocess_exec(
        *map(str, argv),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**base, **(env or {})},
        cwd=cwd,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


def basic(secret: str, username: str = "anyone") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()}


@dataclass
class Cast:
    """root ⊃ {a ⊃ pa, b ⊃ pb}: the projects, groups and the secrets of every kind of caller."""

    pa: Project
    pb: Project
    a: Namespace
    b: Namespace
    secrets: dict[str, str] = field(default_factory=dict)


WRITE = ("write_package_registry",)
READ = ("read_package_registry",)


async def cast(world: World, clock: FixedClock, prefix: str = "") -> Cast:
    root = await world.group(prefix + "root")
    a = await world.group("a", root)
    b = await world.group("b", root)
    c = Cast(await world.project("pa", a), await world.project("pb", b), a, b)
    made = {
        "pa_write": await world.deploy_token(c.pa, WRITE),
        "pa_read": await world.deploy_token(c.pa, READ),
        "pb_write": await world.deploy_token(c.pb, WRITE),
        "group_a": await world.deploy_token(a, WRITE),
        "group_b": await world.deploy_token(b, WRITE),
        "revoked": await world.deploy_token(c.pa, WRITE),
        "expired": await world.deploy_token(c.pa, WRITE, expires_at=clock.now() + timedelta(minutes=1)),
    }
    await world.store.revoke_deploy_token(made["revoked"].token.id)
    c.secrets = {name: created.secret for name, created in made.items()}
    developer = await world.user(prefix + "developer")
    await world.member(developer, c.pa, AccessLevel.DEVELOPER)
    reporter = await world.user(prefix + "reporter")
    await world.member(reporter, c.pa, AccessLevel.REPORTER)
    c.secrets["developer_pat"] = developer.pat
    c.secrets["reporter_pat"] = reporter.pat
    clock.advance(timedelta(minutes=2))  # `expired` is past its expiry from here on
    return c


# Expected answers of the negative matrix, by caller: (read of pa's package, upload to pa).
NEGATIVE = {
    "pa_read": (200, 403),
    "pb_write": (404, 404),
    "group_b": (404, 404),
    "revoked": (401, 401),
    "expired": (401, 401),
    "reporter_pat": (200, 403),
}


# --- the package servers behind the gateway (one process each, stopped by PID) -------------------------------------


@contextmanager
def pypiserver(base: Path, username: str, password: str) -> Iterator[str]:
    """pypiserver with its own htpasswd: only `username`/`password` (the gateway's backend credentials) may upload
    or read. Yields its root URL."""
    server = require(PYPI_TOOLS / "bin" / "pypi-server")
    python = require(PYPI_TOOLS / "bin" / "python")
    (base / "packages").mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            python,
            "-c",
            "import sys; from passlib.apache import HtpasswdFile as H; h = H(sys.argv[1], new=True);"
            " h.set_password(sys.argv[2], sys.argv[3]); h.save()",
            base / "htpasswd",
            username,
            password,
        ],
        check=True,
    )
    port = procs.free_port()
    argv = [server, "run", "-i", "127.0.0.1", "-p", str(port), "-a", "update,download,list"]
    argv += ["-P", str(base / "htpasswd"), "--disable-fallback", str(base / "packages")]
    proc = procs.start("pypiserver", argv, log=base / "pypiserver.log")
    with procs.running(proc):
        procs.wait_http(proc, f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}/"


@contextmanager
def verdaccio(base: Path, username: str, password: str) -> Iterator[str]:
    """verdaccio offline (no uplinks), every package only for authenticated users: the one account `username`
    (the gateway's backend credentials). Yields its root URL."""
    binary = require(NPM_HOST / "node_modules" / ".bin" / "verdaccio")
    base.mkdir(parents=True, exist_ok=True)
    port = procs.free_port()
    (base / "config.yaml").write_text(
        json.dumps(
            {
                "storage": str(base / "storage"),
                "auth": {"htpasswd": {"file": str(base / "htpasswd"), "max_users": 1}},
                "uplinks": {},
                "packages": {
                    "@*/*": {"access": "$authenticated", "publish": "$authenticated"},
                    "**": {"access": "$authenticated", "publish": "$authenticated"},
                },
                "middlewares": {"audit": {"enabled": False}},
                "web": {"enable": False},
                "listen": f"127.0.0.1:{port}",
                "log": {"type": "stdout", "format": "pretty", "level": "warn"},
            }
        )
    )
    proc = procs.start("verdaccio", [binary, "--config", base / "config.yaml"], log=base / "verdaccio.log")
    try:
        procs.wait_http(proc, f"http://127.0.0.1:{port}/-/ping")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/-/user/org.couchdb.user:{username}",
            data=json.dumps({"name": username, "password": password}).encode(),
            headers={"Content-Type": "application/json"},
            method="PUT",
        )
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
            assert resp.status == 201
        yield f"http://127.0.0.1:{port}/"
    finally:
        # verdaccio may ignore SIGTERM for a long time; SIGINT stops it at once (packages.md §2).
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        with suppress(subprocess.TimeoutExpired):
            proc.popen.wait(5)
        procs.stop(proc)
