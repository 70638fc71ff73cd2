"""Parse the credentials of a request once (pure): Basic, Bearer, PRIVATE-TOKEN, Deploy-Token, Job-Token.

Secrets never appear in repr() or str(), so a Credentials object can be logged safely.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Source = Literal["basic", "bearer", "private_token", "deploy_token", "job_token"]

# Longest secret we even look at: tokens are 25 characters, passwords are bounded well below this.
MAX_SECRET = 1024


@dataclass(frozen=True)
class Credentials:
    source: Source
    username: str | None
    secret: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(source={self.source!r}, username={self.username!r}, secret=<redacted>)"

    __str__ = __repr__


@dataclass(frozen=True)
class Malformed:
    """Credentials were sent but cannot be parsed: treated as bad credentials (401), never as anonymous."""

    reason: str


def parse_basic(value: str) -> Credentials | Malformed:
    """RFC 7617: base64(user ":" password); the password may itself contain ':'."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return Malformed("invalid base64 in Basic credentials")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Malformed("Basic credentials are not UTF-8")
    username, sep, password = decoded.partition(":")
    if not sep:
        return Malformed("Basic credentials without ':'")
    if "\x00" in decoded or len(password) > MAX_SECRET or len(username) > MAX_SECRET:
        return Malformed("Basic credentials out of bounds")
    return Credentials("basic", username, password)


def _plain(source: Source, value: str) -> Credentials | Malformed:
    value = value.strip()
    if not value or len(value) > MAX_SECRET or not value.isprintable() or " " in value:
        return Malformed(f"malformed {source.replace('_', '-')} header")
    return Credentials(source, None, value)


def from_headers(headers: Mapping[str, str]) -> Credentials | Malformed | None:
    """The credentials of a request, by GitLab's precedence: Basic wins, then the token headers.

    `headers` is case-insensitive (aiohttp's CIMultiDictProxy). None means anonymous.
    """
    authorization = headers.get("Authorization")
    if authorization is not None:
        scheme, _, rest = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            return parse_basic(rest)
        if scheme == "bearer":
            return _plain("bearer", rest)
        return Malformed("unsupported Authorization scheme")
    for header, source in (
        ("PRIVATE-TOKEN", "private_token"),
        ("Deploy-Token", "deploy_token"),
        ("Job-Token", "job_token"),
    ):
        value = headers.get(header)
        if value is not None:
            return _plain(source, value)  # type: ignore[arg-type]
    return None
