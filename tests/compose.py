"""docker-compose.yml read the way Docker reads it, for tests: services, their mounts, and the gateway configuration
each gateway container loads (GATEWAY_CONFIG → the host file mounted there). Used by tests/unit/test_compose.py
and tests/compose_stack.py."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from gateway.config import Config, from_mapping

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
# The environment variables the gateway reads (gateway/config.py load(); everything else is the TOML file).
GATEWAY_ENVIRONMENT = {"GATEWAY_CONFIG"}
# Where the images of docker-compose.yml read their configuration files.
REGISTRY_CONFIG = "/etc/docker/registry/config.yml"
NGINX_CONFIG = "/etc/nginx/nginx.conf"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


@dataclass(frozen=True)
class Mount:
    source: str  # a named volume or a host path (relative to docker-compose.yml)
    target: PurePosixPath
    read_only: bool

    @property
    def is_volume(self) -> bool:
        return not self.source.startswith((".", "/"))


def mounts(service: dict[str, Any]) -> list[Mount]:
    found = []
    for entry in service.get("volumes", []):
        source, target, *mode = entry.split(":")
        found.append(Mount(source, PurePosixPath(target), mode == ["ro"]))
    return found


def mount_at(service: dict[str, Any], target: str) -> Mount:
    """The mount whose target is exactly `target` (a config file mounted into the container)."""
    found = [m for m in mounts(service) if m.target == PurePosixPath(target)]
    assert len(found) == 1, f"{target} is not mounted exactly once: {found}"
    return found[0]


def locate(service: dict[str, Any], path: str) -> tuple[str, PurePosixPath]:
    """(volume or host path, path inside it) of a container path: where a file really lives."""
    inside = PurePosixPath(path)
    best = max(
        (m for m in mounts(service) if inside == m.target or m.target in inside.parents),
        key=lambda m: len(m.target.parts),
        default=None,
    )
    assert best is not None, f"{path} is not on any volume of the service"
    return best.source, inside.relative_to(best.target)


def gateway_services() -> dict[str, dict[str, Any]]:
    """Services running the gateway image (built from this repository's Dockerfile)."""
    return {name: s for name, s in compose()["services"].items() if s.get("build") in (".", "./")}


def serving(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The gateway replicas (`serve`), as opposed to one-shot commands such as `init`."""
    return {name: s for name, s in services.items() if s["command"][0] == "serve"}


def config_file(service: dict[str, Any]) -> Path:
    """The host file a gateway container reads as its configuration (GATEWAY_CONFIG, mounted as a file)."""
    environment = service.get("environment", {})
    assert set(environment) <= GATEWAY_ENVIRONMENT, f"not read by the gateway: {set(environment) - GATEWAY_ENVIRONMENT}"
    source, inside = locate(service, environment["GATEWAY_CONFIG"])
    assert not inside.parts, "the config file is mounted as a file"
    return ROOT / source


def gateway_config(service: dict[str, Any]) -> tuple[Config, dict[str, Any]]:
    """The service's configuration exactly as the gateway loads it: GATEWAY_CONFIG → the mounted host file."""
    raw = tomllib.loads(config_file(service).read_text())
    folder = PurePosixPath(service["environment"]["GATEWAY_CONFIG"]).parent
    return from_mapping(raw, Path(str(folder))), raw
