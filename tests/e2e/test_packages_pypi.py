"""Real pypiserver (one flat registry for all projects) + real twine and pip through the gateway, with deploy tokens:
uploads, installs at project and group level, and isolation of each project's names (docs/packages.md)."""

from __future__ import annotations

import base64
import hashlib
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.clock import FixedClock
from gateway.secretbox import SecretBox
from gateway.store.sqlite import SQLiteStore
from tests import package_clients
from tests.conftest import make_config
from tests.package_clients import NEGATIVE, PYPI_TOOLS, basic, cast, run, serve
from tests.world import World

BACKEND_USER, BACKEND_PASSWORD = "gateway", "backend-secret"


@pytest.fixture(scope="module")
def pypiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """pypiserver with its own htpasswd: only the gateway's backend credentials may upload or read."""
    with package_clients.pypiserver(tmp_path_factory.mktemp("pypiserver"), BACKEND_USER, BACKEND_PASSWORD) as url:
        yield url


def wheel(folder: Path, name: str, version: str = "1.0.0") -> Path:
    """A minimal pure-Python wheel (PEP 427) written directly: no build backend, no index needed."""
    dist = name.replace("-", "_")
    files = {
        f"{dist}/__init__.py": f"VALUE = {name!r}\n",
        f"{dist}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}-{version}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
        f"{len(text.encode())}"
        for path, text in files.items()
    ]
    files[f"{dist}-{version}.dist-info/RECORD"] = "\n".join([*record, f"{dist}-{version}.dist-info/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return out


@pytest.fixture
async def gateway(
    pypiserver: str, tmp_path: Path, store: SQLiteStore, clock: FixedClock, box: SecretBox
) -> AsyncIterator[str]:
    config = make_config(
        tmp_path,
        packages={
            "pypi": {"backend": pypiserver, "backend_username": BACKEND_USER, "backend_password": BACKEND_PASSWORD}
        },
    )
    async with serve(config, store, clock, box) as origin:
        yield origin


def project_url(origin: str, project_ref: str | int, secret: str | None = None) -> str:
    auth = f"anyone:{secret}@" if secret else ""
    host = origin.removeprefix("http://")
    return f"http://{auth}{host}/api/v4/projects/{project_ref}/packages/pypi"


async def twine(origin: str, project: int, secret: str, dist: Path, *options: str) -> tuple[int, str]:
    """(exit code, output with its lines' wrapping undone: twine wraps its messages at the terminal's width)."""
    rc, out = await run(
        [
            PYPI_TOOLS / "bin" / "twine",
            "upload",
            "--non-interactive",
            "--disable-progress-bar",
            *options,
            "--repository-url",
            project_url(origin, project),
            "-u",
            "anything-is-ignored",
            "-p",
            secret,
            dist,
        ],
    )
    return rc, " ".join(out.split())


async def pip(index: str, target: Path, *args: str) -> tuple[int, str]:
    return await run(
        [
            PYPI_TOOLS / "bin" / "pip",
            "install",
            "--no-cache-dir",
            "--no-input",
            "--disable-pip-version-check",
            "--isolated",
            "--no-deps",
            "--index-url",
            index,
            "--target",
            target,
            *args,
        ],
    )


async def test_twine_upload_then_pip_install_at_project_and_group_level(
    pypiserver: str, gateway: str, world: World, clock: FixedClock, tmp_path: Path
) -> None:
    c = await cast(world, clock, prefix="t1")
    name = f"demo-{uuid.uuid4().hex[:8]}"
    dist = wheel(tmp_path / "dist", name)
    rc, out = await twine(gateway, c.pa.id, c.secrets["pa_write"], dist)
    assert rc == 0, out
    rc, out = await twine(gateway, c.pa.id, c.secrets["pa_write"], dist, "--verbose")
    # pypiserver refuses duplicates: twine shows its words in the status line, and its HTML page, which names
    # pypiserver's own address, never reaches the client.
    assert (
        rc != 0
        and f"HTTPError: 400 Bad Request from {project_url(gateway, c.pa.id)} Package '{dist.name}' already exists!"
        in out
    )
    assert pypiserver.removeprefix("http://") not in out and "<pre>" not in out, out

    indexes = {
        "project id, read token": f"{project_url(gateway, c.pa.id, c.secrets['pa_read'])}/simple",
        "project path, user PAT": f"{project_url(gateway, 't1root%2Fa%2Fpa', c.secrets['reporter_pat'])}/simple/",
        "group, group token": gateway.replace("http://", f"http://x:{c.secrets['group_a']}@")
        + f"/api/v4/groups/{c.a.id}/-/packages/pypi/simple",
    }
    for label, index in indexes.items():
        target = tmp_path / f"site-{len(label)}"
        rc, out = await pip(index, target, name)
        assert rc == 0, f"{label}: {out}"
        module = target / name.replace("-", "_") / "__init__.py"
        assert module.read_text() == f"VALUE = {name!r}\n", label


async def test_flat_registry_keeps_each_name_to_its_project(
    gateway: str, world: World, clock: FixedClock, tmp_path: Path
) -> None:
    c = await cast(world, clock, prefix="t2")
    name = f"owned-{uuid.uuid4().hex[:8]}"
    dist = wheel(tmp_path / "a", name)
    assert (await twine(gateway, c.pa.id, c.secrets["pa_write"], dist))[0] == 0

    # Another project can neither publish a version of that name nor install it through its own index.
    rc, out = await twine(gateway, c.pb.id, c.secrets["pb_write"], wheel(tmp_path / "b", name, "2.0.0"))
    assert (
        rc != 0
        and f"HTTPError: 403 Forbidden from {project_url(gateway, c.pb.id)} Package already exists in another project"
        in out
    )
    rc, out = await pip(f"{project_url(gateway, c.pb.id, c.secrets['pb_write'])}/simple", tmp_path / "sb", name)
    assert rc != 0 and "No matching distribution" in out
    async with aiohttp.ClientSession() as http:
        auth_b = basic(c.secrets["pb_write"])
        base_b = f"{gateway}/api/v4/projects/{c.pb.id}/packages/pypi"
        file = f"{name.replace('-', '_')}-1.0.0-py3-none-any.whl"
        for url in (f"{base_b}/simple/{name}/", f"{base_b}/files/-/packages/{file}"):
            async with http.get(url, headers=auth_b) as resp:
                assert resp.status == 404, url
        async with http.get(f"{base_b}/simple/", headers=auth_b) as resp:
            assert name not in await resp.text()
        async with http.get(
            f"{gateway}/api/v4/groups/{c.b.id}/-/packages/pypi/simple/", headers=basic(c.secrets["group_b"])
        ) as resp:
            assert resp.status == 200 and name not in await resp.text()
        # A file of the owner's name that pypiserver does not hold: its 404 in the gateway's words, without the
        # HTML page that names pypiserver's address.
        missing = file.replace("1.0.0", "9.9.9")
        async with http.get(
            f"{gateway}/api/v4/projects/{c.pa.id}/packages/pypi/files/-/packages/{missing}",
            headers=basic(c.secrets["pa_read"]),
        ) as resp:
            said = await resp.json()
        assert resp.status == 404 and said == {"message": f"404 Not Found - Not Found ({missing} does not exist)"}
        # The owner's index lists it, with every link pointing back at the gateway.
        async with http.get(
            f"{gateway}/api/v4/projects/{c.pa.id}/packages/pypi/simple/{name}/", headers=basic(c.secrets["pa_read"])
        ) as resp:
            page = await resp.text()
        assert resp.status == 200 and f'href="{gateway}/api/v4/projects/{c.pa.id}/packages/pypi/files/' in page
        assert "127.0.0.1:" + gateway.rsplit(":", 1)[1] in page and "/packages/" + file in page


def upload_form(name: str, filename: str, content: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for key, value in (
        (":action", "file_upload"),
        ("protocol_version", "1"),
        ("name", name),
        ("version", "1.0.0"),
        ("filetype", "bdist_wheel"),
        ("metadata_version", "2.1"),
    ):
        form.add_field(key, value)
    form.add_field("content", content, filename=filename, content_type="application/octet-stream")
    return form


@pytest.mark.parametrize("who", sorted(NEGATIVE))
async def test_negative_matrix(gateway: str, world: World, clock: FixedClock, tmp_path: Path, who: str) -> None:
    c = await cast(world, clock, prefix="t3")
    name = f"neg-{uuid.uuid4().hex[:8]}"
    dist = wheel(tmp_path, name)
    assert (await twine(gateway, c.pa.id, c.secrets["pa_write"], dist))[0] == 0
    want_read, want_write = NEGATIVE[who]
    base = f"{gateway}/api/v4/projects/{c.pa.id}/packages/pypi"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/simple/{name}/", headers=basic(c.secrets[who])) as resp:
            assert resp.status == want_read
        other = wheel(tmp_path / "v2", name, "2.0.0")
        form = upload_form(name, other.name, other.read_bytes())
        async with http.post(base, data=form, headers=basic(c.secrets[who])) as resp:
            assert resp.status == want_write, await resp.text()
            if want_write == 401:
                assert resp.headers["WWW-Authenticate"] == 'Basic realm="GitLab Packages Registry"'
        async with http.get(f"{base}/simple/{name}/", headers=basic(c.secrets["pa_read"])) as resp:
            assert "2.0.0" not in await resp.text()  # no refused upload reached the backend


@pytest.mark.parametrize(
    ("name", "filename", "message"),
    [
        ("alpha", "beta-1.0.0-py3-none-any.whl", "is not a distribution of alpha"),
        ("alpha", "alpha-1.0.0.exe", "is not a distribution of alpha"),
        ("../x", "x-1.0.0.tar.gz", "name is invalid"),
    ],
)
async def test_upload_whose_file_is_not_the_named_project_is_refused(
    gateway: str, world: World, clock: FixedClock, name: str, filename: str, message: str
) -> None:
    c = await cast(world, clock, prefix="t4")
    async with aiohttp.ClientSession() as http:
        form = upload_form(name, filename, b"not really a wheel")
        async with http.post(
            f"{gateway}/api/v4/projects/{c.pa.id}/packages/pypi", data=form, headers=basic(c.secrets["pa_write"])
        ) as resp:
            assert resp.status == 400
            assert message in (await resp.json())["message"]


def part(name: str, value: bytes, filename: str | None = None, *, disposition: str = "") -> bytes:
    disposition = disposition or f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--B0UND\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


def smuggling_form(own: str, victim: str, trick: str) -> bytes:
    """An upload of `own`'s file by its project's token, with a trick that makes a form parser other than the
    gateway's (pypiserver's: Python's cgi, through bottle) act on the victim project's file instead."""
    fields = part(":action", b"file_upload") + part("name", own.encode()) + part("version", b"1.0.0")
    own_file = f"{own.replace('-', '_')}-1.0.0.tar.gz"
    victim_file = f"{victim.replace('-', '_')}-9.9.9.tar.gz"
    planted = part("content", b"MALICIOUS", victim_file)
    if trick == "second content part":  # cgi keeps the last value of a repeated field
        return fields + part("content", b"own", own_file) + planted + b"--B0UND--\r\n"
    if trick == "remove after the file":
        removal = part(":action", b"remove_pkg") + part("name", victim.encode()) + part("version", b"1.0.0")
        return fields + part("content", b"own", own_file) + removal + b"--B0UND--\r\n"
    if trick == "two file names":  # cgi keeps the last parameter of a name
        disposition = f'form-data; name="content"; filename="{own_file}"; filename="{victim_file}"'
        return fields + part("content", b"MALICIOUS", disposition=disposition) + b"--B0UND--\r\n"
    if trick == "empty own file":  # a boundary line right after the blank line: cgi reads an empty file, then more
        head = f'--B0UND\r\nContent-Disposition: form-data; name="content"; filename="{own_file}"\r\n\r\n'
        return fields + head.encode() + planted + b"--B0UND--\r\n"
    if trick == "empty fields hide a removal":  # the same after fields: each hides the part after it

        def hidden(name: str, value: bytes) -> bytes:
            return f'--B0UND\r\nContent-Disposition: form-data; name="c{name}"\r\n\r\n'.encode() + part(name, value)

        removal = hidden(":action", b"remove_pkg") + hidden("name", victim.encode()) + hidden("version", b"1.0.0")
        return fields + removal + part("content", b"own", own_file) + b"--B0UND--\r\n"
    assert trick == "boundary after a bare LF"  # cgi starts a part there
    return fields + part("content", b"own\n" + planted.removesuffix(b"\r\n"), own_file) + b"--B0UND--\r\n"


@pytest.mark.parametrize(
    "trick",
    [
        "second content part",
        "remove after the file",
        "two file names",
        "boundary after a bare LF",
        "empty own file",  # this one and the next found by a second review
        "empty fields hide a removal",
    ],
)
async def test_an_upload_form_cannot_reach_another_projects_files(
    gateway: str, world: World, clock: FixedClock, tmp_path: Path, trick: str
) -> None:
    """Found by a review: the gateway checked the first `content` part, pypiserver acted on the last one (or on
    an `:action` after it), so one project's write token planted or removed another project's files."""
    c = await cast(world, clock, prefix="t5")
    victim, own = f"victim-{uuid.uuid4().hex[:8]}", f"own-{uuid.uuid4().hex[:8]}"
    dist = wheel(tmp_path, victim)
    assert (await twine(gateway, c.pa.id, c.secrets["pa_write"], dist))[0] == 0
    page = f"{gateway}/api/v4/projects/{c.pa.id}/packages/pypi/simple/{victim}/"
    async with aiohttp.ClientSession() as http:
        async with http.get(page, headers=basic(c.secrets["pa_read"])) as resp:
            before = await resp.text()
        assert dist.name in before
        async with http.post(
            f"{gateway}/api/v4/projects/{c.pb.id}/packages/pypi",
            data=smuggling_form(own, victim, trick),
            headers={**basic(c.secrets["pb_write"]), "Content-Type": "multipart/form-data; boundary=B0UND"},
        ) as resp:
            assert resp.status == 400, await resp.text()
        async with http.get(page, headers=basic(c.secrets["pa_read"])) as resp:
            assert resp.status == 200 and await resp.text() == before  # nothing planted, nothing removed


def test_a_files_project_is_the_one_pypiserver_files_it_under() -> None:
    """Differential: every distribution name the gateway gives a project to, pypiserver files under that project
    (its pkg_helpers.guess_pkgname_and_version, run in its own venv), over names built from the tricky pieces."""
    import itertools
    import json
    import subprocess

    from gateway import packages

    pieces = ["foo", "foo-2", "foo-bar", "Foo.Bar", "foo_bar", "v1", "1.0", "2", "1.0rc1", "1!2.0", "py3.1", "py2.7"]
    tails = [".tar.gz", ".zip", ".tgz", ".tar.bz2", ".egg", "-py3-none-any.whl", "-py3.8-linux.tar.gz"]
    names = ["-".join(p) + t for n in (1, 2, 3) for p in itertools.product(pieces, repeat=n) for t in tails]
    script = (
        "import json, sys; from pypiserver.pkg_helpers import guess_pkgname_and_version as g;"
        " print(json.dumps([(g(n) or [None])[0] for n in json.load(sys.stdin)]))"
    )
    out = subprocess.run(
        [PYPI_TOOLS / "bin" / "python", "-c", script], input=json.dumps(names), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    theirs = json.loads(out.stdout)
    disagree = [
        (name, ours, their)
        for name, their in zip(names, theirs, strict=True)
        if (ours := packages.pypi_file_project(name)) is not None and ours != packages.pypi_name(their or "")
    ]
    assert sum(packages.pypi_file_project(n) is not None for n in names) > 1000  # most are distributions
    assert not disagree, disagree[:10]
