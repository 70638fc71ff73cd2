"""create_app(config) → web.Application: every AppKey in one place, and the cleanup contexts that own resources."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from gateway import secretbox, signing_keys
from gateway.clock import Clock, SystemClock
from gateway.config import Config
from gateway.middleware import error_middleware, redact_unparseable_requests, request_context_middleware
from gateway.proxy import Forwarder
from gateway.secretbox import SecretBox
from gateway.signing_keys import SignedTokens, SigningKey
from gateway.store import open_store
from gateway.store.base import Store
from gateway.users import PasswordHasher
from gateway.web.throttle import LoginThrottle

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
CLOCK = web.AppKey("clock", Clock)
HASHER = web.AppKey("hasher", PasswordHasher)
BOX = web.AppKey("secretbox", SecretBox)
# None until `gateway init` made the key: /jwt/auth then answers 503 instead of the whole gateway failing.
SIGNING_KEY: web.AppKey[SigningKey | None] = web.AppKey("signing_key")
# Registry JWTs minted moments ago, reused for identical claims (signing_keys.SignedTokens).
SIGNED_TOKENS = web.AppKey("signed_tokens", SignedTokens)
# The one streaming forwarder to backends (git upstream, registry, packages): one client session per process.
PROXY = web.AppKey("proxy", Forwarder)
# Bounds concurrent `git http-backend` children of the embedded git backend (git.max_processes).
GIT_SLOTS = web.AppKey("git_slots", asyncio.Semaphore)
# Failed web sign-ins per client address and per username (web/throttle.py); in memory, per process.
LOGIN_THROTTLE = web.AppKey("login_throttle", LoginThrottle)


def load_signing_key(config: Config) -> SigningKey | None:
    """Loaded once per process: every /jwt/auth request reuses the parsed key and its kid."""
    key_path, cert_path = Path(config.registry.signing_key), Path(config.registry.certificate)
    if not key_path.exists() and not cert_path.exists():
        return None
    return signing_keys.load(key_path, cert_path, algorithm=config.registry.algorithm)


def create_app(
    config: Config,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    box: SecretBox | None = None,
    signing_key: SigningKey | None = None,
) -> web.Application:
    """The whole gateway. A store passed in is used as is (tests); otherwise one is opened and migrated."""
    redact_unparseable_requests()
    app = web.Application(
        middlewares=[request_context_middleware, error_middleware],
        # Bodies of API/UI requests are read whole and bounded; git, registry and package bodies stream and
        # are not subject to this limit (aiohttp only enforces it in read()/post()/json()).
        client_max_size=config.server.max_body_size,
    )
    app[CONFIG] = config
    app[CLOCK] = clock or SystemClock()
    app[HASHER] = PasswordHasher(config.security.password_memory_kib, config.security.password_iterations)
    app[BOX] = box or secretbox.load(Path(config.storage.encryption_key))
    app[SIGNING_KEY] = signing_key or load_signing_key(config)
    # A tenth of the token lifetime: a reused token still has at least 90 % of its life left.
    app[SIGNED_TOKENS] = SignedTokens(window=max(1, config.registry.token_ttl // 10))

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        if store is not None:
            app[STORE] = store
            yield
            return
        opened = await open_store(config)
        await opened.migrate()
        app[STORE] = opened
        try:
            yield
        finally:
            await opened.close()

    app.cleanup_ctx.append(store_ctx)
    app[GIT_SLOTS] = asyncio.Semaphore(config.git.max_processes)
    app[LOGIN_THROTTLE] = LoginThrottle()

    async def proxy_ctx(app: web.Application) -> AsyncIterator[None]:
        app[PROXY] = Forwarder.create()
        try:
            yield
        finally:
            await app[PROXY].close()

    app.cleanup_ctx.append(proxy_ctx)
    from gateway import routes  # the handlers import the AppKeys above

    routes.install(app)
    return app
