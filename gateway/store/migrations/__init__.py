"""The bundled schema migrations: `sqlite/` and `postgres/`, numbered alike (NNNN_name.sql), applied in order."""

from __future__ import annotations

from importlib import resources


def bundled(dialect: str) -> list[tuple[int, str, str]]:
    """(version, file name, sql) of every migration for `dialect` ("sqlite" or "postgres"), in order."""
    folder = resources.files(__name__).joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)
