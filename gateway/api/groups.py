"""PLACEHOLDER (being written): REST API v4 groups."""

from __future__ import annotations

from aiohttp import web


async def list_groups(request: web.Request) -> web.Response:
    raise NotImplementedError


async def create(request: web.Request) -> web.Response:
    raise NotImplementedError


async def get(request: web.Request) -> web.Response:
    raise NotImplementedError


async def subgroups(request: web.Request) -> web.Response:
    raise NotImplementedError


async def projects(request: web.Request) -> web.Response:
    raise NotImplementedError
