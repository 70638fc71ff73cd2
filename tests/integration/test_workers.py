"""`gateway serve --workers N`: N processes on one port under a supervising parent (gateway/workers.py).

Real processes: the parent binds, forks, restarts a dead worker, gives up when workers keep dying, stops them all on
SIGTERM, and takes its workers with it when it is killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import alive, group_members, start, stop, wait_until
from tests.replicas import basic, request
from tests.servers import ROOT, START_TIMEOUT, Served, gateway_env, init_gateway, run_gateway, write_config


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = write_config(tmp_path_factory.mktemp("workers-template") / "install")
    init_gateway(config)
    return config.parent


@pytest.fixture
def config(template: Path, tmp_path: Path) -> Path:
    """An initialized installation (a copy: `gateway init` costs a key generation)."""
    subprocess.run(["cp", "-a", str(template), str(tmp_path / "install")], check=True)
    return tmp_path / "install" / "gateway.toml"


@pytest.fixture
def served() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for server in started:
        stop(server.proc)


def serve(started: list[Served], config: Path, *args: str) -> Served:
    server = Served(config, *args)
    started.append(server)
    return server


@pytest.mark.parametrize(
    ("how", "args", "extra_config"),
    [
        ("--workers", ["--workers", "2"], ""),
        ("server.workers", [], "[server]\nworkers = 2\n"),
    ],
)
def test_workers_share_one_port_and_all_serve(
    config: Path, served: list[Served], how: str, args: list[str], extra_config: str
) -> None:
    config.write_text(config.read_text() + extra_config)
    server = serve(served, config, "--listen", "127.0.0.1:0", *args)
    pids = server.wait_workers(2)
    assert server.url.startswith("http://127.0.0.1:") and not server.url.endswith(":0")
    # New connections are spread over the workers by the kernel (SO_REUSEPORT): both answer.
    assert [request(f"{server.url}/-/ready") for _ in range(24)] == [200] * 24

    def logged() -> bool:  # lines reach the file within log_output.FLUSH_INTERVAL
        by_worker = {e.get("worker") for e in server.entries() if e.get("logger") == "gateway.access"}
        return by_worker == {0, 1} and all(f"worker ready (pid {pid})" in server.messages() for pid in pids)

    assert wait_until(logged, START_TIMEOUT), server.proc.log_tail()
    assert server.messages().count(f"listening on {server.url}") == 1
    # Each worker froze its startup heap (server.settle_heap): full collections no longer pause it for tens of ms.
    settled = [e for e in server.entries() if str(e.get("message", "")).startswith("startup heap settled: ")]
    assert {e.get("worker") for e in settled} == {0, 1}
    assert all(int(str(e["message"]).split()[3]) > 10_000 for e in settled)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_dead_worker_is_replaced_and_a_stop_signal_stops_everything(
    config: Path, served: list[Served], stop_signal: signal.Signals
) -> None:
    server = serve(served, config, "--listen", "127.0.0.1:0", "--workers", "2")
    first = server.wait_workers(2)
    os.kill(first[0], signal.SIGKILL)

    def replaced() -> bool:
        now = server.workers()  # one snapshot: the killed worker may still show as running in a first one
        return len(now) == 2 and first[0] not in now

    assert wait_until(replaced, START_TIMEOUT), server.proc.log_tail()
    (replacement,) = set(server.workers()) - set(first)
    assert any(
        m.endswith(f"(pid {first[0]}) exited (killed by SIGKILL); restarting in 0.1 s") for m in server.messages()
    )
    assert wait_until(lambda: f"worker ready (pid {replacement})" in server.messages(), START_TIMEOUT)
    assert [request(f"{server.url}/-/health") for _ in range(10)] == [200] * 10

    os.kill(server.proc.pid, stop_signal)  # to the parent only, as `docker stop` does: it forwards
    assert server.exit_code() == 0
    assert not any(alive(pid) for pid in [*first, replacement])
    messages = server.messages()
    assert messages.count("shutting down") == 2  # each worker stopped its server gracefully
    assert sum("stopped: exit status 0" in m for m in messages) == 2
    with pytest.raises(OSError):
        request(f"{server.url}/-/health")


@pytest.mark.parametrize(
    "stop_signal", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "SIGINT", "SIGHUP"]
)
@pytest.mark.parametrize("workers", [1, 2])
def test_a_signal_to_the_whole_process_group_ends_nothing_before_its_time(
    template: Path, tmp_path: Path, served: list[Served], workers: int, stop_signal: signal.Signals
) -> None:
    """`kill -- -PGID`, systemd stopping the unit, the terminal's Ctrl-C: every process of the group gets the
    signal, the signing processes too. A stop must be the gateway's graceful one, with no helper process dying
    first and mourned as a crash in the log; a SIGHUP (a reload) must end nothing."""
    subprocess.run(["cp", "-a", str(template), str(tmp_path / "install")], check=True)
    config = tmp_path / "install" / "gateway.toml"
    root = run_gateway(config, "users", "token", "root", "--scopes", "read_registry").stdout.strip()
    server = serve(served, config, "--listen", "127.0.0.1:0", "--workers", str(workers))
    ready = lambda: sum(m.startswith("startup heap settled") for m in server.messages()) == workers  # noqa: E731
    assert wait_until(ready, START_TIMEOUT), server.proc.log_tail()
    auth = basic("root", root)
    for _ in range(4 * workers):  # every worker signs a token: its signing processes start
        assert request(f"{server.url}/jwt/auth?service=container_registry", headers=auth) == 200
    signers = [p for p in group_members(server.proc.pid) if "gateway.signing_processes" in p.cmdline]
    assert signers, "no signing process started"
    os.killpg(server.proc.pid, stop_signal)
    if stop_signal == signal.SIGHUP:
        time.sleep(0.5)
        assert server.proc.popen.poll() is None and all(alive(p.pid) for p in signers)
        assert [request(f"{server.url}/-/health") for _ in range(4)] == [200] * 4
        os.kill(server.proc.pid, signal.SIGTERM)
    assert server.exit_code() == 0
    messages = server.messages()
    assert not [m for m in messages if "signing process" in m and "ended" in m], messages
    assert messages.count("shutting down") == workers  # each one stopped gracefully, none was killed by it
    if workers > 1:
        assert sum("stopped: exit status 0" in m for m in messages) == workers, messages


def _ignores_sighup(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


@pytest.mark.parametrize("workers", [1, 2])
def test_a_service_manager_learns_when_it_serves_and_a_reload_while_it_starts_ends_nothing(
    config: Path, tmp_path: Path, workers: int
) -> None:
    """systemd (Type=notify) hears READY=1 once the port listens, not before; a SIGHUP from the moment the command
    runs (a certbot hook at boot) until then does not end it by SIGHUP's default action, which systemd would count
    as a clean exit and not restart."""
    folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="notify-"))  # a unix socket path is short (108 bytes)
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(str(folder / "notify"))
    manager.settimeout(START_TIMEOUT)
    argv = [sys.executable, "-m", "gateway", "--config", str(config), "serve", "--listen", "127.0.0.1:0"]
    env = gateway_env(config.parent) | {"NOTIFY_SOCKET": str(folder / "notify")}
    proc = start("gateway", [*argv, "--workers", str(workers)], log=tmp_path / "early.log", env=env, cwd=ROOT)
    try:
        assert wait_until(lambda: _ignores_sighup(proc.pid), START_TIMEOUT)  # the command runs
        sent = 0
        while "listening on " not in proc.log.read_text() and sent < 200:  # through imports, migrations, binding
            os.kill(proc.pid, signal.SIGHUP)
            sent += 1
            time.sleep(0.005)
        assert sent > 0
        assert manager.recv(100) == b"READY=1"
        assert "listening on " in proc.log.read_text()  # told after the port listens, not before
        time.sleep(0.3)
        proc.assert_running()
    finally:
        stop(proc)
        manager.close()
        shutil.rmtree(folder)


def test_workers_that_keep_dying_make_the_parent_give_up(config: Path, served: list[Served]) -> None:
    server = serve(served, config, "--listen", "127.0.0.1:0", "--workers", "2")
    killed: set[int] = set()
    while server.proc.popen.poll() is None and len(killed) < 20:
        pids = [pid for pid in server.workers() if pid not in killed]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # the parent may be stopping it already
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        time.sleep(0.05)
    assert server.exit_code() == 1
    assert 6 <= len(killed) < 20  # the default policy: more than 5 unexpected exits within 60 s
    assert any("giving up" in m for m in server.messages())
    started = [int(m.split("(pid ")[1].rstrip(")")) for m in server.messages() if " started (pid " in m]
    assert len(started) >= 6 and not [pid for pid in started if alive(pid)]  # the survivor was stopped too


def test_killing_the_parent_takes_the_workers_with_it(config: Path, served: list[Served]) -> None:
    server = serve(served, config, "--listen", "127.0.0.1:0", "--workers", "2")
    pids = server.wait_workers(2)
    os.kill(server.proc.pid, signal.SIGKILL)  # no chance to forward anything: the kernel's parent-death signal
    server.proc.popen.wait(10)
    assert wait_until(lambda: not any(alive(pid) for pid in pids), 10), [pid for pid in pids if alive(pid)]


def run_serve(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`gateway serve` expected to fail at start-up."""
    return run_gateway(config, "serve", *args, timeout=30)


def _plain_listener(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def _reuseport_listener(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


@pytest.mark.parametrize("listener", [_plain_listener, _reuseport_listener], ids=["plain", "so_reuseport"])
def test_a_busy_port_is_an_error_even_when_its_owner_allows_port_sharing(config: Path, listener: Any) -> None:
    occupied = listener(0)
    try:
        port = occupied.getsockname()[1]
        result = run_serve(config, "--listen", f"127.0.0.1:{port}", "--workers", "2")
    finally:
        occupied.close()
    assert result.returncode == 1, result.stderr
    assert f"gateway: error: cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "started (pid" not in result.stderr  # nothing was forked
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "damage", "code", "message"),
    [
        (["--workers", "0"], None, 2, "--workers: must be at least 1, got 0"),
        (["--workers", "-3"], None, 2, "--workers: must be at least 1, got -3"),
        (["--workers", "two"], None, 2, "argument --workers: invalid int value: 'two'"),
        (["--workers", "2"], "registry.key", 2, "registry.signing_key"),
        (["--workers", "2"], "secret.key", 2, "storage.encryption_key"),
    ],
)
def test_bad_worker_settings_and_broken_files_fail_once_before_forking(
    config: Path, args: list[str], damage: str | None, code: int, message: str
) -> None:
    if damage is not None:
        (config.parent / "data" / damage).write_bytes(b"not a key")
    result = run_serve(config, "--listen", "127.0.0.1:0", *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "started (pid" not in result.stderr  # one error from the parent, no worker started
    assert "Traceback" not in result.stderr
