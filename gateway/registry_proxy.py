"""/v2/ forwarding to the distribution registry: the registry checks our JWTs; we point its challenges at /jwt/auth.

Proxy requirements verified against registry 2.8.2 and skopeo in shared/notes/registry.md §5.
"""

from __future__ import annotations

import re

from aiohttp import web
from multidict import CIMultiDict

from gateway.api.entities import base_url
from gateway.app import CONFIG, PROXY
from gateway.errors import ServiceUnavailable
from gateway.proxy import Timeouts

_REALM_RE = re.compile(r'realm="[^"]*"')


def rewrite_challenge(value: str, realm: str) -> str:
    """Point a `Bearer realm="…",service=…,scope=…` challenge at the gateway's token service."""
    return _REALM_RE.sub(f'realm="{realm}"', value, count=1)


async def forward(request: web.Request) -> web.StreamResponse:
    """Any /v2/ request: path and query byte-exact (the `_state` upload parameter is HMAC-signed)."""
    backend = request.app[CONFIG].registry.backend
    if not backend:
        raise ServiceUnavailable("503 Service Unavailable: no container registry is configured (registry.backend)")
    realm = f"{base_url(request)}/jwt/auth"

    def on_headers(status: int, headers: CIMultiDict[str]) -> None:
        challenges = headers.getall("WWW-Authenticate", [])
        if challenges:
            headers.popall("WWW-Authenticate")
            for value in challenges:
                headers.add("WWW-Authenticate", rewrite_challenge(value, realm))

    return await request.app[PROXY].forward(
        request,
        backend.rstrip("/") + request.rel_url.raw_path_qs,
        backend="registry",
        # The registry builds upload Location URLs from Host / X-Forwarded-*: keep the client's view.
        keep_host=True,
        # The registry itself checks the client's bearer JWT (signed by us): it must pass through.
        keep_authorization=True,
        on_headers=on_headers,
        timeouts=Timeouts(read=request.app[CONFIG].registry.timeout),
    )
