"""gateway.socket_relay.relay over real loopback TCP connections: exact bytes, early end, silent source, gone client."""

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


async def test_silent_backend_times_out(sockets: dict[str, socket.socket]) -> None:
    await send_all(sockets["backend"], b"x" * 1000, close=False)
    with pytest.raises(socket_relay.SourceTimeout):
        await socket_relay.relay(sockets["src"], sockets["dst"], 2000, read_timeout=0.2)


async def test_client_gone(sockets: dict[str, socket.socket]) -> None:
    sockets["client"].close()
    sender = asyncio.create_task(send_all(sockets["backend"], os.urandom(8 * 1024 * 1024), close=False))
    with pytest.raises(socket_relay.SinkGone):
        await socket_relay.relay(sockets["src"], sockets["dst"], 8 * 1024 * 1024, read_timeout=5)
    sender.cancel()
