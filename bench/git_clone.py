"""Benchmark: git through the gateway versus the same backend without it, measured in one run.

    .venv/bin/python bench/git_clone.py [--size-mb 200] [--push-mb 1024] [--ls-remote 200] [--runs 5]

1. `git clone --bare` of a random (incompressible) repository of --size-mb MB:
   - embedded backend: gateway (auth + git http-backend CGI) vs. the same CGI bridge (gateway/cgi.py) served by a
     bare aiohttp app without authentication;
   - upstream backend: gateway → nginx + fcgiwrap + git http-backend vs. that nginx directly.
2. Per-request authentication overhead: `git ls-remote` x --ls-remote through the gateway (deploy token sent
   pre-emptively) vs. the unauthenticated bridge; reported per ls-remote and per HTTP request.
3. Peak RSS growth of the gateway process while it receives a --push-mb MB push (embedded backend).

Targets (issue 3): clone ratio <= 1.05, ls-remote overhead <= 2 ms per request, RSS growth <= 30 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway import config as config_module  # noqa: E402
from gateway import repositories, secretbox  # noqa: E402
from gateway.clock import FixedClock  # noqa: E402
from gateway.config import sqlite_path  # noqa: E402
from gateway.store.sqlite import SQLiteStore  # noqa: E402
from gateway.users import AccessLevel, PasswordHasher  # noqa: E402
from tests.gitcli import FAST_PACK, git, git_env, make_random_repo, push_direct  # noqa: E402
from tests.procs import free_port, rss_kib, start, stop, wait_tcp  # noqa: E402
from tests.servers import (  # noqa: E402
    init_gateway,
    start_gateway,
    start_git_upstream,
    write_config,
)
from tests.world import World  # noqa: E402

UPSTREAM_USER, UPSTREAM_PASSWORD = "gateway", "bench-upstream-secret"
PROJECT = "bench/big"
PUSH_PROJECT = "bench/push"


# --- the unauthenticated baseline: gateway/cgi.py behind a bare aiohttp app ------------------------------------


def serve_bridge(port: int, root: str) -> None:
    """The embedded backend's CGI bridge without routing, auth or a database: the floor the gateway adds to."""
    from aiohttp import web

    from gateway import cgi, proxy
    from gateway.git_http import http_backend

    async def handle(request: web.Request) -> web.StreamResponse:
        first = await request.content.read(proxy.CHUNK) if request.body_exists else b""
        env = repositories.git_env() | {
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": request.method,
            "GIT_PROJECT_ROOT": root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": request.path,
            "QUERY_STRING": request.query_string,
            "REMOTE_USER": "bench",
        }
        for header, var in (
            ("Content-Type", "CONTENT_TYPE"),
            ("Content-Length", "CONTENT_LENGTH"),
            ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
            ("Git-Protocol", "GIT_PROTOCOL"),
        ):
            if header in request.headers:
                env[var] = request.headers[header]
        return await cgi.run(
            request, [await http_backend()], env, first=first, slots=request.app[SLOTS], idle_timeout=600
        )

    SLOTS = web.AppKey("slots", asyncio.Semaphore)
    app = web.Application()
    app[SLOTS] = asyncio.Semaphore(16)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, auto_decompress=False, access_log=None, print=None)


# --- setup ---------------------------------------------------------------------------------------------------------


async def populate(config_file: Path) -> tuple[str, str, str]:
    """A group token (read_repository) and a Developer's PAT; returns (token user, token, pat)."""
    config = config_module.load(config_file)
    store = await SQLiteStore(sqlite_path(config)).open()
    try:
        await store.migrate()
        world = World(
            store,
            FixedClock(datetime.now(UTC)),
            secretbox.load(Path(config.storage.encryption_key)),
            PasswordHasher(64, 1),
            config,
        )
        group = await world.group("bench")
        await world.project("big", group)
        await world.project("push", group)
        token = await world.deploy_token(group)
        dev = await world.user("dev", scopes=("write_repository",))
        await world.member(dev, group, AccessLevel.DEVELOPER)
        return token.token.username, token.secret, dev.pat
    finally:
        await store.close()


def timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (not its children), from /proc/PID/stat."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def clone_time(env: dict[str, str], url: str, dest: Path) -> float:
    def run() -> None:
        git(env, "clone", "-q", "--bare", url, str(dest)).check()

    try:
        return timed(run)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def ls_remote_batch(env: dict[str, str], args: list[str], url: str, n: int) -> float:
    def run() -> None:
        for _ in range(n):
            git(env, *args, "ls-remote", url).check()

    return timed(run)


def with_creds(url: str, user: str, secret: str) -> str:
    from tests.gitcli import with_credentials

    return with_credentials(url, user, secret)


async def info_refs_latency(gw_url: str, direct_url: str, authorization: str, n: int) -> tuple[float, float]:
    """Median latency of one authenticated `GET info/refs` (keep-alive client, no git process start-up in the
    measurement): the gateway's per-request work is the difference to the unauthenticated bridge."""
    import aiohttp

    path = "/info/refs?service=git-upload-pack"
    samples: dict[str, list[float]] = {"gw": [], "direct": []}
    async with aiohttp.ClientSession() as session:
        for i in range(n + 10):
            for key, url, headers in (("gw", gw_url, {"Authorization": authorization}), ("direct", direct_url, {})):
                started = time.perf_counter()
                async with session.get(url + path, headers=headers | {"Git-Protocol": "version=2"}) as r:
                    await r.read()
                    assert r.status == 200, r.status
                if i >= 10:  # warm-up excluded
                    samples[key].append(time.perf_counter() - started)
    return statistics.median(samples["gw"]), statistics.median(samples["direct"])


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.01)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--push-mb", type=int, default=1024)
    parser.add_argument("--ls-remote", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--nginx-buffering",
        choices=["on", "off"],
        default="on",
        help="fastcgi_buffering of the upstream nginx (on: nginx's default; off: ~4 KB chunks, more work per byte)",
    )
    parser.add_argument("--bridge", nargs=2, metavar=("PORT", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bridge:
        serve_bridge(int(args.bridge[0]), args.bridge[1])
        return 0

    base = Path(tempfile.mkdtemp(prefix="bench-git-"))
    env = git_env(base / "home")
    stoppers: list[object] = []
    try:
        print(f"workdir {base}", flush=True)
        upstream = start_git_upstream(
            base / "upstream",
            username=UPSTREAM_USER,
            password=UPSTREAM_PASSWORD,
            buffering=args.nginx_buffering == "on",
        )
        stoppers.append(upstream.stop)

        gateways = {}
        secrets: dict[str, tuple[str, str, str]] = {}
        for name, git_settings in (
            ("embedded", {}),
            (
                "upstream",
                {"backend": upstream.url, "backend_username": UPSTREAM_USER, "backend_password": UPSTREAM_PASSWORD},
            ),
        ):
            cfg = write_config(base / f"gateway-{name}", git=git_settings, log_level="warning")
            init_gateway(cfg)
            secrets[name] = asyncio.run(populate(cfg))
            gateways[name] = start_gateway(cfg)
            stoppers.append(gateways[name].stop)
        embedded_cfg = config_module.load(gateways["embedded"].config)
        repo_root = str(repositories.root(embedded_cfg))

        bridge_port = free_port()
        bridge = start(
            "bridge", [sys.executable, __file__, "--bridge", str(bridge_port), repo_root], log=base / "bridge.log"
        )
        stoppers.append(lambda: stop(bridge))
        wait_tcp(bridge, bridge_port)

        print(f"creating a {args.size_mb} MB random repository ...", flush=True)
        src = base / "src"
        make_random_repo(env, src, megabytes=args.size_mb)
        embedded_bare = repositories.locate(embedded_cfg, PROJECT)
        assert embedded_bare is not None
        push_direct(env, src, embedded_bare)
        upstream_bare = upstream.create_bare(PROJECT)
        push_direct(env, src, upstream_bare)
        pack_mb = sum(p.stat().st_size for p in (embedded_bare / "objects" / "pack").glob("*.pack")) / 2**20

        targets = {
            "embedded: gateway": with_creds(f"{gateways['embedded'].url}/{PROJECT}.git", *secrets["embedded"][:2]),
            "embedded: bridge, no auth": f"http://127.0.0.1:{bridge_port}/{PROJECT}.git",
            "upstream: gateway": with_creds(f"{gateways['upstream'].url}/{PROJECT}.git", *secrets["upstream"][:2]),
            "upstream: nginx direct": with_creds(f"{upstream.url}/{PROJECT}.git", UPSTREAM_USER, UPSTREAM_PASSWORD),
        }
        for url in targets.values():  # warm-up: page cache, connections, first-request costs
            clone_time(env, url, base / "warm")
        # Whose Python CPU each clone costs (children such as git-http-backend not included).
        servers = {
            "embedded: gateway": gateways["embedded"].pid,
            "embedded: bridge, no auth": bridge.pid,
            "upstream: gateway": gateways["upstream"].pid,
        }
        times: dict[str, list[float]] = {name: [] for name in targets}
        cpu: dict[str, float] = dict.fromkeys(targets, 0.0)
        for _ in range(args.runs):
            for name, url in targets.items():  # interleaved so drift hits every target alike
                before = cpu_seconds(servers[name]) if name in servers else 0.0
                times[name].append(clone_time(env, url, base / "clone"))
                cpu[name] += (cpu_seconds(servers[name]) - before) / args.runs if name in servers else 0.0
        median = {name: statistics.median(values) for name, values in times.items()}
        best = {name: min(values) for name, values in times.items()}

        # ls-remote: the deploy token sent pre-emptively (http.extraHeader), as CI jobs configure it, so both
        # sides make the same requests and the difference is the gateway's per-request work.
        user, token, _pat = secrets["embedded"]
        header = "Authorization: Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()
        gw_url = f"{gateways['embedded'].url}/{PROJECT}.git"
        direct_url = f"http://127.0.0.1:{bridge_port}/{PROJECT}.git"
        gw_args = ["-c", f"http.extraHeader={header}"]
        block, n = 20, args.ls_remote
        ls_remote_batch(env, gw_args, gw_url, 5)
        ls_remote_batch(env, [], direct_url, 5)
        gw_total = direct_total = 0.0
        block_diffs: list[float] = []
        for _ in range(n // block):
            gw_block = ls_remote_batch(env, gw_args, gw_url, block)
            direct_block = ls_remote_batch(env, [], direct_url, block)
            gw_total, direct_total = gw_total + gw_block, direct_total + direct_block
            block_diffs.append((gw_block - direct_block) / block)
        runs = (n // block) * block
        # Median of the per-block differences: robust against other load on the machine during one block.
        per_ls = statistics.median(block_diffs)
        # protocol v2 ls-remote = GET info/refs + POST ls-refs: two authenticated requests
        per_request = per_ls / 2
        http_gw, http_direct = asyncio.run(info_refs_latency(gw_url, direct_url, header.split(": ", 1)[1], n))

        print(f"creating a {args.push_mb} MB random repository for the push ...", flush=True)
        push_src = base / "push-src"
        make_random_repo(env, push_src, megabytes=args.push_mb)
        gw = gateways["embedded"]
        push_url = with_creds(f"{gw.url}/{PUSH_PROJECT}.git", "dev", secrets["embedded"][2])
        git(env, "ls-remote", push_url).check()
        rss_before = rss_kib(gw.pid)
        sampler = RssSampler(gw.pid)
        sampler.start()
        push_seconds = timed(lambda: git(env, *FAST_PACK, "push", "-q", push_url, "HEAD:main", cwd=push_src).check())
        sampler.running = False
        sampler.join()
        growth_mb = (sampler.peak - rss_before) / 1024

        def clone_row(label: str, stat: dict[str, float], gw: str, direct: str) -> tuple[str, str, str, str, str]:
            return (label, f"{stat[gw]:.2f} s", f"{stat[direct]:.2f} s", f"{stat[gw] / stat[direct]:.3f}", "<= 1.05")

        emb, bridge_name = "embedded: gateway", "embedded: bridge, no auth"
        up, nginx_name = "upstream: gateway", "upstream: nginx direct"
        rows = [
            clone_row("clone embedded, median (gateway / bridge)", median, emb, bridge_name),
            clone_row("clone embedded, best", best, emb, bridge_name),
            clone_row("clone upstream, median (gateway / nginx)", median, up, nginx_name),
            clone_row("clone upstream, best", best, up, nginx_name),
            ("  Python CPU per clone, embedded", f"{cpu[emb]:.2f} s", f"{cpu[bridge_name]:.2f} s", "", ""),
            ("  Python CPU per clone, upstream hop", f"{cpu[up]:.2f} s", "(nginx)", "", ""),
            (
                f"ls-remote x{runs} (gateway / bridge)",
                f"{gw_total:.2f} s",
                f"{direct_total:.2f} s",
                f"{gw_total / direct_total:.3f}",
                "",
            ),
            ("  auth overhead per ls-remote", f"{per_ls * 1000:.2f} ms", "", "", ""),
            ("  auth overhead per HTTP request", f"{per_request * 1000:.2f} ms", "", "", "<= 2 ms"),
            (
                f"GET info/refs x{n}, median latency",
                f"{http_gw * 1000:.2f} ms",
                f"{http_direct * 1000:.2f} ms",
                f"+{(http_gw - http_direct) * 1000:.2f} ms",
                "<= 2 ms",
            ),
            (
                f"push {args.push_mb} MB: gateway RSS",
                f"{rss_before / 1024:.1f} -> {sampler.peak / 1024:.1f} MB",
                f"{push_seconds:.1f} s",
                f"+{growth_mb:.1f} MB",
                "<= 30 MB",
            ),
        ]
        print()
        print(
            f"nginx fastcgi_buffering {args.nginx_buffering}; repository: {args.size_mb} MB random data, "
            f"pack {pack_mb:.0f} MB; {args.runs} clones per target "
            f"(all runs: {', '.join(f'{k}: ' + '/'.join(f'{v:.2f}' for v in vs) for k, vs in times.items())})"
        )
        widths = [
            max(len(str(r[i])) for r in [*rows, ("measure", "gateway", "baseline", "ratio", "target")])
            for i in range(5)
        ]
        header_row = ("measure", "gateway", "baseline", "ratio", "target")
        print(" | ".join(h.ljust(w) for h, w in zip(header_row, widths, strict=True)))
        print("-+-".join("-" * w for w in widths))
        for row in rows:
            print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
        return 0
    finally:
        for stopper in reversed(stoppers):
            stopper()  # type: ignore[operator]
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
