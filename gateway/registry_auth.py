"""/jwt/auth: the registry's token service (Docker token authentication spec) — scope grammar, granted subset, JWTs.

GitLab's JwtController and ContainerRegistryAuthenticationService (shared/notes/gitlab-behaviour.md §6); what the
registry accepts in a JWT is in shared/notes/registry.md §1, what clients parse in §3.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from aiohttp import web

from gateway import access, authn, credentials, metrics, namespaces, principals, random_ids, signing_keys, tokens
from gateway.app import CLOCK, CONFIG, ENCRYPTION, REFRESH_PURPOSE, REGISTRY_SIGNING, STORE
from gateway.errors import BadRequest, Forbidden, GatewayError, NotFound, ServiceUnavailable, Unauthorized
from gateway.middleware import GIT_UNAUTHORIZED, PRINCIPAL, read_form
from gateway.policy import INSTANCE, Allowed, Operation, Target
from gateway.principals import Anonymous, DeployTokenPrincipal, Principal, UserPrincipal
from gateway.registry_signing import Signer
from gateway.signing_keys import SigningKey
from gateway.store.base import Project, Store
from gateway.users import pat_is_active

# --- scope grammar (distribution docs/spec/auth/scope.md) -------------------------------------------------------

_TYPE_RE = re.compile(r"\A([a-z0-9]+)(?:\(([a-z0-9]+)\))?\Z")
_ACTION_RE = re.compile(r"\A[a-z*]+\Z")
MAX_SCOPES = 32  # skopeo asks for at most a handful; more is abuse, not a client


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]
    klass: str = ""


def parse_scope(item: str) -> Scope | None:
    """`type[(class)]:name:actions`; type up to the first ':', actions after the last (names may hold host:port).

    Malformed items give None: they are dropped, never a 500 (GitLab 500s on a missing actions part).
    """
    first, last = item.find(":"), item.rfind(":")
    if first <= 0 or last == first:
        return None
    kind, name, actions = item[:first], item[first + 1 : last], item[last + 1 :]
    m = _TYPE_RE.match(kind)
    if m is None or not name or len(name) > 512:
        return None
    wanted = tuple(dict.fromkeys(a for a in actions.split(",") if a))
    if not wanted or not all(_ACTION_RE.match(a) for a in wanted):
        return None
    return Scope(m.group(1), name, wanted, m.group(2) or "")


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """Every `scope` parameter (repeats kept), each split on whitespace; duplicates merged, first order kept."""
    merged: dict[tuple[str, str, str], list[str]] = {}
    for value in values:
        for item in value.split():
            scope = parse_scope(item)
            if scope is None:
                continue
            actions = merged.setdefault((scope.type, scope.klass, scope.name), [])
            actions.extend(a for a in scope.actions if a not in actions)
            if len(merged) > MAX_SCOPES:
                raise BadRequest("too many scopes")
    return [Scope(t, n, tuple(a), k) for (t, k, n), a in merged.items()]


# --- grants -------------------------------------------------------------------------------------------------------

_ACTION_OPS = {"pull": Operation.REGISTRY_PULL, "push": Operation.REGISTRY_PUSH, "delete": Operation.REGISTRY_DELETE}


@dataclass(frozen=True)
class Access:
    """One entry of the JWT `access` claim."""

    type: str
    name: str
    actions: tuple[str, ...]

    def claim(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


def _project_of(name: str, projects: dict[str, Project]) -> Project | None:
    """The longest existing project path among the name and the name minus one or two trailing segments."""
    for candidate in namespaces.image_project_candidates(name):
        if candidate in projects:
            return projects[candidate]
    return None


async def grant(store: Store, principal: Principal, scopes: Sequence[Scope]) -> list[Access]:
    """The subset of the requested actions that policy allows; denied actions and unknown scopes are dropped.

    `*` is never granted: clients fall back to explicit actions (skopeo delete asks `*`, then pull,delete).
    """
    repo_scopes = [s for s in scopes if s.type == "repository" and not s.klass]
    paths = {c for s in repo_scopes for c in namespaces.image_project_candidates(s.name)}
    found = await store.find_projects_by_paths(sorted(paths)) if paths else []
    projects = {p.full_path.lower(): p for p in found}
    levels_cache: dict[int, list[int]] = {}
    granted: list[Access] = []
    for scope in scopes:
        if scope.type == "registry" and not scope.klass and scope.name == "catalog" and "*" in scope.actions:
            # The catalog lists every repository unfiltered: admins only (registry.md §2).
            if isinstance(access.decide(principal, INSTANCE, Operation.REGISTRY_CATALOG), Allowed):
                granted.append(Access("registry", "catalog", ("*",)))
            continue
        if scope not in repo_scopes:
            continue
        project = _project_of(scope.name, projects)
        if project is None:
            continue
        target = Target.of_project(project)
        if project.id not in levels_cache:
            levels_cache[project.id] = await access.levels(store, principal, target)
        allowed = tuple(
            action
            for action in scope.actions
            if action in _ACTION_OPS
            # access.decide: every requested action is an audited decision (audit.py)
            and isinstance(access.decide(principal, target, _ACTION_OPS[action], levels_cache[project.id]), Allowed)
        )
        if allowed:
            granted.append(Access("repository", scope.name.lower(), allowed))
    return granted


# --- JWT ----------------------------------------------------------------------------------------------------------

# GitLab: nbf = now - 5 s so a registry whose clock runs slightly behind accepts a fresh token.
NOT_BEFORE_SKEW = 5
REFRESH_AUDIENCE_SUFFIX = ":refresh"
REFRESH_LIFETIME = timedelta(days=365)


def subject(principal: Principal) -> str:
    if isinstance(principal, UserPrincipal):
        return principal.user.username
    if isinstance(principal, DeployTokenPrincipal):
        return principal.token.username
    return ""


def auth_type(principal: Principal) -> str:
    if isinstance(principal, DeployTokenPrincipal):
        return "deploy_token"
    if isinstance(principal, UserPrincipal):
        return "personal_access_token" if principal.via == "pat" else "gitlab_or_ldap"
    return "none"


def mint(
    key: SigningKey,
    *,
    issuer: str,
    audience: str,
    principal: Principal,
    granted: Sequence[Access],
    now: datetime,
    ttl: int,
    include_x5c: bool,
) -> str:
    """A registry bearer token: integer times, string `aud`, libtrust `kid` (+ `x5c` for registry 3.x)."""
    claims = token_claims(issuer=issuer, audience=audience, principal=principal, granted=granted, now=now, ttl=ttl)
    return key.sign(claims, include_x5c=include_x5c)


def token_claims(
    *, issuer: str, audience: str, principal: Principal, granted: Sequence[Access], now: datetime, ttl: int
) -> dict[str, Any]:
    iat = int(now.timestamp())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "iat": iat,
        "nbf": iat - NOT_BEFORE_SKEW,
        "exp": iat + ttl,
        "jti": random_ids.uuid4(),
        "access": [a.claim() for a in granted],
        "auth_type": auth_type(principal),
    }
    sub = subject(principal)
    if sub:
        claims["sub"] = sub
    return claims


@functools.lru_cache(maxsize=64)
def rfc3339(epoch_seconds: int) -> str:
    """`issued_at`: every token of one second shares it (strftime was 6 % of the answer for a reused token)."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def refresh_token(secret: bytes, *, issuer: str, principal: Principal, now: datetime) -> str:
    """An OAuth2 refresh token bound to the credential it came from; it dies with that credential.

    Only the gateway reads it back, so it is MACed (HS256) with a key of its own, derived from the encryption key
    (app.REFRESH_PURPOSE), not signed with the registry's key: `docker login` keeps it for a year in place of the
    password, and a rotation of the registry key (key_rotation.py) must not log every docker client out. Its
    audience differs from the registry service, so the registry never accepts it as an access token either.
    """
    if isinstance(principal, DeployTokenPrincipal):
        bound: dict[str, Any] = {"kind": "deploy_token", "id": principal.token.id}
    elif isinstance(principal, UserPrincipal) and principal.token_id is not None:
        bound = {"kind": "pat", "id": principal.token_id, "uid": principal.user.id}
    elif isinstance(principal, UserPrincipal):
        bound = {"kind": "user", "id": principal.user.id}
    else:
        raise Unauthorized("no credential to refresh")
    iat = int(now.timestamp())
    claims = {
        "iss": issuer,
        "aud": issuer + REFRESH_AUDIENCE_SUFFIX,
        "iat": iat,
        "exp": iat + int(REFRESH_LIFETIME.total_seconds()),
        "jti": secrets.token_hex(16),
        "bound": bound,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def _algorithm(key: Any) -> str | None:
    try:
        return signing_keys.algorithm_of(key)
    except GatewayError:  # a certificate of a key registry tokens are never signed with (another EC curve)
        return None


def _refresh_claims(raw: str, mac_keys: Sequence[bytes], trusted: Sequence[Any], issuer: str) -> dict[str, Any] | None:
    """The claims of a refresh token this gateway issued: MACed with one of `mac_keys` (the active encryption key's,
    or a staged or retiring one's during a rotation: encryption_keys.py), or, issued by a release before that, signed
    by a registry key whose certificate registry.certificate still lists (until a rotation retires it)."""
    try:
        algorithm = str(jwt.get_unverified_header(raw).get("alg"))
    except jwt.PyJWTError:
        return None
    # The algorithm names the key to check with, never the other way round: an HS256 token is never checked
    # against a public key (the classic JWT algorithm confusion), nor an RS256 one against the MAC key.
    if algorithm == "HS256":
        keys: Sequence[Any] = mac_keys
    else:
        # Only the keys of the token's own algorithm: PyJWT raises TypeError for an RSA key on an ES256 token.
        keys = [k for k in trusted if _algorithm(k) == algorithm]
    for key in keys:
        try:
            claims: dict[str, Any] = jwt.decode(
                raw,
                key,
                algorithms=[algorithm],
                audience=issuer + REFRESH_AUDIENCE_SUFFIX,
                issuer=issuer,
                options={"require": ["exp", "iat", "aud", "iss"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError):  # a key PyJWT cannot use for this token is no match either
            continue
        return claims
    return None


async def principal_of_refresh_token(
    store: Store, mac_keys: Sequence[bytes], trusted: Sequence[Any], raw: str, *, issuer: str, now: datetime
) -> Principal | None:
    claims = _refresh_claims(raw, mac_keys, trusted, issuer)
    if claims is None:
        return None
    bound = claims.get("bound")
    if not isinstance(bound, dict) or not isinstance(bound.get("id"), int):
        return None
    if bound.get("kind") == "deploy_token":
        token = await store.get_deploy_token(bound["id"])
        if token is None or not tokens.is_active(token, now):
            return None
        return DeployTokenPrincipal(token)
    if bound.get("kind") == "pat" and isinstance(bound.get("uid"), int):
        pats = await store.list_personal_access_tokens(bound["uid"])
        pat = next((p for p in pats if p.id == bound["id"]), None)
        user = await store.get_user(bound["uid"])
        if pat is None or not pat_is_active(pat, now) or user is None or not user.active:
            return None
        return UserPrincipal(user, frozenset(pat.scopes), "pat", pat.id)
    if bound.get("kind") == "user":
        user = await store.get_user(bound["id"])
        if user is None or not user.active:
            return None
        return UserPrincipal(user, None, "password")
    return None


# --- handlers -----------------------------------------------------------------------------------------------------

_REGISTRY_SCOPES = frozenset({"read_registry", "write_registry"})
_PAT_REGISTRY_SCOPES = frozenset({"api", "read_registry", "write_registry"})


def _check_registry_ability(principal: Principal, scopes: Sequence[Scope]) -> None:
    """GitLab's order (§6): package-only tokens cannot log in (401); a principal without any registry ability,
    or an anonymous request asking nothing, is DENIED (403) — that 403 is what makes `docker login` fail."""
    if isinstance(principal, DeployTokenPrincipal):
        held = set(principal.token.scopes)
        if held <= tokens.PACKAGE_SCOPES:
            raise Unauthorized(GIT_UNAUTHORIZED)
        if not held & _REGISTRY_SCOPES:
            raise Forbidden("access forbidden")
    elif isinstance(principal, UserPrincipal):
        if principal.scopes is not None and not principal.scopes & _PAT_REGISTRY_SCOPES:
            raise Forbidden("access forbidden")
    elif isinstance(principal, Anonymous) and not scopes:
        raise Forbidden("access forbidden")


def _refresh_secrets(request: web.Request) -> tuple[bytes, ...]:
    """The refresh tokens' MAC keys: the first makes them, each checks them."""
    return request.app[ENCRYPTION].current.derived(REFRESH_PURPOSE)


def _signer(request: web.Request) -> Signer:
    """The key this process signs with now, with its signing processes: taken once per request (a reload swaps it
    whole, and a token's header and signature must come from the same key)."""
    signer = request.app[REGISTRY_SIGNING].current
    if signer is None:
        raise ServiceUnavailable("registry token signing key is not configured (run `gateway init`)")
    return signer


async def _issue(request: web.Request, principal: Principal, scopes: Sequence[Scope]) -> dict[str, Any]:
    config = request.app[CONFIG].registry
    signer = _signer(request)
    key = signer.key
    now = request.app[CLOCK].now()
    granted = await grant(request.app[STORE], principal, scopes)
    cache = signer.reused
    cache_key = (subject(principal), auth_type(principal), tuple(granted))
    hit = cache.get(cache_key, int(now.timestamp()))
    metrics.token_issued("registry_jwt_reused" if hit is not None else "registry_jwt_minted")
    if hit is not None:
        token, iat = hit
    else:
        claims = token_claims(
            issuer=config.issuer,
            audience=config.service,
            principal=principal,
            granted=granted,
            now=now,
            ttl=config.token_ttl,
        )
        signing_input = key.signing_input(claims, include_x5c=config.include_x5c)
        # Only the private-key operation leaves the worker: a signing process (signing_processes.py).
        token = key.compact(signing_input, await signer.processes.signature(signing_input))
        iat = int(now.timestamp())
        cache.put(cache_key, token, iat)
    # containers/image caches issued_at + expires_in; expires_in must be an integer (registry.md §3), and
    # issued_at + expires_in must not pass the JWT's exp.
    return {"token": token, "access_token": token, "expires_in": config.token_ttl, "issued_at": rfc3339(iat)}


def _check_service(request: web.Request, service: str | None) -> None:
    if service != request.app[CONFIG].registry.service:
        raise NotFound("unknown service")


async def token(request: web.Request) -> web.Response:
    """GET /jwt/auth?service=…&scope=…&account=…: a bearer token for the registry (Docker token spec)."""
    _check_service(request, request.query.get("service"))
    scopes = parse_scopes(request.query.getall("scope", []))
    principal = await authn.authenticate(request, principals.Mode.LOGIN)
    if principal is None:
        raise Unauthorized(GIT_UNAUTHORIZED)
    request[PRINCIPAL] = principals.describe(principal)
    _check_registry_ability(principal, scopes)
    return web.json_response(await _issue(request, principal, scopes))


async def oauth(request: web.Request) -> web.Response:
    """POST /jwt/auth: the OAuth2 flow (grant_type=password | refresh_token), so clients keep a refresh token."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise BadRequest("expected an application/x-www-form-urlencoded body")
    form = await read_form(request)
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    _check_service(request, fields.get("service"))
    scopes = parse_scopes(fields.get("scope", "").split())
    store, now = request.app[STORE], request.app[CLOCK].now()
    issuer = request.app[CONFIG].registry.issuer
    grant_type = fields.get("grant_type")
    principal: Principal | None
    if grant_type == "password":
        username, password = fields.get("username"), fields.get("password")
        if not username or not password:
            raise BadRequest("username and password are required")
        creds = credentials.Credentials("basic", username, password)
        principal = await authn.authenticate(request, principals.Mode.LOGIN, creds)
    elif grant_type == "refresh_token":
        raw = fields.get("refresh_token", "")
        if not raw or len(raw) > 8192:
            raise BadRequest("refresh_token is required")
        key = _signer(request).key
        trusted, mac_keys = key.trusted or (key.private_key.public_key(),), _refresh_secrets(request)
        # A refresh token is a secret too: the same ban and failure accounting as a password (authn.py).
        principal = await authn.authenticate_with(
            request,
            lambda: principal_of_refresh_token(store, mac_keys, trusted, raw, issuer=issuer, now=now),
        )
    else:
        raise BadRequest("unsupported grant_type")
    if principal is None or isinstance(principal, Anonymous):
        raise Unauthorized(GIT_UNAUTHORIZED)
    request[PRINCIPAL] = principals.describe(principal)
    _check_registry_ability(principal, scopes)
    issued = await _issue(request, principal, scopes)
    body: dict[str, Any] = {
        "access_token": issued["token"],
        "scope": " ".join(f"{s.type}:{s.name}:{','.join(s.actions)}" for s in scopes),
        "expires_in": issued["expires_in"],
        "issued_at": issued["issued_at"],
    }
    if grant_type == "refresh_token" or fields.get("access_type") == "offline":
        body["refresh_token"] = (
            fields["refresh_token"]
            if grant_type == "refresh_token"
            else refresh_token(_refresh_secrets(request)[0], issuer=issuer, principal=principal, now=now)
        )
        if grant_type != "refresh_token":
            metrics.token_issued("refresh_token")
    return web.json_response(body)
