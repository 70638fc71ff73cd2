"""Failed authentication ban (gateway/bruteforce.py) on every place that checks a secret, in process: the count per
client address, the ban and its answer per family, resets by success, what does not count, X-Forwarded-For only from
trusted proxies, the allowlist, the ban shared by two apps on one database, bounded memory; password guesses in
bursts and between resets (password_attempts.py, login_throttle.py)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from gateway.app import AUDIT, BRUTE_FORCE, create_app
from gateway.audit import BANNED_REASON, LOCKED_REASON
from gateway.bruteforce import MESSAGE, Guard
from gateway.clients import Clients
from gateway.clock import FixedClock
from gateway.config import BruteForceConfig
from gateway.login_throttle import MESSAGE as LOCKED
from gateway.login_throttle import LoginThrottle
from gateway.secretbox import SecretBox
from gateway.signing_keys import SigningKey, generate_key, self_signed_certificate
from gateway.store.base import AuditQuery
from gateway.store.sqlite import SQLiteStore
from tests.conftest import make_config
from tests.webui import csrf_of
from tests.world import World

SERVICE = "container_registry"
LIMIT = 3
BAN = 600  # seconds
ATTACKER = "203.0.113.66"
BYSTANDER = "198.51.100.7"


def basic(username: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()}


@pytest.fixture(scope="module")
def signing_key() -> SigningKey:
    key = generate_key("ES256")
    return SigningKey(key, self_signed_certificate(key, "test", datetime.now(UTC)))


@dataclass
class Scene:
    world: World
    project_id: int
    token_username: str
    token: str
    pat: str
    username: str
    password: str
    refresh: str = ""


MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_client(
    aiohttp_client: Any,
    aiohttp_server: Any,
    tmp_path: Path,
    store: SQLiteStore,
    clock: FixedClock,
    box: SecretBox,
    signing_key: SigningKey,
) -> MakeClient:
    """A gateway whose ban is LIMIT failures → BAN seconds; the test client (127.0.0.1) is a trusted proxy unless
    told otherwise, so X-Forwarded-For names the client."""

    async def make(
        *, store_: SQLiteStore | None = None, trusted: tuple[str, ...] = ("127.0.0.1",), **ban: Any
    ) -> TestClient:
        config = make_config(
            tmp_path,
            server={"trusted_proxies": list(trusted)},
            bruteforce={"max_failures": LIMIT, "ban_time": BAN, **ban},
        )
        app = create_app(config, store=store_ or store, clock=clock, box=box, signing_key=signing_key)
        return await aiohttp_client(await aiohttp_server(app, auto_decompress=False))  # type: ignore[no-any-return]

    return make


@pytest.fixture
async def scene(world: World) -> Scene:
    group = await world.group("g")
    project = await world.project("app", group)
    created = await world.deploy_token(project, ("read_repository", "read_registry", "read_package_registry"))
    alice = await world.user("alice")
    return Scene(world, project.id, created.token.username, created.secret, alice.pat, "alice", alice.password)


# --- one request per family, with good or bad credentials --------------------------------------------------------


async def git(client: TestClient, s: Scene, good: bool, ip: str) -> ClientResponse:
    headers = basic(s.token_username, s.token if good else "gldt-wrongwrongwrongwron")
    return await client.get(
        "/g/app.git/info/refs", params={"service": "git-upload-pack"}, headers={**headers, "X-Forwarded-For": ip}
    )


async def jwt_get(client: TestClient, s: Scene, good: bool, ip: str) -> ClientResponse:
    headers = basic(s.token_username, s.token if good else "wrong")
    params = {"service": SERVICE, "scope": "repository:g/app:pull"}
    return await client.get("/jwt/auth", params=params, headers={**headers, "X-Forwarded-For": ip})


async def jwt_password(client: TestClient, s: Scene, good: bool, ip: str) -> ClientResponse:
    form = {
        "grant_type": "password",
        "service": SERVICE,
        "client_id": "docker",
        "access_type": "offline",
        "username": s.token_username,
        "password": s.token if good else "wrong",
        "scope": "repository:g/app:pull",
    }
    return await client.post("/jwt/auth", data=form, headers={"X-Forwarded-For": ip})


async def jwt_refresh(client: TestClient, s: Scene, good: bool, ip: str) -> ClientResponse:
    if not s.refresh:  # obtained once, from an address that never fails
        response = await jwt_password(client, s, True, "192.0.2.200")
        s.refresh = (await response.json())["refresh_token"]
    form = {"grant_type": "refresh_token", "service": SERVICE, "refresh_token": s.refresh if good else "not.a.jwt"}
    return await client.post("/jwt/auth", data=form, headers={"X-Forwarded-For": ip})


async def packages(client: TestClient, s: Scene, good: bool, ip: str) -> ClientResponse:
    path = f"/api/v4/projects/{s.project_id}/packages/generic/tool/1.0.0/tool.tar.gz"
    token = s.token if good else "gldt-wrongwrongwrongwron"
    return await client.get(path, headers={"Deploy-Token": token, "X-Forwarded-For": ip})


async def api(client: TestClient, s: Scene, good: bool, ip: str) -> ClientResponse:
    return await client.get(
        "/api/v4/user", headers={"PRIVATE-TOKEN": s.pat if good else "glpat-wrong", "X-Forwarded-For": ip}
    )


async def web(client: TestClient, s: Scene, good: bool, ip: str) -> ClientResponse:
    client.session.cookie_jar.clear()
    page = await client.get("/-/login")
    form = {
        "authenticity_token": csrf_of(await page.text()),
        "username": s.username,
        "password": s.password if good else "wrong",
    }
    return await client.post("/-/login", data=form, headers={"X-Forwarded-For": ip}, allow_redirects=False)


Send = Callable[[TestClient, Scene, bool, str], Awaitable[ClientResponse]]


@dataclass(frozen=True)
class Family:
    send: Send
    ok: int  # the answer to good credentials
    bad: int  # the answer to bad ones
    banned: int  # the answer to anything from a banned address


FAMILIES = {
    "git": Family(git, 200, 401, 403),
    "jwt GET": Family(jwt_get, 200, 401, 403),
    "jwt POST password": Family(jwt_password, 200, 401, 403),
    "jwt POST refresh_token": Family(jwt_refresh, 200, 401, 403),
    "packages": Family(packages, 404, 401, 429),  # authenticated: the package does not exist
    "api": Family(api, 200, 401, 429),
    "web sign-in": Family(web, 303, 422, 429),
}


async def assert_banned(response: ClientResponse, family: Family, *, retry_after: int = BAN) -> None:
    text = await response.text()
    assert response.status == family.banned, text
    assert response.headers["Retry-After"] == str(retry_after)
    if family.send is web:
        assert "Too many failed sign-in attempts" in text
    else:
        assert MESSAGE in text, text
    if family.send is git:
        # git prints a text/plain body as "remote: ..." (git.md): the client sees why.
        assert text == f"{MESSAGE}. Try again in {-(-retry_after // 60)} minutes.\n"  # rounded up
        assert "WWW-Authenticate" not in response.headers  # no challenge: git must not ask for (or drop) credentials
    if family.send in (jwt_get, jwt_password, jwt_refresh):
        assert (await response.json())["errors"][0]["code"] == "DENIED"


@pytest.mark.parametrize("name", FAMILIES)
async def test_ban_per_family(make_client: MakeClient, scene: Scene, clock: FixedClock, name: str) -> None:
    family = FAMILIES[name]
    client = await make_client()
    # LIMIT - 1 failures, then a success: the count starts again (GitLab: "reset by requests that authenticate
    # successfully"), so LIMIT - 1 more failures still do not ban.
    for _ in range(2):
        for _ in range(LIMIT - 1):
            assert (await family.send(client, scene, False, ATTACKER)).status == family.bad
        assert (await family.send(client, scene, True, ATTACKER)).status == family.ok
    for _ in range(LIMIT):
        assert (await family.send(client, scene, False, ATTACKER)).status == family.bad
    # Banned: even the right secret is refused, before it is looked at.
    await assert_banned(await family.send(client, scene, True, ATTACKER), family)
    clock.advance(timedelta(seconds=BAN - 61))
    await assert_banned(await family.send(client, scene, True, ATTACKER), family, retry_after=61)
    # Other clients are not affected.
    assert (await family.send(client, scene, True, BYSTANDER)).status == family.ok
    # The ban ends after ban_time, and the count starts from zero.
    clock.advance(timedelta(seconds=61))
    assert (await family.send(client, scene, True, ATTACKER)).status == family.ok
    assert (await family.send(client, scene, False, ATTACKER)).status == family.bad


async def test_every_family_shares_one_count_and_one_ban(make_client: MakeClient, scene: Scene) -> None:
    client = await make_client()
    for name in ("git", "api", "web sign-in"):
        family = FAMILIES[name]
        assert (await family.send(client, scene, False, ATTACKER)).status == family.bad
    for family in FAMILIES.values():
        await assert_banned(await family.send(client, scene, True, ATTACKER), family)
        await assert_banned(await family.send(client, scene, True, ATTACKER), family)
    # Each refusal is in the audit trail: one event per route with its count, no credentials recorded.
    audit = client.server.app[AUDIT]
    await audit.flush()
    page = await scene.world.store.list_audit_events(AuditQuery(), offset=0, limit=1000)
    refused = [e for e in page.items if e.details.get("reason") == BANNED_REASON]
    assert {e.event_name for e in refused} == {"access_denied"}
    assert {e.details["ip_address"] for e in refused} == {ATTACKER}
    assert {e.details["principal"] for e in refused} == {"unknown"}
    assert sum(e.details["count"] for e in refused) == 2 * len(FAMILIES)


async def test_anonymous_requests_are_not_failures(make_client: MakeClient, scene: Scene) -> None:
    client = await make_client()
    for _ in range(LIMIT * 3):
        # Every git command starts with an anonymous probe; /jwt/auth without credentials likewise.
        probe = await client.get("/g/app.git/info/refs?service=git-upload-pack", headers={"X-Forwarded-For": ATTACKER})
        assert probe.status == 401 and "WWW-Authenticate" in probe.headers
        # (an anonymous pull of a private project is granted nothing, but is no failed authentication either)
        params = {"service": SERVICE, "scope": "repository:g/app:pull"}
        assert (await client.get("/jwt/auth", params=params, headers={"X-Forwarded-For": ATTACKER})).status == 200
    assert (await git(client, scene, True, ATTACKER)).status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Basic %%%"},  # not base64
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"user:").decode()},  # an empty secret
    ],
)
async def test_malformed_credentials_are_failures(
    make_client: MakeClient, scene: Scene, headers: dict[str, str]
) -> None:
    client = await make_client()
    for _ in range(LIMIT):
        response = await client.get(
            "/g/app.git/info/refs?service=git-upload-pack", headers={**headers, "X-Forwarded-For": ATTACKER}
        )
        assert response.status == 401
    await assert_banned(await git(client, scene, True, ATTACKER), FAMILIES["git"])


async def test_forwarded_for_is_believed_only_from_trusted_proxies(make_client: MakeClient, scene: Scene) -> None:
    client = await make_client(trusted=())
    # A client that is no trusted proxy cannot dodge the count by making up a new X-Forwarded-For each time.
    for i in range(LIMIT):
        assert (await git(client, scene, False, f"192.0.2.{i}")).status == 401
    await assert_banned(await git(client, scene, True, "192.0.2.99"), FAMILIES["git"])


async def test_trusted_proxies_may_be_ranges(make_client: MakeClient, scene: Scene) -> None:
    client = await make_client(trusted=("127.0.0.0/8",))
    for _ in range(LIMIT):
        assert (await git(client, scene, False, ATTACKER)).status == 401
    await assert_banned(await git(client, scene, True, ATTACKER), FAMILIES["git"])
    assert (await git(client, scene, True, BYSTANDER)).status == 200  # the proxy itself is not banned


async def test_allowlisted_and_disabled_are_never_banned(make_client: MakeClient, scene: Scene) -> None:
    for client in (await make_client(allowlist=["203.0.113.0/24"]), await make_client(enabled=False)):
        for _ in range(LIMIT * 2):
            assert (await git(client, scene, False, ATTACKER)).status == 401
        assert (await git(client, scene, True, ATTACKER)).status == 200


async def test_an_ipv6_client_is_counted_by_its_64(make_client: MakeClient, scene: Scene) -> None:
    client = await make_client()
    for i in range(LIMIT):
        assert (await git(client, scene, False, f"2001:db8:1:2::{i + 1}")).status == 401
    await assert_banned(await git(client, scene, True, "2001:db8:1:2:ffff::1"), FAMILIES["git"])
    assert (await git(client, scene, True, "2001:db8:1:3::1")).status == 200


async def test_the_ban_holds_across_processes_sharing_the_database(
    make_client: MakeClient, scene: Scene, tmp_path: Path
) -> None:
    # Two apps with their own connection to one database file: two workers or replicas.
    other_store = await SQLiteStore(tmp_path / "store.db").open()
    try:
        a, b = await make_client(), await make_client(store_=other_store)
        # The count is shared: failures on either add up.
        assert (await git(a, scene, False, ATTACKER)).status == 401
        assert (await git(b, scene, False, ATTACKER)).status == 401
        await b.app[BRUTE_FORCE].refresh()  # b learns that ATTACKER has failures on record (its own one aside)
        assert (await git(a, scene, False, ATTACKER)).status == 401  # the third: a bans
        await assert_banned(await git(a, scene, True, ATTACKER), FAMILIES["git"])
        # b sees the ban at its next refresh (every second in the background; here at once).
        await b.app[BRUTE_FORCE].refresh()
        # No database lookup for a banned client: b answers it with its database gone.
        await other_store.close()
        await assert_banned(await git(b, scene, True, ATTACKER), FAMILIES["git"])
        await assert_banned(await api(b, scene, True, ATTACKER), FAMILIES["api"])
    finally:
        await other_store.close()


async def test_a_restarted_process_knows_the_bans_at_once(make_client: MakeClient, scene: Scene) -> None:
    first = await make_client()
    for _ in range(LIMIT):
        await git(first, scene, False, ATTACKER)
    second = await make_client()  # its startup reads the bans before it serves
    await assert_banned(await git(second, scene, True, ATTACKER), FAMILIES["git"])


async def test_a_success_resets_failures_counted_by_another_process(
    make_client: MakeClient, scene: Scene, tmp_path: Path
) -> None:
    other_store = await SQLiteStore(tmp_path / "store.db").open()
    try:
        a, b = await make_client(), await make_client(store_=other_store)
        for _ in range(LIMIT - 1):
            assert (await git(a, scene, False, ATTACKER)).status == 401
        await b.app[BRUTE_FORCE].refresh()
        assert (await git(b, scene, True, ATTACKER)).status == 200  # b knew of the failures: it resets them
        assert (await git(a, scene, False, ATTACKER)).status == 401
        assert (await git(a, scene, True, ATTACKER)).status == 200  # not banned: the count had started again
    finally:
        await other_store.close()


async def test_memory_is_bounded_under_an_address_spray(store: SQLiteStore, clock: FixedClock) -> None:
    guard = Guard(BruteForceConfig(max_failures=2), Clients(()), clock, max_entries=50)
    guard.store = store
    for i in range(300):
        await guard.failed(f"10.0.{i // 256}.{i % 256}")
    for i in range(60):  # and 60 bans
        await guard.failed(f"10.1.0.{i}")
        await guard.failed(f"10.1.0.{i}")
    await guard.refresh()
    assert len(guard._failing) <= 50 and len(guard._bans) <= 50
    # The newest are kept: a spray cannot evict a fresh attacker.
    assert guard.retry_after("10.1.0.59") == 3600


# --- password guesses (found by a review: a burst sent at once was checked whole before its failures banned the
# address, and a credential of the guesser's own reset the address count, so guessing over git Basic never ended)

BURST = 40
USERNAME_LIMIT = LoginThrottle().limit


async def git_password(client: TestClient, username: str, password: str, ip: str = ATTACKER) -> ClientResponse:
    return await client.get(
        "/g/app.git/info/refs",
        params={"service": "git-upload-pack"},
        headers={**basic(username, password), "X-Forwarded-For": ip},
    )


@pytest.mark.parametrize("where", ["git", "web sign-in"])
async def test_a_burst_of_guesses_meets_the_ban_like_a_sequence(
    make_client: MakeClient, scene: Scene, where: str
) -> None:
    client = await make_client()
    if where == "git":
        statuses = [
            r.status for r in await asyncio.gather(*(git_password(client, "alice", f"w{i}") for i in range(BURST)))
        ]
        checked, refused = statuses.count(401), statuses.count(403)
    else:
        token = csrf_of(await (await client.get("/-/login")).text())  # one form and its cookie for every guess

        async def sign_in(i: int) -> int:
            form = {"authenticity_token": token, "username": "alice", "password": f"w{i}"}
            r = await client.post("/-/login", data=form, headers={"X-Forwarded-For": ATTACKER}, allow_redirects=False)
            return r.status

        statuses = list(await asyncio.gather(*(sign_in(i) for i in range(BURST))))
        checked, refused = statuses.count(422), statuses.count(429)
    # Every guess after the LIMIT-th failure waited its turn, then met the ban.
    assert (checked, refused) == (LIMIT, BURST - LIMIT), statuses


async def test_a_credential_of_ones_own_does_not_reset_a_users_guesses(make_client: MakeClient, scene: Scene) -> None:
    client = await make_client()
    statuses = []
    for _ in range(8):
        for i in range(LIMIT - 1):  # just under the address ban
            statuses.append((await git_password(client, "alice", f"w{i}")).status)
        # The guesser's own deploy token resets the address count (as GitLab's does) ...
        assert (await git_password(client, scene.token_username, scene.token)).status == 200
    # ... but not alice's: her password is not checked past the username limit, from any address.
    assert statuses == [401] * USERNAME_LIMIT + [403] * (len(statuses) - USERNAME_LIMIT)
    locked = await git_password(client, "alice", scene.password, ip="192.0.2.9")
    assert locked.status == 403 and LOCKED in await locked.text()
    # Her tokens are not locked: only passwords are.
    r = await client.get("/api/v4/user", headers={"PRIVATE-TOKEN": scene.pat, "X-Forwarded-For": "192.0.2.9"})
    assert r.status == 200
    # Each refusal is in the audit trail, under its own reason.
    await client.server.app[AUDIT].flush()
    page = await scene.world.store.list_audit_events(AuditQuery(), offset=0, limit=1000)
    locked_out = [e for e in page.items if e.details.get("reason") == LOCKED_REASON]
    assert sum(e.details["count"] for e in locked_out) == statuses.count(403) + 1
