"""Package upload bodies: streamed with a size limit (a PyPI upload's form: pypi_form.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import StreamReader

from gateway.errors import BadRequest, HTTPFailure, PayloadTooLarge

CHUNK = 256 * 1024


class Limit:
    """Counts the bytes of one upload; `refused` tells a caller that saw the upload fail why the gateway stopped it
    (the backend only saw its connection close, and the forwarder reports that as the backend's failure)."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.total = 0
        self.refused: HTTPFailure | None = None

    def add(self, n: int) -> None:
        self.total += n
        if self.total > self.maximum:
            raise self.refuse(PayloadTooLarge(too_large_message(self.maximum)))

    def refuse(self, failure: HTTPFailure) -> HTTPFailure:
        self.refused = failure
        return failure

    async def watched(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`chunks`, with a refusal raised while reading them kept in `refused`."""
        try:
            async for chunk in chunks:
                yield chunk
        except HTTPFailure as failure:
            raise self.refuse(failure) from None


def too_large_message(maximum: int) -> str:
    return f"413 Request Entity Too Large: the upload is larger than {maximum} bytes"


def check_length(content_length: int | None, maximum: int) -> None:
    """Refuse at once what the client announces as too large, before reading any of it."""
    if content_length is not None and content_length > maximum:
        raise PayloadTooLarge(too_large_message(maximum))


async def limited(
    content: StreamReader, limit: Limit, *, head: bytes = b"", expected: int | None = None
) -> AsyncIterator[bytes]:
    """`head` (already read) then the rest of the body, counted; a body shorter than its Content-Length is an
    interrupted upload and raises, so nothing built from it is ever published."""
    if head:
        limit.add(len(head))
        yield head
    while chunk := await content.read(CHUNK):
        limit.add(len(chunk))
        yield chunk
    if expected is not None and limit.total != expected:
        raise limit.refuse(BadRequest("400 Bad request - the upload ended before its Content-Length"))
