"""create_app(config) → web.Application: every AppKey in one place, and the cleanup contexts that own resources."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path

from aiohttp import web

from gateway.audit import AuditLog
from gateway.bruteforce import Guard
from gateway.clients import CLIENTS, Clients
from gateway.clock import Clock, SystemClock
from gateway.config import Config
from gateway.encryption_keys import EncryptionKeys, Keyring
from gateway.errors import StoreUnavailable
from gateway.last_use import LastUse
from gateway.login_throttle import LoginThrottle
from gateway.middleware import (
    IN_FLIGHT,
    error_middleware,
    redact_unparseable_requests,
    request_context_middleware,
    stamp_request_id,
)
from gateway.password_attempts import PasswordAttempts
from gateway.proxy import Forwarder
from gateway.registry_signing import RegistrySigning, load_key
from gateway.secretbox import SecretBox
from gateway.signing_keys import SigningKey
from gateway.store import open_store
from gateway.store.base import Store
from gateway.users import PasswordHasher

log = logging.getLogger("gateway")

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
CLOCK = web.AppKey("clock", Clock)
HASHER = web.AppKey("hasher", PasswordHasher)
# The encryption key, with the staged and retiring ones during a rotation (encryption_keys.py); reloaded on SIGHUP.
ENCRYPTION = web.AppKey("encryption", EncryptionKeys)
# What the MAC keys of the registry's OAuth2 refresh tokens (registry_auth.refresh_token) are derived for.
REFRESH_PURPOSE = b"deploy-token-gateway registry refresh tokens v1"
# The registry signing key, its signing processes and reused tokens (registry_signing.py); no key until `gateway
# init` made one: /jwt/auth then answers 503 instead of the whole gateway failing. Reloaded on SIGHUP.
REGISTRY_SIGNING = web.AppKey("registry_signing", RegistrySigning)
# The one streaming forwarder to backends (git upstream, registry, packages): one client session per process.
PROXY = web.AppKey("proxy", Forwarder)
# Bounds concurrent `git http-backend` children of the embedded git backend (git.max_processes).
GIT_SLOTS = web.AppKey("git_slots", asyncio.Semaphore)
# Failed password sign-ins per username, web and Basic (login_throttle.py); in memory, per process.
LOGIN_THROTTLE = web.AppKey("login_throttle", LoginThrottle)
# Password checks in flight per client address and per username (password_attempts.py).
PASSWORD_ATTEMPTS = web.AppKey("password_attempts", PasswordAttempts)
# Failed authentications per client address and bans, shared through the store (bruteforce.py).
BRUTE_FORCE = web.AppKey("brute_force", Guard)
# The audit trail and tokens' last use: buffered in memory, written in batches by a background task (audit.py).
AUDIT = web.AppKey("audit", AuditLog)


def create_app(
    config: Config,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    box: SecretBox | None = None,
    keyring: Keyring | None = None,
    signing_key: SigningKey | None = None,
    migrated: bool = False,
) -> web.Application:
    """The whole gateway. A store passed in is used as is (tests); otherwise one is opened and migrated, or only
    opened when the database is `migrated` already (a worker's supervisor did it)."""
    redact_unparseable_requests()
    app = web.Application(
        middlewares=[request_context_middleware, error_middleware],
        # Bodies of API/UI requests are read whole and bounded; git, registry and package bodies stream and
        # are not subject to this limit (aiohttp only enforces it in read()/post()/json()).
        client_max_size=config.server.max_body_size,
    )
    app[CONFIG] = config
    app[IN_FLIGHT] = set()
    app.on_response_prepare.append(stamp_request_id)
    app[CLOCK] = clock or SystemClock()
    app[HASHER] = PasswordHasher(config.security.password_memory_kib, config.security.password_iterations)
    keyring = Keyring(box) if box is not None else keyring
    app[ENCRYPTION] = EncryptionKeys(Path(config.storage.encryption_key), keyring)
    app[REGISTRY_SIGNING] = RegistrySigning(config, signing_key or load_key(config))
    app.on_cleanup.append(lambda app: app[REGISTRY_SIGNING].close())

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        if store is not None:
            app[STORE] = store
            yield
            return
        if migrated:
            # A worker: its supervisor migrated before forking. One (re)started while the database is down serves
            # the 503s its siblings serve, and connects when the database is back, rather than exit until the
            # supervisor gives up on the whole server (found by a README walkthrough).
            try:
                opened = await open_store(config)
            except StoreUnavailable as exc:
                log.warning("%s; answering 503 until it is back", exc)
                opened = await open_store(config, connect=False)
            app[STORE] = opened
            try:
                yield
            finally:
                await opened.close()
            return
        opened = await open_store(config)
        try:
            # Closed on a failed migration too: its connection thread would keep the process alive after the error.
            await opened.migrate()
            app[STORE] = opened
            yield
        finally:
            await opened.close()

    app.cleanup_ctx.append(store_ctx)
    app[GIT_SLOTS] = asyncio.Semaphore(config.git.max_processes)
    app[LOGIN_THROTTLE] = LoginThrottle()
    app[PASSWORD_ATTEMPTS] = PasswordAttempts()
    app[CLIENTS] = Clients(config.server.trusted_proxies)
    app[BRUTE_FORCE] = Guard(config.bruteforce, app[CLIENTS], app[CLOCK])

    async def brute_force_ctx(app: web.Application) -> AsyncIterator[None]:
        # Bans made before this process started (another worker, a replica, before a restart) hold at once.
        guard = app[BRUTE_FORCE]
        guard.store = app[STORE]
        try:
            await guard.refresh()
        except StoreUnavailable as exc:
            if not migrated:
                raise  # a server starting: the error is printed and it ends (a missing table is one too)
            # A worker started during an outage: no sign-in succeeds until it ends; keep_fresh loads them then.
            log.warning("failed authentication bans not loaded yet: %s", exc)
        task = asyncio.create_task(guard.keep_fresh()) if guard.enabled else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task

    app.cleanup_ctx.append(brute_force_ctx)

    # Inside the request context, outside error rendering: it records each request with its final status.
    app[AUDIT] = AuditLog(config.audit, app[CLOCK], app[CLIENTS], LastUse())
    app.middlewares.insert(app.middlewares.index(error_middleware), app[AUDIT].middleware)

    async def audit_ctx(app: web.Application) -> AsyncIterator[None]:
        audit_log = app[AUDIT]
        audit_log.store = app[STORE]
        task = asyncio.create_task(audit_log.run())
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            await audit_log.flush()  # what the last second buffered, before the store closes

    app.cleanup_ctx.append(audit_ctx)

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
