"""The signing processes: real children sign what the worker would (RS256, ES256), answers reach the request that
asked, a child that dies costs no request (the worker signs; a new child later), 0 processes signs in the worker,
closing stops every child, and the pipe framing survives partial reads and refuses a broken stream."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest

from gateway import signing_keys, signing_processes
from gateway.signing_processes import FAILED, OK, SigningProcesses, _Child, _frame, _frames


def _key(algorithm: signing_keys.Algorithm) -> signing_keys.SigningKey:
    private = signing_keys.generate_key(algorithm)
    cert = signing_keys.self_signed_certificate(private, "test", datetime.now(UTC))
    return signing_keys.SigningKey(private, cert)


def _verify(key: signing_keys.SigningKey, signing_input: bytes, signature: bytes) -> dict[str, Any]:
    token = key.compact(signing_input, signature)
    return jwt.decode(token, key.private_key.public_key(), algorithms=[key.algorithm])  # type: ignore[arg-type]


def _input(key: signing_keys.SigningKey, n: int) -> bytes:
    return key.signing_input({"sub": f"job-{n}"}, include_x5c=False)


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_children_sign_every_job_for_the_request_that_asked(algorithm: signing_keys.Algorithm) -> None:
    key = _key(algorithm)
    pool = SigningProcesses(key, 2)
    try:
        inputs = [_input(key, n) for n in range(200)]
        signatures = await asyncio.gather(*(pool.signature(i) for i in inputs))
        assert len(pool.children) == 2
        for n, (signing_input, signature) in enumerate(zip(inputs, signatures, strict=True)):
            assert _verify(key, signing_input, signature)["sub"] == f"job-{n}"
        assert {c.proc.pid for c in pool.children}.isdisjoint({os.getpid()})
    finally:
        await pool.close()


@pytest.fixture
async def one_child() -> AsyncIterator[tuple[signing_keys.SigningKey, SigningProcesses, _Child]]:
    """A pool of one ES256 child, started by a first signature; closed afterwards."""
    key = _key("ES256")
    pool = SigningProcesses(key, 1)
    try:
        await pool.signature(_input(key, 0))
        (child,) = pool.children
        yield key, pool, child
    finally:
        await pool.close()


def _all_signed(key: signing_keys.SigningKey, signatures: list[bytes]) -> None:
    for n, signature in enumerate(signatures):
        assert _verify(key, _input(key, n), signature)["sub"] == f"job-{n}"


async def test_jobs_beyond_the_pipe_capacity_wait_for_room_and_are_all_signed_by_the_child(
    monkeypatch: pytest.MonkeyPatch, one_child: tuple[signing_keys.SigningKey, SigningProcesses, _Child]
) -> None:
    key, pool, _ = one_child

    def not_here(self: signing_keys.SigningKey, signing_input: bytes) -> bytes:
        raise AssertionError("signed in the worker, not by the child")

    monkeypatch.setattr(signing_keys.SigningKey, "signature", not_here)
    # ~300 KiB of signing inputs in one event-loop turn: more than a pipe holds (64 KiB), so the rest is written as
    # the child reads.
    inputs = [key.signing_input({"sub": f"job-{n}", "pad": "x" * 3000}, include_x5c=False) for n in range(100)]
    signatures = await asyncio.gather(*(pool.signature(i) for i in inputs))
    for n, (signing_input, signature) in enumerate(zip(inputs, signatures, strict=True)):
        assert _verify(key, signing_input, signature)["sub"] == f"job-{n}"


async def test_a_child_that_dies_costs_no_request_and_is_replaced_later(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    one_child: tuple[signing_keys.SigningKey, SigningProcesses, _Child],
) -> None:
    monkeypatch.setattr(signing_processes, "RESPAWN_DELAY", 0.2)
    key, pool, child = one_child
    jobs = [asyncio.ensure_future(pool.signature(_input(key, n))) for n in range(50)]
    os.kill(child.proc.pid, signal.SIGKILL)
    _all_signed(key, await asyncio.gather(*jobs))  # answered by the child before it died, or by the worker
    assert child not in pool.children and child.proc.poll() is not None
    assert f"signing process {child.proc.pid} ended" in caplog.text  # the operator learns of it
    await pool.signature(_input(key, 0))  # within the respawn delay: signed in the worker
    assert pool.children == []
    await asyncio.sleep(0.25)
    assert _verify(key, _input(key, 1), await pool.signature(_input(key, 1)))["sub"] == "job-1"
    assert len(pool.children) == 1 and pool.children[0] is not child


async def test_a_child_that_stops_answering_is_ended_and_its_requests_signed_here(
    monkeypatch: pytest.MonkeyPatch, one_child: tuple[signing_keys.SigningKey, SigningProcesses, _Child]
) -> None:
    monkeypatch.setattr(signing_processes, "ANSWER_TIMEOUT", 0.3)
    key, pool, child = one_child
    os.kill(child.proc.pid, signal.SIGSTOP)  # alive, but silent
    started = time.monotonic()
    _all_signed(key, await asyncio.gather(*(pool.signature(_input(key, n)) for n in range(5))))
    assert time.monotonic() - started < 3
    deadline = time.monotonic() + 5
    while child.proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert child.proc.poll() is not None  # killed, not left stopped


async def test_zero_processes_sign_in_the_worker() -> None:
    key = _key("ES256")
    pool = SigningProcesses(key, 0)
    assert _verify(key, _input(key, 3), await pool.signature(_input(key, 3)))["sub"] == "job-3"
    assert pool.children == []


async def test_close_stops_every_child() -> None:
    key = _key("ES256")
    pool = SigningProcesses(key, 2)
    await asyncio.gather(*(pool.signature(_input(key, n)) for n in range(20)))
    procs = [c.proc for c in pool.children]
    assert len(procs) == 2
    started = time.monotonic()
    await pool.close()
    assert all(p.poll() is not None for p in procs)
    assert time.monotonic() - started < 2  # they exit when their input closes, not by the kill deadline
    assert _verify(key, _input(key, 4), await pool.signature(_input(key, 4)))["sub"] == "job-4"  # then in the worker


def test_a_child_refusing_a_job_answers_failed_for_that_job_alone() -> None:
    key = _key("ES256")
    pem = key.private_key.private_bytes(
        signing_keys.serialization.Encoding.PEM,
        signing_keys.serialization.PrivateFormat.PKCS8,
        signing_keys.serialization.NoEncryption(),
    )
    stream = bytearray(_frame(0, pem) + _frame(7, _input(key, 7)) + _frame(8, b"no bytes"))
    written = bytearray()

    class Refusing:
        def sign(self, msg: bytes, k: object) -> bytes:
            if msg == b"no bytes":
                raise ValueError("refused")
            return key.signature(msg)

    def read(n: int) -> bytes:
        chunk = bytes(stream[:5])  # a few bytes at a time: frames arrive split across reads
        del stream[:5]
        return chunk

    def write(view: memoryview) -> int:
        written.extend(view[:100])
        return min(100, len(view))

    original = signing_processes._signer_for
    signing_processes._signer_for = lambda k: Refusing()  # type: ignore[assignment,return-value]
    try:
        signing_processes._serve(read, write)
    finally:
        signing_processes._signer_for = original
    answers = _frames(written)
    assert [(job, status) for job, status, _ in answers] == [(7, OK), (8, FAILED)]
    assert _verify(key, _input(key, 7), answers[0][2])["sub"] == "job-7"
    assert answers[1][2] == b"ValueError: refused"


@pytest.mark.parametrize(
    ("stream", "frames", "left"),
    [
        (_frame(1, b"abc") + _frame(2, b""), [(1, OK, b"abc"), (2, OK, b"")], b""),
        (_frame(1, b"abc") + _frame(2, b"xyz")[:5], [(1, OK, b"abc")], _frame(2, b"xyz")[:5]),
        (_frame(9, b"why", FAILED)[:-1], [], _frame(9, b"why", FAILED)[:-1]),
    ],
    ids=["whole frames", "partial head", "partial body"],
)
def test_frames_are_cut_at_their_lengths(stream: bytes, frames: list[tuple[int, int, bytes]], left: bytes) -> None:
    buffer = bytearray(stream)
    assert _frames(buffer) == frames
    assert buffer == left


@pytest.mark.parametrize(
    "stream",
    [
        signing_processes._HEAD.pack(1, OK, signing_processes.MAX_FRAME + 1),
        signing_processes._HEAD.pack(1, 7, 3) + b"abc",
    ],
    ids=["too long", "unknown status"],
)
def test_a_broken_stream_is_refused(stream: bytes) -> None:
    with pytest.raises(ValueError):
        _frames(bytearray(stream))


@pytest.mark.parametrize(
    ("setting", "cores", "workers", "count"),
    [(-1, 2, 1, 2), (-1, 2, 2, 1), (-1, 8, 8, 1), (-1, 8, 3, 3), (-1, 1, 4, 1), (0, 8, 1, 0), (3, 2, 2, 3)],
)
def test_processes_per_worker(setting: int, cores: int, workers: int, count: int) -> None:
    assert signing_processes.per_worker(setting, cores, workers) == count
