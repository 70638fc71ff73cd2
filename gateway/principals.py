"""Who is asking: credentials → Principal (anonymous, a user, or a deploy token), with one store read per token.

How each path authenticates follows GitLab's lib/gitlab/auth.rb (find_for_git_client) and auth_finders.rb.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Literal

from gateway import tokens
from gateway.credentials import Credentials, Malformed
from gateway.store.base import DeployToken, Store, User
from gateway.users import PAT_PREFIX, PasswordHasher, pat_digest, pat_is_active


@dataclass(frozen=True)
class Anonymous:
    pass


@dataclass(frozen=True)
class UserPrincipal:
    user: User
    # PAT scopes; None when the user proved a password or holds a UI session (the user's full rights).
    scopes: frozenset[str] | None
    via: Literal["password", "pat", "session"]
    token_id: int | None = None


@dataclass(frozen=True)
class DeployTokenPrincipal:
    token: DeployToken


Principal = Anonymous | UserPrincipal | DeployTokenPrincipal
ANONYMOUS = Anonymous()


class Mode(Enum):
    # git smart HTTP and /jwt/auth: Basic; a deploy token's username must match exactly; passwords accepted.
    LOGIN = "login"
    # package endpoints: the token is the Basic password (username ignored) or a token header; no passwords.
    PACKAGES = "packages"
    # the REST API: personal access tokens only (PRIVATE-TOKEN or Bearer); deploy tokens are refused.
    API = "api"


def describe(principal: Principal) -> str:
    """A loggable identity that never contains a secret."""
    if isinstance(principal, UserPrincipal):
        return f"user:{principal.user.id}" + (f"/pat:{principal.token_id}" if principal.token_id else "")
    if isinstance(principal, DeployTokenPrincipal):
        return f"deploy_token:{principal.token.id}"
    return "anonymous"


async def _pat_user(store: Store, secret: str, now: datetime) -> UserPrincipal | None:
    pat = await store.find_personal_access_token(pat_digest(secret))
    if pat is None or not pat_is_active(pat, now):
        return None
    user = await store.get_user(pat.user_id)
    if user is None or not user.active:
        return None
    return UserPrincipal(user, frozenset(pat.scopes), "pat", pat.id)


def password_username(creds: Credentials | Malformed | None, mode: Mode) -> str | None:
    """The username whose password identify() may check for these credentials (git and /jwt/auth Basic with a
    secret that is no prefixed token); None when no password can be checked."""
    if mode is not Mode.LOGIN or not isinstance(creds, Credentials) or creds.source != "basic":
        return None
    secret = creds.secret
    if not creds.username or not secret or secret.startswith(PAT_PREFIX) or secret.startswith(tokens.PREFIX):
        return None
    return creds.username


async def identify(
    store: Store,
    hasher: PasswordHasher,
    creds: Credentials | Malformed | None,
    now: datetime,
    mode: Mode,
) -> Principal | None:
    """The principal behind the credentials; ANONYMOUS when none were sent; None when they are bad."""
    if creds is None:
        return ANONYMOUS
    if isinstance(creds, Malformed):
        return None
    secret = creds.secret
    if not secret:
        return None
    if mode is Mode.API:
        if creds.source not in ("private_token", "bearer"):
            return None
        return await _pat_user(store, secret, now)
    if mode is Mode.LOGIN and creds.source != "basic":
        return None

    # Route by prefix so a request costs one token lookup; unprefixed legacy tokens try both tables.
    is_pat = secret.startswith(PAT_PREFIX)
    if not secret.startswith(tokens.PREFIX):
        principal = await _pat_user(store, secret, now)
        if principal is not None:
            return principal
    if not is_pat:
        token = await tokens.authenticate(store, secret, now)
        if token is not None:
            if mode is Mode.LOGIN and creds.username != token.username:
                # git and /jwt/auth: the Basic username must equal the token's, case-sensitively (auth.rb).
                return None
            return DeployTokenPrincipal(token)
    username = password_username(creds, mode)
    if username is not None:
        user = await store.get_user_by_username(username)
        # Argon2id takes tens of milliseconds by design: off the event loop, or every other request waits.
        verified = await asyncio.to_thread(hasher.verify, secret, user.password_hash if user else None)
        if verified and user is not None and user.active:
            return UserPrincipal(user, None, "password")
    return None
