"""deploy/gateway.service: systemd accepts it (`systemd-analyze verify`), and what it sets agrees with the gateway's
own behaviour: the command, the reload signal, the stop deadline, the writable paths of the configuration.
"""

from __future__ import annotations

import configparser
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath

from gateway import workers
from gateway.config import ServerConfig, from_mapping, sqlite_path
from tests.compose import ROOT

UNIT = ROOT / "deploy" / "gateway.service"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"


def service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True, comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment, method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_systemd_verifies_the_unit(tmp_path: Path) -> None:
    """systemd's own check: every key known, every value well-formed, the commands executable (the installed
    gateway stands in for /opt/gateway's)."""
    assert Path(SYSTEMD_ANALYZE).exists(), "systemd-analyze is missing (scripts/install-test-deps installs systemd)"
    gateway = Path(sys.executable).with_name("gateway")
    assert gateway.exists()
    unit = tmp_path / "gateway.service"
    unit.write_text(UNIT.read_text().replace("/opt/gateway/bin/gateway", str(gateway)))
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_a_key_systemd_does_not_know_is_what_the_check_would_catch(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is reported (systemd itself only warns, and starts the unit)."""
    unit = tmp_path / "gateway.service"
    unit.write_text(UNIT.read_text().replace("TimeoutStopSec=", "TimeoutStopSecs="))
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert "Unknown key 'TimeoutStopSecs'" in result.stderr


def test_the_unit_runs_the_gateway_as_it_expects() -> None:
    unit = service()
    command = shlex.split(unit["ExecStart"])
    assert PurePosixPath(command[0]).name == "gateway" and command[1:] == ["serve"]
    assert unit["Environment"] == "GATEWAY_CONFIG=/etc/gateway/gateway.toml"  # the path docker-compose mounts too
    # A reload is SIGHUP to the main process, which forwards it to every worker (TLS certificate).
    assert shlex.split(unit["ExecReload"]) == ["/bin/kill", "-HUP", "$MAINPID"]
    # A stop is SIGTERM to the main process, which stops its workers gracefully; the git children of clones in
    # flight must not get it too (control-group, the default, signals every process of the unit at once).
    assert unit["KillMode"] == "mixed"
    # systemd must not kill before the gateway's own deadline: shutdown_timeout, then the supervisor's grace.
    assert int(unit["TimeoutStopSec"]) > ServerConfig().shutdown_timeout + workers.STOP_GRACE
    assert unit["UMask"] == "0077"


def test_every_path_the_gateway_writes_is_writable_under_the_unit() -> None:
    """ProtectSystem=strict makes the whole file system read-only but ReadWritePaths: each file and folder the
    gateway writes, for the configuration that puts its data in /var/lib/gateway (deploy/gateway.toml), lies there."""
    unit = service()
    assert unit["ProtectSystem"] == "strict"
    writable = [PurePosixPath(p) for p in unit["ReadWritePaths"].split()]
    raw = tomllib.loads((ROOT / "deploy" / "gateway.toml").read_text())
    single = raw | {"storage": raw["storage"] | {"database": "sqlite:////var/lib/gateway/gateway.db"}}
    config = from_mapping(single, Path("/etc/gateway"))
    written = [
        config.storage.data_dir,
        config.storage.encryption_key,
        config.git.repositories,
        config.registry.signing_key,
        config.registry.certificate,
        str(sqlite_path(config, config.storage.database)),
    ]
    for path in written:
        assert any(PurePosixPath(path).is_relative_to(w) for w in writable), path
    # Temporary files (the workers' metrics, TLS snapshots) go to the private /tmp systemd gives the service.
    assert unit["PrivateTmp"] == "yes"
