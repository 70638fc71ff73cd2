"""PLACEHOLDER (being written): git smart HTTP."""

from __future__ import annotations

from aiohttp import web


async def info_refs(request: web.Request) -> web.StreamResponse:
    raise NotImplementedError


async def upload_pack(request: web.Request) -> web.StreamResponse:
    raise NotImplementedError


async def receive_pack(request: web.Request) -> web.StreamResponse:
    raise NotImplementedError
