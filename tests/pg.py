"""A throwaway PostgreSQL 15 cluster on a free loopback port, for tests, replicas and benchmarks.

Recipe and timings: shared/notes/browser-and-postgres.md §2 (initdb/pg_ctl refuse root: run them as `postgres`).
Usage: `with start_cluster(tmp) as cluster: dsn = cluster.dsn("postgres")`; `cluster.create_database(name)`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import asyncpg

# Debian's postgresql-15 (scripts/install-test-deps installs the `postgresql` metapackage).
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "postgres"
# Test-only speed settings: a throwaway cluster needs no durability (notes §2).
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(argv: Sequence[str]) -> list[str]:
    """initdb and postgres refuse to run as root: as root, run them as the `postgres` system user."""
    return ["runuser", "-u", SUPERUSER, "--", *argv] if os.geteuid() == 0 else list(argv)


def _run(argv: Sequence[str], what: str) -> None:
    done = subprocess.run(_as_postgres(argv), capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name


@dataclass
class Cluster:
    """A cluster: superuser `postgres` with a random password, TCP on 127.0.0.1:port, its socket in `root`."""

    root: Path
    port: int
    password: str
    settings: tuple[str, ...] = FAST_SETTINGS

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{_check_name(database)}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    async def admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn("postgres"))

    async def create_database(self, name: str, *, template: str = "template0") -> str:
        """CREATE DATABASE `name` (from `template`, which must have no other connections); return its DSN."""
        conn = await self.admin()
        try:
            await conn.execute(f"CREATE DATABASE {_check_name(name)} TEMPLATE {_check_name(template)}")
        finally:
            await conn.close()
        return self.dsn(name)

    async def checkpoint(self) -> None:
        """Make every commit so far durable. FAST_SETTINGS' synchronous_commit=off acknowledges commits before
        their WAL is written: an immediate stop (halt_server) then loses the last few hundred milliseconds."""
        conn = await self.admin()
        try:
            await conn.execute("CHECKPOINT")
        finally:
            await conn.close()

    async def drop_database(self, name: str) -> None:
        conn = await self.admin()
        try:
            # WITH (FORCE) (PostgreSQL 13+) ends sessions a failed test may have left behind.
            await conn.execute(f"DROP DATABASE IF EXISTS {_check_name(name)} WITH (FORCE)")
        finally:
            await conn.close()

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start_server(self) -> None:
        """pg_ctl start on self.port (again, after halt_server) and wait until the port accepts connections."""
        options = [f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root}"] + [f"-c {s}" for s in self.settings]
        _run(
            [
                str(PG_BIN / "pg_ctl"),
                *("-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "-o", " ".join(options), "start"),
            ],
            "pg_ctl start",
        )
        _wait_ready(self)

    def halt_server(self) -> None:
        """pg_ctl stop -m immediate (the postmaster is detached from pg_ctl), then wait for its PID to go."""
        pid = self.postmaster_pid()
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"], "pg_ctl stop")
        if pid is not None:
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop the server and remove the cluster's directory."""
        self.halt_server()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is gone for our purposes; /proc tells (Linux).
    with contextlib.suppress(OSError):
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    return True


def start_cluster(parent: Path | None = None, *, settings: Sequence[str] = ()) -> Cluster:
    """initdb + pg_ctl start on a free loopback port; raises (never skips) when the binaries are missing.

    `parent` must be traversable by the `postgres` user when running as root (pytest's tmp dirs are 0700).
    """
    for binary in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / binary).exists():
            raise RuntimeError(
                f"PostgreSQL 15 binary {PG_BIN / binary} not found: install Debian's `postgresql` package "
                "(scripts/install-test-deps) or set PG_BIN"
            )
    root = Path(tempfile.mkdtemp(prefix="pg-", dir=parent))
    password = secrets.token_urlsafe(16)
    pwfile = root / "pw"
    pwfile.write_text(password)
    pwfile.chmod(0o600)
    if os.geteuid() == 0:
        # The server runs as `postgres`: it must own its directory (mkdtemp makes it 0700 root-owned).
        account = pwd.getpwnam(SUPERUSER)
        for path in (root, pwfile):
            os.chown(path, account.pw_uid, account.pw_gid)
    cluster = Cluster(root, 0, password, (*FAST_SETTINGS, *settings))
    try:
        _run(
            [
                str(PG_BIN / "initdb"),
                *("-D", str(cluster.data), "-U", SUPERUSER, f"--pwfile={pwfile}"),
                *("--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"),
            ],
            "initdb",
        )
        pwfile.unlink()
        # A free port may be taken between bind() and the server's listen(): retry on another one.
        for attempt in range(3):
            cluster.port = free_port()
            try:
                cluster.start_server()
                return cluster
            except RuntimeError as exc:
                if attempt == 2:
                    raise RuntimeError(f"{exc}\n{cluster.log_tail()}") from exc
    except BaseException:
        cluster.stop()
        raise
    raise AssertionError("unreachable")  # pragma: no cover


def _wait_ready(cluster: Cluster, timeout: float = 15.0) -> None:
    """pg_ctl -w waited on the socket file; poll the loopback port too, the way clients connect."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", cluster.port), timeout=0.5).close()
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not listen on {cluster.port}: {exc}\n{cluster.log_tail()}") from exc
            time.sleep(0.02)


@contextlib.contextmanager
def running_cluster(parent: Path | None = None) -> Iterator[Cluster]:
    cluster = start_cluster(parent)
    try:
        yield cluster
    finally:
        cluster.stop()
