"""Users, passwords (Argon2id), personal access tokens and GitLab's access levels.

Access levels and PAT scopes follow GitLab (doc/api/members.md, doc/user/profile/personal_access_tokens.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from gateway import namespaces
from gateway.errors import Conflict, ParamError, ValidationFailed
from gateway.store.base import PersonalAccessToken, Store, User
from gateway.tokens import is_expired


class AccessLevel(IntEnum):
    NO_ACCESS = 0
    GUEST = 10
    REPORTER = 20
    DEVELOPER = 30
    MAINTAINER = 40
    OWNER = 50


MEMBER_LEVELS = frozenset(int(level) for level in AccessLevel if level > 0)

PAT_PREFIX = "glpat-"
PAT_SCOPES: tuple[str, ...] = (
    "api",
    "read_api",
    "read_repository",
    "write_repository",
    "read_registry",
    "write_registry",
)
MIN_PASSWORD = 8
MAX_PASSWORD = 128
EMAIL_RE = re.compile(r"\A[^@\s]+@[^@\s]+\Z")


@dataclass(frozen=True)
class PasswordHasher:
    """Argon2id in PHC string form, parameters from [security] (OWASP: 19 MiB, t=2, p=1)."""

    memory_kib: int = 19 * 1024
    iterations: int = 2

    def hash(self, password: str) -> str:
        kdf = Argon2id(
            salt=secrets.token_bytes(16), length=32, iterations=self.iterations, lanes=1, memory_cost=self.memory_kib
        )
        return kdf.derive_phc_encoded(password.encode("utf-8", "surrogateescape"))

    def verify(self, password: str, encoded: str | None) -> bool:
        if not encoded:
            # Spend comparable time so a missing user or password is not told apart by timing.
            self.hash(password)
            return False
        try:
            Argon2id.verify_phc_encoded(password.encode("utf-8", "surrogateescape"), encoded)
        except (InvalidKey, ValueError):
            return False
        return True


def generate_pat() -> str:
    return PAT_PREFIX + secrets.token_urlsafe(15).translate(str.maketrans("lIO0", "sxyz"))


def pat_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def pat_is_active(token: PersonalAccessToken, now: datetime) -> bool:
    return not token.revoked and not is_expired(token.expires_at, now)


def parse_pat_scopes(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        items: list[object] = [s.strip() for s in value.replace(",", " ").split() if s.strip()]
    elif isinstance(value, list):
        items = list(value)
    else:
        raise ParamError("scopes does not have a valid value")
    if not items or not all(isinstance(s, str) and s in PAT_SCOPES for s in items):
        raise ParamError("scopes does not have a valid value")
    chosen = set(items)
    return tuple(s for s in PAT_SCOPES if s in chosen)


def validate_new_user(username: str, name: str, email: str, password: str | None) -> None:
    messages = []
    problem = namespaces.path_problem(username, top_level=True)
    if problem:
        messages.append(f"Username {problem}")
    if not name.strip() or len(name) > 255:
        messages.append("Name is invalid")
    if email and (len(email) > 255 or not EMAIL_RE.match(email)):
        messages.append("Email is invalid")
    if password is not None and not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        messages.append(
            f"Password is too short (minimum is {MIN_PASSWORD} characters)"
            if len(password) < MIN_PASSWORD
            else "Password is too long"
        )
    if messages:
        raise ValidationFailed(" and ".join(messages))


async def create_user(
    store: Store,
    hasher: PasswordHasher,
    *,
    username: str,
    name: str | None = None,
    email: str = "",
    password: str | None = None,
    is_admin: bool = False,
    now: datetime,
) -> User:
    name = name if name is not None else username
    validate_new_user(username, name, email, password)
    if namespaces.is_reserved(username, top_level=True):
        raise ValidationFailed(f"Username {username} is a reserved name")
    try:
        return await store.create_user(
            username=username,
            name=name,
            email=email,
            # Argon2id is slow by design: off the event loop.
            password_hash=await asyncio.to_thread(hasher.hash, password) if password else None,
            is_admin=is_admin,
            now=now,
        )
    except Conflict:
        raise ValidationFailed("Username has already been taken") from None


@dataclass(frozen=True)
class CreatedPAT:
    token: PersonalAccessToken
    secret: str


async def create_pat(
    store: Store,
    *,
    user: User,
    name: str,
    scopes: Sequence[str],
    expires_at: datetime | None,
    now: datetime,
) -> CreatedPAT:
    if not name.strip() or len(name) > 255:
        raise ValidationFailed("Name is invalid")
    for _attempt in range(3):
        secret = generate_pat()
        try:
            token = await store.create_personal_access_token(
                user_id=user.id,
                name=name,
                token_digest=pat_digest(secret),
                scopes=scopes,
                expires_at=expires_at,
                now=now,
            )
        except Conflict:
            continue
        return CreatedPAT(token, secret)
    raise Conflict("could not generate a unique personal access token")
