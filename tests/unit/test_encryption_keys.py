"""The encryption keyring and the rotation steps on their own: a crash between activation's two renames, a secret
no key opens, a reload of a broken key file, and which key makes and which keys check."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from gateway import encryption_keys
from gateway.encryption_keys import (
    DEPLOY_TOKEN_PURPOSE,
    EncryptionKeys,
    Keyring,
    RotationError,
    load_keyring,
    retiring_path,
    staged_path,
)
from gateway.secretbox import SecretBox, ensure_key_file
from gateway.store.base import Store
from tests.world import World


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "secret.key"
    ensure_key_file(path)
    return path


def test_the_active_key_seals_and_every_key_opens_and_checks() -> None:
    active, staged, foreign = SecretBox(b"\x01" * 32), SecretBox(b"\x02" * 32), SecretBox(b"\x03" * 32)
    keyring = Keyring(active, (staged,))
    sealed = keyring.seal("gldt-secret", purpose=DEPLOY_TOKEN_PURPOSE)
    assert active.open(sealed, purpose=DEPLOY_TOKEN_PURPOSE) == "gldt-secret"
    assert staged.open(sealed, purpose=DEPLOY_TOKEN_PURPOSE) is None
    by_staged = staged.seal("other", purpose=DEPLOY_TOKEN_PURPOSE)
    assert keyring.opener(by_staged, purpose=DEPLOY_TOKEN_PURPOSE) == (staged, "other")
    assert keyring.open(foreign.seal("x", purpose=DEPLOY_TOKEN_PURPOSE), purpose=DEPLOY_TOKEN_PURPOSE) is None
    assert keyring.open(sealed, purpose=b"another purpose") is None  # the purpose is bound as associated data
    assert keyring.derived(b"p") == (active.derive(b"p"), staged.derive(b"p"))  # the active key's makes
    assert len({active.key_id, staged.key_id, foreign.key_id}) == 3
    assert active.key_id not in repr(active) and active.key_id != b"\x01".hex() * 8


def test_an_activation_cut_between_its_two_renames_is_finished_by_running_it_again(key: Path) -> None:
    old = SecretBox(key.read_bytes())
    new = encryption_keys.stage(key)
    os.link(key, retiring_path(key))  # the first step, then a crash
    assert [b.key_id for b in load_keyring(key).boxes] == [old.key_id, new.key_id, old.key_id]
    assert [b.key_id for b in encryption_keys.activate(key)] == [old.key_id, new.key_id]
    assert [b.key_id for b in load_keyring(key).boxes] == [new.key_id, old.key_id]
    assert not staged_path(key).exists()
    assert (key.stat().st_mode & 0o777) == 0o600


def test_activation_refuses_a_retiring_key_of_another_rotation(key: Path) -> None:
    encryption_keys.stage(key)
    ensure_key_file(retiring_path(key))  # not the active key: a rotation before this one was never retired
    before = {p.name: p.read_bytes() for p in key.parent.iterdir()}
    with pytest.raises(RotationError, match="is not retired yet"):
        encryption_keys.activate(key)
    assert {p.name: p.read_bytes() for p in key.parent.iterdir()} == before


async def test_retirement_refuses_while_a_secret_only_the_retiring_key_or_none_opens(
    key: Path, store: Store, world: World
) -> None:
    group = await world.group("g")
    keyring_before = load_keyring(key)
    world.box = keyring_before.active
    sealed_old = await world.deploy_token(await world.project("a", group), name="gitlab-deploy-token")
    encryption_keys.stage(key)
    encryption_keys.activate(key)
    world.box = SecretBox(b"\x09" * 32)  # a key this installation never had (a database restored with another key)
    lost = await world.deploy_token(await world.project("b", group), name="gitlab-deploy-token")
    with pytest.raises(RotationError, match=f"no key of the keyring opens 1 secret: deploy token {lost.token.id} "):
        await encryption_keys.retire(key, store, wait=False)
    assert retiring_path(key).exists()
    # What the retiring key sealed was sealed again on the way, and is readable without it.
    keyring = load_keyring(key)
    token = await store.get_deploy_token(sealed_old.token.id)
    assert token is not None and token.token_encrypted is not None
    assert keyring.active.open(token.token_encrypted, purpose=DEPLOY_TOKEN_PURPOSE) == sealed_old.secret
    await store.delete_deploy_token(lost.token.id)
    retired, done = await encryption_keys.retire(key, store, wait=False)
    assert (retired.key_id, done.resealed, done.current) == (keyring_before.active.key_id, 0, 1)
    assert not retiring_path(key).exists()


@pytest.mark.parametrize(
    ("broken", "content"),
    [("staged", b"short"), ("retiring", b"\x00" * 31), ("active", b"\x00" * 33)],
)
def test_a_reload_of_a_broken_key_file_keeps_the_keys_in_use(
    key: Path, broken: str, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    keys = EncryptionKeys(key)
    before = keys.current
    path = {"staged": staged_path(key), "retiring": retiring_path(key), "active": key}[broken]
    path.write_bytes(content)
    with caplog.at_level(logging.ERROR, "gateway.encryption"):
        assert keys.reload() is False
    assert keys.current is before
    assert "encryption keys not reloaded, the ones loaded before stay in use" in caplog.text
    assert content.hex() not in caplog.text


def test_a_reload_takes_a_staged_key_and_logs_only_key_ids(key: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = EncryptionKeys(key)
    assert keys.reload() is False  # nothing changed
    staged = encryption_keys.stage(key)
    with caplog.at_level(logging.INFO, "gateway.encryption"):
        assert keys.reload() is True
    assert [b.key_id for b in keys.current.boxes] == [SecretBox(key.read_bytes()).key_id, staged.key_id]
    assert f"{staged.key_id} opens only" in caplog.text
    assert staged_path(key).read_bytes().hex() not in caplog.text
