"""The contract suite runs against every Store implementation (PostgreSQL joins with the scale-out work)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store.base import Store
from gateway.store.sqlite import SQLiteStore


@pytest.fixture(params=["sqlite"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    store = await SQLiteStore(tmp_path / "contract.db").open()
    await store.migrate()
    yield store
    await store.close()
