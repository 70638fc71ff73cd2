"""The gateway's exception tree; each HTTP-facing error knows its status, the family handler its body shape.

GatewayError
├── ConfigError                  bad configuration (CLI exits 2; never reaches a client)
├── StoreError                   database trouble
│   ├── Conflict                 uniqueness violated (409 / 400 in GitLab's shapes)
│   └── StoreUnavailable         locked or unreachable (503)
└── HTTPFailure(status, message) a client-facing failure
    ├── BadRequest 400 ─ ParamError 400 {"error"} ─ ValidationFailed 400 {"message"}
    ├── Unauthorized 401 ─ Forbidden 403 (─ InsufficientScope) ─ NotFound 404 ─ MethodNotAllowed 405
    ├── PayloadTooLarge 413 ─ TooManyRequests 429
    ├── BadGateway 502 ─ ServiceUnavailable 503 ─ GatewayTimeout 504
    ├── TooManyAttempts          a ban or a lockout, 403 or 429 with Retry-After
    └── BackendRefused           a backend's own error status, re-worded
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is invalid; the message names the key."""


class StoreError(GatewayError):
    """The store could not complete an operation."""


class Conflict(StoreError):
    """A uniqueness rule was violated (e.g. a path already taken)."""


class StoreUnavailable(StoreError):
    """The database is locked or unreachable."""


class HTTPFailure(GatewayError):
    status = 500
    retry_after: int | None = None  # seconds, sent as Retry-After (RFC 9110 §10.2.3) when set
    # The status line's reason phrase in place of the standard one, for clients that print only that (twine).
    reason: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TooManyAttempts(HTTPFailure):
    """Refused for a while (an address ban, a username's lockout): why, then when to try again; the seconds left in
    Retry-After."""

    def __init__(self, why: str, status: int, retry_after: int) -> None:
        minutes = max(1, (retry_after + 59) // 60)
        super().__init__(f"{why}. Try again in {minutes} minute{'s' if minutes > 1 else ''}.")
        self.status = status
        self.retry_after = retry_after


class BackendRefused(HTTPFailure):
    """A backend's own 4xx/5xx, answered in the gateway's shape (its page could show internal addresses)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BadRequest(HTTPFailure):
    status = 400


class ParamError(BadRequest):
    """A request parameter is missing or malformed: GitLab answers {"error": "<param> is missing"}."""


class ValidationFailed(BadRequest):
    """A model validation failed: GitLab answers {"message": "..."}."""


class Unauthorized(HTTPFailure):
    status = 401


class Forbidden(HTTPFailure):
    status = 403


class InsufficientScope(Forbidden):
    """A valid token whose scopes do not allow the request: GitLab's OAuth error body names the scopes that would."""

    def __init__(self, scopes: tuple[str, ...]) -> None:
        super().__init__("403 Forbidden")
        self.scopes = scopes


class NotFound(HTTPFailure):
    status = 404


class MethodNotAllowed(HTTPFailure):
    status = 405


class PayloadTooLarge(HTTPFailure):
    status = 413


class TooManyRequests(HTTPFailure):
    status = 429


class BadGateway(HTTPFailure):
    status = 502


class ServiceUnavailable(HTTPFailure):
    status = 503


class GatewayTimeout(HTTPFailure):
    status = 504
