"""GET/POST /jwt/auth against a real store: status codes, bodies, granted subsets and the JWT itself."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization

from gateway import signing_keys
from gateway.app import REGISTRY_SIGNING, create_app
from gateway.clock import FixedClock
from gateway.config import Config
from gateway.secretbox import SecretBox
from gateway.signing_keys import SigningKey, generate_key, libtrust_kid, self_signed_certificate
from gateway.store.sqlite import SQLiteStore
from gateway.users import AccessLevel
from tests.world import World

SERVICE = "container_registry"


@pytest.fixture(scope="module", params=["RS256", "ES256"])
def signing_key(request: pytest.FixtureRequest) -> SigningKey:
    key = generate_key(request.param)
    return SigningKey(key, self_signed_certificate(key, "test", datetime.now(UTC)))


@pytest.fixture
async def registry_client(
    aiohttp_client: Any,
    config: Config,
    store: SQLiteStore,
    clock: FixedClock,
    box: SecretBox,
    signing_key: SigningKey,
) -> TestClient:
    app = create_app(config, store=store, clock=clock, box=box, signing_key=signing_key)
    return await aiohttp_client(app)


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def decode(token: str, key: SigningKey) -> dict[str, Any]:
    return jwt.decode(
        token,
        key.private_key.public_key(),
        algorithms=[key.algorithm],
        audience=SERVICE,
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )


async def build(world: World) -> dict[str, Any]:
    g = await world.group("g")
    sub = await world.group("sub", g)
    sibling = await world.group("sib", g)
    p = await world.project("proj", sub)
    q = await world.project("other", sibling)
    pub = await world.project("pub", g, visibility="public")
    dev = await world.user("dev")
    await world.member(dev, sub, AccessLevel.DEVELOPER)
    maint = await world.user("maint")
    await world.member(maint, p, AccessLevel.MAINTAINER)
    admin = await world.user("root", admin=True)
    t = {
        "read": await world.deploy_token(p, ("read_registry",)),
        "write": await world.deploy_token(p, ("read_registry", "write_registry")),
        "repo_only": await world.deploy_token(p, ("read_repository",)),
        "packages": await world.deploy_token(p, ("read_package_registry",)),
        "group_g": await world.deploy_token(g, ("read_registry",)),
        "group_sib": await world.deploy_token(sibling, ("read_registry", "write_registry")),
        "revoked": await world.deploy_token(p, ("read_registry",)),
    }
    await world.store.revoke_deploy_token(t["revoked"].token.id)
    return {"p": p, "q": q, "pub": pub, "dev": dev, "maint": maint, "admin": admin, "t": t}


def creds(w: dict[str, Any], who: str) -> dict[str, str]:
    if who == "anonymous":
        return {}
    if who in ("dev", "maint", "admin"):
        return basic(w[who].user.username, w[who].pat)
    if who == "dev_password":
        return basic("dev", w["dev"].password)
    if who == "read_wrong_user":
        return basic("gitlab+deploy-token-999", w["t"]["read"].secret)
    created = w["t"][who]
    return basic(created.token.username, created.secret)


# (who, scope, expected status, expected access [(name, actions)])
CASES = [
    ("read", "repository:g/sub/proj:pull,push", 200, [("g/sub/proj", ["pull"])]),  # subset, never an error
    ("write", "repository:g/sub/proj:pull,push", 200, [("g/sub/proj", ["pull", "push"])]),
    ("write", "repository:g/sub/proj:delete", 200, []),  # delete never for deploy tokens
    ("write", "repository:g/sub/proj:*", 200, []),
    ("read", "repository:G/Sub/Proj/nested/image:pull", 200, [("g/sub/proj/nested/image", ["pull"])]),
    ("read", "repository:g/sib/other:pull", 200, []),  # another project
    ("group_g", "repository:g/sub/proj:pull", 200, [("g/sub/proj", ["pull"])]),  # parent group → subgroup
    ("group_sib", "repository:g/sub/proj:pull,push", 200, []),  # sibling group
    ("read", "repository:g/pub:pull", 200, [("g/pub", ["pull"])]),  # public project: anyone pulls
    ("read", "registry:catalog:*", 200, []),
    ("read", "repository:nope/nope:pull", 200, []),
    ("read", "repository:g/sub/proj", 200, []),  # malformed scope: dropped
    ("read", None, 200, []),  # docker login: no scope
    ("repo_only", "repository:g/sub/proj:pull", 403, None),  # no registry ability → DENIED
    ("packages", "repository:g/sub/proj:pull", 401, None),  # package-only tokens cannot log in
    ("packages", None, 401, None),
    ("revoked", "repository:g/sub/proj:pull", 401, None),
    ("revoked", None, 401, None),  # bad credentials are 401 even without a scope (skopeo login)
    ("read_wrong_user", "repository:g/sub/proj:pull", 401, None),  # username must match exactly
    ("anonymous", "repository:g/pub:pull", 200, [("g/pub", ["pull"])]),
    ("anonymous", "repository:g/sub/proj:pull", 200, []),
    ("anonymous", None, 403, None),
    ("dev", "repository:g/sub/proj:pull,push,delete", 200, [("g/sub/proj", ["pull", "push"])]),
    ("dev_password", "repository:g/sub/proj:pull", 200, [("g/sub/proj", ["pull"])]),
    ("maint", "repository:g/sub/proj:pull,push,delete", 200, [("g/sub/proj", ["pull", "push", "delete"])]),
    ("maint", "registry:catalog:*", 200, []),
    ("admin", "registry:catalog:*", 200, [("catalog", ["*"])]),
]


@pytest.mark.parametrize(("who", "scope", "status", "expected"), CASES)
async def test_token_requests(
    registry_client: TestClient,
    world: World,
    signing_key: SigningKey,
    who: str,
    scope: str | None,
    status: int,
    expected: list[tuple[str, list[str]]] | None,
) -> None:
    w = await build(world)
    query = {"service": SERVICE, "client_id": "docker", "offline_token": "true"}
    if scope:
        query["scope"] = scope
    r = await registry_client.get("/jwt/auth", params=query, headers=creds(w, who))
    body = await r.json()
    assert r.status == status, body
    if status != 200:
        code = {401: "UNAUTHORIZED", 403: "DENIED"}[status]
        assert body["errors"][0]["code"] == code
        return
    assert set(body) == {"token", "access_token", "expires_in", "issued_at"}
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300 and isinstance(body["expires_in"], int)
    assert body["issued_at"] == "2026-01-15T12:00:00Z"
    claims = decode(body["token"], signing_key)
    assert [(a["name"], a["actions"]) for a in claims["access"]] == [(n, a) for n, a in expected or []]


async def test_jwt_shape(registry_client: TestClient, world: World, signing_key: SigningKey) -> None:
    w = await build(world)
    r = await registry_client.get(
        "/jwt/auth",
        params=[("service", SERVICE), ("scope", "repository:g/sub/proj:pull"), ("scope", "repository:g/pub:pull")],
        headers=creds(w, "read"),
    )
    body = await r.json()
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == signing_key.algorithm
    assert header["kid"] == libtrust_kid(signing_key.private_key.public_key())
    assert "x5c" not in header
    claims = decode(body["token"], signing_key)
    now = int(world.clock.now().timestamp())
    assert claims["iss"] == "gitlab-issuer" and claims["aud"] == SERVICE
    assert claims["iat"] == now and claims["nbf"] == now - 5 and claims["exp"] == now + 300
    assert all(isinstance(claims[k], int) for k in ("iat", "nbf", "exp"))
    assert claims["sub"] == w["t"]["read"].token.username
    assert len(claims["jti"]) >= 32
    assert [a["name"] for a in claims["access"]] == ["g/sub/proj", "g/pub"]  # repeated scope params


@pytest.mark.parametrize("service", [None, "other", ""])
async def test_unknown_service_is_404(registry_client: TestClient, service: str | None) -> None:
    params = {"service": service} if service is not None else {}
    r = await registry_client.get("/jwt/auth", params=params)
    assert r.status == 404


async def test_token_revoked_between_two_requests(registry_client: TestClient, world: World) -> None:
    w = await build(world)
    params = {"service": SERVICE, "scope": "repository:g/sub/proj:pull"}
    r = await registry_client.get("/jwt/auth", params=params, headers=creds(w, "read"))
    assert r.status == 200
    await world.store.revoke_deploy_token(w["t"]["read"].token.id)
    r = await registry_client.get("/jwt/auth", params=params, headers=creds(w, "read"))
    assert r.status == 401


async def test_expired_at_the_boundary(registry_client: TestClient, world: World) -> None:
    p = await world.project("p", await world.group("g"))
    expiring = await world.deploy_token(p, ("read_registry",), expires_at=world.clock.now() + timedelta(seconds=10))
    headers = basic(expiring.token.username, expiring.secret)
    params = {"service": SERVICE}
    world.clock.advance(timedelta(seconds=9, microseconds=999_999))
    assert (await registry_client.get("/jwt/auth", params=params, headers=headers)).status == 200
    world.clock.advance(timedelta(microseconds=1))
    assert (await registry_client.get("/jwt/auth", params=params, headers=headers)).status == 401


async def test_oauth2_password_and_refresh(registry_client: TestClient, world: World, signing_key: SigningKey) -> None:
    w = await build(world)
    write = w["t"]["write"]
    form = {
        "grant_type": "password",
        "service": SERVICE,
        "client_id": "docker",
        "access_type": "offline",
        "username": write.token.username,
        "password": write.secret,
        "scope": "repository:g/sub/proj:pull,push",
    }
    r = await registry_client.post("/jwt/auth", data=form)
    body = await r.json()
    assert r.status == 200, body
    refresh = body["refresh_token"]
    assert write.secret not in refresh
    assert [a["actions"] for a in decode(body["access_token"], signing_key)["access"]] == [["pull", "push"]]
    # The refresh token is no registry token: MACed with the gateway's own key, nothing the registry could verify.
    assert jwt.get_unverified_header(refresh)["alg"] == "HS256"
    with pytest.raises(jwt.InvalidTokenError):
        decode(refresh, signing_key)
    again = {
        "grant_type": "refresh_token",
        "service": SERVICE,
        "client_id": "docker",
        "refresh_token": refresh,
        "scope": "repository:g/sub/proj:pull",
    }
    r = await registry_client.post("/jwt/auth", data=again)
    assert r.status == 200
    assert [a["actions"] for a in decode((await r.json())["access_token"], signing_key)["access"]] == [["pull"]]
    # A refresh token dies with its deploy token.
    await world.store.revoke_deploy_token(write.token.id)
    r = await registry_client.post("/jwt/auth", data=again)
    assert r.status == 401


async def _refresh(client: TestClient, refresh: str) -> int:
    form = {
        "grant_type": "refresh_token",
        "service": SERVICE,
        "refresh_token": refresh,
        "scope": "repository:g/sub/proj:pull",
    }
    return (await client.post("/jwt/auth", data=form)).status


async def test_a_refresh_token_outlives_a_rotation_of_the_registry_key(
    aiohttp_client: Any, config: Config, store: SQLiteStore, clock: FixedClock, box: SecretBox, world: World
) -> None:
    """`docker login` keeps the refresh token for a year instead of the password: a new registry signing key
    (`gateway registry-key`) must not log every docker client out. The token is MACed with a key derived from the
    encryption key, which a registry key rotation leaves alone."""
    w = await build(world)
    write = w["t"]["write"]
    before, after = (generate_key("RS256"), generate_key("ES256"))
    apps = [
        await aiohttp_client(
            create_app(
                config,
                store=store,
                clock=clock,
                box=box,
                signing_key=SigningKey(k, self_signed_certificate(k, "t", datetime.now(UTC))),
            )
        )
        for k in (before, after)
    ]
    form = {
        "grant_type": "password",
        "service": SERVICE,
        "access_type": "offline",
        "username": write.token.username,
        "password": write.secret,
    }
    refresh = (await (await apps[0].post("/jwt/auth", data=form)).json())["refresh_token"]
    assert [await _refresh(app, refresh) for app in apps] == [200, 200]
    # Another installation (another encryption key) does not take it.
    key = SigningKey(after, self_signed_certificate(after, "t", datetime.now(UTC)))
    other = await aiohttp_client(
        create_app(config, store=store, clock=clock, box=SecretBox(b"\x07" * 32), signing_key=key)
    )
    assert await _refresh(other, refresh) == 401


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _refresh_claims(bound_id: int, audience: str = "gitlab-issuer:refresh") -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    return {"iss": "gitlab-issuer", "aud": audience, "iat": now, "exp": now + 3600, "jti": "x",
            "bound": {"kind": "deploy_token", "id": bound_id}}  # fmt: skip


def _mac(claims: dict[str, Any], secret: bytes, algorithm: str = "HS256") -> str:
    """A JWT MACed by hand (PyJWT refuses a PEM as an HMAC secret, which is the point of the attack tested)."""
    signing_input = f"{_b64(json.dumps({'alg': algorithm, 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest() if algorithm != "none" else b""
    return f"{signing_input}.{_b64(signature)}"


@pytest.mark.parametrize(
    ("forge", "trusted_during", "trusted_after"),
    [
        # Signed by the old registry key, as releases before this one did: good while the bundle lists the key.
        (lambda old, pem, tid: jwt.encode(_refresh_claims(tid), old, algorithm="RS256"), 200, 401),
        # The same with a registry token's audience: never a refresh token.
        (
            lambda old, pem, tid: jwt.encode(_refresh_claims(tid, "container_registry"), old, algorithm="RS256"),
            401,
            401,
        ),
        # HS256 MACed with the trusted public key's PEM: the JWT algorithm confusion.
        (lambda old, pem, tid: _mac(_refresh_claims(tid), pem), 401, 401),
        # No signature at all.
        (lambda old, pem, tid: _mac(_refresh_claims(tid), b"", "none"), 401, 401),
        # ES256 to an RSA installation: no key of that kind to check with (PyJWT raised TypeError: a 500).
        (lambda old, pem, tid: jwt.encode(_refresh_claims(tid), generate_key("ES256"), algorithm="ES256"), 401, 401),
    ],
    ids=["earlier-release", "access-token-audience", "hs256-with-public-key", "alg-none", "es256-on-rsa"],
)
async def test_refresh_tokens_signed_by_a_registry_key(
    aiohttp_client: Any,
    config: Config,
    store: SQLiteStore,
    clock: FixedClock,
    box: SecretBox,
    world: World,
    forge: Any,
    trusted_during: int,
    trusted_after: int,
) -> None:
    """A refresh token of an earlier release (signed by the registry key) is accepted while registry.certificate
    lists its key (the active one, or a retiring one during a rotation), and refused once the key is retired;
    nothing else signed or MACed with what the gateway publishes is ever accepted."""
    w = await build(world)
    old, new = generate_key("RS256"), generate_key("RS256")
    new_cert = self_signed_certificate(new, "t", datetime.now(UTC))
    keys = {
        "during": SigningKey(new, new_cert, (old.public_key(), new.public_key())),  # the bundle of a rotation
        "after": SigningKey(new, new_cert, (new.public_key(),)),
    }
    pem = old.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    token = forge(old, pem, w["t"]["write"].token.id)
    for name, expected in (("during", trusted_during), ("after", trusted_after)):
        client = await aiohttp_client(create_app(config, store=store, clock=clock, box=box, signing_key=keys[name]))
        assert await _refresh(client, token) == expected, name


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"grant_type": "password", "service": SERVICE, "username": "x", "password": "y"}, 401),
        ({"grant_type": "password", "service": SERVICE}, 400),
        ({"grant_type": "refresh_token", "service": SERVICE, "refresh_token": "not.a.jwt"}, 401),
        ({"grant_type": "refresh_token", "service": SERVICE}, 400),
        ({"grant_type": "client_credentials", "service": SERVICE}, 400),
        ({"grant_type": "password", "service": "nope", "username": "x", "password": "y"}, 404),
    ],
)
async def test_oauth2_bad_requests(registry_client: TestClient, form: dict[str, str], status: int) -> None:
    r = await registry_client.post("/jwt/auth", data=form)
    assert r.status == status
    assert "errors" in await r.json()


async def test_x5c_header_for_registry_3(
    aiohttp_client: Any,
    tmp_path: Any,
    store: SQLiteStore,
    clock: FixedClock,
    box: SecretBox,
    signing_key: SigningKey,
    world: World,
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from tests.conftest import make_config

    config = make_config(tmp_path, registry={"include_x5c": True})
    client = await aiohttp_client(create_app(config, store=store, clock=clock, box=box, signing_key=signing_key))
    p = await world.project("p", await world.group("g"))
    t = await world.deploy_token(p, ("read_registry",))
    r = await client.get("/jwt/auth", params={"service": SERVICE}, headers=basic(t.token.username, t.secret))
    header = jwt.get_unverified_header((await r.json())["token"])
    leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    assert leaf.public_bytes(Encoding.DER) == signing_key.certificate.public_bytes(Encoding.DER)
    assert header["kid"] == signing_key.kid


async def test_no_signing_key_is_503(aiohttp_client: Any, config: Config, store: SQLiteStore, box: SecretBox) -> None:
    client = await aiohttp_client(create_app(config, store=store, box=box))
    r = await client.get("/jwt/auth", params={"service": SERVICE, "scope": "repository:g/p:pull"})
    assert r.status == 503
    assert "gateway init" in (await r.json())["errors"][0]["message"]


async def test_identical_claims_reuse_a_young_signature(registry_client: TestClient, world: World) -> None:
    w = await build(world)
    headers = creds(w, "read")
    pull = {"service": SERVICE, "scope": "repository:g/sub/proj:pull"}

    async def fetch(params: dict[str, str]) -> dict[str, Any]:
        r = await registry_client.get("/jwt/auth", params=params, headers=headers)
        assert r.status == 200
        return dict(await r.json())

    first = await fetch(pull)
    world.clock.advance(timedelta(seconds=29))
    again = await fetch(pull)
    assert again["token"] == first["token"] and again["issued_at"] == first["issued_at"]
    assert (await fetch({"service": SERVICE}))["token"] != first["token"]  # other claims, other token
    world.clock.advance(timedelta(seconds=1))  # the window is a tenth of the 300 s lifetime
    later = await fetch(pull)
    assert later["token"] != first["token"] and later["issued_at"] == "2026-01-15T12:00:30Z"
    # Authentication still runs every time: a revoked token gets nothing, cached signature or not.
    await world.store.revoke_deploy_token(w["t"]["read"].token.id)
    r = await registry_client.get("/jwt/auth", params=pull, headers=headers)
    assert r.status == 401


def test_signed_tokens_are_bounded() -> None:
    from gateway.signing_keys import SignedTokens

    cache = SignedTokens(window=10, size=3)
    for i in range(5):
        cache.put((i,), f"t{i}", 100)
    assert [cache.get((i,), 105) for i in range(5)] == [None, None, ("t2", 100), ("t3", 100), ("t4", 100)]
    assert cache.get((4,), 110) is None  # out of the window
    assert cache.get((4,), 99) is None  # a clock that went backwards never serves a token from the future


async def test_git_and_new_image_names_at_once_on_a_cold_cache(
    registry_client: TestClient, world: World, store: SQLiteStore
) -> None:
    # New image names below a project (one read of several paths) and git (one read of that project's path) racing on
    # a cold cache: each request gets its own kind of answer (the soak once found git answering 500 here).
    g = await world.group("g")
    p = await world.project("proj", g)
    made = await world.deploy_token(p, ("read_repository", "read_registry"))
    headers = basic(made.token.username, made.secret)
    for round_ in range(5):
        store._cache.clear()  # every request of the round misses the project at first
        registry = [
            registry_client.get(
                "/jwt/auth",
                params={"service": SERVICE, "scope": f"repository:g/proj/img-{round_}-{i}:pull"},
                headers=headers,
            )
            for i in range(8)
        ]
        git = [
            registry_client.get("/g/proj.git/info/refs", params={"service": "git-upload-pack"}, headers=headers)
            for _ in range(8)
        ]
        answers = await asyncio.gather(*registry, *git)
        assert [r.status for r in answers[:8]] == [200] * 8
        assert all(r.status < 500 for r in answers[8:]), [r.status for r in answers[8:]]
        for r in answers[:8]:
            assert (await r.json())["token"]


async def test_a_key_reload_mid_flight_loses_no_request(
    aiohttp_client: Any, tmp_path: Path, store: SQLiteStore, clock: FixedClock, box: SecretBox, world: World
) -> None:
    """SIGHUP after `registry-key activate` while signatures wait in the signing process: every request is answered,
    each token's signature is made by the key its header names (old or new), and the new key signs from then on."""
    from tests.conftest import make_config

    config = make_config(tmp_path, registry={"signing_processes": 1})
    key_path, cert_path = Path(config.registry.signing_key), Path(config.registry.certificate)
    signing_keys.ensure(key_path, cert_path, algorithm="RS256", common_name="t")
    old = signing_keys.load(key_path, cert_path)
    project = await world.project("proj", await world.group("g"))
    made = [await world.deploy_token(project, ("read_registry",)) for _ in range(30)]
    app = create_app(config, store=store, clock=clock, box=box)
    client = await aiohttp_client(app)
    params = {"service": SERVICE, "scope": "repository:g/proj:pull"}

    async def token_of(created: Any) -> str:
        response = await client.get("/jwt/auth", params=params, headers=basic(created.token.username, created.secret))
        assert response.status == 200
        return str((await response.json())["token"])

    await token_of(made[0])  # the signing process runs
    key_path.unlink()  # an activation: new key files
    cert_path.unlink()
    signing_keys.ensure(key_path, cert_path, algorithm="RS256", common_name="t")
    new = signing_keys.load(key_path, cert_path)
    signing = app[REGISTRY_SIGNING]
    before = signing.current
    assert before is not None and len(before.processes.children) == 1
    child = before.processes.children[0].proc
    os.kill(child.pid, signal.SIGSTOP)  # a busy signing process: the signatures asked of it wait
    asked = [asyncio.create_task(token_of(created)) for created in made[1:]]

    def in_child() -> int:
        return sum(len(c.waiting) for c in before.processes.children)

    deadline = asyncio.get_running_loop().time() + 10
    while in_child() < 3 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.001)
    assert in_child() >= 3, "no signature waited in the signing process"
    assert signing.reload()
    await asyncio.sleep(0.1)
    os.kill(child.pid, signal.SIGCONT)
    tokens = await asyncio.gather(*asked)
    keys = {old.kid: old, new.kid: new}
    for token in tokens:
        kid = jwt.get_unverified_header(token)["kid"]
        decode(token, keys[kid])  # raises unless that key made the signature
    # Those asked before the reload are the old key's (others may be too, if they took it before the reload).
    assert old.kid in {jwt.get_unverified_header(t)["kid"] for t in tokens}
    assert jwt.get_unverified_header(await token_of(made[0]))["kid"] == new.kid
