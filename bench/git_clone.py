"""git through the gateway versus the same backend without it, measured in one run.

1. `git clone --bare` of a random (incompressible) repository (200 MB; --quick 50 MB):
   - embedded backend: gateway (auth + git http-backend CGI) vs. the same CGI bridge (gateway/cgi.py) served by a
     bare aiohttp app without authentication (bench/servers.py git-bridge);
   - upstream backend: gateway → nginx + fcgiwrap + git http-backend vs. that nginx directly; nginx `proxy_pass` in
     front of the same upstream, in the same rounds, is the reference of what one more hop costs (reported).
2. Per-request authentication overhead: `git ls-remote` through the gateway (deploy token sent pre-emptively) vs.
   the unauthenticated bridge, per ls-remote and per HTTP request; and the median latency of one `GET info/refs`.
3. Peak RSS growth of the gateway process while it receives a 1 GB push (--quick 200 MB; embedded backend).

Targets (issue 3): clone ratio <= 1.05, auth overhead <= 2 ms per request, RSS growth <= 30 MB.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import SPREAD, Context, Gateway, Row, cpu_seconds, paired_ratio, tempdir
from bench.servers import launch, start_nginx_proxy
from gateway import config as config_module
from gateway import repositories
from tests.gitcli import FAST_PACK, git, git_env, make_random_repo, push_direct, with_credentials
from tests.procs import Proc, free_port, rss_kib, stop
from tests.servers import start_git_upstream

UPSTREAM_USER, UPSTREAM_PASSWORD = "gateway", "bench-upstream-secret"
PROJECT = "bench/big"
PUSH_PROJECT = "bench/push"


def populate(gw: Gateway, url: str) -> tuple[str, str, str]:
    """Through the API: group bench with projects big and push, a group deploy token (read_repository) and a
    Developer with a write_repository token; returns (token username, token, developer's token)."""
    group = gw.api(url, "POST", "/groups", {"name": "bench", "path": "bench"})
    for name in ("big", "push"):
        gw.api(url, "POST", "/projects", {"name": name, "path": name, "namespace_id": group["id"]})
    token = gw.api(
        url, "POST", f"/groups/{group['id']}/deploy_tokens", {"name": "bench", "scopes": ["read_repository"]}
    )
    dev = gw.api(
        url, "POST", "/users", {"username": "dev", "name": "Dev", "email": "dev@example.com", "password": "Dev-pw-123"}
    )
    pat = gw.api(
        url, "POST", f"/users/{dev['id']}/personal_access_tokens", {"name": "push", "scopes": ["write_repository"]}
    )
    gw.api(url, "POST", f"/groups/{group['id']}/members", {"user_id": dev["id"], "access_level": 30})
    return token["username"], token["token"], pat["token"]


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def clone_time(env: dict[str, str], url: str, dest: Path) -> float:
    try:
        return timed(lambda: git(env, "clone", "-q", "--bare", url, str(dest)).check())
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def ls_remote_batch(env: dict[str, str], args: list[str], url: str, n: int) -> float:
    def run() -> None:
        for _ in range(n):
            git(env, *args, "ls-remote", url).check()

    return timed(run)


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


def run(ctx: Context) -> list[Row]:
    size_mb, push_mb = ctx.pick(200, 50), ctx.pick(1024, 200)
    # Fifteen interleaved rounds: a clone lasts ~1.6-2 s and single rounds range 0.8-1.2. With five the median
    # swung 0.94-1.15 from one full run to the next, with nine the upstream row 1.01-1.10.
    n_ls, runs = ctx.pick(200, 40), ctx.pick(15, 2)
    base = tempdir("bench-git-")
    env = git_env(base / "home")
    stoppers: list[Callable[[], None]] = []
    try:
        # nginx's default fastcgi_buffering (on): fewer, larger writes, as operators run it.
        upstream = start_git_upstream(
            base / "upstream", username=UPSTREAM_USER, password=UPSTREAM_PASSWORD, buffering=True
        )
        stoppers.append(upstream.stop)
        # A production reverse proxy in front of the same upstream: the cost of one more hop on this machine.
        proxy, proxy_port = start_nginx_proxy(base / "nginx-proxy", int(upstream.url.rsplit(":", 1)[1]))
        stoppers.append(lambda: stop(proxy))
        gateways: dict[str, tuple[Gateway, list[str]]] = {}
        secrets: dict[str, tuple[str, str, str]] = {}
        for name, git_settings in (
            ("embedded", {}),
            (
                "upstream",
                {"backend": upstream.url, "backend_username": UPSTREAM_USER, "backend_password": UPSTREAM_PASSWORD},
            ),
        ):
            gw = Gateway(base / f"gateway-{name}", ctx, {"git": git_settings, "log": {"level": "warning"}}).install()
            stoppers.append(gw.stop)
            urls = [gw.serve(1, f"gateway-{i}") for i in range(SPREAD)]
            secrets[name] = populate(gw, urls[0])
            gateways[name] = (gw, urls)
        embedded_cfg = config_module.load(gateways["embedded"][0].config_file)
        repo_root = str(repositories.root(embedded_cfg))

        bridge_port = free_port()
        bridge: Proc = launch("git-bridge", bridge_port, repo_root, log=base / "bridge.log")
        stoppers.append(lambda: stop(bridge))

        src = base / "src"
        make_random_repo(env, src, megabytes=size_mb)
        embedded_bare = repositories.locate(embedded_cfg, PROJECT)
        assert embedded_bare is not None
        push_direct(env, src, embedded_bare)
        upstream_bare = upstream.create_bare(PROJECT)
        push_direct(env, src, upstream_bare)
        pack_mb = sum(p.stat().st_size for p in (embedded_bare / "objects" / "pack").glob("*.pack")) / 2**20

        emb_url = gateways["embedded"][1][0]
        emb, bridge_name = "embedded: gateway", "embedded: bridge, no auth"
        up, nginx_name, proxy_name = "upstream: gateway", "upstream: nginx direct", "upstream: nginx proxy_pass"

        def through(kind: str) -> list[tuple[str, int | None]]:
            """The clone URL of each of the gateway's processes, with the process whose Python CPU it costs."""
            gw, urls = gateways[kind]
            return [(with_credentials(f"{url}/{PROJECT}.git", *secrets[kind][:2]), gw.proc(url).pid) for url in urls]

        # Per target, its processes (round i through the i % n-th) and the pid whose CPU is counted, if any
        # (children such as git-http-backend not included).
        targets: dict[str, list[tuple[str, int | None]]] = {
            emb: through("embedded"),
            bridge_name: [(f"http://127.0.0.1:{bridge_port}/{PROJECT}.git", bridge.pid)],
            up: through("upstream"),
            nginx_name: [(with_credentials(f"{upstream.url}/{PROJECT}.git", UPSTREAM_USER, UPSTREAM_PASSWORD), None)],
            proxy_name: [
                (
                    with_credentials(f"http://127.0.0.1:{proxy_port}/{PROJECT}.git", UPSTREAM_USER, UPSTREAM_PASSWORD),
                    None,
                )
            ],
        }
        for url, _ in (entry for entries in targets.values() for entry in entries):
            clone_time(env, url, base / "warm")  # warm-up: page cache, connections, first-request costs
        times: dict[str, list[float]] = {name: [] for name in targets}
        cpu: dict[str, float] = dict.fromkeys(targets, 0.0)
        for i in range(runs):
            for name, entries in targets.items():  # interleaved so drift hits every target alike
                url, pid = entries[i % len(entries)]
                before = cpu_seconds(pid) if pid else 0.0
                times[name].append(clone_time(env, url, base / "clone"))
                cpu[name] += (cpu_seconds(pid) - before) / runs if pid else 0.0
        median = {name: statistics.median(values) for name, values in times.items()}

        # ls-remote: the deploy token sent pre-emptively (http.extraHeader), as CI jobs configure it, so both
        # sides make the same requests and the difference is the gateway's per-request work.
        user, token, pat = secrets["embedded"]
        header = "Authorization: Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()
        gw_url, direct_url = f"{emb_url}/{PROJECT}.git", f"http://127.0.0.1:{bridge_port}/{PROJECT}.git"
        gw_args = ["-c", f"http.extraHeader={header}"]
        block = 20
        ls_remote_batch(env, gw_args, gw_url, 5)
        ls_remote_batch(env, [], direct_url, 5)
        gw_total = direct_total = 0.0
        block_diffs: list[float] = []
        for _ in range(n_ls // block):
            gw_block = ls_remote_batch(env, gw_args, gw_url, block)
            direct_block = ls_remote_batch(env, [], direct_url, block)
            gw_total, direct_total = gw_total + gw_block, direct_total + direct_block
            block_diffs.append((gw_block - direct_block) / block)
        n_done = (n_ls // block) * block
        # Median of the per-block differences: robust against other load on the machine during one block.
        per_ls = statistics.median(block_diffs)
        per_request = per_ls / 2  # protocol v2 ls-remote = GET info/refs + POST ls-refs: two requests
        http_gw, http_direct = asyncio.run(info_refs_latency(gw_url, direct_url, header.split(": ", 1)[1], n_ls))

        push_src = base / "push-src"
        make_random_repo(env, push_src, megabytes=push_mb)
        gw_pid = gateways["embedded"][0].proc(emb_url).pid
        push_url = with_credentials(f"{emb_url}/{PUSH_PROJECT}.git", "dev", pat)
        git(env, "ls-remote", push_url).check()
        rss_before = rss_kib(gw_pid)
        sampler = RssSampler(gw_pid)
        sampler.start()
        push_seconds = timed(lambda: git(env, *FAST_PACK, "push", "-q", push_url, "HEAD:main", cwd=push_src).check())
        sampler.running = False
        sampler.join()
        growth_mb = (sampler.peak - rss_before) / 1024
    finally:
        for stopper in reversed(stoppers):
            stopper()
        shutil.rmtree(base, ignore_errors=True)

    def clone_row(label: str, gw: str, direct: str) -> Row:
        r, low, high = paired_ratio(times[gw], times[direct])
        return Row(
            label,
            f"{median[gw]:.2f} s",
            f"{median[direct]:.2f} s (rounds {low:.2f}-{high:.2f})",
            f"{r:.3f}",
            "<= 1.05",
            r <= 1.05,
        )

    def reference_row() -> Row:
        r, low, high = paired_ratio(times[proxy_name], times[nginx_name])
        versus, _, _ = paired_ratio(times[up], times[proxy_name])
        return Row(
            "  reference: nginx proxy_pass in front of the upstream, same rounds",
            f"{median[proxy_name]:.2f} s",
            f"{median[nginx_name]:.2f} s (rounds {low:.2f}-{high:.2f}); gateway vs nginx {versus:.3f}",
            f"{r:.3f}",
            "(reported)",
            None,
        )

    paired = f"median of {runs} paired rounds ({SPREAD} gateway processes)"
    return [
        clone_row(f"clone {size_mb} MB (pack {pack_mb:.0f} MB), embedded, {paired}", emb, bridge_name),
        clone_row(f"clone {size_mb} MB, upstream nginx, {paired}", up, nginx_name),
        reference_row(),
        Row("  Python CPU per clone, embedded", f"{cpu[emb]:.2f} s", f"bridge {cpu[bridge_name]:.2f} s", "", ""),
        Row("  Python CPU per clone, upstream hop", f"{cpu[up]:.2f} s", "(nginx)", "", ""),
        Row(
            f"git ls-remote x{n_done}",
            f"{gw_total:.2f} s",
            f"bridge {direct_total:.2f} s",
            f"{gw_total / direct_total:.3f}",
            "",
        ),
        Row(
            "  auth overhead per HTTP request (ls-remote)",
            f"{per_request * 1000:.2f} ms",
            "",
            "",
            "<= 2 ms",
            per_request * 1000 <= 2,
        ),
        Row(
            f"GET info/refs x{n_ls}, median latency",
            f"{http_gw * 1000:.2f} ms",
            f"bridge {http_direct * 1000:.2f} ms",
            f"+{(http_gw - http_direct) * 1000:.2f} ms",
            "<= +2 ms",
            (http_gw - http_direct) * 1000 <= 2,
        ),
        Row(
            f"push {push_mb} MB: gateway RSS growth",
            f"{growth_mb:.1f} MB",
            f"before {rss_before / 1024:.0f} MB ({push_seconds:.1f} s)",
            "",
            "<= 30 MB",
            growth_mb <= 30,
        ),
    ]


if __name__ == "__main__":
    from bench.__main__ import main

    raise SystemExit(main(["--only", "git"]))
