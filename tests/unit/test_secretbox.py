"""AES-GCM sealing: round trip, purpose binding, wrong key and tampering yield None."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.secretbox import SecretBox, ensure_key_file, load


def test_round_trip_and_binding() -> None:
    box = SecretBox(os.urandom(32))
    sealed = box.seal("gldt-secret", purpose=b"deploy-token")
    assert b"gldt-secret" not in sealed
    assert box.open(sealed, purpose=b"deploy-token") == "gldt-secret"
    assert box.seal("gldt-secret", purpose=b"deploy-token") != sealed  # random nonce
    assert box.open(sealed, purpose=b"other") is None
    assert SecretBox(os.urandom(32)).open(sealed, purpose=b"deploy-token") is None
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert box.open(tampered, purpose=b"deploy-token") is None
    assert box.open(b"short", purpose=b"deploy-token") is None
    assert "key" in repr(box) and os.urandom(0) == b""


def test_key_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "secret.key"
    assert ensure_key_file(path) is True
    assert ensure_key_file(path) is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load(path).open(load(path).seal("x", purpose=b"p"), purpose=b"p") == "x"
    with pytest.raises(ConfigError, match="gateway init"):
        load(tmp_path / "missing.key")
    (tmp_path / "bad.key").write_bytes(b"short")
    with pytest.raises(ConfigError, match="32 bytes"):
        load(tmp_path / "bad.key")


def test_derived_keys_are_stable_and_apart() -> None:
    """One key file, a key per purpose (HKDF): the same purpose gives the same key again (a refresh token MACed
    yesterday still checks), another purpose or another file never does, and neither is the file's own key."""
    secret = os.urandom(32)
    box = SecretBox(secret)
    derived = box.derive(b"refresh")
    assert len(derived) == 32 and derived == SecretBox(secret).derive(b"refresh")
    assert len({derived, box.derive(b"other"), SecretBox(os.urandom(32)).derive(b"refresh"), secret}) == 4


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o400, False), (0o640, True), (0o644, True)])
def test_a_key_file_others_may_read_is_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, warned: bool
) -> None:
    key = tmp_path / f"secret-{mode:o}.key"
    ensure_key_file(key)
    key.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="gateway.keys"):
        load(key)
        load(key)  # read again (a reload): said once
    said = [r.getMessage() for r in caplog.records if r.name == "gateway.keys"]
    assert said == (
        [f"storage.encryption_key: {key} is readable by others than its owner (mode {mode:04o}): `chmod 600 {key}`"]
        if warned
        else []
    )
