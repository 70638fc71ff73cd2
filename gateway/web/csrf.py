"""CSRF tokens of the web UI: every form carries one, and a POST without the right one is refused.

Signed-in forms use a synchronizer token bound to the session: an HMAC of the session id, so it needs no storage
and is the same on every replica, yet cannot be computed without the HttpOnly cookie (OWASP CSRF cheat sheet,
"synchronizer token" / HMAC-based variant). The sign-in form, which has no session yet, uses a random value kept
in its own cookie and echoed in the form (double submit), against login CSRF.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

FIELD = "authenticity_token"  # GitLab's (Rails') form field name
LOGIN_COOKIE = "_gateway_login_csrf"
_PURPOSE = b"gateway web csrf v1"
_TOKEN_RE = re.compile(r"\A[A-Za-z0-9_-]{43}\Z")


def token_for(session_id: str) -> str:
    mac = hmac.new(session_id.encode("ascii"), _PURPOSE, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


def is_token(value: str) -> bool:
    return bool(_TOKEN_RE.match(value))


def matches(expected: str, presented: object) -> bool:
    """Constant-time comparison; anything but a well-formed string is a mismatch."""
    if not isinstance(presented, str) or not is_token(presented) or not is_token(expected):
        return False
    return hmac.compare_digest(expected.encode("ascii"), presented.encode("ascii"))
