"""Configuration: defaults, fixed key names, unknown keys and wrong types named, relative paths, GATEWAY_CONFIG."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway import config as config_module
from gateway.config import Config, from_mapping, load, sqlite_path
from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.toml"


def known_keys() -> set[str]:
    """Every `section.key` that config.py knows, read from the dataclasses themselves."""
    keys = set()
    for section in dataclasses.fields(Config):
        if section.name == "base_dir":
            continue
        section_type = dataclasses.fields(getattr(Config(), section.name))
        keys.update(f"{section.name}.{f.name}" for f in section_type)
    return keys


def value_of(config: Config, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(config, section), key)


# Issue #2 fixes these names (operators' scripts rely on them); the defaults are what the README documents.
@pytest.mark.parametrize(
    ("key", "default"),
    [
        ("server.listen", "127.0.0.1:8080"),
        ("server.external_url", ""),
        ("storage.database", "sqlite:///data/gateway.db"),
        ("storage.data_dir", Path("data")),
        ("git.backend", "embedded"),
        ("registry.backend", ""),
        ("registry.service", "container_registry"),
        ("registry.issuer", "gitlab-issuer"),
        ("registry.signing_key", Path("data/registry.key")),
        ("registry.certificate", Path("data/registry.crt")),
        ("registry.token_ttl", 300),
        ("registry.algorithm", "RS256"),
    ],
)
def test_fixed_key_names_and_defaults(tmp_path: Path, key: str, default: Any) -> None:
    assert key in known_keys()
    value = value_of(from_mapping({}, tmp_path), key)
    if isinstance(default, Path):
        # Path defaults resolve against the base folder exactly like a relative path written in the file.
        assert Path(value) == tmp_path / default
    else:
        assert value == default


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"server": {"lisen": "127.0.0.1:1"}}, "unknown configuration key: server.lisen"),
        ({"registri": {}}, "unknown configuration key: registri"),
        ({"registry": {"token_tll": 60}}, "unknown configuration key: registry.token_tll"),
        ({"server": {"listen": 8080}}, "server.listen: must be str, got int"),
        ({"server": {"listen": "localhost"}}, "server.listen: expected HOST:PORT"),
        ({"server": {"listen": "127.0.0.1:99999"}}, "server.listen: expected HOST:PORT"),
        ({"server": {"trusted_proxies": "127.0.0.1"}}, "server.trusted_proxies: must be a list of strings"),
        ({"server": {"external_url": "gitlab.example.com"}}, "server.external_url: must be an http(s) URL"),
        ({"registry": {"token_ttl": "300"}}, "registry.token_ttl: must be int, got str"),
        ({"registry": {"token_ttl": True}}, "registry.token_ttl: must be an integer, got a boolean"),
        ({"registry": {"token_ttl": 30}}, "registry.token_ttl: must be between 60 and 86400"),
        ({"registry": {"algorithm": "PS256"}}, "registry.algorithm: must be one of 'RS256', 'ES256'"),
        ({"registry": {"signing_processes": -2}}, "registry.signing_processes: must be -1 (the cores), 0"),
        ({"registry": {"signing_processes": 65}}, "registry.signing_processes: must be -1 (the cores), 0"),
        ({"metrics": {"allowed_ips": ["10.0.0.0/33"]}}, "metrics.allowed_ips: '10.0.0.0/33' is not an IP address"),
        ({"metrics": {"allowed_ips": "127.0.0.1"}}, "metrics.allowed_ips: must be a list of strings"),
        ({"metrics": {"enabled": "yes"}}, "metrics.enabled: must be bool, got str"),
        ({"registry": {"backend": "registry:5000"}}, "registry.backend: must be an http(s) URL"),
        ({"storage": {"database": "mysql://x"}}, "storage.database: must start with sqlite:/// or postgresql://"),
        ({"git": {"backend": "ftp://git"}}, 'git.backend: must be "embedded" or an http(s) URL'),
        ({"log": {"level": "verbose"}}, "log.level: must be one of"),
        ({"server": "127.0.0.1:8080"}, "server: must be a table"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping(raw, tmp_path)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("key", "written"),
    [
        ("storage.data_dir", "state"),
        ("storage.encryption_key", "keys/secret.key"),
        ("git.repositories", "repos"),
        ("registry.signing_key", "../outside/registry.key"),
        ("registry.certificate", "registry.crt"),
    ],
)
def test_relative_paths_resolve_against_the_config_file_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, written: str
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    section, name = key.split(".")
    (folder / "gateway.toml").write_text(f'[{section}]\n{name} = "{written}"\n')
    monkeypatch.chdir(tmp_path)  # the current directory must not matter
    config = load(folder / "gateway.toml")
    assert Path(value_of(config, key)) == (folder / written).resolve()


def test_sqlite_database_resolves_against_the_config_file_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "g.toml").write_text('[storage]\ndatabase = "sqlite:///db/g.db"\n')
    monkeypatch.chdir("/")
    assert sqlite_path(load(tmp_path / "etc" / "g.toml")) == tmp_path / "etc" / "db" / "g.db"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    config = from_mapping({"storage": {"data_dir": "/srv/gateway"}}, tmp_path)
    assert config.storage.data_dir == "/srv/gateway"


def test_gateway_config_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "env.toml"
    file.write_text('[server]\nlisten = "127.0.0.1:9999"\n')
    monkeypatch.setenv("GATEWAY_CONFIG", str(file))
    assert load().server.listen == "127.0.0.1:9999"
    # An explicit path wins over the environment.
    other = tmp_path / "other.toml"
    other.write_text('[server]\nlisten = "127.0.0.1:7777"\n')
    assert load(other).server.listen == "127.0.0.1:7777"


def test_no_file_means_defaults_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    config = load()
    assert config.server.listen == "127.0.0.1:8080"
    assert Path(config.storage.data_dir) == tmp_path / "data"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "configuration file not found"),
        ("[server\nlisten=", "invalid TOML"),
        (b"\xff\xfe", "cannot read configuration file"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: str | bytes | None, message: str) -> None:
    file = tmp_path / "gateway.toml"
    if isinstance(content, bytes):
        file.write_bytes(content)
    elif content is not None:
        file.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load(file)


def test_example_file_loads_and_lists_every_key(tmp_path: Path) -> None:
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    listed = {f"{section}.{key}" for section, table in raw.items() for key in table}
    assert listed == known_keys()
    example = load(EXAMPLE)
    defaults = from_mapping({}, EXAMPLE.parent)
    # The example documents the defaults: loading it must give the same configuration as no file at all.
    assert dataclasses.replace(example, base_dir=defaults.base_dir) == defaults


def is_key_line(line: str) -> bool:
    return "=" in line and line.split("=")[0].strip().isidentifier()


def test_every_example_key_has_a_comment() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if is_key_line(line):
            # Keys documented together (backend_username, backend_password) share the comment above the first.
            j = i - 1
            while j >= 0 and is_key_line(lines[j]):
                j -= 1
            assert j >= 0 and lines[j].startswith("#"), f"{line.split('=')[0].strip()} has no comment above it"


def test_path_keys_are_the_file_path_fields() -> None:
    # Every path-valued key is resolved; a new path key must be added to _PATH_KEYS.
    path_like = {k for k in known_keys() if k.endswith(("_dir", "_key", "certificate", "repositories"))}
    assert {f"{s}.{k}" for s, k in config_module._PATH_KEYS} == path_like
