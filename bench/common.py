"""Shared benchmark plumbing: the run context (quick or full, database), a gateway started through its CLI, wrk,
RSS, and the one results table. Processes are started, polled and stopped with tests/procs.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import pg
from tests.procs import Proc, free_port, start, stop, wait_http
from tests.servers import gateway_env

ROOT = Path(__file__).resolve().parent.parent
DATABASES = ("sqlite", "postgresql")


# --- run context ---------------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What one suite needs to know: sizes (quick or full), the database to run the gateway on, worker count."""

    quick: bool = False
    database: str = "sqlite"
    workers: int = 2
    postgres: pg.Cluster | None = None
    # Every database of this run (suites that handle both themselves, such as bench/store_lookup.py).
    selected: tuple[str, ...] = DATABASES

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full

    def database_url(self, tmp: Path) -> str:
        """A new, empty database for one gateway installation: a file in `tmp`, or a database in the cluster."""
        if self.database == "sqlite":
            return f"sqlite:///{tmp / 'data' / 'gateway.db'}"
        assert self.postgres is not None, "PostgreSQL cluster not started"
        return asyncio.run(self.postgres.create_database(f"bench_{uuid.uuid4().hex[:12]}"))


# --- the gateway through its CLI -----------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str | bool | int | float) else json.dumps(list(value))


@dataclass
class Gateway:
    """An installation in `tmp` (config written, `gateway init` run) and its `gateway serve` processes."""

    tmp: Path
    ctx: Context
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    root_token: str = ""
    servers: list[tuple[str, Proc]] = field(default_factory=list)

    @property
    def config_file(self) -> Path:
        return self.tmp / "gateway.toml"

    def install(self) -> Gateway:
        self.tmp.mkdir(parents=True, exist_ok=True)
        sections: dict[str, dict[str, Any]] = {
            "storage": {"database": self.ctx.database_url(self.tmp), "data_dir": "data"},
            "security": {"password_memory_kib": 64, "password_iterations": 1},
            "log": {"level": "info"},
        }
        for name, values in self.settings.items():
            sections.setdefault(name, {}).update(values)
        lines = []
        for name, values in sections.items():
            lines.append(f"[{name}]")
            lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
        self.config_file.write_text("\n".join(lines) + "\n")
        self.root_token = self.cli("init").strip().splitlines()[-1]
        return self

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "gateway", "--config", str(self.config_file), *args],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=gateway_env(self.tmp),
        )
        return out.stdout

    def serve(self, workers: int = 1, name: str = "gateway") -> str:
        """Start `gateway serve --workers N` on a free port; returns its base URL."""
        port = free_port()
        argv = [sys.executable, "-m", "gateway", "--config", str(self.config_file), "serve"]
        argv += ["--listen", f"127.0.0.1:{port}", "--workers", str(workers)]
        proc = start(name, argv, log=self.tmp / f"{name}-{port}.log", env=gateway_env(self.tmp), cwd=ROOT)
        self.servers.append((f"http://127.0.0.1:{port}", proc))
        wait_http(proc, f"http://127.0.0.1:{port}/-/health", timeout=30)
        return f"http://127.0.0.1:{port}"

    def proc(self, url: str) -> Proc:
        return next(p for u, p in self.servers if u == url)

    def stop(self) -> None:
        for _, proc in self.servers:
            stop(proc)
        self.servers.clear()

    def api(self, base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        from tests.replicas import api

        return api(base, self.root_token, method, path, body)

    def project_with_token(
        self, base: str, group: str, project: str, scopes: Sequence[str]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        g = self.api(base, "POST", "/groups", {"name": group, "path": group})
        p = self.api(base, "POST", "/projects", {"name": project, "path": project, "namespace_id": g["id"]})
        t = self.api(base, "POST", f"/projects/{p['id']}/deploy_tokens", {"name": "bench", "scopes": list(scopes)})
        return p, t


# --- measurement ---------------------------------------------------------------------------------------------------


def status_kib(pid: int, field_name: str = "VmRSS") -> int:
    """VmRSS (current) or VmHWM (peak so far) of one process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field_name} for {pid}")


def family(pid: int) -> list[int]:
    """The process and its children (the workers of a pre-forked gateway), not grandchildren such as git."""
    from tests.procs import processes

    return [pid, *(p.pid for p in processes() if p.ppid == pid and p.state not in ("Z", "X"))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (not its children), from /proc/PID/stat."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    connections: int = 32,
    seconds: float = 10,
    threads: int = 1,
    headers: Sequence[str] = (),
    script: Path | None = None,
) -> LoadResult:
    """wrk (a C load generator: the client costs little CPU, which on 2 cores the server needs) → rate, p50, p99."""
    assert shutil.which("wrk"), "wrk is missing: apt-get install -y wrk (scripts/install-test-deps)"
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    for h in headers:
        args += ["-H", h]
    if script is not None:
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], check=True, capture_output=True, text=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rate is not None, out

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
    return LoadResult(float(rate.group(1)), pct("50"), pct("99"), errors)


def timed(args: Sequence[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(list(args), check=True, capture_output=True, env=env)
    return time.perf_counter() - started


# --- the table -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    figure: str
    value: str
    baseline: str
    ratio: str
    target: str
    ok: bool | None = None
    suite: str = ""


# Streaming rounds through the gateway are spread over this many of its processes (round i through process i % 3),
# each baseline being one process too. Two identical gateway processes measured in the same interleaved rounds
# differed by up to 10 % on uploads (40 rounds, one faster in 29 of them; the other way round in the next run): one
# process's measure carries that luck.
SPREAD = 3


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> tuple[float, float, float]:
    """Median, lowest and highest of the per-round ratios of two interleaved series (round i of one against round i
    of the other). A drift of the machine between rounds (CPU frequency, page cache, another tenant of the VM) moves
    both sides of a round alike and cancels in its ratio; the ratio of the two medians would keep it."""
    ratios = sorted(n / d for n, d in zip(numerators, denominators, strict=True))
    return statistics.median(ratios), ratios[0], ratios[-1]


def ratio_row(figure: str, value: float, baseline: float, unit: str, base_label: str, target: float) -> Row:
    """A rate compared with its baseline: higher is better, met when value / baseline ≥ target."""
    r = value / baseline if baseline else float("nan")
    return Row(
        figure, f"{value:.0f} {unit}", f"{base_label} {baseline:.0f} {unit}", f"{r:.2f}", f">= {target}", r >= target
    )


def print_table(title: str, rows: Sequence[Row]) -> None:
    """One Markdown table; the `suite` column tells which benchmark a row comes from."""
    headers = ("suite", "figure", "gateway", "baseline (same run)", "ratio", "target", "met")
    cells = [headers] + [
        (r.suite, r.figure, r.value, r.baseline, r.ratio, r.target, "" if r.ok is None else ("yes" if r.ok else "NO"))
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    if title:
        print(f"\n## {title}\n")
    for i, row in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    sys.stdout.flush()


def tempdir(prefix: str, parent: Path | None = None) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
