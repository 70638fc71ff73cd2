"""The bundled schema migrations: `sqlite/` and `postgres/`, numbered alike (NNNN_name.sql), applied in order."""

from __future__ import annotations

from importlib import resources

from gateway.errors import StoreError


class SchemaTooNew(StoreError):
    """The database was migrated by a newer release than this one."""


def bundled(dialect: str) -> list[tuple[int, str, str]]:
    """(version, file name, sql) of every migration for `dialect` ("sqlite" or "postgres"), in order."""
    folder = resources.files(__name__).joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def refuse_newer(current: int, known: list[tuple[int, str, str]]) -> None:
    """A database migrated by a newer release is not served by this one: its code may not read or write the newer
    schema correctly, and nothing would say so until a request failed (a replica left on the old release, restarted
    during a rolling upgrade; a backup of the old release's binary)."""
    latest = known[-1][0] if known else 0
    if current > latest:
        raise SchemaTooNew(
            f"the database is at schema version {current}, newer than this gateway's {latest}: a newer release"
            " migrated it; run that release or a later one"
        )
