"""`python -m bench`: every benchmark of the project, printed as ONE table (each row a figure, its same-run baseline,
the ratio and the target). Progress goes to stderr, the table to stdout.

    python -m bench                          everything, full sizes (about 24 minutes on 2 cores)
    python -m bench --quick                  smaller sizes and shorter load runs (about 2 minutes)
    python -m bench --only auth,replicas     a subset (`--list` names the suites)
    python -m bench --database sqlite        the gateway on one database only (default: sqlite and postgresql)

Needs wrk, git, nginx + fcgiwrap, docker-registry + skopeo, curl and PostgreSQL 15 (scripts/install-test-deps).
Exit status 1 when a suite failed to run or a target was missed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from bench.common import DATABASES, Context, Row, print_table


@dataclass(frozen=True)
class Suite:
    name: str
    about: str
    # The gateway's database matters: the suite runs once per --database. Otherwise it runs once.
    per_database: bool
    run: Callable[[Context], list[Row]]


def _auth(ctx: Context) -> list[Row]:
    from bench import auth

    return auth.run(ctx)


def _replicas(ctx: Context) -> list[Row]:
    from bench import replicas

    return replicas.run(ctx)


def _git(ctx: Context) -> list[Row]:
    from bench import git_clone

    return git_clone.run(ctx)


def _registry(ctx: Context) -> list[Row]:
    from bench import registry

    return registry.run(ctx)


def _packages(ctx: Context) -> list[Row]:
    from bench import packages

    return packages.run(ctx)


def _soak(ctx: Context) -> list[Row]:
    from bench import soak

    return soak.run(ctx)


def _metrics(ctx: Context) -> list[Row]:
    from bench import metrics_cost

    return metrics_cost.run(ctx)


def _audit(ctx: Context) -> list[Row]:
    from bench import audit_cost

    return audit_cost.run(ctx)


def _lists(ctx: Context) -> list[Row]:
    from bench import api_lists

    return api_lists.run(ctx)


def _store(ctx: Context) -> list[Row]:
    """bench/store_lookup.py (token lookup latency vs database size and group depth), on every selected database."""
    from bench import store_lookup

    backends = tuple({"sqlite": "sqlite", "postgresql": "postgres"}[d] for d in ctx.selected)
    return store_lookup.run(tokens=ctx.pick(1_000_000, 20_000), lookups=ctx.pick(3000, 500), backends=backends)


def _backup(ctx: Context) -> list[Row]:
    from bench import backup_files

    return backup_files.run(ctx)


def _copy(ctx: Context) -> list[Row]:
    from bench import store_copy

    return store_copy.run(ctx)


SUITES = [
    Suite("auth", "/jwt/auth rate and p50/p99, 1 worker and N workers, vs the machine's limit; peak RSS", True, _auth),
    Suite(
        "replicas", "revocation through replica A seen by every worker of both replicas (worst case)", True, _replicas
    ),
    Suite("git", "clone ratio (embedded, upstream nginx), ls-remote auth overhead, RSS during a push", True, _git),
    Suite("registry", "500 MB layer push/pull through /v2/ vs direct (skopeo), RSS growth", True, _registry),
    Suite("packages", "generic package download/upload vs direct and embedded store, RSS growth", True, _packages),
    Suite("lists", "API lists (a group's projects, GET /projects), 5,000 vs 50 projects in the instance", True, _lists),
    Suite("store", "token lookup with 1k vs 1M tokens, group depth 1 vs 20 (store, cache off)", False, _store),
    Suite("copy", "`gateway store copy` of 1M deploy tokens, SQLite to PostgreSQL and back", False, _copy),
    Suite("backup", "`gateway backup` of packages, repositories: first vs cp -a, next --link-dest", False, _backup),
    Suite("soak", "200 connections of mixed clients for 60 s: errors, p50/p99, RSS over time", True, _soak),
    Suite("metrics", "metric updates per /jwt/auth request, in memory and multiprocess (mmap)", False, _metrics),
    Suite("audit", "audit trail + last use per request (buffered), one batched flush", False, _audit),
]


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes and shorter runs")
    parser.add_argument("--only", action="append", metavar="SUITE[,SUITE]", help="run only these suites")
    parser.add_argument("--skip", action="append", metavar="SUITE[,SUITE]", help="leave these suites out")
    parser.add_argument(
        "--database", action="append", choices=DATABASES, help="database(s) of the gateway (default: both)"
    )
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="N of the multi-worker figures (2)")
    parser.add_argument("--list", action="store_true", help="list the suites and exit")
    args = parser.parse_args(argv)
    names = {s.name for s in SUITES}
    for option in ("only", "skip"):
        chosen = {n.strip() for v in getattr(args, option) or [] for n in v.split(",") if n.strip()}
        if chosen - names:
            parser.error(f"--{option}: unknown suite {sorted(chosen - names)[0]!r} (known: {', '.join(sorted(names))})")
        setattr(args, option, chosen)
    if args.workers < 2:
        parser.error("--workers: at least 2 (the 1-worker figures are always measured)")
    return args


def note(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.list:
        for suite in SUITES:
            print(f"{suite.name:10} {suite.about}")
        return 0
    suites = [s for s in SUITES if (not args.only or s.name in args.only) and s.name not in args.skip]
    databases = tuple(d for d in DATABASES if d in (args.database or DATABASES))
    ctx = Context(quick=args.quick, workers=args.workers, selected=databases)
    rows: list[Row] = []
    failed = 0
    started = time.monotonic()
    postgres = None
    try:
        if "postgresql" in databases and any(s.per_database for s in suites):
            from tests.pg import start_cluster

            note("starting a throwaway PostgreSQL 15 cluster")
            postgres = start_cluster()
            ctx.postgres = postgres
        for suite in suites:
            for database in databases if suite.per_database else ("",):
                label = f"{suite.name} ({database})" if database else suite.name
                note(f"running {label}{' --quick' if args.quick else ''} ...")
                t0 = time.monotonic()
                try:
                    found = suite.run(replace(ctx, database=database or ctx.database))
                except Exception as exc:  # one broken suite must not hide the others' figures
                    failed += 1
                    traceback.print_exc()
                    found = [Row("suite did not run", type(exc).__name__, str(exc)[:100], "", "runs", False)]
                rows += [replace(row, suite=label) for row in found]
                note(f"{label} done in {time.monotonic() - t0:.0f} s")
    finally:
        if postgres is not None:
            postgres.stop()

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), platform.machine())
    title = (
        f"Benchmarks{' (--quick)' if args.quick else ''}: {datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores "
        f"({cpu}), Python {platform.python_version()}, {time.monotonic() - started:.0f} s"
    )
    print_table(title, rows)
    judged = [r for r in rows if r.ok is not None]
    missed = [r for r in judged if not r.ok]
    print(
        f"\n{len(judged) - len(missed)} of {len(judged)} targets met"
        + (f"; {failed} suite(s) failed" if failed else "")
    )
    return 1 if missed or failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
