"""Shared benchmark plumbing: processes on loopback, a gateway set up through its CLI and API, wrk, RSS, tables."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, statuses: Sequence[int] = (200,), timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 - loopback only
                if r.status in statuses:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in statuses:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not become ready")
        time.sleep(0.05)


@dataclass
class Proc:
    """A child process started on loopback and stopped by PID."""

    args: list[str]
    log: Path
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Proc:
        self._log = self.log.open("wb")
        self.popen = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def stop(self) -> None:
        if self.popen is None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._log.close()


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    """VmRSS (current) or VmHWM (peak so far) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def api(base: str, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(  # noqa: S310 - loopback only
        f"{base}/api/v4{path}",
        data=data,
        method=method,
        headers={"PRIVATE-TOKEN": token, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
        return json.loads(r.read() or b"null")


@dataclass
class Gateway:
    """A gateway process on its embedded defaults in a temp dir, set up through `gateway init` and the API."""

    tmp: Path
    extra_config: str = ""
    port: int = 0
    root_token: str = ""
    proc: Proc | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.tmp / "gateway.toml"

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "gateway", "--config", str(self.config_file), *args],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout

    def start(self) -> Gateway:
        self.port = self.port or free_port()
        self.config_file.write_text(f'[server]\nlisten = "127.0.0.1:{self.port}"\n{self.extra_config}')
        self.root_token = self.cli("init").strip().splitlines()[-1]
        self.proc = Proc(
            [sys.executable, "-m", "gateway", "--config", str(self.config_file), "serve"], self.tmp / "gateway.log"
        ).start()
        wait_http(f"{self.base}/-/health")
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def project_with_token(self, group: str, project: str, scopes: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        g = api(self.base, self.root_token, "POST", "/groups", {"name": group, "path": group})
        p = api(
            self.base, self.root_token, "POST", "/projects", {"name": project, "path": project, "namespace_id": g["id"]}
        )
        t = api(
            self.base,
            self.root_token,
            "POST",
            f"/projects/{p['id']}/deploy_tokens",
            {"name": "bench", "scopes": scopes},
        )
        return p, t


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk(
    url: str,
    *,
    connections: int = 64,
    seconds: int = 10,
    threads: int = 2,
    headers: Sequence[str] = (),
    script: Path | None = None,
) -> LoadResult:
    """Run wrk (a C load generator, so the client costs little CPU) and parse rate and latency percentiles."""
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for h in headers:
        args += ["-H", h]
    if script is not None:
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")

    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return LoadResult(rps, pct("50"), pct("99"), errors)


@dataclass(frozen=True)
class Row:
    figure: str
    value: str
    baseline: str
    ratio: str
    target: str
    ok: bool | None = None


def print_table(title: str, rows: Sequence[Row]) -> None:
    headers = ("figure", "gateway", "baseline (same run)", "ratio", "target", "met")
    cells = [headers] + [
        (r.figure, r.value, r.baseline, r.ratio, r.target, "" if r.ok is None else ("yes" if r.ok else "NO"))
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    print(f"\n## {title}\n")
    for i, row in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    sys.stdout.flush()


def tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def env_without_proxies() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
