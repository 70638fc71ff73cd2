"""Real distribution registry (Debian docker-registry 2.8) + real skopeo through the gateway, with deploy tokens."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway import signing_keys, tokens
from gateway.app import create_app
from gateway.clock import SystemClock
from gateway.config import Config
from gateway.secretbox import SecretBox
from gateway.store.sqlite import SQLiteStore
from gateway.users import AccessLevel
from tests import servers
from tests.conftest import make_config
from tests.oci import build_image
from tests.world import World

SKOPEO = "/usr/bin/skopeo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Env:
    gateway: str  # host:port
    world: World
    tmp: Path
    config: Config
    config_file: Path
    image: Path


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture(scope="module")
def keys(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The signing key pair: RS256 (GitLab's) unless a test asks another algorithm (indirect parametrization)."""
    algorithm = getattr(request, "param", "RS256")
    d = tmp_path_factory.mktemp(f"keys-{algorithm}")
    signing_keys.ensure(d / "registry.key", d / "registry.crt", algorithm=algorithm, common_name="gateway-test")
    return d / "registry.key", d / "registry.crt"


@pytest.fixture(scope="module")
def registry(
    ports: tuple[int, int], keys: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """docker-registry on loopback, token auth pointing at the gateway's /jwt/auth (registry.md §6)."""
    gw_port, reg_port = ports
    realm = f"http://127.0.0.1:{gw_port}/jwt/auth"
    with servers.registry(tmp_path_factory.mktemp("registry"), keys[1], realm, reg_port):
        yield reg_port


@pytest.fixture
async def env(
    ports: tuple[int, int],
    registry: int,
    keys: tuple[Path, Path],
    tmp_path: Path,
    store: SQLiteStore,
    box: SecretBox,
    secret_key: bytes,
    world: World,
) -> AsyncIterator[Env]:
    gw_port, _ = ports
    key = signing_keys.load(keys[0], keys[1])
    config = make_config(
        tmp_path,
        registry={
            "backend": f"http://127.0.0.1:{registry}",
            "signing_key": str(keys[0]),
            "certificate": str(keys[1]),
            "algorithm": key.algorithm,
        },
        storage={"database": f"sqlite:///{store.path}"},
    )
    # The JWTs go to a real registry: real time, not the tests' fixed clock.
    app = create_app(config, store=store, clock=SystemClock(), box=box)
    runner = web.AppRunner(app, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", gw_port)
    await site.start()
    image = tmp_path / "image"
    build_image(image, size=256 * 1024)
    config_file = tmp_path / "gateway.toml"
    config_file.write_text(
        f'[storage]\ndatabase = "sqlite:///{store.path}"\ndata_dir = "{tmp_path / "data"}"\n'
        f'encryption_key = "{tmp_path / "data" / "secret.key"}"\n'
    )
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "secret.key").write_bytes(secret_key)
    try:
        yield Env(f"127.0.0.1:{gw_port}", world, tmp_path, config, config_file, image)
    finally:
        await runner.cleanup()


async def skopeo(env: Env, *args: str) -> tuple[int, str]:
    """Run skopeo with an isolated auth file and HOME; never blocks the event loop serving the gateway."""
    home = env.tmp / "home"
    home.mkdir(exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        SKOPEO,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={
            "HOME": str(home),
            "PATH": os.environ.get("PATH", "/usr/bin"),
            "REGISTRY_AUTH_FILE": str(home / "auth.json"),
        },
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode or 0, out.decode(errors="replace")


async def push(env: Env, repo: str, creds: str | None, tag: str = "v1", *extra: str) -> tuple[int, str]:
    auth = ["--dest-creds", creds] if creds else ["--dest-no-creds"]
    return await skopeo(
        env,
        "copy",
        "--dest-tls-verify=false",
        *auth,
        *extra,
        f"oci:{env.image}:v1",
        f"docker://{env.gateway}/{repo}:{tag}",
    )


async def pull(env: Env, repo: str, creds: str | None, tag: str = "v1") -> tuple[int, str]:
    auth = ["--src-creds", creds] if creds else ["--src-no-creds"]
    out = env.tmp / f"pulled-{uuid.uuid4().hex}"
    return await skopeo(
        env, "copy", "--src-tls-verify=false", *auth, f"docker://{env.gateway}/{repo}:{tag}", f"dir:{out}"
    )


def cred(created: tokens.Created) -> str:
    return f"{created.token.username}:{created.secret}"


async def scenario(env: Env) -> dict[str, Any]:
    w = env.world
    root = await w.group("r" + uuid.uuid4().hex[:8])
    sub = await w.group("sub", root)
    sibling = await w.group("sib", root)
    p = await w.project("proj", sub)
    q = await w.project("other", sibling)
    return {
        "root": root,
        "sub": sub,
        "sibling": sibling,
        "p": p,
        "q": q,
        "write": await w.deploy_token(p, ("read_registry", "write_registry")),
        "read": await w.deploy_token(p, ("read_registry",)),
        "group_root": await w.deploy_token(root, ("read_registry",)),
        "group_sibling": await w.deploy_token(sibling, ("read_registry", "write_registry")),
        "q_write": await w.deploy_token(q, ("read_registry", "write_registry")),
    }


async def test_login_push_pull_and_refusals(env: Env) -> None:
    s = await scenario(env)
    repo = s["p"].full_path.lower()
    # skopeo login: good credentials succeed, bad ones fail even though no scope is asked.
    rc, out = await skopeo(
        env, "login", "--tls-verify=false", "-u", s["write"].token.username, "-p", s["write"].secret, env.gateway
    )
    assert rc == 0, out
    rc, out = await skopeo(
        env,
        "login",
        "--tls-verify=false",
        "-u",
        s["write"].token.username,
        "-p",
        "gldt-wrongwrongwrongwron",
        env.gateway,
    )
    assert rc != 0 and "invalid username/password" in out

    rc, out = await push(env, repo, cred(s["write"]))
    assert rc == 0, out
    rc, out = await push(env, f"{repo}/nested/image", cred(s["write"]))  # nested image names
    assert rc == 0, out
    # Recompressing makes skopeo send the layer with Transfer-Encoding: chunked (registry.md §4).
    rc, out = await push(env, f"{repo}/zstd", cred(s["write"]), "v1", "--dest-compress-format", "zstd")
    assert rc == 0, out
    rc, out = await skopeo(
        env, "inspect", "--tls-verify=false", "--creds", cred(s["read"]), f"docker://{env.gateway}/{repo}/zstd:v1"
    )
    assert rc == 0 and "zstd" in out.lower(), out
    for who, name in [("read", repo), ("group_root", repo), ("write", f"{repo}/nested/image")]:
        rc, out = await pull(env, name, cred(s[who]))
        assert rc == 0, (who, out)

    refusals = [
        (push, repo, "read", "denied"),  # read-only token pushes
        (pull, repo, "q_write", "denied"),  # another project's token
        (pull, repo, "group_sibling", "denied"),  # a sibling group's token
        (push, s["q"].full_path.lower(), "group_root", "denied"),  # group token without write_registry
        (pull, repo, None, "denied"),  # anonymous on a private project
    ]
    for action, name, who, text in refusals:
        rc, out = await action(env, name, cred(s[who]) if who else None)
        assert rc != 0 and text in out.lower(), (who, out)


@pytest.mark.parametrize("keys", ["ES256"], indirect=True)
async def test_es256_key_push_and_pull(env: Env) -> None:
    """A P-256 key (`registry.algorithm = "ES256"`, the faster signature): the real registry accepts its JWTs, for a
    push, a pull and a refused push alike."""
    registry = env.config.registry
    assert signing_keys.load(Path(registry.signing_key), Path(registry.certificate)).algorithm == "ES256"
    s = await scenario(env)
    repo = s["p"].full_path.lower()
    rc, out = await push(env, repo, cred(s["write"]))
    assert rc == 0, out
    rc, out = await pull(env, repo, cred(s["read"]))
    assert rc == 0, out
    rc, out = await push(env, repo, cred(s["read"]), "v2")
    assert rc != 0 and "denied" in out.lower(), out


async def test_token_revoked_between_two_pulls(env: Env) -> None:
    s = await scenario(env)
    repo = s["p"].full_path.lower()
    assert (await push(env, repo, cred(s["write"])))[0] == 0
    rc, out = await pull(env, repo, cred(s["read"]))
    assert rc == 0, out
    await env.world.store.revoke_deploy_token(s["read"].token.id)
    rc, out = await pull(env, repo, cred(s["read"]))
    assert rc != 0 and "invalid username/password" in out, out


async def test_expired_token_cannot_pull(env: Env) -> None:
    s = await scenario(env)
    repo = s["p"].full_path.lower()
    assert (await push(env, repo, cred(s["write"])))[0] == 0
    # Real clock here: a token that expired a second ago.
    expired = await env.world.deploy_token(
        s["p"], ("read_registry",), expires_at=SystemClock().now() - timedelta(seconds=1)
    )
    rc, out = await pull(env, repo, cred(expired))
    assert rc != 0 and "invalid username/password" in out, out


async def test_user_personal_access_tokens(env: Env) -> None:
    s = await scenario(env)
    repo = s["p"].full_path.lower()
    dev = await env.world.user("dev" + uuid.uuid4().hex[:6], scopes=("read_registry", "write_registry"))
    reporter = await env.world.user("rep" + uuid.uuid4().hex[:6], scopes=("read_registry", "write_registry"))
    await env.world.member(dev, s["sub"], AccessLevel.DEVELOPER)  # inherited by the project
    await env.world.member(reporter, s["p"], AccessLevel.REPORTER)
    rc, out = await push(env, repo, f"{dev.user.username}:{dev.pat}")
    assert rc == 0, out
    rc, out = await pull(env, repo, f"{reporter.user.username}:{reporter.pat}")
    assert rc == 0, out
    rc, out = await push(env, repo, f"{reporter.user.username}:{reporter.pat}", tag="v2")
    assert rc != 0 and "denied" in out.lower(), out


async def test_ci_variables_log_in(env: Env) -> None:
    """`docker login -u $CI_DEPLOY_USER -p $CI_DEPLOY_PASSWORD $CI_REGISTRY` with what `gateway ci-variables` prints."""
    s = await scenario(env)
    await env.world.deploy_token(s["p"], ("read_registry", "write_registry"), name=tokens.CI_TOKEN_NAME)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "--config",
        str(env.config_file),
        "ci-variables",
        s["p"].full_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    variables = dict(line.split("=", 1) for line in out.decode().splitlines())
    rc, text = await skopeo(
        env,
        "login",
        "--tls-verify=false",
        "-u",
        variables["CI_DEPLOY_USER"],
        "-p",
        variables["CI_DEPLOY_PASSWORD"],
        env.gateway,
    )
    assert rc == 0, text
    rc, text = await push(
        env, s["p"].full_path.lower(), f"{variables['CI_DEPLOY_USER']}:{variables['CI_DEPLOY_PASSWORD']}"
    )
    assert rc == 0, text


async def test_proxy_keeps_what_clients_rely_on(env: Env, registry: int) -> None:
    """Challenge realm rewritten to the gateway; HEAD Content-Length kept; repeated Accept headers kept."""
    import aiohttp
    from multidict import CIMultiDict

    s = await scenario(env)
    repo = s["p"].full_path.lower()
    assert (await push(env, repo, cred(s["write"])))[0] == 0
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{env.gateway}/v2/") as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith(f'Bearer realm="http://{env.gateway}/jwt/auth"')
            assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
        async with http.get(
            f"http://{env.gateway}/jwt/auth",
            params={"service": "container_registry", "scope": f"repository:{repo}:pull"},
            headers={"Authorization": aiohttp.encode_basic_auth(s["read"].token.username, s["read"].secret)},
        ) as r:
            jwt_token = (await r.json())["token"]
        accept = CIMultiDict(
            [
                ("Accept", "application/vnd.docker.distribution.manifest.v2+json"),
                ("Accept", "application/vnd.oci.image.manifest.v1+json"),
            ]
        )
        accept["Authorization"] = f"Bearer {jwt_token}"
        sizes = []
        for base in (f"http://{env.gateway}", f"http://127.0.0.1:{registry}"):
            async with http.head(f"{base}/v2/{repo}/manifests/v1", headers=accept) as r:
                assert r.status == 200, (base, r.status)
                sizes.append((r.headers["Content-Length"], r.headers["Docker-Content-Digest"]))
        assert sizes[0] == sizes[1] and int(sizes[0][0]) > 0
        # Only one Accept header naming the OCI type: if the gateway merged or dropped repeats, this fails.
        async with http.get(f"http://{env.gateway}/v2/{repo}/manifests/v1", headers=accept) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "application/vnd.oci.image.manifest.v1+json"


@pytest.mark.parametrize(
    ("who", "mounted"),
    [
        ("group_rw", True),  # reads the source project and writes the target: the registry links the layer
        ("q_write", False),  # the target's own token cannot read the source: refused, nothing linked
    ],
)
async def test_a_layer_is_mounted_across_projects_only_for_a_token_that_reads_both(
    env: Env, who: str, mounted: bool
) -> None:
    """Cross-repository blob mount (`POST /v2/B/blobs/uploads/?mount=DIGEST&from=A`, what docker and skopeo send
    for a layer the registry already has): the registry links the blob only if the token grants pull on A (else
    401 insufficient_scope), so the gateway's grants decide whether a token reaches another project's layers this
    way. Clients then upload the layer instead: skopeo's copy succeeds either way."""
    import aiohttp
    import jwt as pyjwt

    s = await scenario(env)
    s["group_rw"] = await env.world.deploy_token(s["root"], ("read_registry", "write_registry"))
    source, target = s["p"].full_path.lower(), s["q"].full_path.lower()
    assert (await push(env, source, cred(s["write"])))[0] == 0
    index = json.loads((env.image / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((env.image / "blobs" / "sha256" / manifest_digest).read_text())
    layer = manifest["layers"][0]["digest"]
    who_token = s[who]
    scope = [("scope", f"repository:{target}:push,pull"), ("scope", f"repository:{source}:pull")]
    auth = {"Authorization": aiohttp.encode_basic_auth(who_token.token.username, who_token.secret)}
    async with aiohttp.ClientSession() as http:
        params = [("service", "container_registry"), *scope]
        async with http.get(f"http://{env.gateway}/jwt/auth", params=params, headers=auth) as r:
            assert r.status == 200
            token = (await r.json())["token"]
        granted = {a["name"] for a in pyjwt.decode(token, options={"verify_signature": False})["access"]}
        assert granted == ({target, source} if mounted else {target})
        bearer = {"Authorization": f"Bearer {token}"}
        uploads = f"http://{env.gateway}/v2/{target}/blobs/uploads/"
        async with http.post(uploads, params={"mount": layer, "from": source}, headers=bearer) as r:
            assert r.status == (201 if mounted else 401), await r.text()
            assert mounted or 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
        async with http.head(f"http://{env.gateway}/v2/{target}/blobs/{layer}", headers=bearer) as r:
            assert r.status == (200 if mounted else 404)
    rc, out = await skopeo(
        env, "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--src-creds", cred(s["write"]),
        "--dest-creds", cred(who_token), f"docker://{env.gateway}/{source}:v1", f"docker://{env.gateway}/{target}:v1",
    )  # fmt: skip
    assert rc == 0, out
    rc, out = await pull(env, target, cred(who_token))
    assert rc == 0, out
