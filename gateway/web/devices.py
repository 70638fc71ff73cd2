"""Known devices: a browser that signed in as a user before carries a MACed cookie saying so, and the per-username
limit on failed sign-ins does not lock it out (OWASP's "device cookies"): a guesser can no longer keep a user out of
the UI by failing on their name. The address ban still applies to it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime, timedelta

from aiohttp import web

from gateway.app import ENCRYPTION
from gateway.web import sessions

COOKIE = "_gateway_device"
PURPOSE = b"deploy-token-gateway known devices v1"
LIFETIME = timedelta(days=365)


def _mac(key: bytes, user_id: int, issued: int) -> str:
    mac = hmac.new(key, f"{user_id}.{issued}".encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def _keys(request: web.Request) -> Sequence[bytes]:
    """The active encryption key's MAC key first (it makes), the others' (they check) during a rotation."""
    return request.app[ENCRYPTION].current.derived(PURPOSE)


def remember(response: web.StreamResponse, request: web.Request, user_id: int, now: datetime) -> None:
    """After a successful sign-in: this browser is known for `user_id` for LIFETIME, sent to the sign-in form only."""
    issued = int(now.timestamp())
    value = f"{user_id}.{issued}.{_mac(_keys(request)[0], user_id, issued)}"
    response.set_cookie(
        COOKIE,
        value,
        path="/-/login",
        max_age=int(LIFETIME.total_seconds()),
        httponly=True,
        samesite="Lax",
        secure=sessions.is_https(request),
    )


def known(request: web.Request, user_id: int, now: datetime) -> str | None:
    """The device's key for the failed sign-in limit ("device:<user>.<issued>") when the browser signed in as
    `user_id` within LIFETIME (a cookie this gateway made, with a current key); else None. A device has a limit of
    its own (OWASP): a stolen cookie does not give endless guesses (found by a review)."""
    user, _, rest = request.cookies.get(COOKIE, "").partition(".")
    issued, _, mac = rest.partition(".")
    # Digits only, and few of them: int() of thousands of digits raises (found by a review: a 500).
    if not (user.isascii() and user.isdigit() and len(user) <= 19):
        return None
    if not (issued.isascii() and issued.isdigit() and len(issued) <= 12):
        return None
    if int(user) != user_id or not 0 <= now.timestamp() - int(issued) <= LIFETIME.total_seconds():
        return None
    presented = mac.encode("ascii", "replace")
    if not any(hmac.compare_digest(_mac(k, user_id, int(issued)).encode("ascii"), presented) for k in _keys(request)):
        return None
    return f"device:{user_id}.{issued}"
