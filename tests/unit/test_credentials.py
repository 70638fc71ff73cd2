"""credentials.from_headers as a table: every header form GitLab accepts, and every malformed one."""

from __future__ import annotations

import base64

import pytest
from multidict import CIMultiDict

from gateway.credentials import Credentials, Malformed, from_headers


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Authorization": basic(b"alice:s3cret")}, Credentials("basic", "alice", "s3cret")),
        ({"Authorization": basic(b"u:pa:ss")}, Credentials("basic", "u", "pa:ss")),  # RFC 7617: first ':' splits
        ({"Authorization": basic(b":tok")}, Credentials("basic", "", "tok")),
        ({"authorization": "bAsIc " + base64.b64encode(b"a:b").decode()}, Credentials("basic", "a", "b")),
        ({"Authorization": basic("jürgen:pässword".encode())}, Credentials("basic", "jürgen", "pässword")),
        ({"Authorization": "Bearer gldt-abc"}, Credentials("bearer", None, "gldt-abc")),
        ({"PRIVATE-TOKEN": "glpat-xyz"}, Credentials("private_token", None, "glpat-xyz")),
        ({"Deploy-Token": "gldt-1"}, Credentials("deploy_token", None, "gldt-1")),
        ({"Job-Token": "j"}, Credentials("job_token", None, "j")),
        # Basic wins over token headers (auth_finders.rb: Basic credentials present → the password is the token)
        ({"Authorization": basic(b"u:p"), "Deploy-Token": "x"}, Credentials("basic", "u", "p")),
    ],
)
def test_parsed(headers: dict[str, str], expected: Credentials | None) -> None:
    assert from_headers(CIMultiDict(headers)) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": basic(b"no-colon")},
        {"Authorization": basic(b"\xff\xfe:\xff")},  # not UTF-8
        {"Authorization": basic(b"a:b\x00c")},  # NUL
        {"Authorization": basic(b"a:" + b"x" * 5000)},  # out of bounds
        {"Authorization": "Digest username=x"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer a b"},
        {"PRIVATE-TOKEN": ""},
        {"PRIVATE-TOKEN": "x" * 2000},
        {"Deploy-Token": "tab\there"},
    ],
)
def test_malformed_is_not_anonymous(headers: dict[str, str]) -> None:
    assert isinstance(from_headers(CIMultiDict(headers)), Malformed)


def test_repr_never_shows_the_secret() -> None:
    creds = Credentials("basic", "alice", "gldt-TopSecretValue12345")
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert "TopSecret" not in text
        assert "alice" in text
