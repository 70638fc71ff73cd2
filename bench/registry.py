"""Registry blobs: a 500 MB layer pushed and pulled with skopeo through the gateway's /v2/ forwarding versus straight
to the same docker-registry in the same run; RSS growth of the gateway while it streams them.

(The token service, /jwt/auth, is bench/auth.py.) Needs docker-registry and skopeo (scripts/install-test-deps).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import uuid

from bench.common import Context, Gateway, Row, paired_ratio, status_kib, tempdir, timed
from tests.oci import build_image
from tests.procs import Proc, free_port, start, stop, wait_http
from tests.servers import require

# Push and pull runs, each with a new layer. With 3, a full run's SQLite pull read 0.71 (146 against 206 MB/s) where
# the other database in the same run and the runs before read 0.87-1.14.
RUNS = 5


def run(ctx: Context) -> list[Row]:
    require("docker-registry", "docker-registry")
    require("skopeo", "skopeo")
    tmp = tempdir("bench-registry-")
    reg_port = free_port()
    gw = Gateway(tmp, ctx, {"registry": {"backend": f"http://127.0.0.1:{reg_port}"}, "log": {"level": "warning"}})
    registry: Proc | None = None
    try:
        gw.install()
        url = gw.serve(1)
        _, token = gw.project_with_token(url, "bench", "app", ["read_registry", "write_registry"])
        cfg = {
            "version": 0.1,
            "log": {"level": "error"},
            "storage": {"filesystem": {"rootdirectory": str(tmp / "registry")}},
            "http": {"addr": f"127.0.0.1:{reg_port}", "secret": uuid.uuid4().hex},
            "auth": {
                "token": {
                    "realm": f"{url}/jwt/auth",
                    "service": "container_registry",
                    "issuer": "gitlab-issuer",
                    "rootcertbundle": str(tmp / "data" / "registry.crt"),
                }
            },
        }
        (tmp / "registry.yml").write_text(json.dumps(cfg))
        registry = start("registry", ["docker-registry", "serve", str(tmp / "registry.yml")], log=tmp / "registry.log")
        wait_http(registry, f"http://127.0.0.1:{reg_port}/v2/")

        size, runs = ctx.pick(500, 100) * 1024 * 1024, ctx.pick(RUNS, 1)
        # A different random layer for every push: skopeo would mount (or skip) a layer the registry already holds.
        images = {}
        for name in ("via-gateway", "direct"):
            for run in range(runs):
                images[name, run] = tmp / f"image-{name}-{run}"
                build_image(images[name, run], size=size, compresslevel=0)
        creds = f"{token['username']}:{token['token']}"
        hosts = {"via-gateway": url.removeprefix("http://"), "direct": f"127.0.0.1:{reg_port}"}
        gateway_pid = gw.proc(url).pid
        rss_before = status_kib(gateway_pid)
        push: dict[str, list[float]] = {name: [] for name in hosts}
        pull: dict[str, list[float]] = {name: [] for name in hosts}
        # One push and one pull each swung the ratio from 0.81 to 1.05 between full runs (the disk's write-back):
        # repeated, the two sides interleaved and taking turns going first, the per-run ratios' median judged.
        for run in range(runs):
            order = list(hosts.items()) if run % 2 == 0 else list(hosts.items())[::-1]
            for name, host in order:
                env = {
                    "HOME": str(tmp / f"home-{name}-{run}"),
                    "PATH": os.environ["PATH"],
                    "REGISTRY_AUTH_FILE": str(tmp / "auth.json"),
                }
                dest = f"docker://{host}/bench/app/{name}-{run}:v1"
                push[name].append(
                    timed(
                        [
                            *("skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", creds),
                            *(f"oci:{images[name, run]}:v1", dest),
                        ],
                        env,
                    )
                )
            for name, host in order:
                env = {
                    "HOME": str(tmp / f"home-{name}-{run}"),
                    "PATH": os.environ["PATH"],
                    "REGISTRY_AUTH_FILE": str(tmp / "auth.json"),
                }
                out = tmp / f"pulled-{name}"
                source = f"docker://{host}/bench/app/{name}-{run}:v1"
                pull[name].append(
                    timed(["skopeo", "copy", "--src-tls-verify=false", "--src-creds", creds, source, f"dir:{out}"], env)
                )
                shutil.rmtree(out)
        rss_peak = status_kib(gateway_pid, "VmHWM")
    finally:
        if registry is not None:
            stop(registry)
        gw.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    mb = size / 1024 / 1024

    def thr(seconds: float) -> str:
        return f"{mb / seconds:.0f} MB/s"

    growth = (rss_peak - rss_before) / 1024
    rows = []
    for kind, measured in (("push", push), ("pull", pull)):
        # Throughput ratio gateway/direct = time ratio direct/gateway, per run (both sides of a run back to back).
        ratio, low, high = paired_ratio(measured["direct"], measured["via-gateway"])
        rows.append(
            Row(
                f"{kind} {mb:.0f} MB layer (skopeo), median of {runs} paired runs",
                thr(statistics.median(measured["via-gateway"])),
                f"direct {thr(statistics.median(measured['direct']))} (runs {low:.2f}-{high:.2f})",
                f"{ratio:.2f}",
                ">= 0.85",
                ratio >= 0.85,
            )
        )
    return [
        *rows,
        Row(
            "gateway RSS growth during blobs",
            f"{growth:.1f} MB",
            f"before {rss_before / 1024:.0f} MB",
            "",
            "<= 30 MB",
            growth <= 30,
        ),
    ]


if __name__ == "__main__":
    from bench.__main__ import main

    raise SystemExit(main(["--only", "registry"]))
