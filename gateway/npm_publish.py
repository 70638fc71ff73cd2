"""An npm publish body, checked while it streams to the registry: one new version of the URL's package and its
tarball, nothing else (verdaccio also reads a PUT of the package document as a deprecation, an unpublish of every
version left out, or a dist-tag rewrite; docs/packages.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from gateway.errors import BadRequest

# Strings longer than this (the tarball's base64, a readme) are left out of the skeleton: nothing checked is long.
LONG = 4096
# What stands for a long string in the skeleton: NUL, which no checked name, version or file name may hold.
_LONG_STAND_IN = b'"\\u0000"'
_STRING_END = re.compile(rb'["\\]')
_JSON_SPACE = b" \t\r\n"  # RFC 8259 §2


class Skeleton:
    """The document with every long string replaced by "\\u0000", built chunk by chunk: a 500 MB publish has a
    skeleton of a few KB. The long base64 string is skipped by one regex search, not byte by byte."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.out = bytearray()
        self._string: bytearray | None = None  # the open string's bytes so far (None outside strings)
        self._long = False
        self._escaped = False  # the chunk ended just after a backslash inside a string

    def feed(self, chunk: bytes) -> None:
        i, n = 0, len(chunk)
        while i < n:
            if self._string is None:
                quote = chunk.find(b'"', i)
                end = n if quote < 0 else quote
                self.out += chunk[i:end]
                if quote < 0:
                    break
                self._string, self._long, i = bytearray(), False, quote + 1
                continue
            if self._escaped:
                self._keep(chunk[i : i + 1])
                self._escaped, i = False, i + 1
                continue
            found = _STRING_END.search(chunk, i)
            end = n if found is None else found.start()
            self._keep(chunk[i:end])
            if found is None:
                break
            if chunk[end : end + 1] == b"\\":
                self._keep(b"\\")
                self._escaped, i = True, end + 1
                continue
            self.out += _LONG_STAND_IN if self._long else b'"' + self._string + b'"'
            self._string, i = None, end + 1
        if len(self.out) > self.maximum:
            raise _bad(f"the package document without its long strings is larger than {self.maximum} bytes")

    def _keep(self, part: bytes) -> None:
        assert self._string is not None
        if not self._long:
            self._string += part
            if len(self._string) > LONG:
                self._long, self._string = True, bytearray()

    def document(self) -> Any:
        if self._string is not None:
            raise _bad("the package document ends inside a string")
        try:
            # UTF-8 only (the registry is sent `application/json`; json.loads would guess UTF-16 or UTF-32 from the
            # bytes, which the scan above does not read as such); a BOM is dropped, as iconv-lite does for verdaccio.
            return json.loads(self.out.decode("utf-8-sig"))
        except (ValueError, RecursionError):
            raise _bad("the package document is not JSON") from None


def problem(doc: Any, name: str) -> str | None:
    """Why `doc` is not a publish of one new version of `name` with its tarball (npm's libnpmpublish sends
    `versions` and `_attachments` of one entry each, the file named `<name>-<version>.tgz`); None when it is."""
    if not isinstance(doc, dict) or doc.get("name") != name or doc.get("_id", name) != name:
        return f"the document must name the package {name}"
    versions, attachments = doc.get("versions"), doc.get("_attachments")
    if not (isinstance(versions, dict) and len(versions) == 1 and isinstance(attachments, dict)):
        return "only a publish of one new version is accepted (no deprecate, unpublish, dist-tag or owner change)"
    ((version, manifest),) = versions.items()
    if not isinstance(manifest, dict) or "deprecated" in manifest or manifest.get("version", version) != version:
        return "only a publish of one new version is accepted (no deprecate, unpublish, dist-tag or owner change)"
    tarball = f"{name}-{version}.tgz"
    # npm publish --provenance adds the version's sigstore bundle beside its tarball (libnpmpublish).
    if tarball not in attachments or not set(attachments) <= {tarball, f"{name}-{version}.sigstore"}:
        return f"the publish must carry exactly one tarball, {tarball} (and its {name}-{version}.sigstore)"
    if not all(isinstance(attachment, dict) for attachment in attachments.values()):
        return f"the publish must carry exactly one tarball, {tarball} (and its {name}-{version}.sigstore)"
    tags = doc.get("dist-tags", {})
    # verdaccio merges a publish's dist-tags into the package's (null deletes one): each may name only the new
    # version, as `npm publish --tag` sends it (found by a review).
    if not isinstance(tags, dict) or any(v != version for v in tags.values()):
        return f"a publish may tag only the version it publishes, {version}"
    return None


async def checked(chunks: AsyncIterator[bytes], name: str, maximum: int) -> AsyncIterator[bytes]:
    """The body as read, one chunk behind: the last one holding more than whitespace (so the document's closing
    brace) is sent only once the whole document is checked, so a refused one reaches the registry cut off, which
    it cannot read as JSON. Whitespace after it is held too (the skeleton's limit bounds it)."""
    skeleton = Skeleton(maximum)
    pending = b""
    async for chunk in chunks:
        skeleton.feed(chunk)
        if chunk.strip(_JSON_SPACE):
            if pending:
                yield pending
            pending = chunk
        else:
            pending += chunk
    reason = problem(skeleton.document(), name)
    if reason is not None:
        raise _bad(reason)
    if pending:
        yield pending


def _bad(reason: str) -> BadRequest:
    return BadRequest(f"400 Bad request - {reason}")
