"""docker-compose.yml (no Docker engine here): it parses, and what it mounts agrees with the gateway's configuration.

The config files and environment of the gateway containers use only real keys (gateway.config.from_mapping rejects
unknown ones); the registry's token settings, the load balancer, PostgreSQL and the shared volume agree with them.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.config import Config, from_mapping, sqlite_path
from gateway.errors import ConfigError
from tests.compose import (
    DOCKERFILE,
    NGINX_CONFIG,
    REGISTRY_CONFIG,
    ROOT,
    compose,
    gateway_config,
    gateway_services,
    locate,
    mount_at,
    mounts,
    serving,
)


def test_compose_file_parses_and_has_the_parts_of_a_scaled_out_gateway() -> None:
    services = compose()["services"]
    images = {name: str(s.get("image", "")) for name, s in services.items()}
    assert images["postgres"].startswith("postgres:15")
    assert images["registry"].startswith("registry:2")
    assert images["lb"].startswith(("nginx:", "haproxy:"))
    gateways = gateway_services()
    replicas = serving(gateways)
    assert len(replicas) >= 2, "two replicas behind the load balancer"
    assert [s["command"] for name, s in gateways.items() if name not in replicas] == [["init"]]
    assert DOCKERFILE.is_file()


@pytest.mark.parametrize("name", sorted(gateway_services()))
def test_gateway_services_use_only_real_configuration_keys(name: str) -> None:
    config, raw = gateway_config(gateway_services()[name])  # from_mapping raises on an unknown key
    assert raw, "a config file with settings"
    assert config.storage.database.startswith("postgresql://")
    assert config.git.backend == "embedded"


@pytest.mark.parametrize("name", sorted(serving(gateway_services())))
def test_a_stop_waits_for_the_transfers_in_flight(name: str) -> None:
    """`docker compose stop` sends SIGTERM, then SIGKILL after stop_grace_period (10 s by default): longer than the
    gateway's own deadline for transfers in flight, as the systemd unit's TimeoutStopSec (found by a walkthrough)."""
    from gateway import workers

    service = gateway_services()[name]
    config, _ = gateway_config(service)
    grace = re.fullmatch(r"(\d+)s", str(service.get("stop_grace_period", "10s")))
    assert grace is not None
    assert int(grace.group(1)) > config.server.shutdown_timeout + workers.STOP_GRACE


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
    for name, service in serving(gateways).items():
        assert service["depends_on"]["gateway-init"]["condition"] == "service_completed_successfully", name


def test_registry_token_settings_agree_with_the_gateway() -> None:
    services = compose()["services"]
    registry = services["registry"]
    registry_config = yaml.safe_load((ROOT / mount_at(registry, REGISTRY_CONFIG).source).read_text())
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
    replicas = [gateway_config(s)[0] for s in serving(gateway_services()).values()]
    assert sum(c.server.workers * c.storage.pool_size for c in replicas) < 100


def test_load_balancer_reaches_every_replica_and_is_the_trusted_proxy() -> None:
    services = compose()["services"]
    lb = services["lb"]
    nginx = (ROOT / mount_at(lb, NGINX_CONFIG).source).read_text()
    upstreams = set(re.findall(r"^\s*server\s+([\w.-]+:\d+)", nginx, re.M))
    expected = set()
    for name, service in serving(gateway_services()).items():
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


LAYOUT = [
    ("storage", "encryption_key"),
    ("git", "repositories"),
    ("registry", "signing_key"),
    ("registry", "certificate"),
]


def readme_section(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n### {heading}\n")
    ends = [end for end in (text.find("\n## ", start + 1), text.find("\n### ", start + 1)) if end > 0]
    return text[start : min(ends, default=len(text))]


@pytest.mark.parametrize(("section", "key"), LAYOUT)
def test_a_default_data_folder_has_the_layout_the_volume_needs(section: str, key: str) -> None:
    """README "From one machine into docker-compose" copies ./data whole onto the volume: every file must land
    where deploy/gateway.toml looks for it."""
    default, (deployed, _) = from_mapping({}, ROOT), gateway_config(compose()["services"]["gateway-init"])

    def inside(config: Config) -> PurePosixPath:
        path = PurePosixPath(getattr(getattr(config, section), key))
        return path.relative_to(config.storage.data_dir)

    assert inside(default) == inside(deployed)


def test_the_migration_copies_the_database_from_where_the_data_folder_lands() -> None:
    default, (deployed, _) = from_mapping({}, ROOT), gateway_config(compose()["services"]["gateway-init"])
    section = readme_section("From one machine into docker-compose")
    (source,) = re.findall(r"store copy --from sqlite:///(\S+)", section)
    database = sqlite_path(default).relative_to(default.storage.data_dir)
    assert PurePosixPath(source) == PurePosixPath(deployed.storage.data_dir) / database
    commands = section.replace("\\\n", " ").splitlines()
    (copy,) = [line for line in commands if " gateway-init " in line and "cp -a /old/. " in line]
    target = copy.split("cp -a /old/. ", 1)[1].split()[0]
    assert PurePosixPath(target) == PurePosixPath(deployed.storage.data_dir)
