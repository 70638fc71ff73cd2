"""gateway.socket_relay.relay over real loopback TCP connections: exact bytes, early end, silent source, gone client;
bodies that end when the source closes, re-framed as HTTP chunks."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator

import pytest

from gateway import socket_relay

pytestmark = pytest.mark.skipif(not socket_relay.AVAILABLE, reason="needs os.readv (POSIX)")


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected non-blocking loopback TCP sockets (what asyncio transports hold)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    for s in (a, b):
        s.setblocking(False)
    return a, b


@pytest.fixture
async def sockets() -> AsyncIterator[dict[str, socket.socket]]:
    """backend → src (the gateway's backend side), dst (the gateway's client side) → client."""
    backend, src = tcp_pair()
    dst, client = tcp_pair()
    socks = {"backend": backend, "src": src, "dst": dst, "client": client}
    yield socks
    for s in socks.values():
        s.close()


async def send_all(sock: socket.socket, data: bytes, *, close: bool) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, data)
    if close:
        sock.close()


async def receive(sock: socket.socket) -> bytes:
    loop, parts = asyncio.get_running_loop(), []
    while chunk := await loop.sock_recv(sock, 1 << 20):
        parts.append(chunk)
    return b"".join(parts)


@pytest.mark.parametrize(
    ("prefix_size", "body_size"),
    [(0, 5 * 1024 * 1024), (1024 * 1024 + 7, 3 * 1024 * 1024 + 1), (300, 0)],
    ids=["no-prefix", "odd-sizes", "prefix-only"],
)
async def test_relay_moves_exactly_the_announced_bytes(
    sockets: dict[str, socket.socket], prefix_size: int, body_size: int
) -> None:
    prefix, body, trailing = os.urandom(prefix_size), os.urandom(body_size), b"NEXT-RESPONSE"
    # The backend sends more than the body: the relay must stop at the announced length.
    sender = asyncio.create_task(send_all(sockets["backend"], body + trailing, close=False))
    reader = asyncio.create_task(receive(sockets["client"]))
    moved = await socket_relay.relay(sockets["src"], sockets["dst"], body_size, prefix=prefix, read_timeout=5)
    await sender
    sockets["dst"].shutdown(socket.SHUT_WR)
    got = await reader
    assert moved == prefix_size + body_size
    assert hashlib.sha256(got).digest() == hashlib.sha256(prefix + body).digest()
    assert sockets["src"].recv(100) == trailing


async def test_backend_closing_early_is_an_error_not_a_short_success(sockets: dict[str, socket.socket]) -> None:
    sender = asyncio.create_task(send_all(sockets["backend"], os.urandom(2 * 1024 * 1024), close=True))
    reader = asyncio.create_task(receive(sockets["client"]))
    with pytest.raises(socket_relay.SourceEnded):
        await socket_relay.relay(sockets["src"], sockets["dst"], 3 * 1024 * 1024, read_timeout=5)
    await sender
    sockets["dst"].shutdown(socket.SHUT_WR)
    assert len(await reader) == 2 * 1024 * 1024


@pytest.mark.parametrize("length", [2000, None], ids=["announced", "until-close"])
async def test_silent_backend_times_out(sockets: dict[str, socket.socket], length: int | None) -> None:
    await send_all(sockets["backend"], b"x" * 1000, close=False)
    with pytest.raises(socket_relay.SourceTimeout):
        await asyncio.wait_for(socket_relay.relay(sockets["src"], sockets["dst"], length, read_timeout=0.2), 5)


def dechunk(data: bytes) -> tuple[bytes, list[int]]:
    """An HTTP/1.1 chunked body (RFC 9112 §7.1) decoded strictly: (the data, the chunk sizes); the last chunk and
    the empty trailer section must close it."""
    out, sizes, at = [], [], 0
    while True:
        line_end = data.index(b"\r\n", at)
        size = int(data[at:line_end], 16)
        at = line_end + 2
        if size == 0:
            assert data[at:] == b"\r\n", "anything after the last chunk but the end of the trailer section"
            return b"".join(out), sizes
        out.append(data[at : at + size])
        sizes.append(size)
        assert data[at + size : at + size + 2] == b"\r\n"
        at += size + 2


@pytest.mark.parametrize("chunked", [False, True], ids=["raw", "chunked"])
@pytest.mark.parametrize("prefix_size", [0, 777])
async def test_relay_until_the_source_closes(
    sockets: dict[str, socket.socket], chunked: bool, prefix_size: int
) -> None:
    prefix, body = os.urandom(prefix_size), os.urandom(3 * 1024 * 1024 + 13)

    async def backend() -> None:
        for start in range(0, len(body), 700_000):  # in pieces, with pauses: the end is the close, not a lull
            await send_all(sockets["backend"], body[start : start + 700_000], close=False)
            await asyncio.sleep(0.01)
        sockets["backend"].close()

    sender, reader = asyncio.create_task(backend()), asyncio.create_task(receive(sockets["client"]))
    moved = await socket_relay.relay(
        sockets["src"], sockets["dst"], None, prefix=prefix, read_timeout=5, chunked=chunked
    )
    await sender
    if chunked:
        await send_all(sockets["dst"], b"0\r\n\r\n", close=False)  # the last chunk is the caller's (proxy.py)
    sockets["dst"].shutdown(socket.SHUT_WR)
    got = await reader
    if chunked:
        got, sizes = dechunk(got)
        assert len(sizes) > 1 and all(sizes)
    assert moved == prefix_size + len(body)
    assert hashlib.sha256(got).digest() == hashlib.sha256(prefix + body).digest()


async def test_a_paused_stream_is_passed_on_without_waiting_for_a_batch(sockets: dict[str, socket.socket]) -> None:
    # git's progress lines: a few bytes, then a long pause. Held back for a full wake-up batch (SO_RCVLOWAT), they
    # would only arrive with the pack, or never before the read timeout.
    relay = asyncio.create_task(socket_relay.relay(sockets["src"], sockets["dst"], None, read_timeout=30))
    loop = asyncio.get_running_loop()
    lines = (b"0022\x02Counting objects: 10% (1/10)\n", b"0022\x02Counting objects: 90% (9/10)\n")
    for line in lines:
        await send_all(sockets["backend"], line, close=False)
        got = await asyncio.wait_for(loop.sock_recv(sockets["client"], 1000), 2)
        assert got == line
    assert not relay.done()
    sockets["backend"].close()
    assert await asyncio.wait_for(relay, 5) == sum(map(len, lines))


async def test_client_gone(sockets: dict[str, socket.socket]) -> None:
    sockets["client"].close()
    sender = asyncio.create_task(send_all(sockets["backend"], os.urandom(8 * 1024 * 1024), close=False))
    with pytest.raises(socket_relay.SinkGone):
        await socket_relay.relay(sockets["src"], sockets["dst"], 8 * 1024 * 1024, read_timeout=5)
    sender.cancel()
