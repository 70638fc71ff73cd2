"""Deploy token rules as tables: secret format, expiry boundary, date parsing, scopes and validation."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from gateway import tokens
from gateway.errors import ParamError, ValidationFailed


def test_generated_secret_format() -> None:
    seen = {tokens.generate() for _ in range(200)}
    assert len(seen) == 200
    for secret in seen:
        # gldt- + 20 friendly characters: URL-safe base64 without the look-alikes l I O 0
        assert re.fullmatch(r"gldt-[A-HJ-NP-Za-km-z1-9_-]{20}", secret), secret


def test_digest_is_sha256_and_stable() -> None:
    assert tokens.digest("gldt-x") == tokens.digest("gldt-x")
    assert tokens.digest("gldt-x") != tokens.digest("gldt-y")
    assert len(tokens.digest("gldt-x")) == 32


MIDNIGHT = datetime(2027, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expires_at", "now", "expired"),
    [
        (None, MIDNIGHT, False),
        (MIDNIGHT, MIDNIGHT - timedelta(microseconds=1), False),
        (MIDNIGHT, MIDNIGHT, True),  # stops working at the instant of expiry (GitLab's Expirable)
        (MIDNIGHT, MIDNIGHT + timedelta(days=1), True),
    ],
)
def test_expiry_boundary(expires_at: datetime | None, now: datetime, expired: bool) -> None:
    assert tokens.is_expired(expires_at, now) is expired


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("", None),
        ("2021-01-01", datetime(2021, 1, 1, tzinfo=UTC)),  # a date means midnight UTC
        ("2019-03-15T08:00:00Z", datetime(2019, 3, 15, 8, tzinfo=UTC)),
        ("2019-03-15T08:00:00+02:00", datetime(2019, 3, 15, 6, tzinfo=UTC)),
        ("2019-03-15T08:00:00", datetime(2019, 3, 15, 8, tzinfo=UTC)),  # naive means UTC
        ("2019-03-15T08:00:00.123Z", datetime(2019, 3, 15, 8, 0, 0, 123000, tzinfo=UTC)),
        ("0001-01-01", datetime(1, 1, 1, tzinfo=UTC)),  # accepted, already expired
        ("9999-12-31", datetime(9999, 12, 31, tzinfo=UTC)),
    ],
)
def test_parse_expires_at(raw: str | None, expected: datetime | None) -> None:
    assert tokens.parse_expires_at(raw) == expected


@pytest.mark.parametrize(
    "raw", ["2021-02-30", "2021-13-01", "tomorrow", "10000-01-01", "2021-1-1", 20210101, ["2021-01-01"], "x" * 100]
)
def test_parse_expires_at_invalid(raw: object) -> None:
    with pytest.raises(ParamError, match="expires_at is invalid"):
        tokens.parse_expires_at(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (["read_registry", "read_repository"], ("read_repository", "read_registry")),  # GitLab's order
        ("write_registry,read_repository", ("read_repository", "write_registry")),
        (["read_repository", "read_repository"], ("read_repository",)),
        ([], ()),  # a model error, reported by validate()
        (list(tokens.SCOPES), tokens.SCOPES),
        # GitLab's CommaSeparatedToArray: each item of an array is split at commas and stripped too.
        (["read_repository,read_registry"], ("read_repository", "read_registry")),
        ([" read_repository ", ""], ("read_repository",)),
        (["read_repository", None], ("read_repository",)),
        ("read_repository, read_registry,", ("read_repository", "read_registry")),  # Ruby drops trailing fields
        ("", ()),
        # Neither a string nor an array: no scopes (then "Scopes can't be blank").
        (None, ()),
        (5, ()),
        ({"a": 1}, ()),
    ],
)
def test_parse_scopes(raw: object, expected: tuple[str, ...]) -> None:
    assert tokens.parse_scopes(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        ["read_repository", "api"],
        "admin",
        [1],
        [True],
        [["read_repository"]],
        ["READ_REPOSITORY"],
        ",read_repository",  # Ruby keeps a leading empty field: "" is no scope
        "read_repository, ,read_registry",
        "read_repository, ",  # the trailing field is " " before the strip
        ["read_repository\u00a0"],  # Ruby's strip leaves a no-break space
    ],
)
def test_parse_scopes_invalid(raw: object) -> None:
    with pytest.raises(ParamError, match="scopes does not have a valid value"):
        tokens.parse_scopes(raw)


@pytest.mark.parametrize(
    ("name", "username", "scopes", "message"),
    [
        ("ok", None, ("read_repository",), None),
        ("ok", "custom-user", ("read_repository",), None),
        ("ok", "a.b+c_d-e", ("read_repository",), None),
        ("x" * 255, "u" * 255, ("read_repository",), None),
        ("x" * 256, None, ("read_repository",), "Name is too long (maximum is 255 characters)"),
        ("ok", "u" * 256, ("read_repository",), "Username is too long (maximum is 255 characters)"),
        ("ok", "bad user", ("read_repository",), tokens.USERNAME_MESSAGE),
        ("ok", "ünïcode", ("read_repository",), tokens.USERNAME_MESSAGE),
        ("ok", None, (), "Scopes can't be blank"),
        ("", None, ("read_repository",), "Name can't be blank"),
        # The model's order (scopes, username, name), joined as Rails' to_sentence joins them.
        ("ok", "bad/user", (), f"Scopes can't be blank and {tokens.USERNAME_MESSAGE}"),
        (
            "x" * 256,
            "bad user",
            (),
            f"Scopes can't be blank, {tokens.USERNAME_MESSAGE}, and Name is too long (maximum is 255 characters)",
        ),
    ],
)
def test_validate(name: str, username: str | None, scopes: tuple[str, ...], message: str | None) -> None:
    if message is None:
        tokens.validate(name, username, scopes)
    else:
        with pytest.raises(ValidationFailed) as info:
            tokens.validate(name, username, scopes)
        assert info.value.message == message
