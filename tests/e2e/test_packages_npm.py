"""Real verdaccio 6.8.0 (one flat registry for all projects) + real npm through the gateway with `_authToken`:
publish and install (scoped too), metadata rewritten to the gateway, and each project's names kept to it."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.clock import FixedClock
from gateway.secretbox import SecretBox
from gateway.store.sqlite import SQLiteStore
from tests import package_clients
from tests.conftest import make_config
from tests.package_clients import NEGATIVE, basic, cast, require, run, serve
from tests.world import World

BACKEND_USER, BACKEND_PASSWORD = "gateway", "backend-secret"
NPM = "/usr/bin/npm"


@pytest.fixture(scope="module")
def verdaccio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """verdaccio offline (no uplinks), every package only for authenticated users: the gateway's account."""
    with package_clients.verdaccio(tmp_path_factory.mktemp("verdaccio"), BACKEND_USER, BACKEND_PASSWORD) as url:
        yield url


@pytest.fixture
async def gateway(
    verdaccio: str, tmp_path: Path, store: SQLiteStore, clock: FixedClock, box: SecretBox
) -> AsyncIterator[str]:
    config = make_config(
        tmp_path,
        packages={
            "npm": {"backend": verdaccio, "backend_username": BACKEND_USER, "backend_password": BACKEND_PASSWORD}
        },
    )
    async with serve(config, store, clock, box) as origin:
        yield origin


def registry(origin: str, project: int | str) -> str:
    return f"{origin}/api/v4/projects/{project}/packages/npm/"


async def npm(folder: Path, origin: str, project: int | str, token: str, *args: str) -> tuple[int, str]:
    """npm with only our settings: the registry, its `_authToken` (nerf-darted to the project URL), a fresh cache."""
    url = registry(origin, project)
    home = folder.parent / f".{folder.name}-npm"  # outside the package: npm publish packs the whole folder
    home.mkdir(exist_ok=True)
    rc_file = home / "npmrc"
    rc_file.write_text(
        f"//{url.removeprefix('http://')}:_authToken={token}\nupdate-notifier=false\naudit=false\nfund=false\n"
    )
    return await run(
        [
            require(Path(NPM)),
            *args,
            f"--registry={url}",
            f"--userconfig={rc_file}",
            f"--cache={home / 'cache'}",
            "--no-audit",
            "--no-fund",
        ],
        cwd=folder,
        env={"HOME": str(home)},
    )


def package(folder: Path, name: str, version: str = "1.0.0") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "package.json").write_text(json.dumps({"name": name, "version": version, "main": "index.js"}))
    (folder / "index.js").write_text(f"module.exports = {json.dumps(name + '@' + version)};\n")
    return folder


async def test_publish_and_install_with_auth_token(
    gateway: str, world: World, clock: FixedClock, tmp_path: Path
) -> None:
    c = await cast(world, clock, prefix="n1")
    tag = uuid.uuid4().hex[:8]
    names = [f"demo-{tag}", f"@acme-{tag}/lib"]
    for i, name in enumerate(names):
        rc, out = await npm(package(tmp_path / f"src{i}", name), gateway, c.pa.id, c.secrets["pa_write"], "publish")
        assert rc == 0, out
    # Installing through the project's path (group%2Fproject) works as well as through its id.
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    (consumer / "package.json").write_text(
        json.dumps({"name": "consumer", "version": "1.0.0", "dependencies": {n: "1.0.0" for n in names}})
    )
    rc, out = await npm(consumer, gateway, "n1root%2Fa%2Fpa", c.secrets["pa_read"], "install", "--no-package-lock")
    assert rc == 0, out
    for name in names:
        assert (consumer / "node_modules" / name / "index.js").read_text() == f'module.exports = "{name}@1.0.0";\n'

    # The documents npm reads point at the gateway, never at verdaccio.
    async with aiohttp.ClientSession() as http:
        for name in names:
            url = registry(gateway, c.pa.id) + name.replace("/", "%2f")
            async with http.get(url, headers={"Authorization": f"Bearer {c.secrets['pa_read']}"}) as resp:
                doc = await resp.json()
            tarball = doc["versions"]["1.0.0"]["dist"]["tarball"]
            assert tarball.startswith(registry(gateway, c.pa.id) + name + "/-/"), tarball

    # Publishing the same version again is refused (npm sees it in the document read through the gateway).
    rc, out = await npm(tmp_path / "src0", gateway, c.pa.id, c.secrets["pa_write"], "publish")
    assert rc != 0 and "cannot publish over the previously published versions: 1.0.0" in out, out


async def test_flat_registry_keeps_each_name_to_its_project(
    gateway: str, world: World, clock: FixedClock, tmp_path: Path
) -> None:
    c = await cast(world, clock, prefix="n2")
    name = f"owned-{uuid.uuid4().hex[:8]}"
    assert (await npm(package(tmp_path / "a", name), gateway, c.pa.id, c.secrets["pa_write"], "publish"))[0] == 0

    rc, out = await npm(package(tmp_path / "b", name, "2.0.0"), gateway, c.pb.id, c.secrets["pb_write"], "publish")
    assert rc != 0 and "403" in out
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    rc, out = await npm(consumer, gateway, c.pb.id, c.secrets["pb_write"], "install", "--no-package-lock", name)
    assert rc != 0 and "404" in out
    async with aiohttp.ClientSession() as http:
        bearer_b = {"Authorization": f"Bearer {c.secrets['pb_write']}"}
        for path in (name, f"{name}/-/{name}-1.0.0.tgz"):
            async with http.get(registry(gateway, c.pb.id) + path, headers=bearer_b) as resp:
                assert resp.status == 404, path
        async with http.get(registry(gateway, c.pa.id) + name, headers={"Deploy-Token": c.secrets["pa_read"]}) as r:
            assert list((await r.json())["versions"]) == ["1.0.0"]  # B's 2.0.0 never reached verdaccio


@pytest.mark.parametrize("who", sorted(NEGATIVE))
async def test_negative_matrix(gateway: str, world: World, clock: FixedClock, tmp_path: Path, who: str) -> None:
    c = await cast(world, clock, prefix="n3")
    name = f"neg-{uuid.uuid4().hex[:8]}"
    assert (await npm(package(tmp_path, name), gateway, c.pa.id, c.secrets["pa_write"], "publish"))[0] == 0
    want_read, want_write = NEGATIVE[who]
    url = registry(gateway, c.pa.id) + name
    async with aiohttp.ClientSession() as http:
        for headers in ({"Authorization": f"Bearer {c.secrets[who]}"}, basic(c.secrets[who])):
            async with http.get(url, headers=headers) as resp:
                assert resp.status == want_read
            async with http.get(f"{url}/-/{name}-1.0.0.tgz", headers=headers) as resp:
                assert resp.status == want_read
            publish = {"name": name, "versions": {"2.0.0": {"name": name, "version": "2.0.0"}}, "_attachments": {}}
            async with http.put(url, json=publish, headers=headers) as resp:
                assert resp.status == want_write, await resp.text()
                if want_write == 401:
                    assert resp.headers["WWW-Authenticate"] == 'Basic realm="GitLab Packages Registry"'
        async with http.get(url, headers={"Deploy-Token": c.secrets["pa_read"]}) as resp:
            assert list((await resp.json())["versions"]) == ["1.0.0"]


def _changes(name: str) -> dict[str, dict[str, object]]:
    """PUTs of the package document that verdaccio reads as changes of what is published, not as a publish (found by
    a review: each one removed or rewrote the owner's versions through its write token)."""
    kept = {"name": name, "version": "2.0.0"}
    return {
        "deprecation that unpublishes 1.0.0": {
            "_id": name,
            "name": name,
            "dist-tags": {"latest": "2.0.0"},
            "versions": {"2.0.0": {**kept, "deprecated": ""}},
        },
        "every version left out": {"_id": name, "name": name, "dist-tags": {}, "versions": {}},
        "dist-tags rewritten": {
            "_id": name,
            "name": name,
            "dist-tags": {"latest": "1.0.0"},
            "versions": {"2.0.0": kept},
        },
        "owners changed": {"_id": name, "name": name, "maintainers": [{"name": "x"}], "versions": {"2.0.0": kept}},
    }


async def test_a_write_token_can_publish_but_not_change_what_is_published(
    gateway: str, world: World, clock: FixedClock, tmp_path: Path
) -> None:
    c = await cast(world, clock, prefix="n4")
    name = f"kept-{uuid.uuid4().hex[:8]}"
    for version in ("1.0.0", "2.0.0"):
        folder = package(tmp_path / version, name, version)
        rc, out = await npm(folder, gateway, c.pa.id, c.secrets["pa_write"], "publish")
        assert rc == 0, out
    rc, out = await npm(
        tmp_path / "2.0.0", gateway, c.pa.id, c.secrets["pa_write"], "deprecate", f"{name}@1.0.0", "old"
    )
    assert rc != 0 and "400" in out, out
    url = registry(gateway, c.pa.id) + name
    write = {"Authorization": f"Bearer {c.secrets['pa_write']}"}
    async with aiohttp.ClientSession() as http:
        for label, body in _changes(name).items():
            async with http.put(url, json=body, headers=write) as resp:
                said = await resp.json()
                assert resp.status == 400 and "one new version" in said["message"], (label, said)
        async with http.get(url, headers=write) as resp:
            doc = await resp.json()
    assert sorted(doc["versions"]) == ["1.0.0", "2.0.0"] and doc["dist-tags"] == {"latest": "2.0.0"}
    assert not any("deprecated" in v for v in doc["versions"].values())


def _utf7(text: str) -> str:
    """`text` as one UTF-7 shifted run: '+' base64(UTF-16BE) '-', a plain JSON string to a UTF-8 reader."""
    return "+" + base64.b64encode(text.encode("utf-16-be")).decode().rstrip("=") + "-"


async def test_a_publish_is_read_by_the_registry_as_it_was_checked(
    gateway: str, world: World, clock: FixedClock, tmp_path: Path
) -> None:
    """Found by a review: with the client's `charset=utf-7`, verdaccio read a deprecation (and an unpublish of 1.0.0)
    in what the gateway checked as a publish of 3.0.0; and a real publish could move dist-tags to other versions."""
    c = await cast(world, clock, prefix="n5")
    name = f"read-{uuid.uuid4().hex[:8]}"
    for version in ("1.0.0", "2.0.0"):
        rc, out = await npm(
            package(tmp_path / version, name, version), gateway, c.pa.id, c.secrets["pa_write"], "publish"
        )
        assert rc == 0, out
    url = registry(gateway, c.pa.id) + name
    write = {"Authorization": f"Bearer {c.secrets['pa_write']}"}
    hidden = (
        f'","versions":{{"2.0.0":{{"name":"{name}","version":"2.0.0","deprecated":"pwned"}}}},'
        '"_attachments":{},"dist-tags":{"latest":"2.0.0"},"y":"'
    )
    publish = {
        "_id": name,
        "name": name,
        "versions": {"3.0.0": {"name": name, "version": "3.0.0"}},
        "_attachments": {f"{name}-3.0.0.tgz": {"content_type": "application/octet-stream", "data": "AAAA"}},
    }
    async with aiohttp.ClientSession() as http:
        retagged = {**publish, "dist-tags": {"latest": "1.0.0", "next": "2.0.0"}}
        async with http.put(url, json=retagged, headers=write) as resp:
            assert resp.status == 400 and "may tag only the version it publishes" in (await resp.json())["message"]
        utf7 = json.dumps({**publish, "x": _utf7(hidden)}).encode()
        async with http.put(url, data=utf7, headers={**write, "Content-Type": "application/json; charset=utf-7"}) as r:
            assert r.status == 201, await r.text()  # a publish of 3.0.0, as checked: the registry reads UTF-8
        async with http.get(url, headers=write) as resp:
            doc = await resp.json()
    assert sorted(doc["versions"]) == ["1.0.0", "2.0.0", "3.0.0"]
    assert not any("deprecated" in v for v in doc["versions"].values())
