"""Soak: mixed clients at 200 concurrent connections against one `gateway serve` for a bounded time; errors and
p50/p99 per client kind, and the gateway's RSS over time. Targets (issue 8): 0 errors, RSS growth after warm-up
<= 10 MB. `python -m bench --only soak` (60 s; --quick 15 s) or alone: `python -m bench.soak --duration 60`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import resource
import shutil
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp

from bench.common import DATABASES, Context, Gateway, Row, print_table, status_kib, tempdir
from gateway import config as config_module
from gateway import repositories
from tests.gitcli import GIT, git_env, make_seed, push_direct
from tests.procs import processes
from tests.replicas import request

PROJECT = "soak/app"
PACKAGE_MB = 4  # "a generic package of a few MB": big enough to stream in many chunks, small enough for 2 cores
GROWTH_LIMIT_MB = 10.0
# The HTTP clients' share of the connections (the rest are `git ls-remote` processes, one connection each).
SHARES = {"jwt": 0.3, "api": 0.3, "refs": 0.25, "package": 0.15}
LABELS = {
    "jwt": "/jwt/auth token (Basic deploy token)",
    "api": "GET /projects/:id/deploy_tokens (PRIVATE-TOKEN)",
    "refs": "git GET info/refs (Basic deploy token)",
    "package": f"generic package download {PACKAGE_MB} MB (Deploy-Token)",
    "ls-remote": "git ls-remote process (pre-emptive Basic)",
}


@dataclass(frozen=True)
class Settings:
    duration: float = 60.0
    connections: int = 200
    warmup: float | None = None  # None: a quarter of the duration
    git_processes: int = 2  # real `git ls-remote` loops (each a fork+exec of git and two of git-http-backend)

    @property
    def warmup_s(self) -> float:
        return self.duration / 4 if self.warmup is None else self.warmup


@dataclass
class Stats:
    """One client kind: every request counted, latencies kept after warm-up only (the steady state)."""

    requests: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Probe:
    """One request a client repeats, and what a correct answer looks like (a truncated 200 is an error too)."""

    kind: str
    url: str
    headers: dict[str, str]
    prefix: bytes = b""
    size: int | None = None


@dataclass(frozen=True)
class Sample:
    t: float
    rss_kib: int
    pids: frozenset[int]


@dataclass
class Outcome:
    stats: dict[str, Stats]
    samples: list[Sample]
    elapsed: float
    client_cpu: float
    git_cpu: float
    gateway_cpu: float
    idle_rss_kib: int
    connections: dict[str, int]

    def errors(self) -> Counter[str]:
        """Every failure by kind and reason; a worker that died and was replaced by the supervisor is one even if
        every client got its answer."""
        errors: Counter[str] = Counter()
        for kind, s in self.stats.items():
            errors.update({f"{kind}: {reason}": n for reason, n in s.errors.items()})
        replaced = len(set().union(*(s.pids for s in self.samples)) - self.samples[0].pids)
        if replaced:
            errors["gateway process replaced"] = replaced
        return errors


# --- the gateway's processes ---------------------------------------------------------------------------------------


def gateway_pids(pid: int) -> list[int]:
    """The server and its pre-forked workers (same command line), never its `git http-backend` children."""
    table = processes()
    cmdline = next((p.cmdline for p in table if p.pid == pid), None)
    return [pid, *(p.pid for p in table if p.ppid == pid and p.cmdline == cmdline and p.state not in ("Z", "X"))]


def rss_sample(pid: int, t: float) -> Sample:
    pids = gateway_pids(pid)
    total = 0
    for p in pids:
        # A worker that just exited: not summed here, counted as a replacement by report().
        with contextlib.suppress(OSError, RuntimeError):
            total += status_kib(p)
    return Sample(t, total, frozenset(pids))


def cpu_with_children(pid: int) -> float:
    """User + system CPU of a process plus that of its waited-for children (git http-backend), /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


# --- seeding -------------------------------------------------------------------------------------------------------


def seed(gw: Gateway, url: str, tmp: Path) -> dict[str, Probe]:
    """Project soak/app with a small repository and a package, a deploy token, a Maintainer with a read_api PAT."""
    project, token = gw.project_with_token(
        url, "soak", "app", ["read_repository", "read_registry", "read_package_registry", "write_package_registry"]
    )
    person = {"username": "soak-maintainer", "name": "Soak", "email": "soak@example.com", "password": "Soak-pw-1"}
    user = gw.api(url, "POST", "/users", person)
    pat = gw.api(url, "POST", f"/users/{user['id']}/personal_access_tokens", {"name": "soak", "scopes": ["read_api"]})
    gw.api(url, "POST", f"/projects/{project['id']}/members", {"user_id": user["id"], "access_level": 40})

    env = git_env(tmp / "home")
    make_seed(env, tmp / "src", branches=10)
    bare = repositories.locate(config_module.load(gw.config_file), PROJECT)
    assert bare is not None and bare.is_dir(), "project creation did not create the bare repository"
    push_direct(env, tmp / "src", bare)

    payload = os.urandom(PACKAGE_MB * 1024 * 1024)
    package = f"{url}/api/v4/projects/{project['id']}/packages/generic/soak/1.0.0/file.bin"
    status = request(package, method="PUT", headers={"Deploy-Token": token["token"]}, body=payload)
    assert status == 201, f"package upload: {status}"

    basic = {"Authorization": "Basic " + base64.b64encode(f"{token['username']}:{token['token']}".encode()).decode()}
    return {
        "jwt": Probe(
            "jwt",
            f"{url}/jwt/auth?service=container_registry&scope=repository:{PROJECT}:pull",
            basic,
            prefix=b'{"token"',
        ),
        "api": Probe(
            "api", f"{url}/api/v4/projects/{project['id']}/deploy_tokens", {"PRIVATE-TOKEN": pat["token"]}, b"["
        ),
        "refs": Probe(
            "refs",
            f"{url}/{PROJECT}.git/info/refs?service=git-upload-pack",
            basic | {"Git-Protocol": "version=2"},
            prefix=b"000eversion 2\n",  # a protocol v2 advertisement starts with the version (gitprotocol-v2)
        ),
        "package": Probe("package", package, {"Deploy-Token": token["token"]}, size=len(payload)),
        # `git ls-remote` as CI jobs configure it (http.extraHeader), so that no 401 challenge is ever answered:
        # only good credentials, a failure burst would get 127.0.0.1 banned by the brute-force protection.
        "ls-remote": Probe("ls-remote", f"{url}/{PROJECT}.git", basic, prefix=b"refs/heads/main"),
    }


# --- the load ------------------------------------------------------------------------------------------------------


async def http_client(session: aiohttp.ClientSession, probe: Probe, stats: Stats, warm: float, end: float) -> None:
    while time.monotonic() < end:
        started = time.monotonic()
        reason = None
        try:
            async with session.get(probe.url, headers=probe.headers) as r:
                if probe.size is not None:
                    received = 0
                    async for chunk in r.content.iter_any():
                        received += len(chunk)
                    good = received == probe.size
                else:
                    good = (await r.read()).startswith(probe.prefix)
                if not 200 <= r.status < 300:
                    reason = f"HTTP {r.status}"
                elif not good:
                    reason = "unexpected body"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = type(exc).__name__
        stats.requests += 1
        if reason:
            stats.errors[reason] += 1
        elif started >= warm:
            stats.latencies.append(time.monotonic() - started)


async def ls_remote_client(probe: Probe, env: dict[str, str], stats: Stats, warm: float, end: float) -> None:
    # The header through GIT_CONFIG_* rather than `-c`: the secret stays out of the process table.
    env = env | {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: {probe.headers['Authorization']}",
    }
    while time.monotonic() < end:
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            GIT,
            "ls-remote",
            probe.url,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        stats.requests += 1
        if proc.returncode != 0:
            stats.errors[f"git exit {proc.returncode}"] += 1
        elif probe.prefix not in out:
            stats.errors["refs missing"] += 1
        elif started >= warm:
            stats.latencies.append(time.monotonic() - started)


async def sampler(pid: int, t0: float, end: float, interval: float, samples: list[Sample]) -> None:
    while True:
        now = time.monotonic()
        samples.append(rss_sample(pid, now - t0))
        if now >= end:
            return
        await asyncio.sleep(min(interval, max(0.0, end - now)))


def split(settings: Settings) -> dict[str, int]:
    """Connections per client kind: the git processes, then the HTTP clients by SHARES (rounding to the last)."""
    http = settings.connections - settings.git_processes
    counts = {kind: int(http * share) for kind, share in SHARES.items()}
    counts["jwt"] += http - sum(counts.values())
    return counts | {"ls-remote": settings.git_processes}


async def load(pid: int, probes: dict[str, Probe], settings: Settings, env: dict[str, str]) -> Outcome:
    counts = split(settings)
    stats = {kind: Stats() for kind in counts}
    samples: list[Sample] = []
    interval = max(1.0, settings.duration / 30)
    pids = gateway_pids(pid)
    cpu0, client0 = sum(cpu_with_children(p) for p in pids), time.process_time()
    git0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # One keep-alive connection per HTTP client task (limit = tasks); no per-host cap below it.
    connector = aiohttp.TCPConnector(limit=settings.connections - settings.git_processes, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        t0 = time.monotonic()
        warm, end = t0 + settings.warmup_s, t0 + settings.duration
        tasks = [asyncio.create_task(sampler(pid, t0, end, interval, samples))]
        for kind, n in counts.items():
            for _ in range(n):
                if kind == "ls-remote":
                    tasks.append(asyncio.create_task(ls_remote_client(probes[kind], env, stats[kind], warm, end)))
                else:
                    tasks.append(asyncio.create_task(http_client(session, probes[kind], stats[kind], warm, end)))
        await asyncio.gather(*tasks)  # every client finishes the request it has in flight: nothing is cut
        elapsed = time.monotonic() - t0
    git1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    gateway_cpu = sum(cpu_with_children(p) for p in pids) - cpu0
    client_cpu = time.process_time() - client0
    await asyncio.sleep(2)  # idle: what the gateway keeps once the load is gone
    return Outcome(
        stats,
        samples,
        elapsed,
        client_cpu,
        (git1.ru_utime + git1.ru_stime) - (git0.ru_utime + git0.ru_stime),
        gateway_cpu,
        rss_sample(pid, elapsed).rss_kib,
        counts,
    )


# --- the suite -----------------------------------------------------------------------------------------------------


def soak(ctx: Context, settings: Settings) -> list[Row]:
    outcome = run_soak(ctx, settings)
    progress("soak: RSS over time (s: MB) " + ", ".join(f"{s.t:.0f}: {s.rss_kib / 1024:.1f}" for s in outcome.samples))
    return report(outcome, settings, ctx.workers)


def run_soak(ctx: Context, settings: Settings) -> Outcome:
    """A gateway installed and seeded in a temporary directory, under load for `settings.duration`; then stopped
    (tests/e2e/test_soak.py runs a short one)."""
    tmp = tempdir("bench-soak-")
    # info: the access log written per request, as operators run it.
    gw = Gateway(tmp, ctx, {"log": {"level": "info"}})
    try:
        gw.install()
        url = gw.serve(ctx.workers, "gateway-soak")
        probes = seed(gw, url, tmp)
        pid = gw.proc(url).pid
        progress(
            f"soak: {settings.connections} connections for {settings.duration:.0f} s "
            f"(warm-up {settings.warmup_s:.0f} s), {ctx.workers} worker(s), {ctx.database}"
        )
        outcome = asyncio.run(load(pid, probes, settings, git_env(tmp / "home")))
        gw.proc(url).assert_running()
        return outcome
    finally:
        gw.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def slope_per_minute(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB), in MB per minute."""
    if len(points) < 2:
        return float("nan")
    ts, ys = [p[0] for p in points], [p[1] for p in points]
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    var = sum((t - mt) ** 2 for t in ts)
    return 60 * sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var if var else float("nan")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def report(o: Outcome, settings: Settings, workers: int) -> list[Row]:
    rows = []
    total = sum(s.requests for s in o.stats.values())
    for kind, s in o.stats.items():
        broken = sum(s.errors.values())
        rows.append(
            Row(
                f"{LABELS[kind]} x{o.connections[kind]}",
                f"p50 {pct(s.latencies, 0.5):.1f} / p99 {pct(s.latencies, 0.99):.1f} ms",
                f"{s.requests} req, {s.requests / o.elapsed:.0f}/s, {broken} errors",
                "",
                "",
            )
        )
    errors = o.errors()
    n_errors = sum(errors.values())
    cores = os.cpu_count() or 1
    rows.append(
        Row(
            f"all clients, {settings.connections} connections, {o.elapsed:.0f} s",
            f"{total / o.elapsed:.0f} req/s",
            f"gateway CPU {o.gateway_cpu / o.elapsed:.2f} core (git children incl.); client "
            f"{o.client_cpu / o.elapsed:.2f} + git {o.git_cpu / o.elapsed:.2f} core; {cores} cores",
            "",
            "",
        )
    )
    rows.append(
        Row(
            "errors (non-2xx, bad body, exception, git exit, worker died)",
            str(n_errors),
            f"of {total} requests" + (": " + ", ".join(f"{k} {v}" for k, v in errors.most_common(4)) if errors else ""),
            "",
            "0",
            n_errors == 0,
        )
    )
    steady = [s for s in o.samples if s.t >= settings.warmup_s]
    if not steady:
        steady = o.samples[-1:]
    warm, end = steady[0].rss_kib / 1024, steady[-1].rss_kib / 1024
    top = max(s.rss_kib for s in o.samples) / 1024
    slope = slope_per_minute([(s.t, s.rss_kib / 1024) for s in steady])
    processes_label = f"{len(o.samples[0].pids)} process{'es' if len(o.samples[0].pids) > 1 else ''}"
    rows.append(
        Row(
            f"gateway RSS ({processes_label}): start / warm-up end ({steady[0].t:.0f} s) / end / max / idle",
            f"{o.samples[0].rss_kib / 1024:.0f} / {warm:.1f} / {end:.1f} / {top:.1f} / {o.idle_rss_kib / 1024:.1f} MB",
            f"{len(o.samples)} samples, every {max(1.0, settings.duration / 30):.0f} s",
            "",
            "",
        )
    )
    # RSS over time in the table: about 8 of the samples, evenly spaced (all of them go to stderr).
    shown = o.samples[:: max(1, len(o.samples) // 7)][:7] + o.samples[-1:]
    rows.append(
        Row(
            "gateway RSS over time, MB",
            " ".join(f"{s.rss_kib / 1024:.0f}" for s in shown),
            "at " + ", ".join(f"{s.t:.0f}" for s in shown) + " s",
            "",
            "",
        )
    )
    growth = end - warm
    rows.append(
        Row(
            "gateway RSS growth after warm-up",
            f"{growth:+.1f} MB",
            f"slope {slope:+.1f} MB/min over {steady[-1].t - steady[0].t:.0f} s",
            f"{growth / warm:+.3f}",
            f"<= {GROWTH_LIMIT_MB:.0f} MB",
            growth <= GROWTH_LIMIT_MB,
        )
    )
    return rows


def run(ctx: Context) -> list[Row]:
    return soak(ctx, Settings(duration=ctx.pick(60.0, 15.0)))


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (60)")
    parser.add_argument("--connections", type=int, default=200, help="concurrent connections in all (200)")
    parser.add_argument("--warmup", type=float, help="seconds before RSS and latencies count (a quarter)")
    parser.add_argument("--git-processes", type=int, default=2, help="of the connections, git ls-remote loops (2)")
    parser.add_argument("--workers", type=int, default=2, help="gateway serve --workers (2)")
    parser.add_argument("--database", choices=DATABASES, default="sqlite", help="the gateway's database (sqlite)")
    args = parser.parse_args(argv)
    if not 0 <= args.git_processes < args.connections or args.connections - args.git_processes < len(SHARES):
        parser.error("--connections must leave at least one connection per HTTP client kind")
    settings = Settings(args.duration, args.connections, args.warmup, args.git_processes)
    if not 0 <= settings.warmup_s < settings.duration:
        parser.error("--warmup must be shorter than --duration")
    ctx = Context(database=args.database, workers=args.workers, selected=(args.database,))
    postgres = None
    try:
        if args.database == "postgresql":
            from tests.pg import start_cluster

            postgres = ctx.postgres = start_cluster()
        rows = soak(ctx, settings)
    finally:
        if postgres is not None:
            postgres.stop()
    print_table(f"Soak: {settings.duration:.0f} s", [replace(r, suite=f"soak ({args.database})") for r in rows])
    return 0 if all(r.ok is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
