"""Benchmark: hot-path store lookups must not slow down as the database grows, on SQLite and PostgreSQL.

    .venv/bin/python bench/store_lookup.py [--tokens 1000000] [--lookups 3000] [--backends sqlite,postgres]
                                           [--postgres DSN]

1. find_deploy_token (by SHA-256 digest) with 1,000 deploy tokens in the database, then with --tokens (1,000,000).
2. get_project_by_path + access_levels (what every request's authorization does) for a project in a group at
   depth 1, then in a group at depth 20.
Latency is the median of --lookups awaited one after the other (random tokens), with the store's hot-read cache
off: this measures the database, the cost a cache miss pays. Without --postgres a throwaway PostgreSQL 15
cluster is started (tests/pg.py). Target (issue 7): ratio <= 1.2.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Row, print_table  # noqa: E402
from gateway.store.base import Store  # noqa: E402
from gateway.store.cache import TTLCache  # noqa: E402
from gateway.store.postgres import PostgresStore  # noqa: E402
from gateway.store.seed import seed_deploy_tokens  # noqa: E402
from gateway.store.sqlite import SQLiteStore  # noqa: E402

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SMALL = 1_000
TARGET = 1.2
DEPTH = 20


def digest(i: int) -> bytes:
    return hashlib.sha256(b"bench-token-%d" % i).digest()


async def median_latency(call: Callable[[int], Awaitable[Any]], n: int, universe: int) -> float:
    """Median seconds of `call(i)` for random i < universe, awaited one at a time, after a warm-up."""
    rng = random.Random(7)
    for _ in range(min(200, n)):
        await call(rng.randrange(universe))
    samples = []
    for _ in range(n):
        i = rng.randrange(universe)
        started = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def measure(store: Store, *, tokens: int, lookups: int) -> dict[str, float]:
    """Seconds per lookup: tokens at SMALL and at `tokens`, project lookup at depth 1 and at DEPTH."""
    user = await store.create_user(
        username="bench", name="Bench", email="b@x", password_hash=None, is_admin=False, now=NOW
    )
    root = await store.create_group(name="t", path="t", parent_id=None, visibility="private", description="", now=NOW)

    async def find(i: int) -> None:
        found = await store.find_deploy_token(digest(i))
        assert found is not None

    out: dict[str, float] = {}
    seeded = await seed_deploy_tokens(store, group_id=root.id, digests=map(digest, range(SMALL)), now=NOW)
    out["tokens_small"] = await median_latency(find, lookups, seeded)
    started = time.perf_counter()
    seeded += await seed_deploy_tokens(store, group_id=root.id, digests=map(digest, range(SMALL, tokens)), now=NOW)
    out["seed_seconds"] = time.perf_counter() - started
    out["tokens_large"] = await median_latency(find, lookups, seeded)

    # Project lookups: a project under a depth-1 group and one under a depth-20 chain; the user is a member of
    # each root group (the membership check then walks every ancestor id).
    paths = {}
    for depth in (1, DEPTH):
        parent = await store.create_group(
            name=f"d{depth}", path=f"d{depth}", parent_id=None, visibility="private", description="", now=NOW
        )
        await store.add_member(source_kind="namespace", source_id=parent.id, user_id=user.id, access_level=30, now=NOW)
        for level in range(2, depth + 1):
            parent = await store.create_group(
                name=f"g{level}", path=f"g{level}", parent_id=parent.id, visibility="private", description="", now=NOW
            )
        project = await store.create_project(
            namespace_id=parent.id, name="p", path="p", visibility="private", description="", creator_id=None, now=NOW
        )
        paths[depth] = project.full_path

    def authorize(depth: int) -> Callable[[int], Awaitable[None]]:
        async def call(_: int) -> None:
            project = await store.get_project_by_path(paths[depth])
            assert project is not None
            levels = await store.access_levels(
                user.id, project_id=project.id, namespace_ids=project.namespace.traversal_ids
            )
            assert levels == [30]

        return call

    out["depth_1"] = await median_latency(authorize(1), lookups, 1)
    out[f"depth_{DEPTH}"] = await median_latency(authorize(DEPTH), lookups, 1)
    return out


async def open_backend(backend: str, work: Path, dsn: str | None) -> Store:
    no_cache: TTLCache[Any] = TTLCache(ttl=0)  # every lookup reaches the database
    store: Store
    if backend == "sqlite":
        store = await SQLiteStore(work / "bench.db", cache=no_cache).open()
    else:
        assert dsn is not None
        store = await PostgresStore(dsn, cache=no_cache).open()
    await store.migrate()
    return store


def rows_for(backend: str, r: dict[str, float], tokens: int) -> list[Row]:
    def us(seconds: float) -> str:
        return f"{seconds * 1e6:.0f} µs"

    token_ratio = r["tokens_large"] / r["tokens_small"]
    depth_ratio = r[f"depth_{DEPTH}"] / r["depth_1"]
    return [
        Row(
            f"{backend}: find_deploy_token, {tokens:,} tokens (vs {SMALL:,})",
            us(r["tokens_large"]),
            us(r["tokens_small"]),
            f"{token_ratio:.2f}",
            f"<= {TARGET}",
            token_ratio <= TARGET,
        ),
        Row(
            f"{backend}: project by path + access_levels, depth {DEPTH} (vs 1)",
            us(r[f"depth_{DEPTH}"]),
            us(r["depth_1"]),
            f"{depth_ratio:.2f}",
            f"<= {TARGET}",
            depth_ratio <= TARGET,
        ),
        Row(f"{backend}: seeding {tokens - SMALL:,} tokens (setup)", f"{r['seed_seconds']:.1f} s", "", "", ""),
    ]


async def run_backend(backend: str, *, tokens: int, lookups: int, dsn: str | None) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        store = await open_backend(backend, Path(tmp), dsn)
        try:
            return rows_for(backend, await measure(store, tokens=tokens, lookups=lookups), tokens)
        finally:
            await store.close()


def run(
    *,
    tokens: int = 1_000_000,
    lookups: int = 3000,
    backends: tuple[str, ...] = ("sqlite", "postgres"),
    dsn: str | None = None,
) -> list[Row]:
    """Every row of this benchmark (for `print_table` or a suite that gathers tables)."""
    rows: list[Row] = []
    for backend in backends:
        if backend == "postgres" and dsn is None:
            from tests.pg import start_cluster

            cluster = start_cluster()
            try:
                name = f"bench_{uuid.uuid4().hex[:8]}"
                target = asyncio.run(cluster.create_database(name))
                rows += asyncio.run(run_backend(backend, tokens=tokens, lookups=lookups, dsn=target))
            finally:
                cluster.stop()
        else:
            rows += asyncio.run(run_backend(backend, tokens=tokens, lookups=lookups, dsn=dsn))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=3000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--postgres", metavar="DSN", help="an empty database to use instead of a throwaway cluster")
    args = parser.parse_args()
    if args.tokens <= SMALL:
        parser.error(f"--tokens must be more than {SMALL}")
    backends = tuple(b for b in args.backends.split(",") if b)
    if not set(backends) <= {"sqlite", "postgres"}:
        parser.error("--backends: sqlite and/or postgres")
    rows = run(tokens=args.tokens, lookups=args.lookups, backends=backends, dsn=args.postgres)
    print_table("Store lookups: cost must not grow with the number of tokens or the group depth", rows)


if __name__ == "__main__":
    main()
