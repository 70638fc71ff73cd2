"""docker-compose.yml (no Docker engine here): it parses, and what it mounts agrees with the gateway's configuration.

The config files and environment of the gateway containers use only real keys (gateway.config.from_mapping rejects
unknown ones); the registry's token settings, the load balancer, PostgreSQL and the shared volume agree with them.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.config import Config, from_mapping
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
# The environment variables the gateway reads (gateway/config.py load(); everything else is the TOML file).
GATEWAY_ENVIRONMENT = {"GATEWAY_CONFIG"}


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


def gateway_config(service: dict[str, Any]) -> tuple[Config, dict[str, Any]]:
    """The service's configuration exactly as the gateway loads it: GATEWAY_CONFIG → the mounted host file."""
    environment = service.get("environment", {})
    assert set(environment) <= GATEWAY_ENVIRONMENT, f"not read by the gateway: {set(environment) - GATEWAY_ENVIRONMENT}"
    path = PurePosixPath(environment["GATEWAY_CONFIG"])
    source, inside = locate(service, str(path))
    assert not inside.parts, "the config file is mounted as a file"
    raw = tomllib.loads((ROOT / source).read_text())
    return from_mapping(raw, Path(str(path.parent))), raw


def test_compose_file_parses_and_has_the_parts_of_a_scaled_out_gateway() -> None:
    services = compose()["services"]
    images = {name: str(s.get("image", "")) for name, s in services.items()}
    assert images["postgres"].startswith("postgres:15")
    assert images["registry"].startswith("registry:2")
    assert images["lb"].startswith(("nginx:", "haproxy:"))
    gateways = gateway_services()
    serving = [name for name, s in gateways.items() if s["command"][0] == "serve"]
    assert len(serving) >= 2, "two replicas behind the load balancer"
    assert [s["command"] for name, s in gateways.items() if name not in serving] == [["init"]]
    assert (ROOT / "Dockerfile").is_file()


@pytest.mark.parametrize("name", sorted(gateway_services()))
def test_gateway_services_use_only_real_configuration_keys(name: str) -> None:
    config, raw = gateway_config(gateway_services()[name])  # from_mapping raises on an unknown key
    assert raw, "a config file with settings"
    assert config.storage.database.startswith("postgresql://")
    assert config.git.backend == "embedded"


def test_unknown_keys_would_be_caught() -> None:
    """The check above can fail: the same loader rejects a misspelt key."""
    _, raw = gateway_config(gateway_services()["gateway-a"])
    raw["server"]["wrokers"] = 2
    with pytest.raises(ConfigError, match=r"unknown configuration key: server\.wrokers"):
        from_mapping(raw, Path("/etc/gateway"))


def test_replicas_share_keys_database_and_repositories() -> None:
    gateways = gateway_services()
    configs = {name: gateway_config(s)[0] for name, s in gateways.items()}
    first = next(iter(configs.values()))
    for name, config in configs.items():
        assert config.storage.database == first.storage.database, name
        for path in (
            config.storage.encryption_key,
            config.registry.signing_key,
            config.registry.certificate,
            config.git.repositories,
            config.storage.data_dir,
        ):
            source, _ = locate(gateways[name], path)
            assert source == "gateway-data", (name, path)  # one named volume, written by gateway-init
    assert "gateway-data" in compose()["volumes"]
    for name, service in gateways.items():
        if service["command"][0] == "serve":
            assert service["depends_on"]["gateway-init"]["condition"] == "service_completed_successfully", name


def test_registry_token_settings_agree_with_the_gateway() -> None:
    services = compose()["services"]
    registry = services["registry"]
    config_mount = next(m for m in mounts(registry) if m.target == PurePosixPath("/etc/docker/registry/config.yml"))
    registry_config = yaml.safe_load((ROOT / config_mount.source).read_text())
    token = registry_config["auth"]["token"]
    gateways = gateway_services()
    for name, service in gateways.items():
        config, _ = gateway_config(service)
        assert token["service"] == config.registry.service, name
        assert token["issuer"] == config.registry.issuer, name
        realm = urlsplit(token["realm"])
        assert realm.path == "/jwt/auth"
        assert f"{realm.scheme}://{realm.netloc}" == config.server.external_url.rstrip("/"), name
        # The bundle the registry reads is the very file the gateway's certificate setting names.
        assert locate(registry, token["rootcertbundle"]) == locate(service, config.registry.certificate), name
        # /v2/ goes to the registry service, on the port it listens on.
        backend = urlsplit(config.registry.backend)
        assert backend.hostname == "registry"
        assert backend.port == int(registry_config["http"]["addr"].rsplit(":", 1)[1])
    shared = next(m for m in mounts(registry) if m.source == "gateway-data")
    assert shared.read_only, "the registry only reads the certificate"


def test_postgres_settings_agree_with_the_database_url() -> None:
    services = compose()["services"]
    env = services["postgres"]["environment"]
    for name, service in gateway_services().items():
        url = urlsplit(gateway_config(service)[0].storage.database)
        assert (url.hostname, url.port or 5432) == ("postgres", 5432), name
        assert (url.username, url.password, url.path.lstrip("/")) == (
            env["POSTGRES_USER"],
            env["POSTGRES_PASSWORD"],
            env["POSTGRES_DB"],
        ), name
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name
    # Every worker of every replica holds up to pool_size connections: below PostgreSQL's default max_connections.
    serving = [gateway_config(s)[0] for s in gateway_services().values() if s["command"][0] == "serve"]
    assert sum(c.server.workers * c.storage.pool_size for c in serving) < 100


def test_load_balancer_reaches_every_replica_and_is_the_trusted_proxy() -> None:
    services = compose()["services"]
    lb = services["lb"]
    conf_mount = next(m for m in mounts(lb) if m.target == PurePosixPath("/etc/nginx/nginx.conf"))
    nginx = (ROOT / conf_mount.source).read_text()
    upstreams = set(re.findall(r"^\s*server\s+([\w.-]+:\d+)", nginx, re.M))
    serving = {name: s for name, s in gateway_services().items() if s["command"][0] == "serve"}
    expected = set()
    for name, service in serving.items():
        config, _ = gateway_config(service)
        expected.add(f"{name}:{config.server.listen.rsplit(':', 1)[1]}")
        assert config.server.listen.startswith("0.0.0.0:"), "reachable from the load balancer's container"
        assert services["lb"]["networks"]["gateway-net"]["ipv4_address"] in config.server.trusted_proxies, name
        # Clients use external_url: the load balancer publishes that port.
        assert str(urlsplit(config.server.external_url).port) in [p.split(":")[0] for p in lb["ports"]], name
    assert upstreams == expected
    listen = re.search(r"^\s*listen\s+(\d+);", nginx, re.M)
    assert listen is not None
    assert any(p.endswith(f":{listen.group(1)}") for p in lb["ports"])
    # Streaming, as the gateway itself does: no request/response buffering, no body size limit.
    for directive in ("proxy_request_buffering off;", "proxy_buffering off;", "client_max_body_size 0;"):
        assert directive in nginx
