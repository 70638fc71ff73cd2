"""Persistence: the Store protocol (base.py) and its SQLite and PostgreSQL implementations."""

from __future__ import annotations

from gateway.config import Config, sqlite_path
from gateway.errors import ConfigError
from gateway.store.base import Store


async def open_store(config: Config, url: str | None = None, *, immutable: bool = False, connect: bool = True) -> Store:
    """Open (not migrate) the store named by `url`, by default storage.database: sqlite:///FILE (relative to the
    config file's folder) or postgresql://…; `immutable`: an SQLite file that nothing changes while it is open, read
    without writing anything (a backup's snapshot, perhaps on read-only storage); without `connect`, a PostgreSQL
    store connects when first used (each use fails as StoreUnavailable until the server answers)."""
    url = url or config.storage.database
    if url.startswith("sqlite:///"):
        from gateway.store.sqlite import SQLiteStore

        path = sqlite_path(config, url)
        return await SQLiteStore(path, busy_timeout=config.storage.busy_timeout, immutable=immutable).open()
    if url.startswith(("postgresql://", "postgres://")):
        from gateway.store.postgres import PostgresStore

        return await PostgresStore(url, pool_size=config.storage.pool_size).open(connect=connect)
    raise ConfigError(f"unsupported database URL scheme {url.split(':', 1)[0]!r} (sqlite:/// or postgresql://)")
