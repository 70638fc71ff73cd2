"""Log lines: one JSON object each, buffered in memory and written to stderr in whole-line chunks a few times a
second; the access log's line per request is formatted straight into that buffer, without a logging record.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import threading
import time
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# Writes of at most PIPE_BUF bytes to a pipe are atomic (POSIX write(2)): workers that share a pipe to a log
# collector never interleave inside a line, as they would with larger chunks.
CHUNK = select.PIPE_BUF
FLUSH_INTERVAL = 0.2  # seconds a line may wait; `tail -f` stays live (nginx: access_log ... flush=)
FLUSH_SIZE = 64 * 1024  # bytes pending that force a write at once


class LineBuffer(logging.Handler):
    """Lines kept until FLUSH_INTERVAL has passed or FLUSH_SIZE is pending; a warning or worse goes out at once."""

    def __init__(self, fd: int = 2, interval: float = FLUSH_INTERVAL) -> None:
        super().__init__()
        self.fd, self.interval = fd, interval
        self._pending: list[bytes] = []
        self._size = 0
        self._last = time.monotonic()
        self._flusher_running = False  # in this process: threads do not survive a fork (reset below)
        # A plain flag, not a threading.Event: a fork while the flusher holds the Event's lock would leave the child
        # a lock nobody releases, and the child's first close() (configure_logging in a worker) would hang on it.
        # The handler's own lock is safe: logging re-creates it in a forked child.
        self._closed = False
        # A line buffered before a fork would be written by the parent and by every child.
        os.register_at_fork(before=self.flush, after_in_child=self._forked)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
        except Exception:
            self.handleError(record)
            return
        self.add(line, urgent=record.levelno >= logging.WARNING)

    def add(self, line: bytes, *, urgent: bool = False) -> None:
        """Buffer one whole line (ending in a newline); `urgent` writes it, and all before it, at once."""
        with self.lock:  # type: ignore[union-attr]  # the flush thread swaps the list under it
            self._pending.append(line)
            self._size += len(line)
            if not self._flusher_running:
                self._start_flusher()
            if urgent or self._size >= FLUSH_SIZE or time.monotonic() - self._last >= self.interval:
                self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # Handler.createLock always sets it
            pending, self._pending, self._size = self._pending, [], 0
            self._last = time.monotonic()
            chunk = bytearray()
            for line in pending:
                if chunk and len(chunk) + len(line) > CHUNK:
                    self._write(chunk)
                    chunk = bytearray()
                chunk += line
            if chunk:
                self._write(chunk)

    def close(self) -> None:
        self._closed = True
        self.flush()
        super().close()

    def _write(self, data: bytearray) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except InterruptedError:
                continue
            except OSError:
                return  # stderr is gone: losing log lines must not fail the request that logged
            view = view[written:]

    def _forked(self) -> None:
        self._flusher_running = False  # a flag, not os.getpid() on every record: that is a system call each

    def _start_flusher(self) -> None:
        self._flusher_running = True
        threading.Thread(target=self._flush_idle, name="log-flush", daemon=True).start()

    def _flush_idle(self) -> None:
        """Lines logged just before a quiet spell are written within `interval` all the same."""
        # Never the thread a process signal lands on: the supervisor blocks SIGCHLD/SIGTERM/SIGINT/SIGHUP and takes them
        # with sigtimedwait (workers.py), which a signal delivered to this thread (unblocked) would bypass and lose.
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        while not self._closed:
            time.sleep(self.interval)
            if self._pending and time.monotonic() - self._last >= self.interval:
                self.flush()


class JSONFormatter(logging.Formatter):
    """One JSON object per line; a message that already is a JSON object (the access log) is merged, not nested.

    `fields` are added to every line (a worker process adds its slot number: `"worker": 1`).
    """

    def __init__(self, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.fields = dict(fields or {})

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            **self.fields,
        }
        if isinstance(record.msg, dict) and not record.args:  # middleware.AccessEntry: already the fields
            entry.update(record.msg)
            return json.dumps(entry, default=str)
        message = record.getMessage()
        parsed: Any = None
        if message.startswith("{"):
            try:
                parsed = json.loads(message)
            except ValueError:
                parsed = None
        if isinstance(parsed, dict):
            entry.update(parsed)
        else:
            entry["message"] = message
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(entry, default=str)


class AccessLines:
    """The access log's lines, exactly as JSONFormatter writes them, put straight into the LineBuffer.

    Through `logging.Logger.info`, a line cost a /jwt/auth answer about 40 µs of its ~250 (the record, the handler
    chain, the formatter); this costs a few. Installed by cli.configure_logging, which owns the process's handlers.
    """

    LOGGER = "gateway.access"

    def __init__(self, buffer: LineBuffer, fields: Mapping[str, Any] | None = None) -> None:
        self.buffer = buffer
        constant = json.dumps({"level": "info", "logger": self.LOGGER, **(fields or {})}, default=str)
        self._constant = constant[1:-1]

    def write(self, entry: Mapping[str, object], created: float | None = None) -> None:
        moment = datetime.fromtimestamp(time.time() if created is None else created, UTC)
        stamp = moment.isoformat(timespec="milliseconds")
        line = f'{{"time": "{stamp}", {self._constant}, {json.dumps(entry)[1:]}\n'
        self.buffer.add(line.encode("ascii"))  # json.dumps escaped everything else (ensure_ascii)


# The access log's fast path, or None: lines then go through the "gateway.access" logger (tests in process).
access_lines: AccessLines | None = None
