"""The baselines the gateway is compared with in the same run, each in its own process:

python -m bench.servers token PORT            bare aiohttp answering /jwt/auth with a canned token (SO_REUSEPORT,
                                              so several of them share a port like the gateway's workers)
python -m bench.servers signed-token PORT KEY CERT WORKERS SIGNING  the same, every answer a new JWT for the
                                              scope's name, signed as `registry.signing_processes = SIGNING` signs
                                              (-1 the gateway's signing processes, 0 in the process): nothing else
python -m bench.servers git-bridge PORT ROOT  the embedded git backend's CGI bridge without routing, auth or database
python -m bench.servers files PORT DIR        a streaming file server (GET via sendfile, PUT streamed to disk)
python -m bench.servers durable-files PORT DIR  the same, PUT hashed (SHA-256), fsynced and renamed into place
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import web

from tests.procs import Proc, free_port, start, stop, wait_tcp
from tests.servers import NGINX, nginx_conf, require

CHUNK = 256 * 1024
# The size of a real answer: an RS256 JWT with one access entry is about 900 bytes, sent twice (token, access_token).
TOKEN_BODY = {"token": "x" * 900, "access_token": "x" * 900, "expires_in": 300, "issued_at": "2026-01-01T00:00:00Z"}


def token(port: int) -> None:
    async def handle(request: web.Request) -> web.Response:
        return web.json_response(TOKEN_BODY)

    app = web.Application()
    app.router.add_get("/jwt/auth", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, reuse_port=True)


def signed_token(port: int, key_file: Path, cert_file: Path, workers: int, signing: int) -> None:
    """What a token service that did nothing but sign would reach, as one of `workers` processes signing as the
    gateway's `registry.signing_processes = signing` does: the references of the every-request-signed rows."""
    from datetime import UTC, datetime

    from gateway import signing_keys
    from gateway.principals import ANONYMOUS
    from gateway.registry_auth import Access, token_claims
    from gateway.signing_processes import SigningProcesses, per_worker

    key = signing_keys.load(key_file, cert_file)
    signers = SigningProcesses(key, per_worker(signing, os.cpu_count() or 1, workers))

    async def handle(request: web.Request) -> web.Response:
        name = request.query.get("scope", "repository:bench/app:pull").split(":")[1]
        claims = token_claims(
            issuer="bench",
            audience="container_registry",
            principal=ANONYMOUS,
            granted=[Access("repository", name, ("pull",))],
            now=datetime.now(UTC),
            ttl=300,
        )
        signing_input = key.signing_input(claims, include_x5c=False)
        jwt = key.compact(signing_input, await signers.signature(signing_input))
        return web.json_response({**TOKEN_BODY, "token": jwt, "access_token": jwt})

    async def close(_: web.Application) -> None:
        await signers.close()

    app = web.Application()
    app.router.add_get("/jwt/auth", handle)
    app.on_cleanup.append(close)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, reuse_port=True)


def git_bridge(port: int, root: str) -> None:
    """gateway/cgi.py running `git http-backend` exactly as the embedded backend does, minus everything else."""
    from gateway import cgi, proxy, repositories
    from gateway.git_http import http_backend

    slots = web.AppKey("slots", asyncio.Semaphore)

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
            request, [await http_backend()], env, first=first, slots=request.app[slots], idle_timeout=600
        )

    app = web.Application()
    app[slots] = asyncio.Semaphore(16)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, auto_decompress=False, access_log=None, print=None)


def _write_hashed(f: BinaryIO, digest: Any, chunk: bytes) -> None:
    f.write(chunk)
    digest.update(chunk)


def files(port: int, folder: Path, *, durable: bool = False) -> None:
    async def get(request: web.Request) -> web.StreamResponse:
        path = folder / request.match_info["path"].replace("/", "_")
        if not path.exists():
            return web.Response(status=404)
        return web.FileResponse(path, chunk_size=CHUNK)

    async def put(request: web.Request) -> web.StreamResponse:
        path = folder / request.match_info["path"].replace("/", "_")
        if not durable:
            with path.open("wb") as f:
                while chunk := await request.content.read(CHUNK):
                    f.write(chunk)
            return web.Response(status=201)
        # What any durable store must do, the embedded package store's baseline: hash, write, fsync, rename.
        digest, part = hashlib.sha256(), path.with_suffix(".part")
        with part.open("wb") as f:
            while chunk := await request.content.read(CHUNK):
                await asyncio.to_thread(_write_hashed, f, digest, chunk)
            await asyncio.to_thread(os.fsync, f.fileno())
        part.rename(path)
        return web.Response(status=201, text=digest.hexdigest())

    app = web.Application()
    app.router.add_get("/{path:.+}", get)
    app.router.add_put("/{path:.+}", put)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def launch(kind: str, port: int, *args: str, log: Path, name: str | None = None) -> Proc:
    """Start one baseline server process and wait until it listens."""
    argv = [sys.executable, "-m", "bench.servers", kind, str(port), *args]
    proc = start(name or kind, argv, log=log, cwd=Path(__file__).resolve().parent.parent)
    try:
        wait_tcp(proc, port)
    except BaseException:
        stop(proc)
        raise
    return proc


NGINX_PROXY_LOCATION = """\
      proxy_pass http://127.0.0.1:{backend_port};
      proxy_http_version 1.1;
      # Streaming both ways with large buffers, never to disk: the gateway's own terms (socket_relay.py).
      proxy_buffering on;
      proxy_buffer_size 256k;
      proxy_buffers 16 256k;
      proxy_busy_buffers_size 1m;
      proxy_max_temp_file_size 0;
      proxy_request_buffering off;
      client_body_buffer_size 1m;
"""


def start_nginx_proxy(base: Path, backend_port: int) -> tuple[Proc, int]:
    """nginx (one worker, like the one gateway process) proxying everything to the backend on 127.0.0.1:backend_port:
    what a production reverse proxy achieves on this machine, the reference of the proxied rows; (process, port)."""
    require(NGINX, "nginx-light")
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = base / "nginx.conf"
    location = NGINX_PROXY_LOCATION.format(backend_port=backend_port)
    conf.write_text(nginx_conf(base, location, port=port, workers=1, access_log=False))
    proc = start("nginx-proxy", [NGINX, "-p", str(base), "-c", str(conf)], log=base / "nginx.out")
    wait_tcp(proc, port)
    return proc, port


def main(argv: list[str]) -> None:
    kind, port = argv[0], int(argv[1])
    if kind == "token":
        token(port)
    elif kind == "signed-token":
        signed_token(port, Path(argv[2]), Path(argv[3]), int(argv[4]), int(argv[5]))
    elif kind == "git-bridge":
        git_bridge(port, argv[2])
    elif kind == "files":
        files(port, Path(argv[2]))
    elif kind == "durable-files":
        files(port, Path(argv[2]), durable=True)
    else:
        raise SystemExit(f"unknown server kind {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
