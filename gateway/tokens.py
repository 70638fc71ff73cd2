"""Deploy tokens: the secret format, its digest, the expiry rule, validation, creation and lookup.

Rules from GitLab's app/models/deploy_token.rb (see shared/notes/gitlab-behaviour.md §1-3).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from gateway.encryption_keys import DEPLOY_TOKEN_PURPOSE, Keyring
from gateway.errors import Conflict, ParamError, ValidationFailed
from gateway.secretbox import SecretBox
from gateway.store.base import DeployToken, NewDeployToken, Store, storable

# GitLab always reports scopes in this order (DeployToken::AVAILABLE_SCOPES).
SCOPES: tuple[str, ...] = (
    "read_repository",
    "read_registry",
    "write_registry",
    "read_package_registry",
    "write_package_registry",
)
PACKAGE_SCOPES = frozenset({"read_package_registry", "write_package_registry"})

PREFIX = "gldt-"
CI_TOKEN_NAME = "gitlab-deploy-token"  # noqa: S105 - a token name, not a secret
MAX_NAME = 255
# GitLab's Forever.date (lib/forever.rb): an expiry on it means none.
FOREVER = datetime(3000, 1, 1, tzinfo=UTC)
MAX_USERNAME = 255
USERNAME_RE = re.compile(r"\A[a-zA-Z0-9.+_-]+\Z")
USERNAME_MESSAGE = "Username can contain only letters, digits, '_', '-', '+', and '.'"

# Devise's friendly token: URL-safe base64 with look-alike characters replaced (lib/authn/token_field).
_FRIENDLY = str.maketrans("lIO0", "sxyz")


def generate() -> str:
    """`gldt-` + 20 characters (15 random bytes, URL-safe base64, lIO0 → sxyz)."""
    return PREFIX + secrets.token_urlsafe(15).translate(_FRIENDLY)


def digest(secret: str) -> bytes:
    """SHA-256 of the secret: what the store keeps and looks up (a 90-bit random secret needs no slow hash)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def is_expired(expires_at: datetime | None, now: datetime) -> bool:
    """The one expiry rule: a token stops working at the instant expires_at (GitLab's Expirable, !263037)."""
    return expires_at is not None and now >= expires_at


def is_active(token: DeployToken, now: datetime) -> bool:
    return not token.revoked and not is_expired(token.expires_at, now)


def parse_expires_at(value: object) -> datetime | None:
    """ISO 8601 date (midnight UTC of that day) or datetime (naive means UTC); None or "" means never.

    Raises ParamError("expires_at is invalid") like GitLab's Grape validation.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise ParamError("expires_at is invalid")
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0, 0), tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ParamError("expires_at is invalid") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ParamError("expires_at is invalid") from None


# Ruby's String#strip: whitespace and NUL (what GitLab's CommaSeparatedToArray strips from each scope).
_RUBY_SPACE = " \t\n\v\f\r\0"


def _ruby_split(text: str) -> list[str]:
    """Ruby's `text.split(',').map(&:strip)`: trailing empty fields are dropped before the strip ("" has none)."""
    parts = text.split(",")
    while parts and parts[-1] == "":
        parts.pop()
    return [part.strip(_RUBY_SPACE) for part in parts]


def _ruby_text(value: object) -> str:
    """Ruby's `to_s` of a JSON value, as far as a scope name can tell: null is "", true is "true"."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def parse_scopes(value: object) -> tuple[str, ...]:
    """GitLab's CommaSeparatedToArray, then Grape's `values` check (lib/api/deploy_tokens.rb): a string is split at
    its commas, and so is each item of an array; anything else is no scope. An unknown name, an empty one between
    commas too, is an error; the result is in GitLab's order without duplicates. No scope at all is a model error
    (see validate)."""
    if isinstance(value, str):
        items = _ruby_split(value)
    elif isinstance(value, list):
        items = [name for item in value for name in _ruby_split(_ruby_text(item))]
    else:
        items = []
    if not all(s in SCOPES for s in items):
        raise ParamError("scopes does not have a valid value")
    chosen = set(items)
    return tuple(s for s in SCOPES if s in chosen)


def validate(name: str, username: str | None, scopes: Sequence[str]) -> None:
    """Model validations; all failures joined into one sentence as GitLab does."""
    messages: list[str] = []
    # The model's order (app/models/deploy_token.rb): the scopes, then the username, then the name.
    if not scopes:
        messages.append("Scopes can't be blank")
    if username is not None:
        if len(username) > MAX_USERNAME:
            messages.append(f"Username is too long (maximum is {MAX_USERNAME} characters)")
        if not USERNAME_RE.match(username):
            messages.append(USERNAME_MESSAGE)
    if not name.strip():
        messages.append("Name can't be blank")
    if len(name) > MAX_NAME:
        messages.append(f"Name is too long (maximum is {MAX_NAME} characters)")
    elif not storable(name):
        messages.append("Name is invalid")  # a NUL or a lone surrogate: no database stores it
    if messages:
        raise ValidationFailed(to_sentence(messages))


def to_sentence(items: Sequence[str]) -> str:
    """Rails' Array#to_sentence, which joins a model's error messages: "A", "A and B", "A, B, and C"."""
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


@dataclass(frozen=True)
class Holder:
    """What a deploy token belongs to: exactly one project or one group."""

    project_id: int | None = None
    group_id: int | None = None

    def __post_init__(self) -> None:
        if (self.project_id is None) == (self.group_id is None):
            raise ValueError("a deploy token belongs to exactly one project or one group")

    def holds(self, token: DeployToken) -> bool:
        return token.project_id == self.project_id and token.group_id == self.group_id


@dataclass(frozen=True)
class Created:
    token: DeployToken
    secret: str  # shown exactly once, in the create response


async def create(
    store: Store,
    box: Keyring | SecretBox,
    *,
    holder: Holder,
    name: str,
    username: str | None,
    scopes: Iterable[str],
    expires_at: datetime | None,
    creator_id: int | None,
    now: datetime,
) -> Created:
    """Validate and store a new deploy token; the plaintext leaves only through the returned Created."""
    # GitLab: `params[:username].presence`, so an empty or blank username counts as absent.
    username = username if username is not None and username.strip() else None
    if expires_at == FOREVER:
        expires_at = None  # GitLab's Forever.date: its getter answers null, the token never expires
    scope_tuple = tuple(s for s in SCOPES if s in set(scopes))
    validate(name, username, scope_tuple)
    for _attempt in range(3):  # GitLab regenerates on collision; 90 random bits make one already unheard of
        secret = generate()
        new = NewDeployToken(
            name=name,
            custom_username=username,
            scopes=scope_tuple,
            expires_at=expires_at,
            token_digest=digest(secret),
            token_encrypted=box.seal(secret, purpose=DEPLOY_TOKEN_PURPOSE) if name == CI_TOKEN_NAME else None,
            creator_id=creator_id,
            project_id=holder.project_id,
            group_id=holder.group_id,
            created_at=now,
        )
        try:
            return Created(await store.create_deploy_token(new), secret)
        except Conflict:
            continue
    raise Conflict("could not generate a unique deploy token")


async def authenticate(store: Store, secret: str, now: datetime) -> DeployToken | None:
    """The active deploy token whose secret this is; revoked or expired tokens are simply not found."""
    if not secret or len(secret) > 255:
        return None
    token = await store.find_deploy_token(digest(secret))
    if token is None or not is_active(token, now):
        return None
    return token
