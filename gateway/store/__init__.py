"""Persistence: the Store protocol (base.py) and its SQLite and PostgreSQL implementations."""

from __future__ import annotations

from gateway.config import Config, sqlite_path
from gateway.errors import ConfigError
from gateway.store.base import Store


async def open_store(config: Config, url: str | None = None) -> Store:
    """Open (not migrate) the store named by `url`, by default storage.database: sqlite:///FILE (relative to the
    config file's folder) or postgresql://…"""
    url = url or config.storage.database
    if url.startswith("sqlite:///"):
        from gateway.store.sqlite import SQLiteStore

        return await SQLiteStore(sqlite_path(config, url), busy_timeout=config.storage.busy_timeout).open()
    if url.startswith(("postgresql://", "postgres://")):
        from gateway.store.postgres import PostgresStore

        return await PostgresStore(url, pool_size=config.storage.pool_size).open()
    raise ConfigError(f"unsupported database URL scheme {url.split(':', 1)[0]!r} (sqlite:/// or postgresql://)")
