"""PLACEHOLDER (being written): REST API v4 projects."""

from __future__ import annotations

from aiohttp import web


async def list_projects(request: web.Request) -> web.Response:
    raise NotImplementedError


async def create(request: web.Request) -> web.Response:
    raise NotImplementedError


async def get(request: web.Request) -> web.Response:
    raise NotImplementedError
