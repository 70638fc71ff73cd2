"""A PyPI upload (twine's multipart form), read strictly enough that the gateway and the backend's form parser cannot
see different files in it: the project a file is claimed for is the project the backend files it under.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import StreamReader

from gateway.errors import BadRequest

CHUNK = 256 * 1024

# RFC 2046 §5.1.1's boundary characters, less the space (allowed only inside, and never sent by a client).
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=?]{1,70}")
# What twine (urllib3's multipart encoder), uv, poetry and curl -F write: a quoted name of a metadata field, and a
# quoted file name of a distribution (PEP 427 / sdist names, `!` of an epoch). Nothing to unescape, no `filename*`,
# no second parameter of the same name: Python's cgi module (pypiserver's parser, through bottle) and the gateway
# read the same name and file name from it.
_DISPOSITION = re.compile(
    rb'form-data[ \t]*;[ \t]*name="([A-Za-z0-9_.:\-]{1,64})"(?:[ \t]*;[ \t]*filename="([A-Za-z0-9._+!\-]{0,255})")?'
)
_CONTENT_TYPE = re.compile(rb"[!-~][ -~]*")
# Part types cgi parses as a form of their own (a nested multipart, or the rest of the body as url-encoded fields).
_NESTED_FORM = re.compile(rb"\s*(multipart/|application/x-www-form-urlencoded\s*(;|$))", re.IGNORECASE)
# Fields the backend acts on: one of each, or the gateway's check and the backend's choice could be two of them.
_SINGLE = (":action", "name", "version")
_SIGNATURE = "gpg_signature"  # the only file part beside `content`; pypiserver wants it named `<file>.asc`


@dataclass(frozen=True)
class PypiUpload:
    name: str
    version: str
    action: str
    filename: str
    data_start: int  # where the file's bytes start in the head returned with it


def _bad(why: str) -> BadRequest:
    return BadRequest(f"400 Bad request - {why}")


def boundary(value: str) -> str:
    """The form's boundary, or 400: RFC 2046 characters only (what a client's encoder picks)."""
    if not _BOUNDARY.fullmatch(value):
        raise _bad("a multipart/form-data body with a boundary is required")
    return value


def content_type(boundary: str) -> str:
    """The Content-Type sent to the backend: the boundary the gateway parsed, not the client's header (two boundary
    parameters, or odd quoting, could be read differently by the backend)."""
    return f'multipart/form-data; boundary="{boundary}"'


def _part_headers(block: bytes) -> tuple[str, str | None]:
    """A part's name and file name, from one Content-Disposition and at most one Content-Type, nothing else."""
    disposition: re.Match[bytes] | None = None
    typed = False
    for line in block.split(b"\r\n"):
        key, colon, value = line.partition(b":")
        key, value = key.lower(), value.strip(b" \t")
        if colon and key == b"content-disposition" and disposition is None:
            disposition = _DISPOSITION.fullmatch(value)
            if disposition is None:
                raise _bad("a part's Content-Disposition is not form-data with a quoted name (and file name)")
        elif colon and key == b"content-type" and not typed and _CONTENT_TYPE.fullmatch(value):
            if _NESTED_FORM.match(value):
                raise _bad("a part of the form is a form itself")
            typed = True
        else:
            raise _bad("a part has a header other than one Content-Disposition and one Content-Type")
    if disposition is None:
        raise _bad("a part has no Content-Disposition")
    filename = disposition.group(2)
    return disposition.group(1).decode("ascii"), filename.decode("ascii") if filename is not None else None


async def read_head(content: StreamReader, boundary: str, maximum: int) -> tuple[bytes, PypiUpload]:
    """Read the form up to the start of its `content` file's bytes; return what was read (sent on unchanged) and the
    upload's fields. Raises BadRequest for anything twine would not send.

    Every `\\n--<boundary>` must be a delimiter line the gateway reads as one: Python's cgi module takes a line
    after a bare LF, and with blanks after the boundary, as a delimiter too."""
    delimiter = b"--" + boundary.encode("ascii")
    marker = b"\n" + delimiter
    buffer = b""

    async def more() -> None:
        nonlocal buffer
        chunk = await content.read(CHUNK)
        if not chunk:
            raise _bad("the upload has no `content` file part")
        buffer += chunk
        if len(buffer) > maximum:
            raise _bad("the upload's metadata fields are too large")

    # No preamble: cgi skips lines up to one that is the delimiter; the gateway would have to skip the same ones.
    while len(buffer) < len(delimiter) + 2:
        await more()
    if not buffer.startswith(delimiter + b"\r\n"):
        raise _bad("the upload has no `content` file part (the form must start with its boundary)")
    position = len(delimiter) + 2
    fields: dict[str, str] = {}
    signature: str | None = None
    while True:
        while (end_of_headers := buffer.find(b"\r\n\r\n", position)) < 0:
            await more()
        name, filename = _part_headers(buffer[position:end_of_headers])
        data_start = end_of_headers + 4
        if name == "content":
            if not filename:
                raise _bad("the `content` part has no file name")
            missing = [f for f in _SINGLE if f not in fields]
            if missing:
                raise _bad(f"{', '.join(missing)} must come before the file in the form")
            if signature is not None and signature != filename + ".asc":
                raise _bad(f"the signature {signature} is not the file's ({filename}.asc)")
            return buffer, PypiUpload(fields["name"], fields["version"], fields[":action"], filename, data_start)
        if filename is not None and name != _SIGNATURE:
            raise _bad(f"only `content` and `{_SIGNATURE}` may be files, not `{name}`")
        # From the blank line's LF on: cgi takes a boundary line right after the headers as the end of an empty
        # value (the CRLF before a delimiter shared with the blank line), which would hide the next part from a
        # search that starts with the value (found by a review: an empty field hid a `remove_pkg`).
        first = data_start - 1
        searched = first
        while (found := buffer.find(marker, searched)) < 0:
            searched = max(first, len(buffer) - len(marker))  # only the new bytes, and a marker across them
            await more()
        if found <= data_start or buffer[found - 1 : found] != b"\r":
            raise _bad("a boundary line of the form does not follow a CRLF of its own")
        after = found + len(marker)
        while len(buffer) < after + 2:
            await more()
        if buffer[after : after + 2] == b"--":
            raise _bad("the upload has no `content` file part")
        if buffer[after : after + 2] != b"\r\n":
            raise _bad("a boundary line of the form has more after the boundary")
        if name in _SINGLE:
            if name in fields:
                raise _bad(f"{name} is repeated in the form")
            fields[name] = buffer[data_start : found - 1].decode("utf-8", "replace")
        elif name == _SIGNATURE:
            if signature is not None:
                raise _bad(f"{_SIGNATURE} is repeated in the form")
            signature = filename
        position = after + 2


async def checked(chunks: AsyncIterator[bytes], boundary: str, data_start: int) -> AsyncIterator[bytes]:
    """The whole form as read (`chunks` starts with the head), its `content` file last: the first delimiter after the
    file's bytes must close the form, at its very end. Anything after the file (a second `content`, another
    `:action`) raises before its delimiter is sent, so the backend gets a form cut off inside the file."""
    marker = b"\n--" + boundary.encode("ascii")
    closing = b"\r" + marker + b"--"
    # The blank line's CRLF belongs to what is checked: cgi ends an empty file at a boundary line right after it.
    data_start -= 2
    sent = 0
    pending = b""  # bytes of the file not sent yet: they may begin the closing delimiter
    async for chunk in chunks:
        if sent < data_start:  # the head, checked by read_head
            head = chunk[: data_start - sent]
            sent += len(head)
            yield head
            chunk = chunk[len(head) :]
        pending += chunk
        found = pending.find(marker)
        if found < 0:
            # Kept: the longest end that could begin the marker, and the CR before it.
            if len(pending) > len(marker):
                yield pending[: -len(marker)]
                pending = pending[-len(marker) :]
            continue
        if found == 0 or pending[found - 1 : found] != b"\r":
            raise _bad("the file's bytes hold a boundary line of the form")
        yield pending[: found - 1]
        pending = pending[found - 1 :]
        break
    else:
        raise _bad("the form ends without its closing boundary")
    async for chunk in chunks:
        pending += chunk
        if len(pending) > len(closing) + 2:
            break
    if pending not in (closing, closing + b"\r\n"):
        raise _bad("the form goes on after its `content` file (one file an upload, and nothing after it)")
    yield pending
