"""The package format table and documents as tables: names, paths, ownership keys, templates, link rewriting and
the head of a twine upload (gateway/packages.py, packages_documents.py, packages_upload.py)."""

from __future__ import annotations

import json

import pytest

from gateway import packages, packages_documents
from gateway.packages import Backend


@pytest.mark.parametrize(
    ("path", "package", "checksum", "mutable"),
    [
        ("com/example/demo/1.0.0/demo-1.0.0.jar", "com/example/demo", None, False),
        ("com/example/demo/1.0.0/demo-1.0.0.pom.sha1", "com/example/demo", "sha1", False),
        ("com/example/demo/1.0.0/demo-1.0.0-sources.jar", "com/example/demo", None, False),
        ("com/example/demo/maven-metadata.xml", "com/example/demo", None, True),
        ("com/example/demo/maven-metadata.xml.sha512", "com/example/demo", "sha512", True),
        ("com/example/demo/1.0-SNAPSHOT/maven-metadata.xml", "com/example/demo", None, True),
        # A path cannot tell a release's version folder from an artifact: keyed as the artifact (see enclosing).
        ("com/example/demo/1.0/maven-metadata.xml", "com/example/demo/1.0", None, True),
        ("org/maven-metadata.xml", "org", None, True),  # a plugin group's metadata
        ("com/example/demo/1.0-SNAPSHOT/demo-1.0-20260101.120000-1.jar", "com/example/demo", None, True),
        ("junit/junit/4.13/junit-4.13.jar", "junit/junit", None, False),
    ],
)
def test_maven_paths(path: str, package: str, checksum: str | None, mutable: bool) -> None:
    parsed = packages.maven_path(path)
    assert isinstance(parsed, packages.MavenPath)
    assert (parsed.package, parsed.checksum, parsed.mutable) == (package, checksum, mutable)
    if checksum:
        assert "/".join(parsed.base) == path.removesuffix("." + checksum)


@pytest.mark.parametrize(
    "path",
    [
        "demo-1.0.jar",
        "maven-metadata.xml",
        "com/example/demo/1.0/other-1.0.jar",
        "com/example/demo/1.0/demo-1.1.jar",
        "com/../demo/1.0/demo-1.0.jar",
        "com/./demo/1.0/demo-1.0.jar",
        "com//demo/1.0/demo-1.0.jar",
        "com/ex/demo/1.0/.demo-1.0.jar",
        "com/ex/demo/1.0/demo-1.0.jar\x00",
        "/".join(["a"] * 40) + "/a-1.jar",
        "com/ex/" + "d" * 256 + "/1.0/x.jar",
    ],
)
def test_invalid_maven_paths(path: str) -> None:
    assert isinstance(packages.maven_path(path), str)


@pytest.mark.parametrize(
    ("name", "version", "file", "problem"),
    [
        ("tool", "1.0.0", "tool.tar.gz", None),
        ("my_pkg+x", "v1.2-rc.1", "a~b.bin", None),
        ("..", "1", "f", "package_name is invalid"),
        ("a", ".", "f", "package_version is invalid"),
        ("a", "1", "..", "file_name is invalid"),
        ("a", "1..2", "f", "package_version is invalid"),
        ("a", "1", ".hidden", "file_name is invalid"),
        ("a/b", "1", "f", "package_name is invalid"),
        ("a", "1", "f\x00", "file_name is invalid"),
        ("a b", "1", "f", "package_name is invalid"),
        ("n" * 256, "1", "f", "package_name is invalid"),
        ("", "1", "f", "package_name is invalid"),
    ],
)
def test_generic_files(name: str, version: str, file: str, problem: str | None) -> None:
    found = packages.generic_file(name, version, file)
    assert (found if isinstance(found, str) else None) == problem


@pytest.mark.parametrize(
    ("filename", "project"),
    [
        ("demo_pkg-1.0.0-py3-none-any.whl", "demo-pkg"),
        ("Demo.Pkg-2.0.tar.gz", "demo-pkg"),
        ("demo_pkg-1.0.0-py3-none-any.whl.metadata", "demo-pkg"),
        ("foo-bar-1.0.tar.gz", "foo-bar"),
        ("foo-1.0-bar.tar.gz", "foo"),
        ("foo-bar.tar.gz", None),
        # As pypiserver files them (found by a review: `foo-2-1.0.tar.gz` was `foo`'s here, `foo-2`'s there).
        ("foo-2-1.0.tar.gz", "foo-2"),
        ("foo-2-1.tar.gz", "foo-2"),
        ("foo-2.tar.gz", "foo"),
        ("foo-1.0-py3.8.egg", "foo"),
        ("foo-1.0.zip.metadata", "foo"),
        ("foo_bar-1.0-1-py3-none-any.whl", "foo-bar"),
        ("victim-py3.1-2foo.tar.gz", None),  # `victim`'s without a version to pypiserver (found by a review)
        ("foo-1.0-py3.8-linux.tar.gz", "foo"),
        ("foo-1.0.exe", None),
        ("../foo-1.0.tar.gz", None),
        ("-1.0.tar.gz", None),
    ],
)
def test_pypi_file_project(filename: str, project: str | None) -> None:
    assert packages.pypi_file_project(filename) == project


@pytest.mark.parametrize(
    ("raw", "name"),
    [("My_Pkg", "my-pkg"), ("a", "a"), ("a..b", "a-b"), ("-a", None), ("a-", None), ("../x", None), ("", None)],
)
def test_pypi_names(raw: str, name: str | None) -> None:
    assert packages.pypi_name(raw) == name


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        ("demo", True),
        ("@acme/lib", True),
        ("@acme/lib/extra", False),
        ("Demo", False),
        (".hidden", False),
        ("_x", False),
        ("a..b", False),
        ("@/x", False),
        ("-", True),
        ("x" * 215, False),
    ],
)
def test_npm_names(raw: str, ok: bool) -> None:
    assert (packages.npm_name(raw) == raw) is ok


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("demo/-/demo-1.0.0.tgz", ("demo", "demo-1.0.0.tgz")),
        ("@acme/lib/-/lib-1.0.0.tgz", ("@acme/lib", "lib-1.0.0.tgz")),
        ("demo/-/other-1.0.0.tgz", None),
        ("demo/-/../x.tgz", None),
        ("demo/-/demo-1.0.0.zip", None),
        ("demo", None),
    ],
)
def test_npm_tarballs(path: str, expected: tuple[str, str] | None) -> None:
    assert packages.npm_tarball(path) == expected


@pytest.mark.parametrize(
    ("fmt", "template", "flat", "embedded", "root"),
    [
        ("generic", "", False, True, None),
        ("maven", "", False, True, None),
        ("pypi", "", False, False, None),
        ("npm", "http://r:4873", True, False, "http://r:4873/"),
        ("pypi", "http://p/{project_id}/", False, False, "http://p/7/"),
        ("maven", "http://m/repo/{project_path}", False, False, "http://m/repo/g/sub%20x/p/"),
    ],
)
def test_backend_templates(fmt: packages.Format, template: str, flat: bool, embedded: bool, root: str | None) -> None:
    backend = Backend(fmt, template)
    assert (backend.flat, backend.embedded) == (flat, embedded)
    if root is not None:
        assert backend.root(7, "g/sub x/p") == root


def test_join_percent_encodes_each_segment() -> None:
    assert packages.join("http://b/r/", ["a?b", "c#d", "@e+f"]) == "http://b/r/a%3Fb/c%23d/@e+f"


PAGE = """<html><body>
<a href="/packages/demo_pkg-1.0.0-py3-none-any.whl#sha256={sha}" data-requires-python="&gt;=3.8">demo</a>
<a href="../../packages/demo_pkg-1.1.tar.gz">sdist</a>
<a href="/packages/other_pkg-1.0.0-py3-none-any.whl">foreign project</a>
<a href="https://pypi.org/packages/demo_pkg-9.9-py3-none-any.whl">outside the backend</a>
<a href="/packages/sub/../demo_pkg-1.2.tar.gz">dot segments</a>
</body></html>"""


def test_pypi_links_are_filtered_and_rewritten() -> None:
    sha = "a" * 64
    links = packages_documents.pypi_project_links(
        PAGE.format(sha=sha),
        page_url="http://b:1/simple/demo-pkg/",
        roots=["http://b:1/"],
        name="demo-pkg",
        files_base="http://gw/api/v4/projects/5/packages/pypi/files/",
    )
    assert [(href, text) for href, text, _ in links] == [
        (
            f"http://gw/api/v4/projects/5/packages/pypi/files/{sha}/packages/demo_pkg-1.0.0-py3-none-any.whl"
            f"#sha256={sha}",
            "demo_pkg-1.0.0-py3-none-any.whl",
        ),
        ("http://gw/api/v4/projects/5/packages/pypi/files/-/packages/demo_pkg-1.1.tar.gz", "demo_pkg-1.1.tar.gz"),
        # dot segments are resolved like a browser would, and the result must still lie under the root
        ("http://gw/api/v4/projects/5/packages/pypi/files/-/packages/demo_pkg-1.2.tar.gz", "demo_pkg-1.2.tar.gz"),
    ]
    assert links[0][2] == (("data-requires-python", ">=3.8"),)
    page = packages_documents.simple_page("Links for demo-pkg", links).decode()
    assert 'data-requires-python="&gt;=3.8"' in page and "pypi.org" not in page


def test_npm_tarballs_move_to_the_gateway() -> None:
    doc = {
        "name": "demo",
        "versions": {
            "1.0.0": {"dist": {"tarball": "http://127.0.0.1:4873/demo/-/demo-1.0.0.tgz"}},
            "1.1.0": {"dist": {"tarball": "http://gw:8080/demo/-/demo-1.1.0.tgz"}},
            "2.0.0": {"dist": {"tarball": "https://elsewhere/demo-2.0.0.tgz"}},
            "3.0.0": "not an object",
        },
    }
    out = json.loads(
        packages_documents.npm_document(
            json.dumps(doc).encode(),
            roots=packages_documents.origin_roots("http://127.0.0.1:4873/", "http://gw:8080"),
            gateway_base="http://gw:8080/api/v4/projects/1/packages/npm/",
        )
    )
    tarballs = {v: d["dist"]["tarball"] for v, d in out["versions"].items() if isinstance(d, dict)}
    assert tarballs == {
        "1.0.0": "http://gw:8080/api/v4/projects/1/packages/npm/demo/-/demo-1.0.0.tgz",
        "1.1.0": "http://gw:8080/api/v4/projects/1/packages/npm/demo/-/demo-1.1.0.tgz",
        "2.0.0": "https://elsewhere/demo-2.0.0.tgz",
    }
    with pytest.raises(ValueError):
        packages_documents.npm_document(b"[1]", roots=[], gateway_base="")


BOTTLE_PAGE = """<!DOCTYPE HTML><html><head><title>Error: 409 Conflict</title></head><body><h1>Error: 409 Conflict</h1>
<p>Sorry, the requested URL <tt>&#039;http://10.0.0.7:8080/&#039;</tt> caused an error:</p>
<pre>Package &#039;demo-1.0.tar.gz&#039; already exists!
  You may start server with `--overwrite` option.</pre></body></html>"""


@pytest.mark.parametrize(
    ("content_type", "body", "said"),
    [
        ("text/html; charset=UTF-8", BOTTLE_PAGE, "Package 'demo-1.0.tar.gz' already exists!"),
        ("text/html", "<html><title>413 Request Entity Too Large</title></html>", ""),
        ("text/html", "<pre><b>bold</b> words</pre>", "bold  words"),
        ("application/json", '{"error": "this package is already present"}', "this package is already present"),
        ("application/problem+json", '{"message": "no"}', "no"),
        ("application/json", '{"error": {"nested": 1}}', ""),
        ("application/json", "[1]", ""),
        ("application/json", "{not json", ""),
        ("text/plain", "\n\n  first line  \nsecond", "first line"),
        ("application/octet-stream", "Package exists", ""),
        ("", "Package exists", ""),
        ("text/plain", "caf\u00e9 \u2603\r\tx", "caf? ?"),
        ("text/plain", "x" * 500, "x" * 197 + "..."),
    ],
)
def test_backend_messages_are_one_printable_line(content_type: str, body: str, said: str) -> None:
    assert packages_documents.backend_message(content_type, body.encode()) == said


@pytest.mark.parametrize(
    ("path", "enclosing"),
    [
        ("g/a/1.0/maven-metadata.xml", "g/a"),
        ("g/a/1.0/maven-metadata.xml.md5", "g/a"),
        ("g/a/maven-metadata.xml", "g"),
        ("g/3d/maven-metadata.xml", "g"),
        ("a/maven-metadata.xml", None),
        ("g/a/1.0-SNAPSHOT/maven-metadata.xml", None),  # a SNAPSHOT's metadata is keyed g/a already
        ("g/a/1.0/a-1.0.jar", None),
        ("g/a/1.0/a-1.0.jar.sha1", None),
    ],
)
def test_maven_metadata_enclosing_folder(path: str, enclosing: str | None) -> None:
    parsed = packages.maven_path(path)
    assert isinstance(parsed, packages.MavenPath) and parsed.enclosing == enclosing
