"""Operational endpoints: liveness (/-/health) and readiness (/-/ready: the database answers)."""

from __future__ import annotations

from aiohttp import web

from gateway.app import STORE
from gateway.errors import ServiceUnavailable, StoreError


async def health(request: web.Request) -> web.Response:
    return web.Response(text="GitLab OK\n", content_type="text/plain")


async def ready(request: web.Request) -> web.Response:
    try:
        version = await request.app[STORE].schema_version()
    except StoreError:
        raise ServiceUnavailable("database unavailable") from None
    return web.json_response({"status": "ok", "schema_version": version})
