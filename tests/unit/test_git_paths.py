"""Pure parts of the git family: URL path → project path, repository locations, CGI response headers."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import repositories
from gateway.cgi import parse_headers
from gateway.errors import BadGateway
from gateway.git_http import project_path
from tests.conftest import make_config


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("group/project.git", "group/project"),
        ("group/project", "group/project"),
        ("Group/Sub/Project.GIT", "Group/Sub/Project"),
        ("a/b/c/d/e/f/g.git", "a/b/c/d/e/f/g"),
        ("project.git", None),  # a project always lives in a namespace
        ("group/../etc.git", None),
        ("group/./project.git", None),
        ("group//project.git", None),
        ("/group/project.git", None),
        ("group/project\x00.git", None),
        ("group/%2e%2e/x.git", None),
        ("group\\..\\x.git", None),
        # Only one suffix is stripped; no project path ends in .git (namespaces.path_problem), so it finds nothing.
        ("group/project.git.git", "group/project.git"),
        ("", None),
    ],
)
def test_project_path(raw: str, expected: str | None) -> None:
    assert project_path(raw) == expected


def test_locate_stays_inside_the_root(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    root = Path(config.git.repositories).resolve()
    assert repositories.locate(config, "group/sub/project") == root / "group/sub/project.git"
    for evil in ("group/../../etc", "../x", "group/.", "a", "group/pro\x00ject"):
        assert repositories.locate(config, evil) is None
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "group").mkdir(parents=True)
    (root / "group" / "link.git").symlink_to(outside)
    assert repositories.locate(config, "group/link") is None


@pytest.mark.parametrize(
    ("raw", "status", "headers"),
    [
        (b"Content-Type: text/plain", 200, {"Content-Type": "text/plain"}),
        (b"Status: 403 Forbidden\r\nContent-Type: text/plain", 403, {"Content-Type": "text/plain"}),
        (b"Status: 404\nExpires: Fri, 01 Jan 1980 00:00:00 GMT", 404, {"Expires": "Fri, 01 Jan 1980 00:00:00 GMT"}),
        # Framing is the gateway's business: length and transfer coding are recomputed for the client.
        (b"Content-Length: 12\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nX-A: 1", 200, {"X-A": "1"}),
    ],
)
def test_cgi_headers(raw: bytes, status: int, headers: dict[str, str]) -> None:
    got_status, _reason, got = parse_headers(raw)
    assert got_status == status
    assert dict(got) == headers


@pytest.mark.parametrize("raw", [b"no colon here", b"Status: abc", b"Status: 999 Nope", b": empty name"])
def test_malformed_cgi_headers_are_a_bad_gateway(raw: bytes) -> None:
    with pytest.raises(BadGateway):
        parse_headers(raw)
