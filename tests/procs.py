"""Real processes in tests: free loopback ports, start in an own process group, poll readiness, stop by PID.

Every process is started with start_new_session=True so stopping it reaches its children too (fcgiwrap's prefork
children survive their parent otherwise, shared/notes/git.md §4).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def assert_running(self) -> None:
        code = self.popen.poll()
        assert code is None, f"{self.name} exited with {code}:\n{self.log_tail()}"


def start(
    name: str, argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Proc:
    """Start `argv` in its own session; stdout and stderr go to `log`. The binary must exist (no skipping)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    return Proc(name, popen, log)


def wait_tcp(proc: Proc, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.assert_running()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.02)
    raise AssertionError(f"{proc.name} did not listen on port {port} within {timeout}s:\n{proc.log_tail()}")


def wait_http(proc: Proc, url: str, timeout: float = 15.0, *, context: ssl.SSLContext | None = None) -> None:
    """Ready when the URL answers at all (any status): the server parses HTTP (https: with `context`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.assert_running()
        try:
            with urllib.request.urlopen(url, timeout=1, context=context):  # noqa: S310 - a loopback test URL
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.02)
    raise AssertionError(f"{proc.name} did not answer {url} within {timeout}s:\n{proc.log_tail()}")


def stop(proc: Proc, timeout: float = 10.0) -> None:
    """SIGTERM to the whole process group, then SIGKILL; always waited (no zombies, no leaked children)."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.popen.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        break
    # The leader is gone; stragglers of its group (prefork children) are killed too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running(proc: Proc) -> Iterator[Proc]:
    try:
        yield proc
    finally:
        stop(proc)


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    state: str
    cmdline: str


def processes() -> list[ProcInfo]:
    """The process table from /proc (Linux)."""
    table: list[ProcInfo] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # comm may contain spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        table.append(ProcInfo(int(entry.name), int(fields[1]), int(fields[2]), fields[0], cmdline.strip()))
    return table


def live(info: ProcInfo) -> bool:
    return info.state not in ("Z", "X")


def group_members(pgid: int) -> list[ProcInfo]:
    return [p for p in processes() if p.pgid == pgid and live(p)]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] not in ("Z", "X")


def rss_kib(pid: int) -> int:
    """Resident set size of one process (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll `predicate` (blocking; async tests use their own loop) until true or the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def established(port: int) -> int:
    """Open TCP connections (ESTABLISHED or half-closed) with `port` at either end, from /proc/net/tcp{,6}."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, state = fields[1], fields[2], fields[3]
                # 01 ESTABLISHED, 08 CLOSE_WAIT (the peer closed, this end did not yet): both hold a connection.
                ends = {int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)}
                if state in ("01", "08") and port in ends:
                    count += 1
    return count


def children(pid: int, name: str = "") -> list[ProcInfo]:
    """Live descendants of `pid` (any depth) whose command line contains `name`."""
    table = [p for p in processes() if live(p)]
    found: list[ProcInfo] = []
    parents = {pid}
    while True:
        level = [p for p in table if p.ppid in parents and p not in found]
        if not level:
            break
        found.extend(level)
        parents = {p.pid for p in level}
    return [p for p in found if name in p.cmdline]
