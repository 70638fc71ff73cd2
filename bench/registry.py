"""Registry benchmark: /jwt/auth rate and latency vs the same run's limit; 500 MB layer push/pull vs direct; RSS.

Run: `.venv/bin/python -m bench.registry` (needs docker-registry, skopeo and wrk: scripts/install-test-deps).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

from bench.common import Gateway, Proc, Row, free_port, print_table, rss_kib, tempdir, wait_http, wrk
from gateway import signing_keys
from gateway.principals import ANONYMOUS
from gateway.registry_auth import Access, mint
from tests.oci import build_image

BARE_SERVER = """
import sys
from aiohttp import web
body = {"token": "x" * 900, "access_token": "x" * 900, "expires_in": 300, "issued_at": "2026-01-01T00:00:00Z"}
async def h(request): return web.json_response(body)
app = web.Application(); app.router.add_get("/jwt/auth", h)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def signing_rate(key: signing_keys.SigningKey, seconds: float = 3.0) -> float:
    """Raw JWT signing rate of one core for the gateway's key and algorithm (the token service's floor)."""
    granted = [Access("repository", "bench/app", ("pull", "push"))]
    now = datetime.now(UTC)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        mint(key, issuer="i", audience="a", principal=ANONYMOUS, granted=granted, now=now, ttl=300, include_x5c=False)
        count += 1
    return count / (time.perf_counter() - started)


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    tmp = tempdir("bench-registry-")
    reg_port = free_port()
    gw = Gateway(tmp, extra_config=f'[registry]\nbackend = "http://127.0.0.1:{reg_port}"\n')
    gw.port = free_port()
    registry = bare = None
    try:
        gw.start()
        _, token = gw.project_with_token("bench", "app", ["read_registry", "write_registry"])
        cfg = {
            "version": 0.1,
            "log": {"level": "error"},
            "storage": {"filesystem": {"rootdirectory": str(tmp / "registry")}},
            "http": {"addr": f"127.0.0.1:{reg_port}", "secret": uuid.uuid4().hex},
            "auth": {
                "token": {
                    "realm": f"{gw.base}/jwt/auth",
                    "service": "container_registry",
                    "issuer": "gitlab-issuer",
                    "rootcertbundle": str(tmp / "data" / "registry.crt"),
                }
            },
        }
        (tmp / "registry.yml").write_text(json.dumps(cfg))
        registry = Proc(["docker-registry", "serve", str(tmp / "registry.yml")], tmp / "registry.log").start()
        wait_http(f"http://127.0.0.1:{reg_port}/v2/", (401,))
        bare_port = free_port()
        bare = Proc([sys.executable, "-c", BARE_SERVER, str(bare_port)], tmp / "bare.log").start()
        wait_http(f"http://127.0.0.1:{bare_port}/jwt/auth")

        # --- token service ---------------------------------------------------------------------------------------
        auth = base64.b64encode(f"{token['username']}:{token['token']}".encode()).decode()
        query = "service=container_registry&scope=repository:bench/app:pull,push"
        wrk(f"{gw.base}/jwt/auth?{query}", seconds=2, headers=[f"Authorization: Basic {auth}"])  # warm-up
        gw_load = wrk(f"{gw.base}/jwt/auth?{query}", headers=[f"Authorization: Basic {auth}"])
        # Every request a different image name: no signature can be reused, each token is signed.
        distinct = tmp / "distinct.lua"
        distinct.write_text(
            'local n = 0\nrequest = function()\n  n = n + 1\n'
            '  return wrk.format(nil, "/jwt/auth?service=container_registry&scope=repository:bench/app/i" .. n'
            ' .. ":pull")\nend\n'
        )
        gw_distinct = wrk(gw.base, headers=[f"Authorization: Basic {auth}"], script=distinct)
        bare_load = wrk(f"http://127.0.0.1:{bare_port}/jwt/auth?{query}")
        key = signing_keys.load(tmp / "data" / "registry.key", tmp / "data" / "registry.crt")
        sign = signing_rate(key)
        # One worker does both jobs in turn: the ceiling is the harmonic combination of the two rates.
        limit = 1 / (1 / bare_load.rps + 1 / sign)

        # --- blobs ---------------------------------------------------------------------------------------------
        size = int(os.environ.get("BENCH_LAYER_MB", "500")) * 1024 * 1024
        images = {}
        for name in ("via-gateway", "direct"):  # different random layers: no cross-repo mount shortcuts
            images[name] = tmp / f"image-{name}"
            build_image(images[name], size=size, compresslevel=0)
        env = {"HOME": str(tmp / "home"), "PATH": os.environ["PATH"], "REGISTRY_AUTH_FILE": str(tmp / "auth.json")}
        creds = f"{token['username']}:{token['token']}"
        targets = {"via-gateway": f"127.0.0.1:{gw.port}", "direct": f"127.0.0.1:{reg_port}"}
        rss_before = rss_kib(gw.proc.pid) if gw.proc else 0
        push, pull = {}, {}
        for name, host in targets.items():
            push[name] = timed(
                [
                    "skopeo",
                    "copy",
                    "--dest-tls-verify=false",
                    "--dest-creds",
                    creds,
                    f"oci:{images[name]}:v1",
                    f"docker://{host}/bench/app/{name}:v1",
                ],
                env,
            )
        for name, host in targets.items():
            out = tmp / f"pulled-{name}"
            pull[name] = timed(
                [
                    "skopeo",
                    "copy",
                    "--src-tls-verify=false",
                    "--src-creds",
                    creds,
                    f"docker://{host}/bench/app/{name}:v1",
                    f"dir:{out}",
                ],
                env,
            )
            shutil.rmtree(out)
        rss_peak = rss_kib(gw.proc.pid, "VmHWM") if gw.proc else 0
        mb = size / 1024 / 1024

        def thr(seconds: float) -> str:
            return f"{mb / seconds:.0f} MB/s"

        rows = [
            Row(
                "/jwt/auth rate, same request, 64 conns, 1 worker",
                f"{gw_load.rps:.0f}/s",
                f"limit {limit:.0f}/s (bare aiohttp {bare_load.rps:.0f}/s, {key.algorithm} signing {sign:.0f}/s)",
                f"{gw_load.rps / limit:.2f}",
                ">= 0.80",
                gw_load.rps / limit >= 0.8,
            ),
            Row(
                "/jwt/auth p50 / p99, same request",
                f"{gw_load.p50_ms:.1f} / {gw_load.p99_ms:.1f} ms",
                f"bare {bare_load.p50_ms:.1f} / {bare_load.p99_ms:.1f} ms",
                "",
                "p99 <= 25 ms",
                gw_load.p99_ms <= 25,
            ),
            Row(
                "/jwt/auth rate, every request signed",
                f"{gw_distinct.rps:.0f}/s",
                f"limit {limit:.0f}/s",
                f"{gw_distinct.rps / limit:.2f}",
                ">= 0.80",
                gw_distinct.rps / limit >= 0.8,
            ),
            Row(
                "/jwt/auth p50 / p99, every request signed",
                f"{gw_distinct.p50_ms:.1f} / {gw_distinct.p99_ms:.1f} ms",
                "",
                "",
                "p99 <= 25 ms",
                gw_distinct.p99_ms <= 25,
            ),
            Row(
                "/jwt/auth errors",
                str(gw_load.errors + gw_distinct.errors),
                "",
                "",
                "0",
                gw_load.errors + gw_distinct.errors == 0,
            ),
            Row(
                f"push {mb:.0f} MB layer",
                thr(push["via-gateway"]),
                f"direct {thr(push['direct'])}",
                f"{push['direct'] / push['via-gateway']:.2f}",
                ">= 0.85",
                push["direct"] / push["via-gateway"] >= 0.85,
            ),
            Row(
                f"pull {mb:.0f} MB layer",
                thr(pull["via-gateway"]),
                f"direct {thr(pull['direct'])}",
                f"{pull['direct'] / pull['via-gateway']:.2f}",
                ">= 0.85",
                pull["direct"] / pull["via-gateway"] >= 0.85,
            ),
            Row(
                "gateway RSS growth during blobs",
                f"{(rss_peak - rss_before) / 1024:.1f} MB",
                f"before {rss_before / 1024:.0f} MB",
                "",
                "<= 30 MB",
                (rss_peak - rss_before) / 1024 <= 30,
            ),
        ]
        print_table("Registry: token service and blob streaming", rows)
    finally:
        for proc in (bare, registry):
            if proc:
                proc.stop()
        gw.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
