"""docker-compose.yml's services without a Docker engine: each runs as the program its image runs, in the order of
`depends_on`, reading the very files the compose file mounts; only container names, ports and volume paths are
mapped to loopback and a temp folder. Used by tests/e2e/test_compose_stack.py and test_compose_migration.py."""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tests import pg
from tests.compose import (
    DOCKERFILE,
    NGINX_CONFIG,
    REGISTRY_CONFIG,
    ROOT,
    compose,
    config_file,
    gateway_config,
    gateway_services,
    locate,
    mount_at,
    mounts,
    serving,
)
from tests.procs import Proc, free_port, start, stop, wait_http, wait_tcp
from tests.servers import NGINX, REGISTRY, require

SKOPEO = "/usr/bin/skopeo"


# --- the image: the wheel the Dockerfile installs ----------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """The gateway as the Dockerfile installs it: `pip install .` of exactly the files it copies."""

    wheel: Path
    site: Path  # the wheel unpacked: first on PYTHONPATH, so that this copy (not the checkout) is what runs
    entrypoint: str  # "module:function" of the `gateway` console script (the Dockerfile's ENTRYPOINT)

    def argv(self, command: list[str]) -> list[str]:
        module, function = self.entrypoint.split(":")
        boot = f"import sys; from {module} import {function}; sys.argv[0] = 'gateway'; sys.exit({function}())"
        return [sys.executable, "-c", boot, *command]


def dockerfile_copies() -> list[str]:
    """Sources of the Dockerfile's COPY instructions (the build context is the repository)."""
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            *copied, _destination = line.split()[1:]
            sources.extend(copied)
    return sources


def build_image_wheel(tmp: Path) -> Image:
    context = tmp / "context"
    for source in dockerfile_copies():
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            context.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / source, context / source)
    dist = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), "."],
        cwd=context,
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("*.whl")
    site = tmp / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    (entry_points,) = site.glob("*.dist-info/entry_points.txt")
    parser = configparser.ConfigParser()
    parser.read(entry_points)
    return Image(wheel, site, parser["console_scripts"]["gateway"])


# --- the stack ---------------------------------------------------------------------------------------------------


def localize(text: str, mapping: Mapping[str, str], what: str) -> str:
    """`text` with every key replaced; each must occur, so that a changed deploy file fails here, loudly."""
    for old, new in mapping.items():
        assert old in text, f"{what}: {old!r} not found (update the mapping of tests/e2e/test_compose_stack.py)"
        text = text.replace(old, new)
    return text


@dataclass
class Stack:
    tmp: Path
    image: Image
    lb_port: int
    registry_port: int
    replica_ports: dict[str, int]
    volumes: dict[str, Path]
    configs: dict[str, Path] = field(default_factory=dict)  # gateway service → its localized config file
    procs: dict[str, Proc] = field(default_factory=dict)
    root_token: str = ""
    root_password: str = ""

    @property
    def url(self) -> str:
        """What users type: the load balancer (server.external_url)."""
        return f"http://127.0.0.1:{self.lb_port}"

    def env(self, service: str) -> dict[str, str]:
        environment = {key: str(value) for key, value in compose()["services"][service].get("environment", {}).items()}
        environment["GATEWAY_CONFIG"] = str(self.configs[service])
        home = self.tmp / "home"
        home.mkdir(exist_ok=True)
        path = os.environ.get("PATH", "/usr/bin:/bin")
        return {**environment, "PATH": path, "HOME": str(home), "LANG": "C.UTF-8", "PYTHONPATH": str(self.image.site)}

    def run(self, service: str, command: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        """A one-shot gateway service (`gateway-init`) to completion, or another command in a service's container."""
        argv = self.image.argv(command or compose()["services"][service]["command"])
        return subprocess.run(argv, cwd=self.tmp, env=self.env(service), capture_output=True, text=True, timeout=120)

    def start_replica(self, service: str) -> None:
        definition = compose()["services"][service]
        argv = self.image.argv(definition["command"])
        log = self.tmp / f"{service}.log"
        proc = start(service, argv, log=log, env=self.env(service), cwd=self.tmp)
        # The compose healthcheck's URL, on this replica's port.
        (health,) = re.findall(r"http://127\.0\.0\.1:\d+(/[\w/.-]+)", " ".join(definition["healthcheck"]["test"]))
        try:
            wait_http(proc, f"http://127.0.0.1:{self.replica_ports[service]}{health}", timeout=30)
        except BaseException:
            stop(proc)
            raise
        self.procs[service] = proc

    def access_paths(self, service: str) -> list[str]:
        log = self.tmp / f"{service}.log"
        lines = [json.loads(line) for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]
        return [entry["path"] for entry in lines if entry.get("logger") == "gateway.access"]

    def host_path(self, service: str, path: str) -> Path:
        """Where a path inside a service's container lives here (it must be on one of its volumes)."""
        volume, inside = locate(compose()["services"][service], path)
        return self.volumes[volume] / inside

    def start_services(self) -> None:
        """What `docker compose up` starts after `gateway-init` completed: the replicas (healthy), the registry (it
        reads the certificate init made), then the load balancer."""
        services = compose()["services"]
        for name in serving(gateway_services()):
            self.start_replica(name)
        conf = self.tmp / "registry.yml"
        raw = (ROOT / mount_at(services["registry"], REGISTRY_CONFIG).source).read_text()
        conf.write_text(localize(raw, registry_mapping(self), "registry.yml"))
        registry = start("registry", [REGISTRY, "serve", str(conf)], log=self.tmp / "registry.log")
        self.procs["registry"] = registry
        wait_http(registry, f"http://127.0.0.1:{self.registry_port}/v2/")
        lb = self.tmp / "lb"
        lb.mkdir()
        conf = lb / "nginx.conf"
        raw = (ROOT / mount_at(services["lb"], NGINX_CONFIG).source).read_text()
        conf.write_text(localize(raw, nginx_mapping(self), "nginx.conf"))
        directives = f"daemon off; pid {lb}/nginx.pid;" + (" user root;" if os.geteuid() == 0 else "")
        argv = [NGINX, "-p", str(lb), "-e", str(lb / "error.log"), "-c", str(conf), "-g", directives]
        self.procs["lb"] = start("lb", argv, log=lb / "out.log")
        wait_tcp(self.procs["lb"], self.lb_port)

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            stop(proc)


def gateway_mapping(stack: Stack, service: str, postgres: pg.Cluster) -> dict[str, str]:
    config, _ = gateway_config(compose()["services"][service])
    lb = compose()["services"]["lb"]
    data = next(m for m in mounts(compose()["services"][service]) if m.is_volume)
    mapping = {
        f'"{config.server.listen}"': f'"127.0.0.1:{stack.replica_ports.get(service, 0)}"',
        urlsplit(config.server.external_url).netloc: f"127.0.0.1:{stack.lb_port}",
        lb["networks"]["gateway-net"]["ipv4_address"]: "127.0.0.1",
        urlsplit(config.storage.database).netloc.split("@")[1]: f"127.0.0.1:{postgres.port}",
        urlsplit(config.registry.backend).netloc: f"127.0.0.1:{stack.registry_port}",
        str(data.target): str(stack.volumes[data.source]),
    }
    return mapping


def registry_mapping(stack: Stack) -> dict[str, str]:
    registry = compose()["services"]["registry"]
    raw = (ROOT / mount_at(registry, REGISTRY_CONFIG).source).read_text()
    addr = re.search(r"addr:\s*(\S+)", raw)
    realm = re.search(r"realm:\s*(\S+)", raw)
    assert addr is not None and realm is not None
    mapping = {addr.group(1): f"127.0.0.1:{stack.registry_port}", urlsplit(realm.group(1)).netloc: stack.url[7:]}
    for mount in mounts(registry):
        if mount.is_volume:
            mapping[str(mount.target)] = str(stack.volumes[mount.source])
    return mapping


def nginx_mapping(stack: Stack) -> dict[str, str]:
    temp = stack.tmp / "lb"
    mapping = {
        f"{name}:{gateway_config(s)[0].server.listen.rsplit(':', 1)[1]}": f"127.0.0.1:{stack.replica_ports[name]}"
        for name, s in serving(gateway_services()).items()
    }
    (published,) = compose()["services"]["lb"]["ports"]
    mapping[f"listen {published.split(':')[1].strip()};"] = f"listen 127.0.0.1:{stack.lb_port};"
    # The image's own writable folders, here under the temp folder.
    mapping["http {"] = "http {\n" + "".join(
        f"  {kind}_temp_path {temp}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return mapping


async def create_database(postgres: pg.Cluster) -> None:
    """What the postgres image does with POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB (the role here is not a
    superuser: the gateway must not need one)."""
    env = compose()["services"]["postgres"]["environment"]
    user, password, database = env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]
    assert re.fullmatch(r"[a-z_][a-z0-9_]*", user) and re.fullmatch(r"[a-z_][a-z0-9_]*", database)
    assert "'" not in password
    conn = await postgres.admin()
    try:
        await conn.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        await conn.execute(f"CREATE DATABASE {database} OWNER {user} TEMPLATE template0")
    finally:
        await conn.close()


def prepare(tmp: Path, postgres: pg.Cluster) -> Stack:
    """Everything before the first `docker compose up`: the image, the volumes, the ports, the gateway configuration
    files localized, and the `postgres` service's database (in `postgres`, a cluster of this test module)."""
    for binary, package in ((NGINX, "nginx-light"), (REGISTRY, "docker-registry"), (SKOPEO, "skopeo")):
        require(binary, package)
    volumes = {name: tmp / "volumes" / name for name in compose()["volumes"]}
    for folder in volumes.values():
        folder.mkdir(parents=True)
    replicas = serving(gateway_services())
    stack = Stack(
        tmp,
        build_image_wheel(tmp / "image"),
        free_port(),
        free_port(),
        {name: free_port() for name in replicas},
        volumes,
    )
    asyncio.run(create_database(postgres))
    for name, service in gateway_services().items():
        text = localize(config_file(service).read_text(), gateway_mapping(stack, name, postgres), name)
        stack.configs[name] = tmp / f"{name}.toml"
        stack.configs[name].write_text(text)
    return stack


def first_start(stack: Stack) -> None:
    """`docker compose up` on empty volumes: gateway-init makes the keys and root (its token and password kept in
    `stack`), then the other services start."""
    init = stack.run("gateway-init")
    assert init.returncode == 0, init.stderr
    stack.root_token = init.stdout.strip().splitlines()[-1]
    password = re.search(r"root password \(shown only now, for the web UI\): (\S+)", init.stderr)
    assert password is not None, init.stderr
    stack.root_password = password.group(1)
    stack.start_services()


async def skopeo(stack: Stack, *args: str) -> tuple[int, str]:
    home = stack.tmp / "skopeo-home"
    home.mkdir(exist_ok=True)
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin"), "REGISTRY_AUTH_FILE": str(home / "a.json")}
    proc = await asyncio.create_subprocess_exec(
        SKOPEO, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode or 0, out.decode(errors="replace")
