"""Log lines are buffered and written in whole lines, never more than PIPE_BUF at once, and never lost at close."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from gateway import log_output
from gateway.log_output import CHUNK, LineBuffer


@pytest.fixture
def pipe() -> tuple[int, int]:
    read, write = os.pipe()
    os.set_blocking(read, False)
    yield read, write
    os.close(read)
    os.close(write)


def _logger(handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger(f"test-log-output-{id(handler)}")
    log.propagate, log.handlers = False, [handler]
    log.setLevel(logging.INFO)
    return log


def _reads(fd: int) -> list[bytes]:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            return chunks
        chunks.append(chunk)


def test_info_lines_wait_a_warning_goes_out_at_once_with_them(pipe: tuple[int, int]) -> None:
    read, write = pipe
    handler = LineBuffer(write, interval=60)
    log = _logger(handler)
    log.info("first")
    log.info("second")
    assert _reads(read) == []  # buffered: no write per line
    log.warning("now")
    assert b"".join(_reads(read)) == b"first\nsecond\nnow\n"
    handler.close()


def test_writes_are_whole_lines_of_at_most_pipe_buf(pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    read, write = pipe
    handler = LineBuffer(write, interval=60)
    log = _logger(handler)
    writes: list[bytes] = []
    real_write = os.write

    def spy(fd: int, data: bytes) -> int:
        if fd == write:
            writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(log_output.os, "write", spy)
    lines = [f"{i:04d}" + "x" * (100 + i % 300) for i in range(200)]
    for line in lines:
        log.info(line)
    handler.flush()
    monkeypatch.undo()
    assert 1 < len(writes) < len(lines)  # batched, and split
    assert all(len(w) <= CHUNK and w.endswith(b"\n") for w in writes)
    assert b"".join(_reads(read)).decode().splitlines() == lines
    handler.close()


def test_a_quiet_spell_still_writes_within_the_interval(pipe: tuple[int, int]) -> None:
    read, write = pipe
    handler = LineBuffer(write, interval=0.05)
    _logger(handler).info("lonely")
    deadline = time.monotonic() + 5
    seen = b""
    while time.monotonic() < deadline and not seen:
        time.sleep(0.02)
        seen = b"".join(_reads(read))
    assert seen == b"lonely\n"
    handler.close()


def test_close_writes_what_is_pending(pipe: tuple[int, int]) -> None:
    read, write = pipe
    handler = LineBuffer(write, interval=60)
    _logger(handler).info("last words")
    handler.close()
    assert b"".join(_reads(read)) == b"last words\n"


def test_a_closed_output_loses_lines_but_not_the_request(pipe: tuple[int, int]) -> None:
    read, write = os.pipe()
    os.close(read)  # the collector went away: EPIPE
    handler = LineBuffer(write, interval=60)
    log = _logger(handler)
    log.info("into the void")
    log.warning("still no exception")
    handler.close()
    os.close(write)


def _blocked(native_id: int) -> int:
    for line in Path(f"/proc/self/task/{native_id}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)
    raise AssertionError("no SigBlk line")


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads a thread's signal mask from /proc (Linux)")
def test_the_flush_thread_never_takes_a_process_signal(pipe: tuple[int, int]) -> None:
    """The supervisor takes SIGCHLD/SIGTERM/SIGINT/SIGHUP with sigtimedwait (workers.py): one delivered to this thread
    instead is lost, and a worker's exit goes unnoticed (the parent once waited a minute for an exited worker)."""
    _, write = pipe
    handler = LineBuffer(write, interval=0.05)
    _logger(handler).info("starts the flush thread")
    wanted = sum(1 << (sig - 1) for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
    deadline, mask = time.monotonic() + 5, 0
    while time.monotonic() < deadline and mask & wanted != wanted:
        flushers = [t for t in threading.enumerate() if t.name == "log-flush" and t.native_id is not None]
        mask = max((_blocked(t.native_id) for t in flushers if t.native_id), default=0)
        time.sleep(0.01)
    handler.close()
    assert mask & wanted == wanted


ACCESS_ENTRIES = [
    {"request_id": "247ea79bb91b5f70", "method": "GET", "path": "/-/health", "route": "ops.health", "status": 200},
    # What a client controls is escaped: quotes, backslashes, control characters, non-ASCII, lone surrogates.
    {"path": '/g/"p"\\x\n\t\x00/é/\U0001f600/\udcff', "principal": "deploy_token:7", "duration_ms": 0.04},
    {"status": 499, "remote": None, "route": ""},
]


@pytest.mark.parametrize("fields", [None, {"worker": 2}], ids=["single", "worker"])
@pytest.mark.parametrize("entry", ACCESS_ENTRIES, ids=["plain", "hostile", "odd-values"])
@pytest.mark.parametrize("created", [1_765_000_000.0, 1_765_000_000.123_4, 1_765_000_059.999_4])
def test_access_lines_are_the_formatters_lines(
    pipe: tuple[int, int], fields: dict[str, int] | None, entry: dict[str, object], created: float
) -> None:
    """The access log's fast path writes byte for byte what the "gateway.access" logger would (JSONFormatter)."""
    read, write = pipe
    handler = LineBuffer(write, interval=60)
    log_output.AccessLines(handler, fields).write(entry, created=created)
    handler.flush()
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, dict(entry), None, None)
    record.created = created
    expected = log_output.JSONFormatter(fields).format(record) + "\n"
    assert b"".join(_reads(read)).decode("ascii") == expected
    handler.close()
