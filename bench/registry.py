"""Registry blobs: a 500 MB layer pushed and pulled with skopeo through the gateway's /v2/ forwarding versus straight
to the same docker-registry in the same run; RSS growth of the gateway while it streams them.

(The token service, /jwt/auth, is bench/auth.py.) Needs docker-registry and skopeo (scripts/install-test-deps).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid

from bench.common import Context, Gateway, Row, status_kib, tempdir, timed
from tests.oci import build_image
from tests.procs import Proc, free_port, start, stop, wait_http
from tests.servers import require


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

        size = ctx.pick(500, 100) * 1024 * 1024
        images = {}
        for name in ("via-gateway", "direct"):  # different random layers: no cross-repo mount shortcuts
            images[name] = tmp / f"image-{name}"
            build_image(images[name], size=size, compresslevel=0)
        env = {"HOME": str(tmp / "home"), "PATH": os.environ["PATH"], "REGISTRY_AUTH_FILE": str(tmp / "auth.json")}
        creds = f"{token['username']}:{token['token']}"
        hosts = {"via-gateway": url.removeprefix("http://"), "direct": f"127.0.0.1:{reg_port}"}
        gateway_pid = gw.proc(url).pid
        rss_before = status_kib(gateway_pid)
        push, pull = {}, {}
        for name, host in hosts.items():
            dest = f"docker://{host}/bench/app/{name}:v1"
            push[name] = timed(
                ["skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{images[name]}:v1", dest],
                env,
            )
        for name, host in hosts.items():
            out = tmp / f"pulled-{name}"
            source = f"docker://{host}/bench/app/{name}:v1"
            pull[name] = timed(
                ["skopeo", "copy", "--src-tls-verify=false", "--src-creds", creds, source, f"dir:{out}"], env
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
    return [
        Row(
            f"push {mb:.0f} MB layer (skopeo)",
            thr(push["via-gateway"]),
            f"direct {thr(push['direct'])}",
            f"{push['direct'] / push['via-gateway']:.2f}",
            ">= 0.85",
            push["direct"] / push["via-gateway"] >= 0.85,
        ),
        Row(
            f"pull {mb:.0f} MB layer (skopeo)",
            thr(pull["via-gateway"]),
            f"direct {thr(pull['direct'])}",
            f"{pull['direct'] / pull['via-gateway']:.2f}",
            ">= 0.85",
            pull["direct"] / pull["via-gateway"] >= 0.85,
        ),
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
