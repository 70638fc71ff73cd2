"""PLACEHOLDER (being written): REST API v4 members."""

from __future__ import annotations

from aiohttp import web


async def list_project_members(request: web.Request) -> web.Response:
    raise NotImplementedError


async def add_project_member(request: web.Request) -> web.Response:
    raise NotImplementedError


async def list_group_members(request: web.Request) -> web.Response:
    raise NotImplementedError


async def add_group_member(request: web.Request) -> web.Response:
    raise NotImplementedError
