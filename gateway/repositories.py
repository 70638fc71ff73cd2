"""PLACEHOLDER (being written): bare repositories of the embedded git backend."""

from __future__ import annotations

from gateway.config import Config


async def create_bare(config: Config, full_path: str) -> None:
    """Create the bare repository of a new project (embedded backend only; a no-op for an upstream backend)."""
