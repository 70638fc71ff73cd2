"""create_app(config) → web.Application: every AppKey in one place, and the cleanup contexts that own resources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from gateway import secretbox
from gateway.clock import Clock, SystemClock
from gateway.config import Config
from gateway.middleware import error_middleware, request_context_middleware
from gateway.secretbox import SecretBox
from gateway.store import open_store
from gateway.store.base import Store
from gateway.users import PasswordHasher

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)  # type: ignore[type-abstract]
CLOCK = web.AppKey("clock", Clock)  # type: ignore[type-abstract]
HASHER = web.AppKey("hasher", PasswordHasher)
BOX = web.AppKey("secretbox", SecretBox)


def create_app(
    config: Config,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    box: SecretBox | None = None,
) -> web.Application:
    """The whole gateway. A store passed in is used as is (tests); otherwise one is opened and migrated."""
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
    from gateway import routes  # the handlers import the AppKeys above

    routes.install(app)
    return app
