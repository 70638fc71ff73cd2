"""Two replicas (`gateway serve` processes) on one database, with one and with two workers each: a revocation,
deletion, expiry or new membership made through replica A is seen by every worker of both replicas within 1 s.

The delay is measured in the worst case: every worker has just read (and cached) the old state when the change is
made. It is printed (pytest -s) and asserted ≤ 1 s (issue 7).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.replicas import (
    Cluster,
    Probe,
    api,
    basic,
    deploy_token,
    git_probe,
    jwt_probe,
    new_project,
    statuses,
    two_replicas,
    wait_all,
)

LIMIT = 1.0  # seconds (issue 7: "revocation visible on the other replica in ≤ 1 s")


@pytest.fixture(
    scope="module",
    params=[("sqlite", 1), ("sqlite", 2), ("postgresql", 1), ("postgresql", 2)],
    ids=lambda p: f"{p[0]}-{p[1]}-workers",
)
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    database, workers = request.param
    # Polling a revoked token sends many more than 30 rejected secrets from one address: no ban here
    # (tests/e2e/test_bruteforce_git.py is about it).
    with two_replicas(
        tmp_path_factory.mktemp(f"replicas-{database}-{workers}"),
        database=database,
        workers=workers,
        postgres=lambda: request.getfixturevalue("postgres"),
        sections={"bruteforce": {"max_failures": 1_000_000}},
    ) as started:
        yield started


# --- the changes ------------------------------------------------------------------------------------------------


@dataclass
class Change:
    probes: list[Probe]
    before: Callable[[int], bool]
    after: Callable[[int], bool]
    make: Callable[[], float]  # makes the change; returns the monotonic time it took effect in the database


def revoke(c: Cluster, name: str) -> Change:
    project = new_project(c.a.url, c.root_token, name)
    token = deploy_token(c.a.url, c.root_token, project)
    creds = basic(token["username"], token["token"])

    def make() -> float:
        api(c.a.url, c.root_token, "POST", f"/projects/{project.id}/deploy_tokens/{token['id']}/revoke")
        return time.monotonic()

    probes = [p(r, project.path, creds) for r in c.replicas for p in (git_probe, jwt_probe)]
    return Change(probes, lambda s: s == 200, lambda s: s == 401, make)


def delete(c: Cluster, name: str) -> Change:
    project = new_project(c.a.url, c.root_token, name)
    token = deploy_token(c.a.url, c.root_token, project)
    creds = basic(token["username"], token["token"])

    def make() -> float:
        api(c.a.url, c.root_token, "DELETE", f"/projects/{project.id}/deploy_tokens/{token['id']}")
        return time.monotonic()

    probes = [p(r, project.path, creds) for r in c.replicas for p in (git_probe, jwt_probe)]
    return Change(probes, lambda s: s == 200, lambda s: s == 401, make)


def expire(c: Cluster, name: str) -> Change:
    # Expiry is a moment, not a write: every replica compares it with its own clock on each request.
    project = new_project(c.a.url, c.root_token, name)
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    token = deploy_token(c.a.url, c.root_token, project, expires_at=expires.isoformat())
    creds = basic(token["username"], token["token"])

    def make() -> float:
        remaining = (expires - datetime.now(UTC)).total_seconds()
        time.sleep(max(0.0, remaining))
        return time.monotonic()

    probes = [p(r, project.path, creds) for r in c.replicas for p in (git_probe, jwt_probe)]
    return Change(probes, lambda s: s == 200, lambda s: s == 401, make)


def add_member(c: Cluster, name: str) -> Change:
    # A negative answer ("no membership") is cached too: it must age out as fast as a positive one.
    project = new_project(c.a.url, c.root_token, name)
    user = api(
        c.a.url,
        c.root_token,
        "POST",
        "/users",
        {"username": f"{name}-dev", "name": "Dev", "email": f"{name}@example.com", "password": "Pw-12345678"},
    )
    pat = api(
        c.a.url, c.root_token, "POST", f"/users/{user['id']}/personal_access_tokens", {"name": "t", "scopes": ["api"]}
    )
    creds = basic(user["username"], pat["token"])

    def make() -> float:
        api(
            c.a.url,
            c.root_token,
            "POST",
            f"/projects/{project.id}/members",
            {"user_id": user["id"], "access_level": 20},
        )
        return time.monotonic()

    probes = [git_probe(r, project.path, creds) for r in c.replicas]
    return Change(probes, lambda s: s != 200, lambda s: s == 200, make)


@pytest.mark.parametrize("scenario", [revoke, delete, expire, add_member], ids=lambda f: f.__name__)
def test_a_change_through_replica_a_is_seen_by_every_worker_within_a_second(
    cluster: Cluster, scenario: Callable[[Cluster, str], Change]
) -> None:
    name = scenario.__name__.replace("_", "-")
    change = scenario(cluster, name)
    repeat = 3 * max(r.workers for r in cluster.replicas)  # fresh connections, which SO_REUSEPORT spreads
    before = statuses(change.probes, repeat)  # every worker reads (and caches) the old state just now
    assert all(change.before(status) for _, status in before), before
    effective = change.make()
    seen, stale = wait_all(change.probes, change.after, repeat=repeat)
    delay = seen - effective
    print(
        f"\n{cluster.database}, {cluster.a.workers} worker(s) per replica, {name}: seen everywhere after {delay:.3f} s"
    )
    assert delay <= LIMIT, f"{name} took {delay:.3f} s to reach every worker (last stale answers: {stale})"
    # ... and it stays that way (no worker still holding the old state in a cache).
    for _ in range(5):
        again = statuses(change.probes, repeat)
        assert all(change.after(status) for _, status in again), again
    if cluster.a.workers > 1:
        # The requests were spread over the workers (SO_REUSEPORT): each worker of each replica answered some.
        paths = {p.url.split("://", 1)[1].split("/", 1)[1].split("?")[0] for p in change.probes}
        for replica in cluster.replicas:
            workers = {e.get("worker") for e in replica.access_log() if e["path"].lstrip("/") in paths}
            assert workers == set(range(replica.workers)), (replica.name, workers)


def test_replicas_share_the_database(cluster: Cluster, tmp_path: Path) -> None:
    """A token made through B works on A at once (misses are not cached), and both see the same listing."""
    project = new_project(cluster.b.url, cluster.root_token, "shared")
    token = deploy_token(cluster.b.url, cluster.root_token, project)
    creds = basic(token["username"], token["token"])
    seen = statuses([git_probe(cluster.a, project.path, creds), jwt_probe(cluster.a, project.path, creds)], 2)
    assert {status for _, status in seen} == {200}, seen
    listed = [
        [t["id"] for t in api(r.url, cluster.root_token, "GET", f"/projects/{project.id}/deploy_tokens")]
        for r in cluster.replicas
    ]
    assert listed[0] == listed[1] == [token["id"]]
