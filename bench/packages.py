"""Benchmark: a 200 MB generic package downloaded and uploaded through the gateway versus directly from the backend,
in the same run, plus the embedded store; peak RSS growth of the gateway process. Not part of the test suite.

    .venv/bin/python bench/packages.py [--size-mb 200] [--runs 3]

The backend is a small streaming aiohttp file server (GET via sendfile, PUT streamed to disk) in its own process;
the gateway runs in its own process on the same machine; curl is the client. Targets (issue #5): throughput ratio
gateway/direct ≥ 0.85, RSS growth ≤ 30 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway import tokens  # noqa: E402
from gateway.clock import SystemClock  # noqa: E402
from gateway.config import from_mapping  # noqa: E402
from gateway.secretbox import SecretBox  # noqa: E402
from gateway.store.sqlite import SQLiteStore  # noqa: E402
from gateway.tokens import Holder  # noqa: E402
from tests.procs import free_port, start, stop, wait_tcp  # noqa: E402

CHUNK = 256 * 1024


# --- the two server processes -----------------------------------------------------------------------------------


def serve_backend(folder: Path, port: int) -> None:
    async def get(request: web.Request) -> web.StreamResponse:
        path = folder / request.match_info["path"].replace("/", "_")
        if not path.exists():
            return web.Response(status=404)
        return web.FileResponse(path, chunk_size=CHUNK)

    async def put(request: web.Request) -> web.StreamResponse:
        path = folder / request.match_info["path"].replace("/", "_")
        with path.open("wb") as f:
            while chunk := await request.content.read(CHUNK):
                f.write(chunk)
        return web.Response(status=201)

    app = web.Application()
    app.router.add_get("/{path:.+}", get)
    app.router.add_put("/{path:.+}", put)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def serve_gateway(raw_config: str, port: int) -> None:
    import tomllib

    from gateway.app import create_app

    config = from_mapping(tomllib.loads(raw_config), Path(tempfile.gettempdir()))
    web.run_app(create_app(config), host="127.0.0.1", port=port, print=None, access_log=None, auto_decompress=False)


# --- measurement ------------------------------------------------------------------------------------------------------


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def curl(*args: str) -> float:
    started = time.perf_counter()
    out = subprocess.run(
        ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{http_code}", *args], capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"curl {args}: {out.stdout} {out.stderr}")
    return elapsed


def best(times: list[float]) -> float:
    return statistics.median(times)


async def prepare(data: Path) -> tuple[str, int]:
    """A project and a write token in the gateway's database."""
    store = await SQLiteStore(data / "gateway.db").open()
    await store.migrate()
    now = SystemClock().now()
    group = await store.create_group(
        name="Bench", path="bench", parent_id=None, visibility="private", description="", now=now
    )
    project = await store.create_project(
        namespace_id=group.id, name="p", path="p", visibility="private", description="", creator_id=None, now=now
    )
    box = SecretBox(os.urandom(32))
    created = await tokens.create(
        store,
        box,
        holder=Holder(project_id=project.id),
        name="bench",
        username=None,
        scopes=("write_package_registry",),
        expires_at=None,
        creator_id=None,
        now=now,
    )
    await store.close()
    return created.secret, project.id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve-backend", nargs=2, metavar=("DIR", "PORT"))
    parser.add_argument("--serve-gateway", nargs=2, metavar=("CONFIG", "PORT"))
    args = parser.parse_args()
    if args.serve_backend:
        serve_backend(Path(args.serve_backend[0]), int(args.serve_backend[1]))
        return
    if args.serve_gateway:
        serve_gateway(Path(args.serve_gateway[0]).read_text(), int(args.serve_gateway[1]))
        return

    with tempfile.TemporaryDirectory(prefix="bench-packages-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "backend").mkdir()
        data = tmp / "data"
        data.mkdir()
        (data / "secret.key").write_bytes(os.urandom(32))
        os.chmod(data / "secret.key", 0o600)
        secret, project_id = asyncio.run(prepare(data))
        payload = tmp / "payload.bin"
        with payload.open("wb") as f:
            for _ in range(args.size_mb):
                f.write(os.urandom(1024 * 1024))
        size = payload.stat().st_size

        b_port, g_port, e_port = free_port(), free_port(), free_port()
        backend = start(
            "backend",
            [sys.executable, __file__, "--serve-backend", str(tmp / "backend"), str(b_port)],
            log=tmp / "backend.log",
        )
        common = (
            f'[storage]\ndatabase = "sqlite:///{data / "gateway.db"}"\ndata_dir = "{data}"\n'
            f'encryption_key = "{data / "secret.key"}"\n[log]\nlevel = "warning"\n'
            f"[packages]\nmax_upload_size = {size * 2}\n"
        )
        (tmp / "proxy.toml").write_text(common + f'[packages.generic]\nbackend = "http://127.0.0.1:{b_port}/"\n')
        (tmp / "embedded.toml").write_text(common)
        proxied = start(
            "gateway",
            [sys.executable, __file__, "--serve-gateway", str(tmp / "proxy.toml"), str(g_port)],
            log=tmp / "gateway.log",
            cwd=REPO,
        )
        embedded = start(
            "gateway-embedded",
            [sys.executable, __file__, "--serve-gateway", str(tmp / "embedded.toml"), str(e_port)],
            log=tmp / "embedded.log",
            cwd=REPO,
        )
        try:
            for proc, port in ((backend, b_port), (proxied, g_port), (embedded, e_port)):
                wait_tcp(proc, port)
            header = f"Deploy-Token: {secret}"
            direct = f"http://127.0.0.1:{b_port}/bench/1.0.0/file.bin"
            through = f"http://127.0.0.1:{g_port}/api/v4/projects/{project_id}/packages/generic/bench/1.0.0/file.bin"
            stored = f"http://127.0.0.1:{e_port}/api/v4/projects/{project_id}/packages/generic/bench/{{v}}/file.bin"
            # Baseline: each gateway after one small authenticated request (handlers imported, store open).
            small = tmp / "small.bin"
            small.write_bytes(b"x" * 1024)
            curl("-H", header, "-T", str(small), through.replace("1.0.0", "0.0.1"))
            curl("-H", header, "-T", str(small), stored.format(v="0.0.1"))
            base_rss = {p.name: status_kib(p.pid, "VmRSS") for p in (proxied, embedded)}
            # Peak (VmHWM) covers everything from here on, warm-up transfers included.
            curl("-H", header, "-T", str(payload), through)
            curl("-H", header, through)
            rows: list[tuple[str, float, float]] = []
            for label, direct_args, gateway_args in (
                ("download (proxied backend)", ["-H", header, direct], ["-H", header, through]),
                ("upload (proxied backend)", ["-T", str(payload), direct], ["-H", header, "-T", str(payload), through]),
            ):
                d = best([curl(*direct_args) for _ in range(args.runs)])
                g = best([curl(*gateway_args) for _ in range(args.runs)])
                rows.append((label, d, g))
            d_up = best([curl("-T", str(payload), direct) for _ in range(args.runs)])
            e_up = best([curl("-H", header, "-T", str(payload), stored.format(v=f"1.0.{i}")) for i in range(args.runs)])
            rows.append(("upload (embedded store: sha256, fsync, rename)", d_up, e_up))
            d_down = best([curl("-H", header, direct) for _ in range(args.runs)])
            e_down = best([curl("-H", header, stored.format(v="1.0.0")) for _ in range(args.runs)])
            rows.append(("download (embedded store)", d_down, e_down))
            peak = {p.name: status_kib(p.pid, "VmHWM") for p in (proxied, embedded)}
        finally:
            for proc in (proxied, embedded, backend):
                stop(proc)

    mb = size / 1e6
    print(f"payload {mb:.0f} MB, median of {args.runs} runs, client curl, all on 127.0.0.1\n")
    print("| transfer | direct MB/s | gateway MB/s | ratio | target |")
    print("|---|---|---|---|---|")
    for label, d, g in rows:
        ratio = d / g
        print(f"| {label} | {mb / d:.0f} | {mb / g:.0f} | {ratio:.2f} | {'ok' if ratio >= 0.85 else 'MISSED'} ≥ 0.85 |")
    print("\n| gateway process | RSS after warm-up MB | peak RSS MB | growth MB | target |")
    print("|---|---|---|---|---|")
    for name in base_rss:
        growth = (peak[name] - base_rss[name]) / 1024
        print(
            f"| {name} | {base_rss[name] / 1024:.1f} | {peak[name] / 1024:.1f} | {growth:.1f} | "
            f"{'ok' if growth <= 30 else 'MISSED'} ≤ 30 |"
        )


if __name__ == "__main__":
    main()
