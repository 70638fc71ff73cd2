"""The registry scope grammar as a table, malformed scopes included (dropped, never a 500)."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequest
from gateway.registry_auth import Scope, parse_scope, parse_scopes


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("repository:group/project:pull", Scope("repository", "group/project", ("pull",))),
        ("repository:group/project:pull,push", Scope("repository", "group/project", ("pull", "push"))),
        ("repository:a/b/c/d:push,pull,push", Scope("repository", "a/b/c/d", ("push", "pull"))),
        ("repository(plugin):g/p:pull", Scope("repository", "g/p", ("pull",), "plugin")),
        ("repository:host:5000/g/p:pull", Scope("repository", "host:5000/g/p", ("pull",))),
        ("registry:catalog:*", Scope("registry", "catalog", ("*",))),
        ("repository:g/p:*", Scope("repository", "g/p", ("*",))),
        ("repository:g/p", None),  # no actions part: GitLab answers 500 here; we drop it
        ("repository:g/p:", None),
        ("repository::pull", None),
        (":g/p:pull", None),
        ("REPOSITORY:g/p:pull", None),
        ("repo sitory:g/p:pull", None),
        ("repository:g/p:pu ll", None),
        ("repository:g/p:pull;rm", None),
        ("nocolons", None),
        ("repository:" + "a" * 600 + ":pull", None),
    ],
)
def test_parse_scope(item: str, expected: Scope | None) -> None:
    assert parse_scope(item) == expected


def test_parse_scopes_splits_merges_and_keeps_order() -> None:
    values = [
        "repository:g/p:pull repository:g/q:pull",
        "repository:g/p:pull,push",  # skopeo repeats scopes after insufficient_scope
        "garbage",
        "repository:g/p:pull",
    ]
    assert parse_scopes(values) == [
        Scope("repository", "g/p", ("pull", "push")),
        Scope("repository", "g/q", ("pull",)),
    ]
    assert parse_scopes([]) == []
    assert parse_scopes(["", "   "]) == []


def test_too_many_scopes_is_a_400() -> None:
    with pytest.raises(BadRequest):
        parse_scopes([" ".join(f"repository:g/p{i}:pull" for i in range(100))])
