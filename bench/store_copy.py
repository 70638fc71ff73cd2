"""Benchmark: `gateway store copy` (gateway/store/copy.py) of a database holding 1,000,000 deploy tokens, SQLite to
PostgreSQL and back: how long an operator's move off SQLite takes, against reading the same rows alone (the copy's
floor: one snapshot of the source, the same batches and conversions, nothing written). Reported, not judged.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench.common import Context, Row, status_kib, tempdir
from bench.store_lookup import digest
from gateway.store.copy import TABLES, copy_store
from gateway.store.postgres import PostgresStore
from gateway.store.seed import seed_deploy_tokens
from gateway.store.sqlite import SQLiteStore
from tests.pg import Cluster, start_cluster

NOW = datetime(2026, 1, 1, tzinfo=UTC)
Store = SQLiteStore | PostgresStore


async def read_all(store: Store) -> float:
    """Seconds to read every row of every table as the copy reads them."""
    started = time.perf_counter()
    async with store.copy_transaction(write=False) as side:
        for table in TABLES:
            async for _ in side.batches(table):
                pass
    return time.perf_counter() - started


def reset_peak_rss() -> float:
    """Start a new peak (Linux: writing 5 to clear_refs resets VmHWM): the suites that ran before in this process
    must not count. Returns the resident size now, in MB."""
    Path("/proc/self/clear_refs").write_text("5")
    return status_kib(os.getpid(), "VmRSS") / 1024


async def measure(tmp: Path, cluster: Cluster | None, tokens: int) -> list[Row]:
    kinds = ["sqlite", "postgres" if cluster is not None else "sqlite"]

    async def fresh(kind: str) -> Store:
        if kind == "postgres":
            assert cluster is not None
            return await PostgresStore(await cluster.create_database(f"copy_{uuid.uuid4().hex[:8]}")).open()
        return await SQLiteStore(tmp / f"{uuid.uuid4().hex[:8]}.db").open()

    stores = [await fresh(kinds[0])]
    try:
        await stores[0].migrate()
        group = await stores[0].create_group(
            name="t", path="t", parent_id=None, visibility="private", description="", now=NOW
        )
        await seed_deploy_tokens(stores[0], group_id=group.id, digests=map(digest, range(tokens)), now=NOW)
        rows: list[Row] = []
        before = reset_peak_rss()
        for source_kind, target_kind in ((kinds[0], kinds[1]), (kinds[1], kinds[0])):
            source = stores[-1]
            floor = await read_all(source)
            target = await fresh(target_kind)
            stores.append(target)
            started = time.perf_counter()
            copied = await copy_store(source, target)
            seconds = time.perf_counter() - started
            total = sum(copied.rows.values())
            names = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
            rows.append(
                Row(
                    f"store copy {names[source_kind]} -> {names[target_kind]}, {total:,} rows ({tokens:,} tokens)",
                    f"{seconds:.1f} s ({total / seconds:,.0f} rows/s)",
                    f"reading the source alone {floor:.1f} s",
                    f"{seconds / floor:.1f}",
                    "(reported)",
                )
            )
        rows.append(
            Row(
                "store copy: peak RSS growth of the copying process",
                f"{status_kib(os.getpid(), 'VmHWM') / 1024 - before:.1f} MB",
                f"after seeding {before:.0f} MB",
                "",
                "(reported)",
            )
        )
        return rows
    finally:
        for store in stores:
            await store.close()


def run(ctx: Context) -> list[Row]:
    tokens = ctx.pick(1_000_000, 20_000)
    tmp = tempdir("bench-copy-")
    cluster = start_cluster() if "postgresql" in ctx.selected else None
    try:
        return asyncio.run(measure(tmp, cluster, tokens))
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    from bench.__main__ import main

    raise SystemExit(main(["--only", "copy"]))
