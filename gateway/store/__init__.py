"""Persistence: the Store protocol (base.py) and its SQLite and PostgreSQL implementations."""

from __future__ import annotations

import shutil
from pathlib import Path

from gateway.config import Config, sqlite_path
from gateway.errors import ConfigError
from gateway.store.base import Store


async def open_store(config: Config, url: str | None = None, *, immutable: bool = False) -> Store:
    """Open (not migrate) the store named by `url`, by default storage.database: sqlite:///FILE (relative to the
    config file's folder) or postgresql://…; `immutable`: an SQLite file that nothing changes while it is open, read
    without writing anything (a backup's snapshot, perhaps on read-only storage)."""
    url = url or config.storage.database
    if url.startswith("sqlite:///"):
        from gateway.store.sqlite import SQLiteStore

        path = sqlite_path(config, url)
        return await SQLiteStore(path, busy_timeout=config.storage.busy_timeout, immutable=immutable).open()
    if url.startswith(("postgresql://", "postgres://")):
        from gateway.store.postgres import PostgresStore

        return await PostgresStore(url, pool_size=config.storage.pool_size).open()
    raise ConfigError(f"unsupported database URL scheme {url.split(':', 1)[0]!r} (sqlite:/// or postgresql://)")


async def open_upgraded(config: Config, url: str, scratch: Path, *, immutable: bool = False) -> tuple[Store, int]:
    """Open the store at `url` to copy from, and the schema version it was found at. An SQLite file of an earlier
    release (an old backup, an old installation's database) is at an earlier schema, which a copy refuses: a copy of
    the file in `scratch` is migrated to this release's, as `gateway migrate` would the installation it came from,
    and the file itself is left as it was. Any other database is opened as it is."""
    from gateway.store.migrations import bundled

    source = await open_store(config, url, immutable=immutable)
    found = await source.schema_version()
    if not url.startswith("sqlite:///") or not 0 < found < bundled("sqlite")[-1][0]:
        return source, found  # this release's schema; or none, or a newer one, which the copy explains
    await source.close()
    upgraded = scratch / "upgraded.db"
    shutil.copy2(sqlite_path(config, url), upgraded)
    source = await open_store(config, f"sqlite:///{upgraded.resolve()}")
    try:
        await source.migrate()
    except BaseException:
        await source.close()
        raise
    return source, found
