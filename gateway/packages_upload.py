"""Package upload bodies: streamed with a size limit, and the head of a PyPI upload (twine's multipart form) read
far enough to learn the project name and file name before a single byte reaches the backend.

twine sends the metadata fields first and the `content` file part last (twine/repository.py: the form data is the
metadata, then ("content", (filename, file, ...))), so the head is small; its size is bounded all the same.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import StreamReader

from gateway.errors import BadRequest, PayloadTooLarge

CHUNK = 256 * 1024


class Limit:
    """Counts the bytes of one upload; `exceeded` tells a caller that saw the upload fail why it failed."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.total = 0
        self.exceeded = False

    def add(self, n: int) -> None:
        self.total += n
        if self.total > self.maximum:
            self.exceeded = True
            raise PayloadTooLarge(too_large_message(self.maximum))


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
        raise BadRequest("400 Bad request - the upload ended before its Content-Length")


@dataclass(frozen=True)
class PypiUpload:
    name: str
    version: str
    action: str
    filename: str


_DISPOSITION_NAME = re.compile(rb'(?:^|;)\s*name="([^"]*)"', re.IGNORECASE)
_DISPOSITION_FILENAME = re.compile(rb'(?:^|;)\s*filename="([^"]*)"', re.IGNORECASE)
_FIELDS = {":action", "name", "version"}


def _disposition(headers: bytes) -> tuple[str, str | None]:
    for line in headers.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-disposition":
            name = _DISPOSITION_NAME.search(value)
            filename = _DISPOSITION_FILENAME.search(value)
            return (
                name.group(1).decode("utf-8", "replace") if name else "",
                filename.group(1).decode("utf-8", "replace") if filename else None,
            )
    return "", None


async def pypi_head(content: StreamReader, boundary: str, maximum: int) -> tuple[bytes, PypiUpload]:
    """Read the multipart body up to the headers of its `content` part; return the bytes read (to be sent on
    unchanged) and the upload's fields. Raises BadRequest for anything twine would not send."""
    # RFC 2046 §5.1.1: a boundary is 1-70 ASCII characters; anything else (e.g. "€", which latin-1 cannot encode)
    # is no multipart body twine sends (found by tests/fuzz).
    if not boundary or len(boundary) > 200 or not boundary.isascii():
        raise BadRequest("400 Bad request - a multipart/form-data body with a boundary is required")
    delimiter = b"--" + boundary.encode("latin-1")
    buffer = b""
    fields: dict[str, str] = {}
    position: int | None = None  # just after the delimiter line of the part being read

    async def more() -> None:
        nonlocal buffer
        chunk = await content.read(CHUNK)
        if not chunk:
            raise BadRequest("400 Bad request - the upload has no `content` file part")
        buffer += chunk
        if len(buffer) > maximum:
            raise BadRequest("400 Bad request - the upload's metadata fields are too large")

    while position is None:
        start = buffer.find(delimiter)
        if start >= 0 and buffer.find(b"\r\n", start) >= 0:
            position = buffer.find(b"\r\n", start) + 2
        else:
            await more()
    while True:
        end_of_headers = buffer.find(b"\r\n\r\n", position)
        if end_of_headers < 0:
            await more()
            continue
        name, filename = _disposition(buffer[position:end_of_headers])
        if name == "content":
            if not filename:
                raise BadRequest("400 Bad request - the `content` part has no file name")
            missing = sorted(_FIELDS - fields.keys())
            if missing:
                raise BadRequest(f"400 Bad request - {', '.join(missing)} must come before the file in the form")
            return buffer, PypiUpload(fields["name"], fields["version"], fields[":action"], filename)
        body_start = end_of_headers + 4
        next_delimiter = buffer.find(b"\r\n" + delimiter, body_start)
        while next_delimiter < 0:
            await more()
            next_delimiter = buffer.find(b"\r\n" + delimiter, body_start)
        if name in _FIELDS:
            fields[name] = buffer[body_start:next_delimiter].decode("utf-8", "replace")
        after = next_delimiter + 2 + len(delimiter)
        while len(buffer) < after + 2:
            await more()
        if buffer[after : after + 2] == b"--":
            raise BadRequest("400 Bad request - the upload has no `content` file part")
        position = after + 2  # past the CRLF that ends the delimiter line
