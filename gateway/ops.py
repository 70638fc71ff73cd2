"""Operational endpoints: liveness (/-/health), readiness (/-/ready: the database answers), metrics (/-/metrics)."""

from __future__ import annotations

from aiohttp import web

from gateway import metrics as metrics_module
from gateway.app import CONFIG, STORE
from gateway.clients import CLIENTS
from gateway.errors import NotFound, ServiceUnavailable, StoreError


async def health(request: web.Request) -> web.Response:
    return web.Response(text="GitLab OK\n", content_type="text/plain")


async def ready(request: web.Request) -> web.Response:
    try:
        version = await request.app[STORE].schema_version()
    except StoreError:
        raise ServiceUnavailable("database unavailable") from None
    return web.json_response({"status": "ok", "schema_version": version})


async def metrics(request: web.Request) -> web.Response:
    """GET /-/metrics: Prometheus text format 0.0.4 of the whole server (every worker). 404 when disabled or for a
    client outside metrics.allowed_ips, as GitLab answers: the endpoint is not revealed to others."""
    config = request.app[CONFIG]
    client = request.app[CLIENTS].address(request)  # behind server.trusted_proxies: the address forwarded for
    if not config.metrics.enabled or not metrics_module.allowed(client, config.metrics.allowed_ips):
        raise NotFound("404 Not Found")
    headers = {"Content-Type": metrics_module.CONTENT_TYPE, "Cache-Control": "no-store"}
    return web.Response(body=metrics_module.exposition(), headers=headers)
