"""A raw HTTP/1.1 client for fuzzing: any bytes in the method, target, header values and body reach the server's
parser as sent (aiohttp's client would normalise paths and refuse odd header values before they left)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

TIMEOUT = 15.0


@dataclass(frozen=True)
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw: bytes  # the whole response as received: what a secret must never appear in

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


def parse(raw: bytes) -> Reply:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete response head: {raw[:200]!r}"
    lines = head.split(b"\r\n")
    version, status, *_ = lines[0].split(b" ", 2)
    assert version.startswith(b"HTTP/1."), lines[0]
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(b":") for line in lines[1:])]
    reply = Reply(int(status), headers, body, raw)
    if (reply.header(b"Transfer-Encoding") or b"").lower() == b"chunked":
        reply = Reply(reply.status, headers, _dechunk(body), raw)
    return reply


async def send(
    port: int,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...] = (),
    body: bytes = b"",
) -> Reply:
    """One request on its own connection (`Connection: close`), read to the end."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1:%d" % port, b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if body or method in (b"POST", b"PUT", b"PATCH"):
        lines.append(b"Content-Length: %d" % len(body))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return parse(raw)
