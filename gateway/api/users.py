"""PLACEHOLDER (being written): REST API v4 users."""

from __future__ import annotations

from aiohttp import web


async def current(request: web.Request) -> web.Response:
    raise NotImplementedError


async def list_users(request: web.Request) -> web.Response:
    raise NotImplementedError


async def create(request: web.Request) -> web.Response:
    raise NotImplementedError


async def get(request: web.Request) -> web.Response:
    raise NotImplementedError


async def create_pat(request: web.Request) -> web.Response:
    raise NotImplementedError
