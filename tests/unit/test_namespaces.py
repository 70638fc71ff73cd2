"""Path rules, `:id` references and image-name → project candidates as tables."""

from __future__ import annotations

import pytest

from gateway import namespaces


@pytest.mark.parametrize(
    ("path", "top_level", "ok"),
    [
        ("group", True, True),
        ("my.group_1-x", True, True),
        ("_", True, True),
        ("a", False, True),
        ("-start", True, False),
        ("end.", True, False),
        ("repo.git", False, False),
        ("feed.atom", False, False),
        ("a..b", False, False),
        ("spa ce", True, False),
        ("ünï", True, False),
        ("", True, False),
        ("x" * 256, True, False),
        ("api", True, False),  # reserved first segments: the gateway's own routes
        ("API", True, False),
        ("v2", True, False),
        ("jwt", True, False),
        ("groups", True, False),
        ("api", False, True),  # only reserved at the top
        ("info", False, False),
    ],
)
def test_path_problem(path: str, top_level: bool, ok: bool) -> None:
    assert (namespaces.path_problem(path, top_level=top_level) is None) is ok


@pytest.mark.parametrize(
    ("raw", "project", "expected"),
    [
        ("5", True, 5),
        ("group/project", True, "group/project"),
        ("group/sub/project", True, "group/sub/project"),  # aiohttp has decoded %2F already
        ("group%2Fsub%2Fproject", True, None),  # a '%' after that decoding is double encoding
        ("group", False, "group"),
        ("group", True, None),  # GitLab: a project path must contain '/'
        ("../../etc", True, None),
        ("group/../x", True, None),
        ("group/%2e%2e/x", True, None),
        ("group/.%2e/x", True, None),
        ("a%252Fb", True, None),  # double encoding
        ("a\x00b/c", True, None),
        ("a/b\\c", True, None),
        ("/".join(["g"] * 30), True, None),  # deeper than any namespace can be
        ("99999999999999999999999", True, None),
        ("-1", True, None),
    ],
)
def test_parse_ref(raw: str, project: bool, expected: int | str | None) -> None:
    assert namespaces.parse_ref(raw, project=project) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("group/project", ["group/project"]),
        ("group/project/image", ["group/project/image", "group/project"]),
        ("Group/Sub/Project/a/b", ["group/sub/project/a/b", "group/sub/project/a", "group/sub/project"]),
        ("single", []),  # fewer than 2 components
        ("group/Bad Name", []),
        ("group//project", []),
        ("/".join(["a"] * 20), []),  # 20 components is too many
    ],
)
def test_image_project_candidates(name: str, expected: list[str]) -> None:
    assert list(namespaces.image_project_candidates(name)) == expected
