"""Launchers of the real servers that tests and benchmarks need: the gateway (`python -m gateway serve`), an
upstream smart-HTTP git server (nginx + fcgiwrap + git http-backend, shared/notes/git.md §4), a container registry.

Each launcher returns an object with the URL and a stop() that stops every process it started, by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import repositories
from tests.procs import Proc, free_port, processes, running, start, stop, wait_http, wait_tcp, wait_until

ROOT = Path(__file__).resolve().parent.parent
NGINX = "/usr/sbin/nginx"
FCGIWRAP = "/usr/sbin/fcgiwrap"


def git_http_backend() -> str:
    out = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout.strip()
    program = Path(out) / "git-http-backend"
    assert program.is_file(), f"git-http-backend not found in {out}"
    return str(program)


def require(binary: str, package: str) -> None:
    """A missing binary fails the test (CI installs it: scripts/install-test-deps), never skips it."""
    assert Path(binary).is_file() or shutil.which(binary), f"{binary} is missing: apt-get install -y {package}"


@dataclass
class GitUpstream:
    """nginx in front of git http-backend; `username`/`password` are required by nginx when set (auth_basic)."""

    url: str
    repos: Path
    username: str
    password: str
    procs: list[Proc] = field(default_factory=list)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)

    def create_bare(self, full_path: str) -> Path:
        bare = self.repos / f"{full_path}.git"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.repos), "GIT_CONFIG_NOSYSTEM": "1"}
        subprocess.run(
            ["git", "init", "-q", "--bare", "--template=", "--initial-branch=main", str(bare)], check=True, env=env
        )
        # Same server settings as the embedded backend (gateway/repositories.py): packs are kept as packs, partial
        # clones are served.
        for key, value in (("receive.unpackLimit", "1"), *repositories.SERVING_CONFIG):
            subprocess.run(["git", "--git-dir", str(bare), "config", key, value], check=True, env=env)
        return bare


NGINX_CONF = """\
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
daemon off;
worker_processes {workers};
events {{ worker_connections 256; }}
http {{
  {access_log}
  client_body_temp_path {tmp}/body;
  fastcgi_temp_path {tmp}/fcgi;
  proxy_temp_path {tmp}/proxy;
  scgi_temp_path {tmp}/scgi;
  uwsgi_temp_path {tmp}/uwsgi;
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 0;
    location / {{
{location}    }}
  }}
}}
"""


def nginx_conf(tmp: Path, location: str, *, port: int, workers: int = 2, access_log: bool = True) -> str:
    """An nginx.conf running in the foreground with every path under `tmp`, one server on 127.0.0.1:`port` whose
    `location /` holds the given directives."""
    return NGINX_CONF.format(
        user="user root;" if os.geteuid() == 0 else "",
        tmp=tmp,
        workers=workers,
        access_log=f"access_log {tmp}/access.log;" if access_log else "access_log off;",
        port=port,
        location=location,
    )


GIT_LOCATION = """\
      {auth}
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME {backend};
      fastcgi_param GIT_PROJECT_ROOT {repos};
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param PATH_INFO $uri;
      fastcgi_param REMOTE_USER $remote_user;
      fastcgi_buffering {buffering};
      fastcgi_request_buffering off;
      fastcgi_read_timeout 600s;
      fastcgi_pass 127.0.0.1:{fcgi_port};
"""


def start_git_upstream(base: Path, *, username: str = "", password: str = "", buffering: bool = False) -> GitUpstream:
    """nginx + fcgiwrap + git http-backend on a free loopback port, serving bare repositories under base/repos.

    `buffering=False` (git.md §4 recipe) relays every FastCGI record at once as a small HTTP chunk (~4 KB);
    True is nginx's default (fastcgi_buffering on), which sends fewer, larger writes.
    """
    require(NGINX, "nginx-light")
    require(FCGIWRAP, "fcgiwrap")
    tmp = base / "nginx"
    repos = base / "repos"
    for d in (tmp, repos):
        d.mkdir(parents=True, exist_ok=True)
    auth = ""
    if username:
        # RFC 2307 {PLAIN} scheme: nginx reads it natively, no htpasswd tool needed (test credentials only).
        (tmp / "htpasswd").write_text(f"{username}:{{PLAIN}}{password}\n")
        auth = f'auth_basic "git"; auth_basic_user_file {tmp}/htpasswd;'
    port, fcgi_port = free_port(), free_port()
    location = GIT_LOCATION.format(
        auth=auth,
        backend=git_http_backend(),
        repos=repos,
        fcgi_port=fcgi_port,
        buffering="on" if buffering else "off",
    )
    (tmp / "nginx.conf").write_text(nginx_conf(tmp, location, port=port))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp)}
    upstream = GitUpstream(f"http://127.0.0.1:{port}", repos, username, password)
    try:
        # fcgiwrap in its own process group: its prefork children are stopped with it (git.md §4).
        fcgi = start(
            "fcgiwrap", [FCGIWRAP, "-c", "4", "-s", f"tcp:127.0.0.1:{fcgi_port}"], log=tmp / "fcgiwrap.log", env=env
        )
        upstream.procs.append(fcgi)
        wait_tcp(fcgi, fcgi_port)
        nginx = start("nginx", [NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf")], log=tmp / "nginx.out", env=env)
        upstream.procs.append(nginx)
        wait_tcp(nginx, port)
    except BaseException:
        upstream.stop()
        raise
    return upstream


@dataclass
class Gateway:
    url: str
    config: Path
    proc: Proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop(self.proc)


def write_config(
    base: Path,
    *,
    git: Mapping[str, str | int | float] | None = None,
    log_level: str = "info",
    sections: Mapping[str, Mapping[str, str | int | float]] | None = None,
) -> Path:
    """A gateway config under `base` (fast password hashing: these are test users). `sections` adds or overrides
    keys by table name (`{"server": {"shutdown_timeout": 2}, "packages.generic": {"backend": URL}}`)."""
    tables: dict[str, dict[str, str | int | float]] = {
        "storage": {"data_dir": "data", "database": "sqlite:///data/gateway.db", "encryption_key": "data/secret.key"},
        "security": {"password_memory_kib": 64, "password_iterations": 1},
        "log": {"level": log_level},
        "git": {"repositories": "data/repositories", **(git or {})},
    }
    for name, values in (sections or {}).items():
        tables.setdefault(name, {}).update(values)
    lines: list[str] = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value!r}")
    base.mkdir(parents=True, exist_ok=True)
    path = base / "gateway.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def gateway_env(base: Path) -> dict[str, str]:
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}


def run_gateway(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """One `python -m gateway --config CONFIG ARGS…` run to its end (a command, or a `serve` expected to fail)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config), *args],
        cwd=ROOT,
        env=gateway_env(config.parent),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def init_gateway(config: Path) -> None:
    """`gateway init`: data dir, key files, database (the admin it creates is not used by these tests)."""
    result = run_gateway(config, "init")
    assert result.returncode == 0, result.stderr


def start_gateway(config: Path, *args: str) -> Gateway:
    """`python -m gateway serve [args]` on a free port; ready when /-/health answers."""
    port = free_port()
    proc = start(
        "gateway",
        [sys.executable, "-m", "gateway", "--config", str(config), "serve", "--listen", f"127.0.0.1:{port}", *args],
        log=config.parent / "gateway.log",
        env=gateway_env(config.parent),
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(proc, f"{url}/-/health")
    except BaseException:
        stop(proc)
        raise
    return Gateway(url, config, proc)


def start_file_server(folder: Path, port: int | None = None) -> tuple[str, Proc]:
    """bench/servers.py's streaming file server (GET with Content-Length via sendfile, PUT streamed to disk) in its
    own process on `port` (a free one by default, or the same again after it was killed); returns (URL, process)."""
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    proc = start(
        "file server",
        [sys.executable, "-m", "bench.servers", "files", str(port), str(folder)],
        log=folder.parent / f"{folder.name}-files.log",
        cwd=ROOT,
    )
    try:
        wait_tcp(proc, port)
    except BaseException:
        stop(proc)
        raise
    return f"http://127.0.0.1:{port}/", proc


REGISTRY = "/usr/bin/docker-registry"


@contextmanager
def registry(base: Path, certificate: Path, realm: str, port: int | None = None) -> Iterator[str]:
    """docker-registry (distribution 2.8) on loopback with token auth: it trusts JWTs signed by the key of
    `certificate` and sends clients to `realm` (registry.md §6). Ready when /v2/ challenges; yields its URL."""
    assert Path(REGISTRY).exists(), "docker-registry is not installed (scripts/install-test-deps installs it)"
    port = port or free_port()
    config = {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(base / "data")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": uuid.uuid4().hex},
        "auth": {
            "token": {
                "realm": realm,
                "service": "container_registry",
                "issuer": "gitlab-issuer",
                "rootcertbundle": str(certificate),
            }
        },
        "health": {"storagedriver": {"enabled": False}},
    }
    base.mkdir(parents=True, exist_ok=True)
    (base / "config.yml").write_text(json.dumps(config))  # YAML is a superset of JSON
    proc = start("registry", [REGISTRY, "serve", str(base / "config.yml")], log=base / "registry.log")
    with running(proc):
        wait_http(proc, f"http://127.0.0.1:{port}/v2/")  # 401 (a challenge) is an answer
        yield f"http://127.0.0.1:{port}"


START_TIMEOUT = 20.0


class Served:
    """`gateway serve` with its stderr (JSON lines) in a log file; the URL from its "listening on" line."""

    def __init__(self, config: Path, *args: str, name: str = "gateway") -> None:
        self.log = config.parent / f"{name}-{time.monotonic_ns()}.log"
        argv = [sys.executable, "-m", "gateway", "--config", str(config), "serve", *args]
        self.proc: Proc = start(name, argv, log=self.log, env=gateway_env(config.parent), cwd=ROOT)
        self.url = ""
        assert wait_until(self._listening, START_TIMEOUT), f"no 'listening on' line:\n{self.proc.log_tail()}"

    def _listening(self) -> bool:
        self.proc.assert_running()
        for entry in self.entries():
            if str(entry.get("message", "")).startswith("listening on "):
                self.url = entry["message"].removeprefix("listening on ")
                return True
        return False

    def entries(self) -> list[dict[str, Any]]:
        lines = self.log.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]

    def messages(self) -> list[str]:
        return [str(e.get("message", "")) for e in self.entries()]

    def workers(self) -> list[int]:
        """PIDs of the live children of the parent process."""
        return sorted(p.pid for p in processes() if p.ppid == self.proc.pid and p.state not in ("Z", "X"))

    def wait_workers(self, count: int) -> list[int]:
        assert wait_until(lambda: len(self.workers()) == count, START_TIMEOUT), (self.workers(), self.proc.log_tail())
        return self.workers()

    def exit_code(self, timeout: float = 30.0) -> int:
        return self.proc.popen.wait(timeout)
