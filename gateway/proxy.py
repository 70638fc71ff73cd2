"""The one streaming forwarder to backends (git, registry, packages): headers cleaned, bodies streamed both ways.

Failures before the backend's response starts become 502/504 with a clear message; after it started, the client
connection is aborted so a truncated body can never pass for a complete one.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

import aiohttp
from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload
from multidict import CIMultiDict
from yarl import URL

from gateway import metrics, socket_relay
from gateway.clients import CLIENTS, DIRECT
from gateway.errors import BadGateway, BadRequest, GatewayTimeout, HTTPFailure

log = logging.getLogger("gateway.proxy")

CHUNK = 256 * 1024
READ_BUFFER = 1024 * 1024

# RFC 9110 §7.6.1 hop-by-hop headers, plus the framing headers aiohttp recomputes for each side, `Expect` (aiohttp
# answers 100-continue itself) and `Host` (the backend's own, unless the caller keeps the client's).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "expect",
        "host",
    }
)
# Whatever identifies the client to the gateway never reaches a backend (ARCHITECTURE.md: only the gateway's
# own backend credentials do).
CLIENT_CREDENTIALS = frozenset({"authorization", "private-token", "deploy-token", "job-token", "cookie"})
# Headers by which a proxy in front of a backend tells it who the user is, where the request came from, or which
# method and URL it "really" meant: a backend that trusts them (Gitea's X-WEBAUTH-USER, a repository manager's
# remote-user header, a framework honouring X-HTTP-Method-Override) would act for whoever the client named, with
# the gateway's credentials. X-Forwarded-For/Proto/Host are set by the gateway itself, never taken from the client.
CLIENT_ASSERTIONS = frozenset(
    {
        "forwarded",
        "x-real-ip",
        "remote-user",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-rewrite-url",
        "x-client-ip",
        "true-client-ip",
        "cf-connecting-ip",
    }
)
CLIENT_ASSERTION_PREFIXES = ("x-forwarded-", "x-remote-", "x-webauth-", "x-auth-request-", "x-original-")
# Set-Cookie from a backend would land in the gateway's own cookie scope (its UI session lives there).
RESPONSE_DROPPED = frozenset({"set-cookie"})


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    # Longest silence while waiting for the backend's response or its next chunk (not a total: clones are long).
    read: float = 600.0


def connection_tokens(headers: Mapping[str, str] | CIMultiDict[str]) -> set[str]:
    """Header names listed in `Connection`: hop-by-hop for this message only (RFC 9110 §7.6.1)."""
    names: set[str] = set()
    getall = getattr(headers, "getall", None)
    values: Iterable[str] = getall(hdrs.CONNECTION, ()) if getall else [headers.get(hdrs.CONNECTION, "")]
    for value in values:
        names.update(token.strip().lower() for token in value.split(",") if token.strip())
    return names


def request_headers(
    request: web.Request, *, keep_host: bool = False, keep_authorization: bool = False
) -> CIMultiDict[str]:
    """The client's headers minus hop-by-hop and credentials, repeated headers kept, X-Forwarded-* set.

    `keep_authorization` passes the client's bearer Authorization on, for backends that check it themselves (the
    registry verifies the JWT the gateway signed); a Basic one (a deploy token, a password) never leaves the
    gateway, nor do the other credential headers, nor what asserts an identity or another method or URL.
    """
    dropped = HOP_BY_HOP | CLIENT_CREDENTIALS | CLIENT_ASSERTIONS | connection_tokens(request.headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in request.headers.items():
        # CGI and WSGI servers map `_` and `-` alike (X_Forwarded_Host is HTTP_X_FORWARDED_HOST, the header the
        # gateway sets); nginx drops such names by default (underscores_in_headers off), and so does the gateway.
        if "_" in name:
            continue
        lowered = name.lower()
        if lowered == "authorization" and keep_authorization:
            if value.strip()[:7].lower() == "bearer ":
                out.add(name, value)
        elif lowered not in dropped and not lowered.startswith(CLIENT_ASSERTION_PREFIXES):
            out.add(name, value)
    if keep_host and request.host:
        out[hdrs.HOST] = request.host
    # What the client used, so that a backend building URLs (the registry's upload Location) builds the client's.
    clients = request.app.get(CLIENTS, DIRECT)
    out["X-Forwarded-For"] = request.remote or ""
    out["X-Forwarded-Proto"] = clients.scheme(request)
    out["X-Forwarded-Host"] = clients.host(request)
    return out


def response_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict[str]:
    """The backend's headers minus hop-by-hop ones; Content-Length and Content-Encoding are kept as sent."""
    dropped = (HOP_BY_HOP | RESPONSE_DROPPED | connection_tokens(upstream.headers)) - {"host"}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.headers.items():
        if name.lower() not in dropped:
            out.add(name, value)
    return out


def _drop_backend_location(headers: CIMultiDict[str], url: str) -> None:
    """A Location on the backend's own origin (a backend unaware of the gateway, building URLs from its own address)
    is of no use to the client, and tells it the internal address: dropped. Relative ones, and ones on the origin the
    gateway passed in X-Forwarded-Host (pypiserver, verdaccio and the registry build those), pass."""
    location = headers.get(hdrs.LOCATION)
    if location is None:
        return
    try:
        target, backend = URL(location), URL(url)
        if target.host is None:
            return  # relative: resolved against the URL the client asked, the gateway's
        target = backend.join(target)  # a scheme-relative one (`//host/x`) takes the backend's scheme
        # yarl's port is the scheme's default when none is written: `http://backend:80/` is the backend too.
        internal = (target.scheme, target.host, target.port) == (backend.scheme, backend.host, backend.port)
    except ValueError:
        internal = True  # not a URL any client could follow
    if internal:
        headers.popall(hdrs.LOCATION)


def body_is_raw(headers: Mapping[str, str], first: bytes) -> bool:
    """False when the server already inflated a gzip request body (aiohttp's auto_decompress=True).

    The gateway runs with auto_decompress=False so bodies pass untouched; this check keeps a misconfigured
    server from handing inflated bytes on under `Content-Encoding: gzip`, which backends reject
    (shared/notes/git.md §2: "inflate: data stream error"). gzip streams start with 1f 8b (RFC 1952 §2.3.1).
    """
    encoding = headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    return encoding != "gzip" or not first or first.startswith(b"\x1f\x8b")


async def _body(first: bytes, content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    if first:
        yield first
    while chunk := await content.read(CHUNK):
        yield chunk


async def _start(upstream: aiohttp.ClientResponse) -> bytes:
    """The first ERROR_BODY_LIMIT bytes of an error body (what arrived of it, if the backend fails mid-way)."""
    out = b""
    try:
        while len(out) < ERROR_BODY_LIMIT and (chunk := await upstream.content.read(ERROR_BODY_LIMIT - len(out))):
            out += chunk
    except (aiohttp.ClientError, OSError, TimeoutError):
        pass
    return out


def basic_authorization(username: str, password: str) -> str:
    """An `Authorization: Basic` value (RFC 7617); the username cannot contain ':'."""
    if ":" in username:
        raise ValueError("a Basic username cannot contain ':'")
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


HeaderHook = Callable[[int, CIMultiDict[str]], None]
# (status, Content-Type, the body's first ERROR_BODY_LIMIT bytes) of a backend's error → the failure to answer.
ErrorHook = Callable[[int, str, bytes], HTTPFailure]
ERROR_BODY_LIMIT = 16 * 1024


class Forwarder:
    """One client session for every family: no decompression, no cookies, no environment proxies."""

    def __init__(self, session: aiohttp.ClientSession, unframed: aiohttp.ClientSession) -> None:
        self.session = session
        # The same connections, HTTP/1.0 requests (aiohttp sets the version per session): see forward(unframed=).
        self.unframed = unframed

    @classmethod
    def create(cls) -> Forwarder:
        connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=False)

        def session(version: aiohttp.HttpVersion, owner: bool) -> aiohttp.ClientSession:
            return aiohttp.ClientSession(
                # Bodies pass through byte for byte; the client decodes them (shared/notes/git.md §2).
                auto_decompress=False,
                # A deeper buffer than the 64 KiB default: fewer pause/resume cycles and larger reads per chunk
                # when a backend streams small HTTP chunks (nginx with fastcgi_buffering off: ~5 KB each).
                read_bufsize=READ_BUFFER,
                cookie_jar=aiohttp.DummyCookieJar(),
                connector=connector,
                connector_owner=owner,
                trust_env=False,
                version=version,
            )

        return cls(session(aiohttp.HttpVersion11, True), session(aiohttp.HttpVersion10, False))

    async def close(self) -> None:
        await self.unframed.close()
        await self.session.close()

    async def forward(
        self,
        request: web.Request,
        url: str,
        *,
        backend: str,
        authorization: str | None = None,
        timeouts: Timeouts = Timeouts(),
        keep_host: bool = False,
        keep_authorization: bool = False,
        on_headers: HeaderHook | None = None,
        on_error: ErrorHook | None = None,
        body: AsyncIterator[bytes] | None = None,
        content_type: str | None = None,
        unframed: bool = False,
    ) -> web.StreamResponse:
        """Send `request` to `url` and stream the answer back.

        `backend` names the backend in error messages; `authorization` is the gateway's own Authorization value
        for the backend (see basic_authorization), replacing the client's. `on_headers(status, headers)` may
        rewrite the response headers, or raise an HTTPFailure to answer the client instead (the backend response
        is released). `on_error` turns a backend's status of 400 or more, with the start of its body, into the
        gateway's own answer. `body`, when given, is sent instead of the client's body (the caller keeps the client's
        Content-Length true to it), with `content_type` in place of the client's if given. `unframed` asks
        HTTP/1.0 of the backend for a long answer of unknown length (git's pack stream): it then arrives
        delimited by the backend closing the connection, not in HTTP chunks of a few KB each, and is relayed
        socket to socket instead of parsed chunk by chunk (RFC 9112 §6.3, rule 8).
        """
        target = URL(url, encoded=True)  # as built: yarl would otherwise resolve `..` (`/v2/../x` is `/x`)
        # Decoded first: `..%2F..%2Fx` is one raw segment, and a path-normalising server before the backend (nginx)
        # reads it as `../../x` (found by a review); a backslash separates segments to some servers too.
        if any(segment in (".", "..") for segment in unquote(target.raw_path).replace("\\", "/").split("/")):
            # No backend path of the gateway's has one; from a client, it aims outside the path it was given.
            raise BadRequest("400 Bad Request: a path with '.' or '..' segments is not forwarded")
        headers = request_headers(request, keep_host=keep_host, keep_authorization=keep_authorization)
        if authorization is not None:
            headers[hdrs.AUTHORIZATION] = authorization  # the gateway's own credentials replace the client's
        if content_type is not None:
            headers[hdrs.CONTENT_TYPE] = content_type
        data: AsyncIterator[bytes] | RelayedUpload | None = None
        relayed = RelayedUpload.of(request, timeouts) if body is None else None
        if body is not None:
            # The caller already consumes the client's body (packages: a size limit, a parsed multipart head).
            data = body
        elif relayed is not None:
            data = relayed
        elif request.body_exists:
            first = await request.content.read(CHUNK)
            if not body_is_raw(request.headers, first):
                # Inflated by the server: the length and the encoding no longer describe these bytes.
                headers.popall(hdrs.CONTENT_ENCODING, None)
                headers.popall(hdrs.CONTENT_LENGTH, None)
            data = _body(first, request.content)
        elif request.method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            headers.setdefault(hdrs.CONTENT_LENGTH, "0")
        session = self.session
        if (
            unframed
            and hdrs.TRANSFER_ENCODING not in request.headers
            and (data is None or hdrs.CONTENT_LENGTH in headers)
        ):
            # HTTP/1.0 has no chunked framing, so the request body needs its length; the connection ends the answer.
            session = self.unframed
            headers[hdrs.CONNECTION] = "close"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect, sock_read=timeouts.read)
        started = time.perf_counter()
        try:
            upstream = await session.request(
                request.method,
                target,
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=timeout,
                # Only what the client sent: aiohttp would add its own Accept-Encoding and User-Agent.
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type", "Accept"),
                compress=None,
            )
        except TimeoutError:
            metrics.backend_failed(backend, "timeout")
            log.warning("%s backend timed out before answering %s %s", backend, request.method, request.path)
            raise GatewayTimeout(f"504 Gateway Timeout: the {backend} backend did not answer in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            metrics.backend_failed(backend, "unreachable")
            log.warning("%s backend failed before answering: %s", backend, type(exc).__name__)
            raise BadGateway(f"502 Bad Gateway: the {backend} backend is unreachable or failed") from None
        metrics.backend_answered(backend, time.perf_counter() - started)
        metrics.streamed(backend, upload=relayed.moved if relayed is not None else request.content.total_bytes)

        async with upstream:
            out_headers = response_headers(upstream)
            _drop_backend_location(out_headers, url)
            if on_headers is not None:
                on_headers(upstream.status, out_headers)
            if on_error is not None and upstream.status >= 400:
                raise on_error(upstream.status, upstream.headers.get(hdrs.CONTENT_TYPE, ""), await _start(upstream))
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=out_headers)
            if _close_delimited(upstream) and request.version >= aiohttp.HttpVersion11:
                # Re-framed for the client, whose connection stays usable (RFC 9112 §7.1); the relay frames its writes.
                response.enable_chunked_encoding()
            if relayed is not None:
                response.force_close()  # `Connection: close`: the client must not reuse it (RelayedUpload)
            try:
                await response.prepare(request)
            except ConnectionError:
                return response
            if request.method == "HEAD" or upstream.status in (204, 304) or upstream.status < 200:
                return response
            sockets = _relayable(request, upstream)
            if sockets is not None:
                await _relay_body(request, response, upstream, sockets, backend, timeouts)
                return response
            try:
                while True:
                    try:
                        chunk = await upstream.content.read(CHUNK)
                    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                        metrics.backend_failed(backend, "mid_response")
                        log.warning("%s backend failed mid-response (%s): aborting the client connection", backend, exc)
                        abort(request, response)
                        return response
                    if not chunk:
                        break
                    try:
                        await response.write(chunk)
                    except ConnectionError:
                        # The client went away (a reset, or "Connection lost" while a write waited on a full
                        # buffer); closing the upstream response (async with) stops the backend side.
                        log.info("client disconnected during %s %s", request.method, request.path)
                        raise  # logged as 499 (middleware): the client did not wait for the answer
            finally:
                metrics.streamed(backend, download=upstream.content.total_bytes)
        return response


class RelayedUpload(Payload):
    """A client's request body relayed socket to socket (socket_relay.py) rather than through aiohttp's streams.

    Only for a plain `Content-Length` body of at least socket_relay.MIN_LENGTH on a plain TCP connection. What the
    server already read of the body is sent first; afterwards the client's connection is closed with the response (its
    HTTP parser never saw the body, so it cannot read another request). A client that stops or stalls mid-body
    aborts the backend request: the backend never sees a complete-looking body.
    """

    def __init__(self, request: web.Request, src: socket.socket, length: int, read_timeout: float | None) -> None:
        super().__init__(None)
        self._size = self._length = length
        self._request, self._src, self._read_timeout = request, src, read_timeout
        self.moved = 0

    @classmethod
    def of(cls, request: web.Request, timeouts: Timeouts) -> RelayedUpload | None:
        length = request.content_length
        if not socket_relay.AVAILABLE or length is None or length < socket_relay.MIN_LENGTH or not request.body_exists:
            return None
        if hdrs.TRANSFER_ENCODING in request.headers or hdrs.CONTENT_ENCODING in request.headers:
            return None  # chunked framing to parse, or a body the server might inflate (body_is_raw)
        src = socket_relay.plain_socket(request.transport)
        if src is None or request.content.is_eof() or request.content.exception() is not None:
            return None
        return cls(request, src, length, timeouts.read)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a relayed upload is never decoded")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        request, content = self._request, self._request.content
        if request.transport is None:
            raise ConnectionResetError("the client went away before its body")
        # No await between draining the reader and pausing the transport: no byte can slip into the reader between.
        prefix = b"".join(iter(lambda: content.read_nowait(-1), b""))
        request.transport.pause_reading()
        try:
            await self._relay(writer, prefix)
        finally:
            # The client's connection cannot carry another request (its HTTP parser never saw the body): closed once
            # the answer is written; the reader is at its end so that aiohttp does not wait for the body.
            content.feed_eof()
            request.protocol.close()

    async def _relay(self, writer: AbstractStreamWriter, prefix: bytes) -> None:
        transport = writer.transport
        dst = socket_relay.plain_socket(transport)
        if dst is None or transport is None:
            raise ConnectionResetError("the backend connection closed before the request body")
        writer.send_headers()
        # The request head must be on the wire before the body bypasses the transport.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._read_timeout or 60.0)
        while transport.get_write_buffer_size():
            if loop.time() > deadline:
                raise TimeoutError("the backend does not read the request")
            await asyncio.sleep(0.001)
        try:
            self.moved = await socket_relay.relay(
                self._src, dst, self._length - len(prefix), prefix=prefix, read_timeout=self._read_timeout
            )
        except (socket_relay.SourceEnded, socket_relay.SourceTimeout) as exc:
            # The client stopped mid-body: the backend request is aborted (aiohttp closes its connection).
            raise ConnectionResetError(f"the client's upload ended early ({type(exc).__name__})") from None
        except socket_relay.SinkGone as exc:
            raise ConnectionResetError(f"the backend closed the connection during the upload: {exc}") from None


def _close_delimited(upstream: aiohttp.ClientResponse) -> bool:
    """A response body that ends when the backend closes the connection: neither length nor chunks (RFC 9112 §6.3)."""
    return hdrs.TRANSFER_ENCODING not in upstream.headers and hdrs.CONTENT_LENGTH not in upstream.headers


def _relayable(
    request: web.Request, upstream: aiohttp.ClientResponse
) -> tuple[socket.socket, socket.socket, int | None] | None:
    """The two plain TCP sockets and the body length (None: until the backend closes) when the body can be relayed
    (gateway/socket_relay.py): a Content-Length body of at least socket_relay.MIN_LENGTH or a close-delimited one
    still arriving, no TLS on either side, nothing waiting in the client's write buffer (the response head must be
    on the wire before the body bypasses the transport)."""
    if not socket_relay.AVAILABLE or hdrs.TRANSFER_ENCODING in upstream.headers or upstream.content.exception():
        return None
    length: int | None = None
    if hdrs.CONTENT_LENGTH in upstream.headers:
        try:
            length = int(upstream.headers[hdrs.CONTENT_LENGTH])
        except ValueError:
            return None
        if length < socket_relay.MIN_LENGTH:
            return None
    elif upstream.content.at_eof():
        return None  # already whole in aiohttp's buffer
    connection = upstream.connection
    if connection is None or connection.transport is None:
        return None
    src, dst = socket_relay.plain_socket(connection.transport), socket_relay.plain_socket(request.transport)
    if src is None or dst is None or request.transport is None or request.transport.get_write_buffer_size():
        return None
    return src, dst, length


async def _relay_body(
    request: web.Request,
    response: web.StreamResponse,
    upstream: aiohttp.ClientResponse,
    sockets: tuple[socket.socket, socket.socket, int | None],
    backend: str,
    timeouts: Timeouts,
) -> None:
    """Relay the body socket to socket (socket_relay.py). What aiohttp already read is sent first; the backend
    connection is never reused afterwards (its parser did not see the body), so it is closed."""
    src, dst, length = sockets
    connection = upstream.connection
    assert connection is not None and connection.transport is not None
    # No await between draining the reader and pausing the transport: no byte can slip into the reader between.
    prefix = b"".join(iter(lambda: upstream.content.read_nowait(-1), b""))
    connection.transport.pause_reading()
    moved = 0
    try:
        if length is not None:
            prefix = prefix[:length]
            length = max(0, length - len(prefix))
        moved = await socket_relay.relay(
            src, dst, length, prefix=prefix, read_timeout=timeouts.read, chunked=response.chunked
        )
        await response.write_eof()
    except socket_relay.SinkGone:
        log.info("client disconnected during %s %s", request.method, request.path)
    except (socket_relay.SourceEnded, socket_relay.SourceTimeout) as exc:
        metrics.backend_failed(backend, "mid_response")
        log.warning("%s backend failed mid-response (%s): aborting the client connection", backend, type(exc).__name__)
        abort(request, response)
    finally:
        upstream.close()
        metrics.streamed(backend, download=moved)


def abort(request: web.Request, response: web.StreamResponse) -> None:
    """Cut the client connection so a partial body is an error to the client, never a complete response."""
    response.force_close()
    transport = request.transport
    if transport is not None:
        transport.abort()
