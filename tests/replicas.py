"""Gateway replicas (separate `gateway serve` processes, optionally pre-forked) on one database, and the measurement
of how long a change made through one replica takes to be seen by every worker of every replica.

Used by tests/e2e/test_replicas.py and bench/replicas.py.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import ssl
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests import pg
from tests.procs import Proc, free_port, start, stop, wait_http
from tests.servers import ROOT, gateway_env, run_gateway, write_config


def init(config: Path) -> str:
    """`gateway init` on a fresh installation; returns root's personal access token (the last line of stdout)."""
    result = run_gateway(config, "init")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@dataclass
class Replica:
    name: str
    url: str
    proc: Proc
    log: Path
    workers: int

    def stop(self) -> None:
        stop(self.proc)

    def access_log(self) -> list[dict[str, Any]]:
        entries = []
        # Whole lines only: the one being written while this reads has no newline yet (half a JSON object).
        for line in self.log.read_text(errors="replace").split("\n")[:-1]:
            if line.startswith("{") and '"gateway.access"' in line:
                entries.append(json.loads(line))
        return entries


def start_replica(name: str, config: Path, *, workers: int = 1, log: Path | None = None) -> Replica:
    """`gateway serve --workers N` on a free loopback port; ready when /-/health answers."""
    port = free_port()
    log = log or config.parent / f"{name}.log"
    argv = [sys.executable, "-m", "gateway", "--config", str(config), "serve", "--listen", f"127.0.0.1:{port}"]
    proc = start(name, [*argv, "--workers", str(workers)], log=log, env=gateway_env(config.parent), cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(proc, f"{url}/-/health")
    except BaseException:
        stop(proc)
        raise
    return Replica(name, url, proc, log, workers)


def request(url: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None) -> int:
    """Status of one request on a fresh TCP connection (so that SO_REUSEPORT spreads requests over the workers)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body, headers or {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def api(
    base: str,
    token: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    tls: ssl.SSLContext | None = None,
) -> Any:
    """One /api/v4 call with root's token (https: trusting `tls`); a non-2xx answer fails with the gateway's message."""
    parts = urlsplit(base)
    connection = (
        http.client.HTTPSConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30, context=tls)
        if parts.scheme == "https"
        else http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    )
    try:
        headers = {"PRIVATE-TOKEN": token, "Content-Type": "application/json"}
        connection.request(method, f"/api/v4{path}", json.dumps(body).encode() if body is not None else None, headers)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    assert 200 <= response.status < 300, f"{method} {path}: {response.status} {data[:300]!r}"
    return json.loads(data) if data else None


def basic(username: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()}


@dataclass(frozen=True)
class Probe:
    """One request that answers `before` until the change and something `after` accepts once it is seen."""

    label: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    replica: Replica | None = None  # whose access log tells which worker answered (wait_all)


def git_probe(replica: Replica, project: str, headers: dict[str, str]) -> Probe:
    return Probe(
        f"{replica.name} git info/refs",
        f"{replica.url}/{project}.git/info/refs?service=git-upload-pack",
        headers,
        replica,
    )


def jwt_probe(replica: Replica, project: str, headers: dict[str, str]) -> Probe:
    query = f"service=container_registry&scope=repository:{project}:pull"
    return Probe(f"{replica.name} /jwt/auth", f"{replica.url}/jwt/auth?{query}", headers, replica)


def statuses(probes: Sequence[Probe], repeat: int) -> list[tuple[str, int]]:
    """Every probe `repeat` times, each on a new connection."""
    return [(p.label, request(p.url, headers=p.headers)) for p in probes for _ in range(repeat)]


def wait_all(
    probes: Sequence[Probe],
    accept: Callable[[int], bool],
    *,
    repeat: int,
    timeout: float = 5.0,
    pause: float = 0.0,
) -> tuple[float, list[tuple[str, int]]]:
    """Poll (one request at a time, each on a new connection) until one whole round of probes is accepted, and every
    worker of each probe's replica gave some of the answers accepted since the last one that was not (SO_REUSEPORT
    hashes each connection onto a worker: six of them can all land on one, and the other may still answer the old
    state); wait `pause` seconds after a round that was not accepted (bounding the rejected secrets a poll sends:
    brute-force bans).

    Returns (T, the last answers not accepted): T is the monotonic time the first request after the last
    non-accepted answer was sent, i.e. from T on every answer was accepted. Fails with the statuses after `timeout`.
    """
    deadline = time.monotonic() + timeout
    stale: list[tuple[str, int]] = []
    streak: list[tuple[Probe, str]] = []  # the answers accepted since the last one that was not: probe, request id
    since = time.monotonic()
    while True:
        round_ok = last_refused = True
        for probe in probes:
            for _ in range(repeat):
                request_id = f"probe-{uuid.uuid4().hex}"
                status = request(probe.url, headers={**probe.headers, "X-Request-Id": request_id})
                last_refused = not accept(status)
                if not last_refused:
                    streak.append((probe, request_id))
                    continue
                round_ok, streak = False, []
                stale = [*stale[-7:], (probe.label, status)]
                since = time.monotonic()  # the next request is sent no earlier than this
                if since > deadline:
                    raise AssertionError(f"not seen everywhere after {timeout} s: {stale}")
        if round_ok and _every_worker_answered(streak):
            return since, stale
        if time.monotonic() > deadline:
            raise AssertionError(f"not every worker answered within {timeout} s: {stale}")
        if pause:
            time.sleep(pause)
            if last_refused:
                since = time.monotonic()


def _every_worker_answered(answers: Sequence[tuple[Probe, str]], timeout: float = 5.0) -> bool:
    """Whether every worker of a multi-worker replica gave some of the `answers` (request ids) to each of its probes,
    as the replica's access log tells; waits for the lines to be written (the workers log through the parent)."""
    asked: dict[str, tuple[Replica, set[str]]] = {}  # by probe label
    for probe, request_id in answers:
        if probe.replica is not None and probe.replica.workers > 1:
            asked.setdefault(probe.label, (probe.replica, set()))[1].add(request_id)
    deadline = time.monotonic() + timeout
    for label, (replica, ids) in asked.items():
        while True:
            logged = {e["request_id"]: e.get("worker") for e in replica.access_log() if e.get("request_id") in ids}
            if len(logged) == len(ids) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert len(logged) == len(ids), f"{label}: {len(ids) - len(logged)} answers missing from the log"
        if set(logged.values()) != set(range(replica.workers)):
            return False
    return True


@dataclass
class Project:
    id: int
    path: str


def new_project(base: str, token: str, name: str, *, tls: ssl.SSLContext | None = None) -> Project:
    group = api(base, token, "POST", "/groups", {"name": name, "path": name}, tls=tls)
    body = {"name": "app", "path": "app", "namespace_id": group["id"]}
    project = api(base, token, "POST", "/projects", body, tls=tls)
    return Project(project["id"], project["path_with_namespace"])


def deploy_token(
    base: str,
    token: str,
    project: Project,
    *,
    expires_at: str | None = None,
    scopes: Sequence[str] = (),
    tls: ssl.SSLContext | None = None,
    name: str = "replicas",
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "scopes": list(scopes or ("read_repository", "read_registry"))}
    if expires_at is not None:
        body["expires_at"] = expires_at
    created: dict[str, Any] = api(base, token, "POST", f"/projects/{project.id}/deploy_tokens", body, tls=tls)
    return created


@dataclass
class Cluster:
    """Two replicas (`gateway serve --workers N` each) on one database, and the admin's token."""

    a: Replica
    b: Replica
    root_token: str
    database: str

    @property
    def replicas(self) -> tuple[Replica, Replica]:
        return self.a, self.b


@contextmanager
def two_replicas(
    base: Path,
    *,
    database: str,
    workers: int,
    postgres: Callable[[], pg.Cluster],
    sections: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[Cluster]:
    """An initialized installation under `base` on SQLite, or on a new database of the PostgreSQL cluster that
    `postgres()` returns (asked only then), served by replicas "a" and "b"."""
    tables: dict[str, dict[str, Any]] = {name: dict(values) for name, values in (sections or {}).items()}
    if database == "postgresql":
        dsn = asyncio.run(postgres().create_database(f"replicas_{uuid.uuid4().hex[:12]}"))
        tables.setdefault("storage", {})["database"] = dsn
    config = write_config(base, sections=tables)
    root_token = init(config)
    started: list[Replica] = []
    try:
        for name in ("a", "b"):
            started.append(start_replica(name, config, workers=workers))
        yield Cluster(started[0], started[1], root_token, database)
    finally:
        for replica in started:
            replica.stop()
