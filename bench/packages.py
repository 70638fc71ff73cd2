"""Generic packages: a 200 MB file (--quick 100 MB) downloaded and uploaded with curl through the gateway versus
straight from the backend in the same run, and the gateway's embedded store; peak RSS growth of the gateways.

The backend is a small streaming aiohttp file server (bench/servers.py files) in its own process. Targets (issue 5):
throughput ratio gateway/direct >= 0.85, RSS growth <= 30 MB.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time

from bench.common import Context, Gateway, Row, status_kib, tempdir
from bench.servers import launch
from tests.procs import Proc, free_port, stop


def curl(*args: str) -> float:
    started = time.perf_counter()
    out = subprocess.run(
        ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{http_code}", *args], capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"curl failed: {out.stdout} {out.stderr}")
    return elapsed


def run(ctx: Context) -> list[Row]:
    size_mb, runs = ctx.pick(200, 100), ctx.pick(3, 1)
    tmp = tempdir("bench-packages-")
    backend: Proc | None = None
    gateways: list[Gateway] = []
    try:
        (tmp / "backend").mkdir()
        payload = tmp / "payload.bin"
        with payload.open("wb") as f:
            for _ in range(size_mb):
                f.write(os.urandom(1024 * 1024))
        size = payload.stat().st_size
        b_port = free_port()
        backend = launch("files", b_port, str(tmp / "backend"), log=tmp / "backend.log")
        common = {"log": {"level": "warning"}}
        limits = {"max_upload_size": size * 2}
        proxied = Gateway(
            tmp / "proxied",
            ctx,
            {**common, "packages": limits, "packages.generic": {"backend": f"http://127.0.0.1:{b_port}/"}},
        ).install()
        embedded = Gateway(tmp / "embedded", ctx, {**common, "packages": limits}).install()
        gateways += [proxied, embedded]
        p_url, e_url = proxied.serve(1, "gateway"), embedded.serve(1, "gateway-embedded")
        secrets = {}
        for gw, url in ((proxied, p_url), (embedded, e_url)):
            project, token = gw.project_with_token(url, "bench", "p", ["write_package_registry"])
            secrets[url] = (project["id"], token["token"])

        def through(url: str, version: str) -> tuple[str, str]:
            project_id, secret = secrets[url]
            return (
                f"Deploy-Token: {secret}",
                f"{url}/api/v4/projects/{project_id}/packages/generic/bench/{version}/file.bin",
            )

        direct = f"http://127.0.0.1:{b_port}/bench/1.0.0/file.bin"
        # Baseline RSS: each gateway after one small authenticated request (handlers imported, store open).
        small = tmp / "small.bin"
        small.write_bytes(b"x" * 1024)
        for url in (p_url, e_url):
            header, target = through(url, "0.0.1")
            curl("-H", header, "-T", str(small), target)
        pids = {"proxied": proxied.proc(p_url).pid, "embedded": embedded.proc(e_url).pid}
        base_rss = {name: status_kib(pid) for name, pid in pids.items()}
        # Peak (VmHWM) covers everything from here on, warm-up transfers included.
        header, p_target = through(p_url, "1.0.0")
        curl("-H", header, "-T", str(payload), p_target)
        curl("-H", header, p_target)
        measured: list[tuple[str, float, float]] = []
        for label, direct_args, gateway_args in (
            ("download, proxied backend", [direct], ["-H", header, p_target]),
            ("upload, proxied backend", ["-T", str(payload), direct], ["-H", header, "-T", str(payload), p_target]),
        ):
            d = statistics.median(curl(*direct_args) for _ in range(runs))
            g = statistics.median(curl(*gateway_args) for _ in range(runs))
            measured.append((label, d, g))
        e_header, _ = through(e_url, "x")
        d_up = statistics.median(curl("-T", str(payload), direct) for _ in range(runs))
        e_up = statistics.median(
            curl("-H", e_header, "-T", str(payload), through(e_url, f"1.0.{i}")[1]) for i in range(runs)
        )
        measured.append(("upload, embedded store (sha256, fsync, rename)", d_up, e_up))
        d_down = statistics.median(curl(direct) for _ in range(runs))
        e_down = statistics.median(curl("-H", e_header, through(e_url, "1.0.0")[1]) for _ in range(runs))
        measured.append(("download, embedded store", d_down, e_down))
        peak = {name: status_kib(pid, "VmHWM") for name, pid in pids.items()}
    finally:
        for gw in gateways:
            gw.stop()
        if backend is not None:
            stop(backend)
        shutil.rmtree(tmp, ignore_errors=True)

    mb = size / 1e6
    rows = []
    for label, d, g in measured:
        ratio = d / g
        rows.append(
            Row(
                f"generic package {mb:.0f} MB {label}",
                f"{mb / g:.0f} MB/s",
                f"direct {mb / d:.0f} MB/s",
                f"{ratio:.2f}",
                ">= 0.85",
                ratio >= 0.85,
            )
        )
    for name in pids:
        growth = (peak[name] - base_rss[name]) / 1024
        rows.append(
            Row(
                f"gateway RSS growth, packages {name}",
                f"{growth:.1f} MB",
                f"after warm-up {base_rss[name] / 1024:.0f} MB",
                "",
                "<= 30 MB",
                growth <= 30,
            )
        )
    return rows


if __name__ == "__main__":
    from bench.__main__ import main

    raise SystemExit(main(["--only", "packages"]))
