"""Request id, access log (route and principal, never a secret or a query string), error rendering per family."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BadContentDispositionHeader, BodyPartReader
from multidict import MultiDict, MultiDictProxy

from gateway import log_output, metrics, random_ids
from gateway.errors import BadRequest, HTTPFailure, InsufficientScope, ParamError, StoreUnavailable

access_log = logging.getLogger("gateway.access")
error_log = logging.getLogger("gateway.error")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

GIT_REALM = 'Basic realm="GitLab"'
PACKAGES_REALM = 'Basic realm="GitLab Packages Registry"'
# GitLab's 401 text for git clients (git_http_client_controller.rb), shown by git as "remote: ...".
GIT_UNAUTHORIZED = (
    "HTTP Basic: Access denied. If a password was provided for Git authentication, the password was incorrect"
    " or you're required to use a token instead of a password. If a token was provided, it was either"
    " incorrect, expired, or improperly scoped."
)
STORE_UNAVAILABLE = (
    "503 Service Unavailable: the gateway's database is unavailable (locked or unreachable); try again later"
)
STORE_RETRY_AFTER = 5  # seconds: a lock or a database restart usually passes within that
REQUEST_ID = web.RequestKey("request_id", str)
# nginx's code for "client closed request": logged and counted for answers the client did not wait for.
CLIENT_CLOSED = 499
PRINCIPAL = web.RequestKey("principal", str)  # a loggable description of who asked (principals.describe)
# The handlers running now: a stop's deadline (or a second stop signal) cancels them after cutting their
# connections, since a transfer waiting in sendfile(2) does not notice its connection aborted (cli._cut_connections).
IN_FLIGHT: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("in_flight")
# What the access log says of a request the server cut while stopping: it was not the client's leaving (499).
SERVER_STOPPING = 503

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def family_of(request: web.Request) -> str:
    """The route family (routes.py), or one guessed from the path for requests that matched no route."""
    route = request.match_info.route
    name = route.name if route is not None else None
    if name:
        return name.split(".", 1)[0]
    path = request.path
    if path.startswith("/api/"):
        return "api"
    if path.startswith("/jwt/"):
        return "registry_auth"
    if path.startswith("/v2/") or path == "/v2":
        return "registry"
    if "/-/" in path and not path.startswith("/-/"):
        return "web"
    return "git" if path.endswith(("/info/refs", "/git-upload-pack", "/git-receive-pack")) else "ops"


# What request.post() raises for a body it cannot parse: multipart without (or with a wrong) boundary or without
# field names, text that is not in its declared charset, an unknown charset, a malformed part header.
_MALFORMED_FORM = (ValueError, LookupError, HttpProcessingError, BadContentDispositionHeader)


# A UI form's most fields (aiohttp's default bound for request.post()); its forms have a dozen at most.
FORM_MAX_FIELDS = 1000


async def read_form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """request.post(), with a malformed body answered 400 rather than a 500 (found by tests/fuzz)."""
    try:
        if request.content_type == "multipart/form-data":
            return await _multipart_text_fields(request)
        return await request.post()
    except web.HTTPException:
        raise  # 413 for a body over client_max_size
    except _MALFORMED_FORM:
        raise BadRequest("400 Bad request - the form body is malformed") from None


async def _multipart_text_fields(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """A multipart form's text fields. Not request.post(): it spools each file part to a temporary file and, when a
    later part is malformed, leaves them open for the garbage collector (found by tests/fuzz). No UI form has a file.
    """
    reader = await request.multipart()
    fields: MultiDict[str | bytes | bytearray | web.FileField] = MultiDict()
    size = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.filename is not None or part.name is None:
            raise BadRequest("400 Bad request - the form takes named text fields only")
        if len(fields) >= FORM_MAX_FIELDS:
            raise BadRequest(f"400 Bad request - the form has more than {FORM_MAX_FIELDS} fields")
        raw = bytearray()
        while chunk := await part.read_chunk():
            size += len(chunk)
            if size > request.client_max_size:
                raise web.HTTPRequestEntityTooLarge(max_size=request.client_max_size, actual_size=size)
            raw.extend(chunk)
        fields.add(part.name, bytes(part.decode(raw)).decode(part.get_charset(default="utf-8")))
    return MultiDictProxy(fields)


def render_error(family: str, status: int, message: str, *, param_error: bool = False) -> web.Response:
    """The error body each kind of client understands."""
    reason = _REASONS.get(status, "Error")
    if family == "api":
        if param_error:
            return web.json_response({"error": message}, status=status)
        return web.json_response({"message": message}, status=status)
    if family == "packages":
        resp = web.json_response({"message": message}, status=status)
        if status == 401:
            resp.headers["WWW-Authenticate"] = PACKAGES_REALM
        return resp
    if family in ("registry_auth", "registry"):
        # /v2/ errors the gateway itself answers (backend down, slow) use the distribution spec's error body too,
        # so docker and skopeo print the message ("UNAVAILABLE" is its 503 code).
        codes = {401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN", 429: "TOOMANYREQUESTS", 503: "UNAVAILABLE"}
        code = codes.get(status, "UNKNOWN")
        return web.json_response({"errors": [{"code": code, "message": message}], "http_status": status}, status=status)
    if family == "web":
        from html import escape

        body = f"<!doctype html><title>{status} {reason}</title><h1>{status} {reason}</h1><p>{escape(message)}</p>"
        return web.Response(status=status, text=body, content_type="text/html")
    resp = web.Response(status=status, text=message + "\n", content_type="text/plain")
    if family == "git" and status == 401:
        # git sends credentials only after a 401 challenge (shared/notes/git.md §1).
        resp.headers["WWW-Authenticate"] = GIT_REALM
    return resp


# RFC 6750 §3.1's description of insufficient_scope, as GitLab sends it (rack-oauth2 DEFAULT_DESCRIPTION).
INSUFFICIENT_SCOPE_DESCRIPTION = "The request requires higher privileges than provided by the access token."


def insufficient_scope(scopes: tuple[str, ...]) -> web.Response:
    """GitLab's answer to a token lacking the scope (api_guard.rb): 403 with an OAuth2 error body and challenge."""
    scope = " ".join(scopes)
    resp = web.json_response(
        {"error": "insufficient_scope", "error_description": INSUFFICIENT_SCOPE_DESCRIPTION, "scope": scope},
        status=403,
    )
    resp.headers["WWW-Authenticate"] = (
        f'Bearer realm="", error="insufficient_scope", error_description="{INSUFFICIENT_SCOPE_DESCRIPTION}",'
        f' scope="{scope}"'
    )
    return resp


class UnparseableRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse at ERROR with a traceback quoting the offending line, which may be an
    `Authorization` or `PRIVATE-TOKEN` header with a secret (found by tests/fuzz). Keep the event, not the line:
    it is the client's fault (answered 400), so it is logged at INFO with the parser error's class only."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "-"
            record.msg, record.args = "unparseable request from %s: %s", (remote, type(exc).__name__)
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True


def redact_unparseable_requests() -> None:
    """Install UnparseableRequestFilter on aiohttp's server logger, once per process."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, UnparseableRequestFilter) for f in server_log.filters):
        server_log.addFilter(UnparseableRequestFilter())


async def stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer carries X-Request-Id, streamed ones too (git, registry, packages), whose
    headers leave before request_context_middleware sees the response."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers["X-Request-Id"] = request_id


class AccessEntry(dict[str, object]):
    """An access log line: a JSON object as text (str()), merged as is by log_output.JSONFormatter, which so skips
    encoding it, parsing it back and encoding it again on every request (the hot path's biggest logging cost)."""

    def __str__(self) -> str:
        return json.dumps(self)


def client_gone(request: web.Request) -> bool:
    """The client's connection is closed or closing: a ConnectionError now is its leaving, not a failure here."""
    transport = request.transport
    return transport is None or transport.is_closing()


@web.middleware
async def request_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id", "")
    if not (0 < len(request_id) <= 64 and request_id.isascii() and request_id.replace("-", "").isalnum()):
        request_id = random_ids.hex_id(8)
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    status = 500
    in_flight = request.app.get(IN_FLIGHT)
    task = asyncio.current_task()
    if in_flight is not None and task is not None:
        in_flight.add(task)
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-Id"] = request_id
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except ConnectionError:
        if not client_gone(request):
            raise
        status = CLIENT_CLOSED  # not the gateway's failure: the client went away mid-request or mid-answer
        # Raised on, aiohttp would log the client's own disconnection as a server error with a traceback. This
        # answer is never sent (the connection is gone): aiohttp notes that at debug level.
        return web.Response(status=CLIENT_CLOSED)
    except asyncio.CancelledError:
        status = SERVER_STOPPING
        raise
    finally:
        if in_flight is not None and task is not None:
            in_flight.discard(task)
        elapsed = time.perf_counter() - started
        metrics.request_done(family_of(request), status, elapsed)
        if access_log.isEnabledFor(logging.INFO):
            entry = AccessEntry(
                request_id=request_id,
                method=request.method,
                path=request.path,  # never the query string: clients put tokens there
                route=(request.match_info.route.name or "") if request.match_info.route else "",
                status=status,
                principal=request.get(PRINCIPAL, "-"),
                remote=request.remote,
                duration_ms=round(elapsed * 1000, 2),
            )
            if log_output.access_lines is not None:
                log_output.access_lines.write(entry)
            else:
                access_log.info(entry)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except InsufficientScope as exc:
        if family_of(request) != "api":
            return render_error(family_of(request), exc.status, exc.message)
        return insufficient_scope(exc.scopes)
    except HTTPFailure as exc:
        failure = render_error(family_of(request), exc.status, exc.message, param_error=isinstance(exc, ParamError))
        if exc.retry_after is not None:
            failure.headers["Retry-After"] = str(exc.retry_after)
        if exc.reason is not None:
            failure.set_status(exc.status, exc.reason)
        return failure
    except StoreUnavailable as exc:
        # The cause (lock, host) stays in the log; the client learns that it may retry (RFC 9110 §15.6.4).
        error_log.warning("store unavailable: %s (request %s)", exc, request.get(REQUEST_ID))
        resp = render_error(family_of(request), 503, STORE_UNAVAILABLE)
        resp.headers["Retry-After"] = str(STORE_RETRY_AFTER)
        return resp
    except web.HTTPRequestEntityTooLarge:
        return render_error(family_of(request), 413, "413 Request Entity Too Large")
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.empty_body is False and not exc.headers.get("Location"):
            family = family_of(request)
            if family == "git" and exc.status == 404 and request.get(PRINCIPAL, "anonymous") == "anonymous":
                # An anonymous git probe must be challenged, or git never sends its credentials.
                return render_error(family, 401, GIT_UNAUTHORIZED)
            if family == "api" and isinstance(exc, web.HTTPMethodNotAllowed):
                # Grape's MethodNotAllowed, which GitLab's API answers as is (lib/api/api.rb), with its Allow.
                failure = render_error(family, 405, "405 Not Allowed")
                failure.headers[hdrs.ALLOW] = exc.headers.get(hdrs.ALLOW, "")
                return failure
            return render_error(family, exc.status, f"{exc.status} {_REASONS.get(exc.status, exc.reason)}")
        raise
    except Exception as exc:
        if isinstance(exc, ConnectionError) and client_gone(request):
            raise  # the client went away; there is nobody to answer
        # Never a traceback to a client; the log keeps it with the request id to find it.
        error_log.exception("unhandled error (request %s)", request.get(REQUEST_ID))
        return render_error(family_of(request), 500, "500 Internal Server Error")
