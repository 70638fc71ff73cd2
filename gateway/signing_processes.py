"""Signing processes: the private-key operation of registry JWTs runs in child processes fed through pipes, so a worker
signs on the other cores without sharing its GIL (signing threads did: each hand-off between the busy event loop and
a thread cost more CPU than the signature it moved away; bench/auth.py). `python -m gateway.signing_processes` runs one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

import jwt.algorithms
from cryptography.hazmat.primitives import serialization

from gateway.signing_keys import SigningKey, algorithm_of

log = logging.getLogger("gateway.signing")

# A frame: job id, status (OK, or FAILED and the reason as the body), length, then that many bytes. The first frame to
# a child is its key (PKCS#8 PEM); every later one a JWS signing input, answered by a frame of the same id.
_HEAD = struct.Struct("!IBI")
OK, FAILED = 0, 1
MAX_FRAME = 1 << 20  # a signing input is a few hundred bytes: a longer frame means a broken stream
RESPAWN_DELAY = 1.0  # seconds between two starts after a child died (a crash loop must not fork per request)
ANSWER_TIMEOUT = 5.0  # seconds: a signature takes about a millisecond; a child silent this long is wedged


def per_worker(setting: int, cores: int, workers: int) -> int:
    """registry.signing_processes for one worker: -1 shares the cores among the workers, rounded up (8 workers on
    8 cores: one each, not 64 processes of ~35 MB); 0 or more as configured."""
    return -(-max(1, cores) // max(1, workers)) if setting < 0 else setting


class SigningFailed(Exception):
    """A child could not sign (it died, or its key refused): the caller signs in-process instead."""


def _frame(job: int, data: bytes, status: int = OK) -> bytes:
    return _HEAD.pack(job, status, len(data)) + data


def _frames(buffer: bytearray) -> list[tuple[int, int, bytes]]:
    """The complete frames (job, status, body) at the start of `buffer`, removed from it; a partial one stays."""
    out: list[tuple[int, int, bytes]] = []
    offset, size = 0, _HEAD.size
    while len(buffer) - offset >= size:
        job, status, length = _HEAD.unpack_from(buffer, offset)
        if length > MAX_FRAME or status not in (OK, FAILED):
            raise ValueError(f"a frame of {length} bytes, status {status}")
        if len(buffer) - offset - size < length:
            break
        out.append((job, status, bytes(buffer[offset + size : offset + size + length])))
        offset += size + length
    del buffer[:offset]
    return out


class _Child:
    """One signing process and the requests waiting for its answers."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: SigningKey, on_exit: Callable[[_Child], None]) -> None:
        self.loop, self.on_exit = loop, on_exit
        pem = key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # stderr is inherited: a child's crash report lands in the gateway's own log output.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.signing_processes"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        os.set_blocking(self._in, False)
        os.set_blocking(self._out, False)
        self.waiting: dict[int, asyncio.Future[bytes]] = {}
        self._next = 0
        self._unsent = bytearray(_frame(0, pem))  # the key first: the child reads it before any job
        self._received = bytearray()
        self._progress = loop.time()
        self._watchdog: asyncio.TimerHandle | None = None
        self._writer = False  # a writer callback is registered for the child's input (a full pipe)
        self.alive = True
        loop.add_reader(self._out, self._readable)
        self._flush()

    def submit(self, signing_input: bytes) -> asyncio.Future[bytes]:
        self._next = self._next % 0xFFFFFFFF + 1
        future: asyncio.Future[bytes] = self.loop.create_future()
        idle = not self.waiting
        if idle:  # the watchdog measures silence from the first job still unanswered
            self._progress = self.loop.time()
        self.waiting[self._next] = future
        pending = bool(self._unsent)  # a flush is scheduled, or a writer waits for room: it sends this job too
        self._unsent += _frame(self._next, signing_input)
        if not pending:
            # An idle child gets its job at once. A busy one gets the jobs of this event-loop turn in one write once
            # the turn ends: each write is a system call and a wake-up of the child, and it will not read before
            # its current signature is done anyway (measured: bench/auth.py, every request signed).
            if idle:
                self._flush()
            else:
                self.loop.call_soon(self._flush)
        if self._watchdog is None:
            self._watchdog = self.loop.call_later(ANSWER_TIMEOUT, self._check_silence)
        return future

    def _check_silence(self) -> None:
        """A child silent for ANSWER_TIMEOUT with jobs waiting (stopped, starved, wedged) is killed, and the requests
        it held are signed by their worker: one timer per child, not one per request."""
        self._watchdog = None
        if not self.alive or not self.waiting:
            return
        silent = self.loop.time() - self._progress
        if silent < ANSWER_TIMEOUT:
            self._watchdog = self.loop.call_later(ANSWER_TIMEOUT - silent, self._check_silence)
            return
        log.warning("signing process %d gave no answer in %s s: ending it", self.proc.pid, ANSWER_TIMEOUT)
        self.proc.kill()
        self._ended("no answer in time")

    def _flush(self) -> None:
        if not self.alive or not self._unsent:  # ended since it was scheduled: its descriptors may be reused
            return
        try:
            sent = os.write(self._in, self._unsent)
        except BlockingIOError:
            sent = 0
        except OSError:  # the child is gone: its reader sees the end and fails the waiting requests
            self._unsent.clear()
            sent = 0
        del self._unsent[:sent]
        if bool(self._unsent) != self._writer:  # (un)registered only on a change: each call costs a few µs
            self._writer = bool(self._unsent)
            if self._writer:
                self.loop.add_writer(self._in, self._flush)
            else:
                self.loop.remove_writer(self._in)

    def _readable(self) -> None:
        try:
            data = os.read(self._out, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._ended("the signing process exited")
            return
        self._received += data
        self._progress = self.loop.time()
        try:
            frames = _frames(self._received)
        except ValueError as exc:
            self._ended(f"the signing process sent a broken answer ({exc})")
            return
        for job, status, body in frames:
            future = self.waiting.pop(job, None)
            if future is None or future.done():  # its request went away
                continue
            if status == FAILED:
                future.set_exception(SigningFailed(body.decode("utf-8", "replace")))
            else:
                future.set_result(body)
        if not self.waiting and self._watchdog is not None:  # all answered: the next job starts a fresh timer
            self._watchdog.cancel()
            self._watchdog = None

    def _ended(self, reason: str) -> None:
        if not self.alive:
            return
        self._retire()
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(SigningFailed(reason))
        self.waiting.clear()
        self.on_exit(self)
        self._close()
        code = self.proc.poll()  # reaped now if it has exited (it closed its output); else by subprocess's cleanup
        log.warning("signing process %d ended (%s, status %s); a new one on demand", self.proc.pid, reason, code)

    def _retire(self) -> None:
        self.alive = False
        self.loop.remove_reader(self._out)
        self.loop.remove_writer(self._in)
        self._unsent.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                assert pipe is not None
                pipe.close()

    async def stop(self, timeout: float = 2.0) -> None:
        """End the child: its input closes, so it exits after the jobs it holds; killed if it does not."""
        if self.alive:
            self._retire()
            for future in self.waiting.values():
                if not future.done():  # the request signs in its worker instead (SigningProcesses.signature)
                    future.set_exception(SigningFailed("the signing process was stopped"))
            self.waiting.clear()
            self._close()
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                await asyncio.sleep(0)
                self.proc.wait()
                break
            await asyncio.sleep(0.01)


class SigningProcesses:
    """A pool of `count` signing processes for one key and one event loop, started on first use; 0 signs here."""

    def __init__(self, key: SigningKey, count: int) -> None:
        self.key, self.count = key, count
        self.children: list[_Child] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed_at = -RESPAWN_DELAY
        self._closed = False

    async def signature(self, signing_input: bytes) -> bytes:
        """The signature of `signing_input`, from the least busy child; in this process when none can sign."""
        child = self._child()
        if child is not None:
            try:
                return await child.submit(signing_input)
            except SigningFailed as exc:
                log.warning("signing process failed (%s): signing in the worker", exc)
        return self.key.signature(signing_input)

    def _child(self) -> _Child | None:
        if self.count <= 0 or self._closed:
            return None
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:  # children belong to the loop that watches their pipes
            return None
        if len(self.children) < self.count and time.monotonic() - self._failed_at >= RESPAWN_DELAY:
            try:
                self.children.append(_Child(loop, self.key, self._exited))
            except OSError as exc:
                self._failed_at = time.monotonic()
                log.warning("cannot start a signing process (%s): signing in the worker", exc)
        if not self.children:
            return None
        return min(self.children, key=lambda c: len(c.waiting))

    def _exited(self, child: _Child) -> None:
        self._failed_at = time.monotonic()
        with contextlib.suppress(ValueError):
            self.children.remove(child)

    async def close(self) -> None:
        self._closed = True
        children, self.children = self.children, []
        await asyncio.gather(*(c.stop() for c in children))

    async def retire(self) -> None:
        """Close once the signatures asked of the pool are answered (a key replaced by a reload): no new job is
        taken, and none waiting is lost. A child still silent after ANSWER_TIMEOUT is stopped all the same."""
        self._closed = True
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while any(c.waiting for c in self.children) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await self.close()


class _Signer(Protocol):
    def sign(self, msg: bytes, key: Any) -> bytes: ...


def _signer_for(key: Any) -> _Signer:
    """PyJWT's algorithm for the key, as SigningKey uses it (ES256: DER to r||s, RFC 7518 §3.4)."""
    return jwt.algorithms.get_default_algorithms()[algorithm_of(key)]


def _serve(read: Callable[[int], bytes], write: Callable[[memoryview], int]) -> None:
    """The child's loop: the key, then signing inputs; answers go out once every complete job read has run."""
    received = bytearray()
    key: Any = None
    signer: _Signer | None = None
    while True:
        data = read(1 << 16)
        if not data:
            return
        received += data
        answers = bytearray()
        for job, _, body in _frames(received):
            if signer is None:
                key = serialization.load_pem_private_key(body, password=None)
                signer = _signer_for(key)
                continue
            try:
                answers += _frame(job, signer.sign(body, key))
            except Exception as exc:  # reported to the waiting request, which signs in its worker instead
                answers += _frame(job, f"{type(exc).__name__}: {exc}".encode(), FAILED)
        view = memoryview(answers)
        while view:
            view = view[write(view) :]


def _serve_until_closed(read: Callable[[int], bytes], write: Callable[[memoryview], int]) -> None:
    # The worker closed our output (it stopped us, or died) while answers were on their way: nobody waits for them.
    with contextlib.suppress(BrokenPipeError):
        _serve(read, write)


def main() -> None:
    # A stop signal to the whole process group (the terminal's Ctrl-C, `kill -- -PGID`, systemd's stop of the unit)
    # reaches us too: the gateway shuts down and closes our input, which ends us. Ended by the signal instead, we
    # would be mourned as a crash while the gateway still answers its last requests.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    _serve_until_closed(lambda n: os.read(0, n), lambda b: os.write(1, b))


if __name__ == "__main__":
    main()
