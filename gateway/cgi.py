"""A streaming CGI/1.1 bridge (RFC 3875) for `git http-backend`: request body in, response out, never buffered.

The child runs in its own process group and is killed with it (upload-pack and pack-objects included) when the
client goes away or the request ends early.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress

from aiohttp import web
from multidict import CIMultiDict

from gateway import metrics
from gateway.errors import BadGateway, GatewayTimeout
from gateway.proxy import CHUNK, HOP_BY_HOP, abort

log = logging.getLogger("gateway.cgi")

MAX_HEADER_BYTES = 64 * 1024
# The backend label of its metrics: the same role as an upstream git server behind proxy.py.
METRICS_NAME = "git"
# Last lines of the child's stderr kept for the log when it fails.
STDERR_LINES = 20


class _Child:
    """A running CGI process and the tasks that feed its stdin and drain its stderr."""

    def __init__(
        self, request: web.Request, proc: asyncio.subprocess.Process, first: bytes, idle_timeout: float
    ) -> None:
        self.proc = proc
        self.idle_timeout = idle_timeout
        self.stderr: list[str] = []
        self.client_gone = False  # the client's upload failed, or the client left mid-answer
        self.stalled = False  # the request body stopped moving (a silent client, or a child no longer reading)
        self.drainer = asyncio.ensure_future(self._drain_stderr())
        self.feeder = asyncio.ensure_future(_feed(request, first, self))

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace").rstrip())
            del self.stderr[:-STDERR_LINES]

    def _pipe(self, fd: int) -> asyncio.BaseTransport | None:
        transport = getattr(self.proc, "_transport", None)  # asyncio.subprocess.Process has no public one
        return transport.get_pipe_transport(fd) if transport is not None else None

    def kill(self) -> None:
        if self.proc.returncode is None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def finish(self) -> int:
        """Wait for the child and both helper tasks. A feeder still running means the child ended its answer
        without reading the whole body (an error answer): the rest is not fed."""
        try:
            if not self.feeder.done():
                self.feeder.cancel()
            with suppress(asyncio.CancelledError):
                await self.feeder  # _feed itself never raises
            # Read to its end, or abandoned: closed first. asyncio's wait() returns only once every pipe has ended,
            # and an abandoned answer's pipe, full and paused, would never end: a client that left mid-clone held
            # its handler and a git.max_processes slot until git.timeout (found by a README walkthrough).
            stdout = self._pipe(1)
            if stdout is not None:
                stdout.close()
            code = await self.proc.wait()
            # killpg also reaps grandchildren that kept stderr open; the drain ends at their exit.
            await self.drainer
            return code
        finally:
            # asyncio closes a subprocess transport only once every pipe has ended, and an aborted answer leaves
            # stdout unread (its pipe paused, open): close it here, also when this wait is cancelled (shutdown).
            # asyncio.subprocess.Process has no public close(); the transport's close() kills a child still alive.
            transport = getattr(self.proc, "_transport", None)
            if transport is not None:
                transport.close()


async def _feed(request: web.Request, first: bytes, child: _Child) -> None:
    """Copy the request body to the child's stdin; never raises (the outcome is recorded on `child`)."""
    stdin = child.proc.stdin
    assert stdin is not None
    try:
        chunk = first
        while chunk:
            try:
                stdin.write(chunk)
                async with asyncio.timeout(child.idle_timeout):
                    await stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                return  # the child stopped reading (it answered early or failed): nothing more to feed
            async with asyncio.timeout(child.idle_timeout):
                chunk = await request.content.read(CHUNK)
    except TimeoutError:
        # A client that stops sending (or a child that stops reading) must not hold a backend slot for ever.
        log.info(
            "request body of %s %s stalled for %s s: backend killed", request.method, request.path, child.idle_timeout
        )
        child.stalled = True
        child.kill()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # The client's upload failed (disconnect mid-body): the child must not act on a partial request.
        log.info("request body of %s %s failed: %s", request.method, request.path, type(exc).__name__)
        child.client_gone = True
        child.kill()
    finally:
        with suppress(BrokenPipeError, ConnectionResetError):
            stdin.close()


def parse_headers(raw: bytes) -> tuple[int, str, CIMultiDict[str]]:
    """CGI response headers: `Status: 403 Forbidden` sets the status (RFC 3875 §6.3.3), the rest pass on."""
    status, reason = 200, "OK"
    headers: CIMultiDict[str] = CIMultiDict()
    for line in raw.decode("latin-1").splitlines():
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise BadGateway("502 Bad Gateway: the git backend sent a malformed header")
        name, value = name.strip(), value.strip()
        if name.lower() == "status":
            code, _, text = value.partition(" ")
            if not code.isdigit() or not 100 <= int(code) <= 599:
                raise BadGateway("502 Bad Gateway: the git backend sent a malformed status")
            status, reason = int(code), text or reason
        elif name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
            headers.add(name, value)
    return status, reason, headers


async def _read_headers(stdout: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The header block and whatever body bytes came with it."""
    buf = b""
    while True:
        for sep in (b"\r\n\r\n", b"\n\n"):
            at = buf.find(sep)
            if at >= 0:
                return buf[:at], buf[at + len(sep) :]
        if len(buf) > MAX_HEADER_BYTES:
            raise BadGateway("502 Bad Gateway: the git backend sent oversized headers")
        chunk = await stdout.read(CHUNK)
        if not chunk:
            raise BadGateway("502 Bad Gateway: the git backend ended without a response")
        buf += chunk


async def run(
    request: web.Request,
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    first: bytes,
    slots: asyncio.Semaphore,
    idle_timeout: float,
    name: str = "git backend",
) -> web.StreamResponse:
    """Run the CGI program for `request` and stream its answer; `first` is body already read from the request.

    At most `slots` children run at once; later requests wait for a free slot. `idle_timeout` bounds every wait
    on either side (the child's next output, the client's next chunk or its reading of ours), not the whole
    transfer: upload-pack sends keep-alives while it computes a pack (uploadpack.keepAlive, 5 s by default).
    """
    async with slots:
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            start_new_session=True,  # its own process group: killpg reaches upload-pack / pack-objects too
        )
        child = _Child(request, proc, first, idle_timeout)
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(idle_timeout):
                head, rest = await _read_headers(proc.stdout)
            status, reason, headers = parse_headers(head)
        except TimeoutError:
            metrics.backend_failed(METRICS_NAME, "timeout")
            child.kill()
            await child.finish()
            log.warning("%s sent no response within %s s", name, idle_timeout)
            raise GatewayTimeout(f"504 Gateway Timeout: the {name} did not answer in time") from None
        except BaseException as exc:
            child.kill()
            await child.finish()
            if isinstance(exc, BadGateway) and not (child.client_gone or child.stalled):
                metrics.backend_failed(METRICS_NAME, "failed")
                log.warning("%s failed before answering: %s", name, " | ".join(child.stderr) or "no stderr")
            raise
        metrics.backend_answered(METRICS_NAME, time.perf_counter() - started)
        response = web.StreamResponse(status=status, reason=reason, headers=headers)
        sent = 0
        try:
            await response.prepare(request)
            chunk = rest
            while True:
                async with asyncio.timeout(idle_timeout):
                    if chunk:
                        await response.write(chunk)
                        sent += len(chunk)
                    chunk = await proc.stdout.read(CHUNK)
                if not chunk:
                    break
        except TimeoutError:
            log.warning(
                "%s or its client stalled for %s s: aborting %s %s", name, idle_timeout, request.method, request.path
            )
            child.kill()
            await child.finish()
            abort(request, response)
            return response
        except ConnectionError:
            # The client went away (a reset, or aiohttp's "Connection lost" while a write waited on a full buffer):
            # stop the child (and its process group) right now.
            child.client_gone = True
            child.kill()
            log.info("client disconnected during %s %s; %s killed", request.method, request.path, name)
            await child.finish()
            raise  # logged as 499 (middleware): the client did not wait for the answer
        except BaseException:
            child.kill()
            await child.finish()
            raise
        finally:
            metrics.streamed(METRICS_NAME, download=sent, upload=request.content.total_bytes)
        code = await child.finish()
        if child.client_gone:
            abort(request, response)
            raise ConnectionResetError("the client's request body failed")  # logged as 499
        if child.stalled:
            abort(request, response)  # logged above; whose silence it was cannot be told
            return response
        if code != 0:
            metrics.backend_failed(METRICS_NAME, "exit_status")
            log.warning("%s exited with %s: %s", name, code, " | ".join(child.stderr) or "no stderr")
            # The body may be incomplete: make that visible to the client instead of ending it cleanly.
            abort(request, response)
        elif child.stderr:
            log.info("%s: %s", name, " | ".join(child.stderr))
        return response
