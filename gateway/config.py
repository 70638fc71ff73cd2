"""Configuration: TOML (tomllib) → frozen dataclasses.

Unknown keys are rejected and every error names the key path; relative paths resolve against the config file's folder.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from ipaddress import ip_network
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from gateway.errors import ConfigError


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:8080"
    # Public origin used in links the gateway hands out (registry realm, package indexes, UI).
    external_url: str = ""
    # Largest non-streamed request body (API JSON, forms); larger bodies get 413.
    max_body_size: int = 1024 * 1024
    # Addresses or CIDR ranges of reverse proxies whose X-Forwarded-For is believed (gateway/clients.py).
    trusted_proxies: tuple[str, ...] = ()
    workers: int = 1
    # Seconds that requests in flight (a clone, a layer download) get to finish after SIGTERM/SIGINT; new
    # connections are refused at once, and whatever still runs at the deadline is cut (the client sees an error).
    shutdown_timeout: float = 60.0
    # TLS on this port (gateway/tls.py): a PEM certificate chain and its private key, both or neither. Empty: plain
    # HTTP, for a gateway behind a TLS-terminating load balancer.
    tls_certificate: str = ""
    tls_key: str = ""


@dataclass(frozen=True)
class StorageConfig:
    database: str = "sqlite:///data/gateway.db"
    data_dir: str = "data"
    # AES-256-GCM key (file) for the few secrets that must be recovered (gitlab-deploy-token → CI variables).
    encryption_key: str = "data/secret.key"
    # Most connections one process holds to PostgreSQL (asyncpg pool); ignored for SQLite.
    pool_size: int = 10
    # SQLite only: seconds a write waits for another process's lock before the request gets 503.
    busy_timeout: float = 5.0


@dataclass(frozen=True)
class GitConfig:
    backend: str = "embedded"
    # Bare repositories of the embedded backend.
    repositories: str = "data/repositories"
    # Upper bound of concurrent `git http-backend` children (embedded backend).
    max_processes: int = 16
    # Credentials the gateway presents to an upstream smart-HTTP backend (never the client's).
    backend_username: str = ""
    backend_password: str = ""
    # Longest silence (seconds) on either side of a git request before it is cut: the backend's next output or
    # the client's next chunk. Not a limit on the whole transfer (a large clone may take longer).
    timeout: float = 600.0


@dataclass(frozen=True)
class RegistryConfig:
    backend: str = ""
    service: str = "container_registry"
    issuer: str = "gitlab-issuer"
    signing_key: str = "data/registry.key"
    certificate: str = "data/registry.crt"
    token_ttl: int = 300
    algorithm: Literal["RS256", "ES256"] = "RS256"
    # Also send the certificate as the JWT `x5c` header: distribution 3.x looks keys up by x5c or JWK thumbprint,
    # not by the libtrust kid that 2.8 uses (registry.md §1). The registry then enforces the cert's validity dates.
    include_x5c: bool = False
    # Longest silence (seconds) from the registry: before its response headers or between two body chunks.
    timeout: float = 600.0
    # Child processes per worker that sign JWTs (gateway/signing_processes.py): -1 = the cores shared among the
    # workers, 0 = none (the worker signs on its event loop).
    signing_processes: int = -1


@dataclass(frozen=True)
class SecurityConfig:
    # Argon2id parameters (OWASP minimum: 19 MiB, 2 iterations, 1 lane).
    password_memory_kib: int = 19 * 1024
    password_iterations: int = 2


@dataclass(frozen=True)
class BruteForceConfig:
    """Failed authentication ban (gateway/bruteforce.py); defaults are GitLab's (rate_limits/abuse_bans)."""

    enabled: bool = True
    # This many failed authentications from one client address within `find_time` seconds ban it for `ban_time`
    # seconds (GitLab's rack_attack git_basic_auth: maxretry, findtime, bantime).
    max_failures: int = 30
    find_time: int = 180
    ban_time: int = 3600
    # Addresses and CIDR ranges never counted nor banned (GitLab's ip_whitelist), e.g. a CI runner's NAT.
    allowlist: tuple[str, ...] = ()


@dataclass(frozen=True)
class PackageBackendConfig:
    # "" = not served, or the embedded store where the format has one (generic, maven); else an http(s) URL
    # template of the backend's root with optional {project_id} / {project_path} placeholders (docs/packages.md).
    backend: str = ""
    # Credentials the gateway presents to the backend (never the client's own).
    backend_username: str = ""
    backend_password: str = ""


@dataclass(frozen=True)
class PackagesConfig:
    # Largest package upload (bytes); larger uploads get 413. GitLab's default for generic packages is 5 GB.
    max_upload_size: int = 5 * 1024**3
    # Largest index or metadata document read whole from a backend to rewrite its URLs (bytes).
    max_document_size: int = 16 * 1024 * 1024
    # Longest silence (seconds) from a package backend: before its response headers or between two body chunks.
    timeout: float = 600.0
    pypi: PackageBackendConfig = field(default_factory=PackageBackendConfig)
    npm: PackageBackendConfig = field(default_factory=PackageBackendConfig)
    maven: PackageBackendConfig = field(default_factory=PackageBackendConfig)
    generic: PackageBackendConfig = field(default_factory=PackageBackendConfig)


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class MetricsConfig:
    # GET /-/metrics (Prometheus text format); false: it answers 404.
    enabled: bool = True
    # Who may scrape (CIDRs), as GitLab's monitoring.ip_whitelist: loopback only by default. Others get 404.
    allowed_ips: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class AuditConfig:
    # Which authentication decisions (git, /jwt/auth, packages, API) are recorded: "all", only "denied" ones, or
    # "off". Management changes (tokens, members, personal access tokens) are always recorded.
    authentication: Literal["all", "denied", "off"] = "all"
    # Events older than this many days are deleted (checked hourly).
    retention_days: int = 90
    # Seconds between two batched writes of buffered decisions (and of tokens' last use).
    flush_interval: float = 1.0
    # Most distinct decisions buffered between two writes; beyond it new ones are dropped (counted, warned).
    max_pending: int = 10_000


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    git: GitConfig = field(default_factory=GitConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    bruteforce: BruteForceConfig = field(default_factory=BruteForceConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    packages: PackagesConfig = field(default_factory=PackagesConfig)
    # Folder that relative paths were resolved against (the config file's folder, or the CWD).
    base_dir: Path = field(default_factory=Path.cwd)

    @property
    def data_dir(self) -> Path:
        return Path(self.storage.data_dir)


# Keys whose values are file paths: resolved against the config file's folder.
_PATH_KEYS = {
    ("server", "tls_certificate"),
    ("server", "tls_key"),
    ("storage", "data_dir"),
    ("storage", "encryption_key"),
    ("git", "repositories"),
    ("registry", "signing_key"),
    ("registry", "certificate"),
}


def _check_type(path: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"{path}: must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: must be a list of strings")
        return tuple(value)
    if origin in (types.UnionType, typing.Union):
        raise ConfigError(f"{path}: unsupported type")  # pragma: no cover - no such field
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        # A nested table (packages.<format>): validated like a section, its key path in every error.
        return _section(path, annotation, value, Path())
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"{path}: must be an integer, got a boolean")
    if not isinstance(value, annotation):
        raise ConfigError(f"{path}: must be {annotation.__name__}, got {type(value).__name__}")
    return value


def _section(name: str, cls: type[Any], raw: Any, base: Path) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"unknown configuration key: {name}.{key}")
        value = _check_type(f"{name}.{key}", value, hints[key])
        if (name, key) in _PATH_KEYS:
            value = str((base / value).resolve()) if value else value
        values[key] = value
    # Defaults that are paths resolve against the same base so a missing key behaves like its default.
    for key in known - values.keys():
        if (name, key) in _PATH_KEYS:
            default = getattr(cls(), key)
            values[key] = str((base / default).resolve()) if default else default  # empty: not set
    return cls(**values)


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "storage": StorageConfig,
    "git": GitConfig,
    "registry": RegistryConfig,
    "security": SecurityConfig,
    "bruteforce": BruteForceConfig,
    "log": LogConfig,
    "metrics": MetricsConfig,
    "audit": AuditConfig,
    "packages": PackagesConfig,
}


def from_mapping(raw: dict[str, Any], base_dir: Path) -> Config:
    """Build a validated Config from a parsed TOML mapping; relative paths resolve against base_dir."""
    for key in raw:
        if key not in _SECTIONS:
            raise ConfigError(f"unknown configuration key: {key}")
    sections = {name: _section(name, cls, raw.get(name, {}), base_dir) for name, cls in _SECTIONS.items()}
    config = Config(base_dir=base_dir, **sections)
    _validate(config)
    return config


def _validate(config: Config) -> None:
    host, sep, port = config.server.listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"server.listen: expected HOST:PORT, got {config.server.listen!r}")
    if bool(config.server.tls_certificate) != bool(config.server.tls_key):
        raise ConfigError("server.tls_certificate and server.tls_key: set both (TLS) or neither (plain HTTP)")
    if config.server.external_url:
        parts = urlsplit(config.server.external_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError("server.external_url: must be an http(s) URL")
    db = config.storage.database
    if not (db.startswith("sqlite:///") or db.startswith(("postgresql://", "postgres://"))):
        raise ConfigError("storage.database: must start with sqlite:/// or postgresql://")
    if config.git.backend != "embedded":
        parts = urlsplit(config.git.backend)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError('git.backend: must be "embedded" or an http(s) URL')
    if config.registry.backend:
        parts = urlsplit(config.registry.backend)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError("registry.backend: must be an http(s) URL")
    if not 60 <= config.registry.token_ttl <= 86400:
        # Clients raise expires_in below 60 s to 60 s (containers/image), so a shorter JWT would expire in cache.
        raise ConfigError("registry.token_ttl: must be between 60 and 86400 seconds")
    if config.server.max_body_size < 1024:
        raise ConfigError("server.max_body_size: must be at least 1024 bytes")
    if config.git.max_processes < 1:
        raise ConfigError("git.max_processes: must be at least 1")
    if not -1 <= config.registry.signing_processes <= 64:
        raise ConfigError("registry.signing_processes: must be -1 (the cores), 0 (none) or up to 64")
    if config.storage.pool_size < 1:
        raise ConfigError("storage.pool_size: must be at least 1")
    if config.server.workers < 1:
        raise ConfigError("server.workers: must be at least 1")
    for key, value in (
        ("server.shutdown_timeout", config.server.shutdown_timeout),
        ("storage.busy_timeout", config.storage.busy_timeout),
        ("git.timeout", config.git.timeout),
        ("registry.timeout", config.registry.timeout),
        ("packages.timeout", config.packages.timeout),
    ):
        if not value > 0:
            raise ConfigError(f"{key}: must be a positive number of seconds")
    _validate_packages(config.packages)
    _validate_metrics(config.metrics)
    if config.audit.retention_days < 1:
        raise ConfigError("audit.retention_days: must be at least 1")
    if not config.audit.flush_interval > 0:
        raise ConfigError("audit.flush_interval: must be a positive number of seconds")
    if config.audit.max_pending < 1:
        raise ConfigError("audit.max_pending: must be at least 1")
    _validate_bruteforce(config)


def _validate_bruteforce(config: Config) -> None:
    ban = config.bruteforce
    for key, value in (("max_failures", ban.max_failures), ("find_time", ban.find_time), ("ban_time", ban.ban_time)):
        if value < 1:
            raise ConfigError(f"bruteforce.{key}: must be at least 1")
    # Both lists take addresses and CIDR ranges (gateway/clients.py AddressSet), like GitLab's trusted_proxies.
    for key, entries in (
        ("server.trusted_proxies", config.server.trusted_proxies),
        ("bruteforce.allowlist", ban.allowlist),
    ):
        for entry in entries:
            try:
                ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ConfigError(f"{key}: {entry!r} is not an IP address or CIDR range") from None


def _validate_metrics(metrics: MetricsConfig) -> None:
    for cidr in metrics.allowed_ips:
        try:
            ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"metrics.allowed_ips: {cidr!r} is not an IP address or CIDR") from None


def _validate_packages(packages: PackagesConfig) -> None:
    if packages.max_upload_size < 1:
        raise ConfigError("packages.max_upload_size: must be at least 1 byte")
    if packages.max_document_size < 1024:
        raise ConfigError("packages.max_document_size: must be at least 1024 bytes")
    for name in ("pypi", "npm", "maven", "generic"):
        template = getattr(packages, name).backend
        if not template:
            continue
        parts = urlsplit(template.replace("{project_id}", "0").replace("{project_path}", "p"))
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ConfigError(f"packages.{name}.backend: must be an http(s) URL without query or fragment")
        if "{" in urlsplit(template).netloc:
            raise ConfigError(f"packages.{name}.backend: placeholders belong in the path, not the host")
        leftover = template.replace("{project_id}", "").replace("{project_path}", "")
        if "{" in leftover or "}" in leftover:
            raise ConfigError(f"packages.{name}.backend: unknown placeholder (known: {{project_id}}, {{project_path}})")


def sqlite_path(config: Config, url: str | None = None) -> Path:
    """The database file of a sqlite:/// URL (default: storage.database), resolved against the config file's folder."""
    return (config.base_dir / (url or config.storage.database).removeprefix("sqlite:///")).resolve()


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the config file named by `path`, else $GATEWAY_CONFIG, else the embedded defaults."""
    if path is None:
        path = os.environ.get("GATEWAY_CONFIG") or None
    if path is None:
        return from_mapping({}, Path.cwd())
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {file}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    return from_mapping(raw, file.resolve().parent)
