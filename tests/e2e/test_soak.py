"""A short soak (bench/soak.py) on every database: two workers under mixed concurrent clients with good credentials
(/jwt/auth, the API, git info/refs, a package download, real `git ls-remote`) from a cold start; not one error.

The full soak found a cache race (git and /jwt/auth reading the same paths at once) that no narrower test did.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.common import Context
from bench.soak import Settings, run_soak


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_mixed_clients_under_load_get_only_correct_answers(
    database: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    postgres = request.getfixturevalue("postgres") if database == "postgresql" else None
    ctx = Context(quick=True, database=database, workers=2, postgres=postgres)
    outcome = run_soak(ctx, Settings(duration=8.0, connections=48, warmup=2.0, git_processes=1))
    assert outcome.errors() == {}
    # Every kind of client got answers: an error-free run of clients that never reached the gateway proves nothing.
    assert all(stats.requests >= 5 for stats in outcome.stats.values()), {
        kind: stats.requests for kind, stats in outcome.stats.items()
    }
