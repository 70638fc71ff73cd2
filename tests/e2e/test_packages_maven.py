"""Maven through the gateway's embedded store: real `mvn deploy-file` and dependency resolution (project and group
level, Deploy-Token header as GitLab documents it), and the repository layout with curl (PUT/GET/HEAD, checksums).

Maven Central is unreachable here: the plugins come from a copy of the machine's ~/.m2/repository (packages.md §3).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.clock import FixedClock
from gateway.secretbox import SecretBox
from gateway.store.sqlite import SQLiteStore
from tests.conftest import make_config
from tests.package_clients import cast, require, run, serve
from tests.world import World

MVN = Path("/usr/bin/mvn")
CURL = Path("/usr/bin/curl")
LOCAL_REPOSITORY = Path.home() / ".m2" / "repository"
# Maven 3.8.7's default resources plugin (2.6) fails on a partial local repository; pin what the machine has.
PLUGINS = {"maven-resources-plugin": "3.3.1", "maven-compiler-plugin": "3.11.0"}


@pytest.fixture
async def gateway(tmp_path: Path, store: SQLiteStore, clock: FixedClock, box: SecretBox) -> AsyncIterator[str]:
    async with serve(make_config(tmp_path), store, clock, box) as origin:
        yield origin


@pytest.fixture(scope="module")
def m2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private local repository holding the machine's plugins (hard links when possible: fast, read-only use)."""
    require(MVN)
    for plugin, version in [*PLUGINS.items(), ("maven-deploy-plugin", "3.1.2")]:
        require(LOCAL_REPOSITORY / "org" / "apache" / "maven" / "plugins" / plugin / version)
    target = tmp_path_factory.mktemp("m2") / "repository"
    try:
        subprocess.run(["cp", "-al", LOCAL_REPOSITORY, target], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        shutil.copytree(LOCAL_REPOSITORY, target)
    return target


def settings(path: Path, repo: Path, url: str, token: str) -> Path:
    """GitLab's documented form: a Deploy-Token header for the server whose id is the mirror's."""
    path.write_text(
        f"""<settings>
  <localRepository>{repo}</localRepository>
  <mirrors><mirror><id>gw</id><mirrorOf>*</mirrorOf><url>{url}</url></mirror></mirrors>
  <servers><server><id>gw</id><configuration><httpHeaders>
    <property><name>Deploy-Token</name><value>{token}</value></property>
  </httpHeaders></configuration></server></servers>
</settings>
"""
    )
    return path


def jar(path: Path, marker: str) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
        z.writestr("marker.txt", marker)
    return path


def consumer(folder: Path, artifact: str) -> Path:
    folder.mkdir(parents=True)
    plugins = "".join(
        f"<plugin><groupId>org.apache.maven.plugins</groupId><artifactId>{p}</artifactId><version>{v}</version>"
        "</plugin>"
        for p, v in PLUGINS.items()
    )
    (folder / "pom.xml").write_text(
        f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>com.example</groupId><artifactId>consumer</artifactId><version>1.0</version>
  <properties><maven.compiler.release>17</maven.compiler.release>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding></properties>
  <dependencies><dependency><groupId>com.example</groupId><artifactId>{artifact}</artifactId>
    <version>1.0.0</version></dependency></dependencies>
  <build><plugins>{plugins}</plugins></build>
</project>
"""
    )
    return folder


async def test_mvn_deploy_and_resolve_at_project_and_group_level(
    gateway: str, m2: Path, world: World, clock: FixedClock, tmp_path: Path
) -> None:
    c = await cast(world, clock, prefix="m1")
    artifact = f"demo-{uuid.uuid4().hex[:8]}"
    built = jar(tmp_path / "demo.jar", artifact)
    project_url = f"{gateway}/api/v4/projects/{c.pa.id}/packages/maven"
    deploy = settings(tmp_path / "deploy.xml", m2, project_url, c.secrets["pa_write"])
    rc, out = await run(
        [
            MVN,
            "-B",
            "-q",
            "-s",
            deploy,
            "org.apache.maven.plugins:maven-deploy-plugin:3.1.2:deploy-file",
            f"-Dfile={built}",
            "-DgroupId=com.example",
            f"-DartifactId={artifact}",
            "-Dversion=1.0.0",
            "-Dpackaging=jar",
            "-DrepositoryId=gw",
            f"-Durl={project_url}",
        ],
        env={"HOME": str(tmp_path)},
    )
    assert rc == 0, out

    # A read-only token resolves it through the project; a group token through the group's endpoint.
    for label, url, token in (
        ("project", project_url, c.secrets["pa_read"]),
        ("group", f"{gateway}/api/v4/groups/{c.a.id}/-/packages/maven", c.secrets["group_a"]),
    ):
        folder = consumer(tmp_path / label, artifact)
        rc, out = await run(
            [MVN, "-B", "-q", "-s", settings(tmp_path / f"{label}.xml", m2, url, token), "compile"],
            cwd=folder,
            env={"HOME": str(tmp_path)},
        )
        assert rc == 0, f"{label}: {out}"
        resolved = m2 / "com" / "example" / artifact / "1.0.0" / f"{artifact}-1.0.0.jar"
        assert resolved.read_bytes() == built.read_bytes(), label
        shutil.rmtree(m2 / "com" / "example" / artifact)  # the next consumer must fetch it again

    # A token of the sibling group resolves nothing.
    folder = consumer(tmp_path / "sibling", artifact)
    sibling_url = f"{gateway}/api/v4/groups/{c.b.id}/-/packages/maven"
    rc, out = await run(
        [MVN, "-B", "-q", "-s", settings(tmp_path / "sib.xml", m2, sibling_url, c.secrets["group_b"]), "compile"],
        cwd=folder,
        env={"HOME": str(tmp_path)},
    )
    assert rc != 0 and artifact in out


async def curl(*args: str | Path) -> tuple[int, str]:
    return await run([require(CURL), "-sS", *args])


async def test_repository_layout_with_curl(gateway: str, world: World, clock: FixedClock, tmp_path: Path) -> None:
    c = await cast(world, clock, prefix="m2")
    base = f"{gateway}/api/v4/projects/{c.pa.id}/packages/maven/com/example/tool/2.0/tool-2.0"
    header = f"Deploy-Token: {c.secrets['pa_write']}"
    body = jar(tmp_path / "tool.jar", "tool")
    content = body.read_bytes()
    rc, out = await curl("-w", "%{http_code}", "-H", header, "--upload-file", body, f"{base}.jar")
    assert rc == 0 and out.endswith("201"), out
    sha1 = hashlib.sha1(content).hexdigest()
    (tmp_path / "tool.jar.sha1").write_text(sha1)
    rc, out = await curl(
        "-w", "%{http_code}", "-H", header, "--upload-file", tmp_path / "tool.jar.sha1", f"{base}.jar.sha1"
    )
    assert out.endswith("201"), out
    for algorithm in ("md5", "sha1", "sha256", "sha512"):
        rc, out = await curl("--fail", "--user", f"anyone:{c.secrets['pa_read']}", f"{base}.jar.{algorithm}")
        assert rc == 0 and out == hashlib.new(algorithm, content).hexdigest(), algorithm
    rc, out = await curl("-I", "--fail", "-H", f"Deploy-Token: {c.secrets['pa_read']}", f"{base}.jar")
    assert rc == 0 and f"content-length: {len(content)}" in out.lower()
    rc, out = await curl(
        "--fail", "-o", tmp_path / "back.jar", "-H", f"Deploy-Token: {c.secrets['pa_read']}", f"{base}.jar"
    )
    assert rc == 0 and (tmp_path / "back.jar").read_bytes() == content
    # A checksum that does not match what was stored is refused; without credentials Maven is challenged.
    (tmp_path / "bad.sha1").write_text("0" * 40)
    rc, out = await curl("-w", "%{http_code}", "-H", header, "--upload-file", tmp_path / "bad.sha1", f"{base}.jar.sha1")
    assert out.endswith("400") and "does not match" in out
    rc, out = await curl("-i", f"{base}.jar")
    assert "401" in out.splitlines()[0] and 'www-authenticate: basic realm="gitlab packages registry"' in out.lower()
