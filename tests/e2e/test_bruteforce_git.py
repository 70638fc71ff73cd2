"""Failed authentication ban end to end, with real git against two replicas (`gateway serve --workers 2`) on one
database: GitLab's default limit (30 failed `git ls-remote` in 3 minutes) bans the address on every worker of both
replicas, even the right token is then refused with the reason git prints, other addresses are unaffected, and the
ban ends after bruteforce.ban_time (a few seconds here).

The test runner is every client's peer (127.0.0.1); as a trusted proxy it names the client in X-Forwarded-For, sent
by git itself (http.extraHeader).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.bruteforce import MESSAGE
from tests.gitcli import Result, git, git_env, with_credentials
from tests.procs import wait_until
from tests.replicas import Cluster, Replica, deploy_token, new_project, two_replicas

# Seconds: long enough that every worker of both replicas is seen refusing (8 git runs per round, slow when the
# suite loads the machine) before the ban ends, short enough to wait out.
BAN_TIME = 10
WORKERS = 2
ATTACKER = "203.0.113.66"
BYSTANDER = "198.51.100.7"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # The ban's defaults (30 failures in 180 s) except its length; loopback is not exempt.
    with two_replicas(
        tmp_path_factory.mktemp(f"bruteforce-{request.param}"),
        database=request.param,
        workers=WORKERS,
        postgres=lambda: request.getfixturevalue("postgres"),
        sections={"server": {"trusted_proxies": ["127.0.0.1"]}, "bruteforce": {"ban_time": BAN_TIME}},
    ) as started:
        yield started


def test_thirty_failed_git_logins_ban_the_address_on_every_worker(cluster: Cluster, tmp_path: Path) -> None:
    env = git_env(tmp_path / "home")
    project = new_project(cluster.a.url, cluster.root_token, "guarded")
    token = deploy_token(cluster.a.url, cluster.root_token, project, scopes=("read_repository",))

    def ls_remote(replica: Replica, secret: str, client: str) -> Result:
        url = with_credentials(f"{replica.url}/{project.path}.git", token["username"], secret)
        return git(env, "-c", f"http.extraHeader=X-Forwarded-For: {client}", "ls-remote", url, timeout=60)

    def refused(result: Result) -> bool:
        return result.code != 0 and f"remote: {MESSAGE}" in result.err and "403" in result.err

    for replica in cluster.replicas:
        ls_remote(replica, token["token"], ATTACKER).check()

    # 30 wrong tokens, spread over both replicas and their workers (a fresh connection each): one shared count.
    for i in range(30):
        result = ls_remote(cluster.replicas[i % 2], "gldt-wrongwrongwrongwron", ATTACKER)
        assert result.code != 0 and "Authentication failed" in result.err, result.err

    # Now even the right token is refused, with GitLab's reason, by every worker of both replicas (a worker that
    # did not record the ban itself learns it at its next refresh, within a second).
    def refused_everywhere() -> bool:
        return all(
            refused(ls_remote(r, token["token"], ATTACKER)) for r in cluster.replicas for _ in range(2 * WORKERS)
        )

    assert wait_until(refused_everywhere, timeout=BAN_TIME / 2, interval=0.1)

    # Other clients are not affected.
    for replica in cluster.replicas:
        ls_remote(replica, token["token"], BYSTANDER).check()

    # The ban ends after ban_time, everywhere.
    assert wait_until(
        lambda: all(ls_remote(r, token["token"], ATTACKER).code == 0 for r in cluster.replicas for _ in range(WORKERS)),
        timeout=BAN_TIME + 10,
        interval=0.5,
    )
