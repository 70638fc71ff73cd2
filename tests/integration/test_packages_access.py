"""Who may read and upload generic and Maven packages (project and group level), with every credential form, and
how a flat backend keeps each package name to the project that owns it (docs/packages.md, "Isolation")."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.secretbox import SecretBox
from gateway.store.sqlite import SQLiteStore
from gateway.users import AccessLevel
from tests.conftest import make_config
from tests.world import World

WRITE = ("write_package_registry",)
READ = ("read_package_registry",)


def basic(secret: str, username: str = "anything") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()}


@dataclass
class Scene:
    world: World
    ids: dict[str, int]
    headers: dict[str, dict[str, str]] = field(default_factory=dict)


async def scene(world: World, clock: FixedClock) -> Scene:
    """root ⊃ {a ⊃ pa, b ⊃ pb}; tokens and users named by what they are."""
    root = await world.group("root")
    a = await world.group("a", root)
    b = await world.group("b", root)
    pa = await world.project("pa", a)
    pb = await world.project("pb", b)
    s = Scene(world, {"root": root.id, "a": a.id, "b": b.id, "pa": pa.id, "pb": pb.id})
    tokens = {
        "pa_write": await world.deploy_token(pa, WRITE),
        "pa_read": await world.deploy_token(pa, READ),
        "pa_repo_only": await world.deploy_token(pa, ("read_repository", "read_registry")),
        "pb_write": await world.deploy_token(pb, WRITE),
        "group_a": await world.deploy_token(a, WRITE),
        "group_b": await world.deploy_token(b, WRITE),
        "group_root": await world.deploy_token(root, WRITE),
        "revoked": await world.deploy_token(pa, WRITE),
        "expired": await world.deploy_token(pa, WRITE, expires_at=clock.now() + timedelta(hours=1)),
    }
    await world.store.revoke_deploy_token(tokens["revoked"].token.id)
    for name, created in tokens.items():
        s.headers[name] = {"Deploy-Token": created.secret}
    # The same write token in each form GitLab accepts on package endpoints (§5.3: the Basic username is ignored).
    s.headers["pa_write_basic"] = basic(tokens["pa_write"].secret, "not-the-token-username")
    s.headers["pa_write_bearer"] = {"Authorization": f"Bearer {tokens['pa_write'].secret}"}
    reporter = await world.user("reporter")
    await world.member(reporter, pa, AccessLevel.REPORTER)
    developer = await world.user("developer")
    await world.member(developer, a, AccessLevel.DEVELOPER)
    outsider = await world.user("outsider")
    s.headers["reporter"] = reporter.headers
    s.headers["developer"] = developer.headers
    s.headers["developer_basic"] = basic(developer.pat, "developer")
    s.headers["outsider"] = outsider.headers
    s.headers["anonymous"] = {}
    s.headers["bad_token"] = {"Deploy-Token": "gldt-wrongwrongwrongwron"}
    s.headers["malformed"] = {"Authorization": "Basic %%%"}
    clock.advance(timedelta(hours=2))  # `expired` is now past its expiry
    return s


@pytest.fixture
async def app_client(
    aiohttp_client: Any, tmp_path: Path, store: SQLiteStore, clock: FixedClock, box: SecretBox
) -> Callable[..., Any]:
    async def make(**packages: Any) -> TestClient:
        config = make_config(tmp_path, packages=packages)
        app = create_app(config, store=store, clock=clock, box=box)
        return await aiohttp_client(app, server_kwargs={"auto_decompress": False})  # type: ignore[no-any-return]

    return make


PATHS = {
    "generic": "generic/tool/1.0.0/tool.tar.gz",
    "maven": "maven/com/example/demo/1.0.0/demo-1.0.0.jar",
}

# principal → (read status, upload status) on project pa.
PROJECT_MATRIX = {
    "pa_write": (200, 201),
    "pa_write_basic": (200, 201),
    "pa_write_bearer": (200, 201),
    "pa_read": (200, 403),
    "pa_repo_only": (403, 403),
    "pb_write": (404, 404),
    "group_a": (200, 201),
    "group_root": (200, 201),
    "group_b": (404, 404),
    "revoked": (401, 401),
    "expired": (401, 401),
    "anonymous": (401, 401),
    "bad_token": (401, 401),
    "malformed": (401, 401),
    "reporter": (200, 403),
    "developer": (200, 201),
    "developer_basic": (200, 201),
    "outsider": (404, 404),
}


@pytest.mark.parametrize("fmt", sorted(PATHS))
@pytest.mark.parametrize("who", sorted(PROJECT_MATRIX))
async def test_project_matrix(
    app_client: Callable[..., Any], world: World, clock: FixedClock, fmt: str, who: str
) -> None:
    client = await app_client()
    s = await scene(world, clock)
    url = f"/api/v4/projects/{s.ids['pa']}/packages/{PATHS[fmt]}"
    seeded = await client.put(url, data=b"original", headers=s.headers["pa_write"])
    assert seeded.status == 201, await seeded.text()
    want_read, want_write = PROJECT_MATRIX[who]

    got = await client.get(url, headers=s.headers[who])
    assert got.status == want_read, await got.text()
    if want_read == 200:
        assert await got.read() == b"original"
    else:
        assert (await got.json())["message"].startswith(str(want_read))
    if want_read == 401:
        assert got.headers["WWW-Authenticate"] == 'Basic realm="GitLab Packages Registry"'

    put = await client.put(url.replace("1.0.0", "2.0.0"), data=b"new", headers=s.headers[who])
    assert put.status == want_write, await put.text()
    # What a refused upload wanted to write never became visible.
    after = await client.get(url.replace("1.0.0", "2.0.0"), headers=s.headers["pa_write"])
    assert after.status == (200 if want_write == 201 else 404)


# principal → status of a read at group level on group `a` (GitLab: only tokens of exactly that group).
GROUP_MATRIX = {
    "group_a": 200,
    "group_root": 404,
    "group_b": 404,
    "pa_write": 404,
    "developer": 200,
    "outsider": 404,
    "anonymous": 401,
    "revoked": 401,
}


@pytest.mark.parametrize("who", sorted(GROUP_MATRIX))
async def test_group_level_maven(app_client: Callable[..., Any], world: World, clock: FixedClock, who: str) -> None:
    client = await app_client()
    s = await scene(world, clock)
    path = PATHS["maven"].removeprefix("maven/")
    assert (
        await client.put(
            f"/api/v4/projects/{s.ids['pa']}/packages/maven/{path}", data=b"jar", headers=s.headers["pa_write"]
        )
    ).status == 201
    got = await client.get(f"/api/v4/groups/{s.ids['a']}/-/packages/maven/{path}", headers=s.headers[who])
    assert got.status == GROUP_MATRIX[who], await got.text()
    if got.status == 200:
        assert await got.read() == b"jar"
        sha1 = await client.get(f"/api/v4/groups/root%2Fa/-/packages/maven/{path}.sha1", headers=s.headers[who])
        assert await sha1.text() == hashlib.sha1(b"jar").hexdigest()


class FileServer:
    """A plain GET/HEAD/PUT file server standing in for a flat or per-project package backend (what it stores is
    not the point here: whether the gateway ever asks it for another project's files is)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{path:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.raw_path))
        if request.method == "PUT":
            self.files[request.raw_path] = await request.read()
            return web.Response(status=201)
        if request.raw_path in self.files:
            return web.Response(body=self.files[request.raw_path])
        return web.Response(status=404)


@pytest.fixture
async def file_server(aiohttp_server: Any) -> tuple[FileServer, str]:
    fs = FileServer()
    server: TestServer = await aiohttp_server(fs.app)
    return fs, f"http://127.0.0.1:{server.port}"


@pytest.mark.parametrize("fmt", sorted(PATHS))
async def test_flat_backend_keeps_names_to_their_owner(
    app_client: Callable[..., Any], world: World, clock: FixedClock, file_server: tuple[FileServer, str], fmt: str
) -> None:
    fs, origin = file_server
    client = await app_client(**{fmt: {"backend": f"{origin}/shared/"}})
    s = await scene(world, clock)
    path = PATHS[fmt]
    pa_url = f"/api/v4/projects/{s.ids['pa']}/packages/{path}"
    pb_url = f"/api/v4/projects/{s.ids['pb']}/packages/{path}"
    assert (await client.put(pa_url, data=b"from A", headers=s.headers["pa_write"])).status == 201
    assert (await client.get(pa_url, headers=s.headers["pa_write"])).status == 200

    seen = len(fs.requests)
    # B names A's package through its own project: not found, and the backend is never asked.
    assert (await client.get(pb_url, headers=s.headers["pb_write"])).status == 404
    # B cannot add a version to A's package name, nor overwrite A's file.
    for url in (pb_url, pb_url.replace("1.0.0", "9.9.9")):
        refused = await client.put(url, data=b"from B", headers=s.headers["pb_write"])
        assert refused.status == 403
        assert "another project" in (await refused.json())["message"]
    assert len(fs.requests) == seen
    assert list(fs.files.values()) == [b"from A"]
    # B's own names work as usual.
    own = pb_url.replace("tool", "btool").replace("demo", "bdemo")
    assert (await client.put(own, data=b"B's", headers=s.headers["pb_write"])).status == 201
    assert (await client.get(own, headers=s.headers["pa_write"])).status == 404  # and A cannot read them


@pytest.mark.parametrize("fmt", sorted(PATHS))
async def test_per_project_backend_separates_by_prefix(
    app_client: Callable[..., Any], world: World, clock: FixedClock, file_server: tuple[FileServer, str], fmt: str
) -> None:
    fs, origin = file_server
    client = await app_client(**{fmt: {"backend": origin + "/repo/{project_path}/"}})
    s = await scene(world, clock)
    path = PATHS[fmt]
    for project, token, body in (("pa", "pa_write", b"A"), ("pb", "pb_write", b"B")):
        url = f"/api/v4/projects/{s.ids[project]}/packages/{path}"
        assert (await client.put(url, data=body, headers=s.headers[token])).status == 201
    for project, token, body in (("pa", "pa_write", b"A"), ("pb", "pb_write", b"B")):
        got = await client.get(f"/api/v4/projects/{s.ids[project]}/packages/{path}", headers=s.headers[token])
        assert await got.read() == body
    assert sorted(fs.files) == sorted(
        f"/repo/root/{g}/{p}/{path.split('/', 1)[1]}" for g, p in (("a", "pa"), ("b", "pb"))
    )


async def flat_maven(
    app_client: Callable[..., Any], world: World, clock: FixedClock, origin: str
) -> tuple[Any, Scene, str, str]:
    """A gateway on one flat Maven repository, the scene, and the Maven roots of projects pa and pb."""
    client = await app_client(maven={"backend": f"{origin}/shared/"})
    s = await scene(world, clock)
    pa, pb = (f"/api/v4/projects/{s.ids[p]}/packages/maven/" for p in ("pa", "pb"))
    return client, s, pa, pb


# A's Maven package is com/example/demo. What B may upload on the same flat repository: not the metadata of A's
# version folders; anything that is a name of its own, above or beside A's (no project squats a groupId).
FOLDER_CLAIMS = {
    "version metadata": ("com/example/demo/1.0.0/maven-metadata.xml", 403),
    "version metadata checksum": ("com/example/demo/1.0.0/maven-metadata.xml.sha1", 403),
    "group metadata above": ("com/example/maven-metadata.xml", 201),
    "artifact named like the group": ("com/example/1/example-1.jar", 201),
    "sibling artifact": ("com/example/other/1.0.0/other-1.0.0.jar", 201),
    "artifact of a longer name": ("com/example/demo2/1.0.0/demo2-1.0.0.jar", 201),
    "own artifact metadata below": ("com/example/demo/1.0.0/x/maven-metadata.xml", 201),
    "a later version's metadata": ("com/example/demo/2.0.0/maven-metadata.xml", 403),
    "a letter-led version's metadata": ("com/example/demo/v2/maven-metadata.xml", 403),
}


@pytest.mark.parametrize("case", sorted(FOLDER_CLAIMS))
async def test_flat_maven_backend_keeps_version_folders_to_their_package(
    app_client: Callable[..., Any], world: World, clock: FixedClock, file_server: tuple[FileServer, str], case: str
) -> None:
    fs, origin = file_server
    client, s, pa, pb = await flat_maven(app_client, world, clock, origin)
    first = await client.put(pa + PATHS["maven"].removeprefix("maven/"), data=b"A", headers=s.headers["pa_write"])
    assert first.status == 201
    path, status = FOLDER_CLAIMS[case]
    got = await client.put(pb + path, data=b"B", headers=s.headers["pb_write"])
    assert got.status == status, await got.text()
    assert (b"B" in fs.files.values()) == (status == 201)
    # A may write its own version's metadata (Gradle uploads it); a name B holds is B's alone.
    mine = await client.put(pa + path, data=b"A2", headers=s.headers["pa_write"])
    assert mine.status == (201 if status == 403 else 403), await mine.text()


async def test_no_project_squats_a_group_id_on_a_flat_maven_backend(
    app_client: Callable[..., Any], world: World, clock: FixedClock, file_server: tuple[FileServer, str]
) -> None:
    """Found by a review of an earlier rule, under which a folder held every name below it."""
    _, origin = file_server
    client, s, pa, pb = await flat_maven(app_client, world, clock, origin)
    assert (await client.put(pa + "org/maven-metadata.xml", data=b"A", headers=s.headers["pa_write"])).status == 201
    for path in ("org/apache/foo/1.0/foo-1.0.jar", "org/apache/foo/maven-metadata.xml", "org/x/1/x-1.pom"):
        got = await client.put(pb + path, data=b"B", headers=s.headers["pb_write"])
        assert got.status == 201, (path, await got.text())


@pytest.mark.parametrize(
    "claim", ["com/example/demo/2.0.0/V/2.0.0-V.pom", "com/example/demo/2.0.0/x-SNAPSHOT/maven-metadata.xml"]
)
async def test_a_name_inside_a_version_folder_never_keeps_the_owner_from_its_metadata(
    app_client: Callable[..., Any], world: World, clock: FixedClock, file_server: tuple[FileServer, str], claim: str
) -> None:
    """Found by a review of an earlier rule: a project that took g/a/2.0.0 as a name of its own (any file whose key
    it is) before the owner of g/a released 2.0.0 kept the owner from writing that version's metadata."""
    _, origin = file_server
    client, s, pa, pb = await flat_maven(app_client, world, clock, origin)
    first = await client.put(pa + PATHS["maven"].removeprefix("maven/"), data=b"A", headers=s.headers["pa_write"])
    assert first.status == 201
    assert (await client.put(pb + claim, data=b"B", headers=s.headers["pb_write"])).status == 201  # its own name
    metadata = "com/example/demo/2.0.0/maven-metadata.xml"
    for suffix in ("", ".sha1"):
        assert (await client.put(pa + metadata + suffix, data=b"A", headers=s.headers["pa_write"])).status == 201
    got = await client.get(pa + metadata, headers=s.headers["pa_write"])
    assert got.status == 200 and await got.read() == b"A"


@pytest.mark.parametrize("artifacts", [("3d",), ("3d", "2t")])
async def test_artifacts_below_another_projects_group_metadata(
    app_client: Callable[..., Any],
    world: World,
    clock: FixedClock,
    file_server: tuple[FileServer, str],
    artifacts: tuple[str, ...],
) -> None:
    """Found by a review of an earlier rule (a folder led by a digit read as a version): artifacts such as webjars'
    `3d-force-graph` could not publish their metadata below another project's folder."""
    _, origin = file_server
    client, s, pa, pb = await flat_maven(app_client, world, clock, origin)
    assert (
        await client.put(pa + "com/example/maven-metadata.xml", data=b"A", headers=s.headers["pa_write"])
    ).status == 201
    for artifact in artifacts:  # as mvn deploy sends them: the files, then the artifact's metadata
        for path in (f"com/example/{artifact}/1.0/{artifact}-1.0.jar", f"com/example/{artifact}/maven-metadata.xml"):
            got = await client.put(pb + path, data=b"B", headers=s.headers["pb_write"])
            assert got.status == 201, (path, await got.text())
        assert (
            await client.get(pb + f"com/example/{artifact}/maven-metadata.xml", headers=s.headers["pb_write"])
        ).status == 200
