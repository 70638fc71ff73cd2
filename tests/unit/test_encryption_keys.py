"""The encryption keyring and the rotation steps on their own: a crash between activation's two renames, a secret
no key opens, a reload of a broken key file, and which key makes and which keys check."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from gateway import encryption_keys, key_watch
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


def test_an_activation_cut_between_its_two_renames_is_finished_by_running_it_again(key: Path) -> None:
    old = SecretBox(key.read_bytes())
    new = encryption_keys.stage(key)
    os.link(key, retiring_path(key))  # the first step, then a crash
    assert [b.key_id for b in load_keyring(key).boxes] == [old.key_id, new.key_id, old.key_id]
    staged_long_ago = time.time() - 3600
    os.utime(staged_path(key), (staged_long_ago, staged_long_ago))
    activated = encryption_keys.activate(key)  # no wait: the first run waited before it linked
    assert (activated.old.key_id, activated.new.key_id, activated.switched) == (old.key_id, new.key_id, True)
    assert key.stat().st_mtime > staged_long_ago + 3000  # the key arrives with the moment of its activation
    assert [b.key_id for b in load_keyring(key).boxes] == [new.key_id, old.key_id]
    assert not staged_path(key).exists()
    assert (key.stat().st_mode & 0o777) == 0o600
    # Once more (the first run's sealing again failed: the database was down): nothing switches back.
    again = encryption_keys.activate(key)
    assert (again.old.key_id, again.new.key_id, again.switched) == (old.key_id, new.key_id, False)
    assert [b.key_id for b in load_keyring(key).boxes] == [new.key_id, old.key_id]


def later() -> float:
    """A moment past key_watch.SETTLE from now: every process has loaded the files of the step before."""
    return time.time() + key_watch.SETTLE + 1


def test_activation_refuses_a_retiring_key_of_another_rotation(key: Path) -> None:
    encryption_keys.stage(key)
    ensure_key_file(retiring_path(key))  # not the active key: a rotation before this one was never retired
    before = {p.name: p.read_bytes() for p in key.parent.iterdir()}
    with pytest.raises(RotationError, match="is not retired yet"):
        encryption_keys.activate(key)
    assert {p.name: p.read_bytes() for p in key.parent.iterdir()} == before


async def test_retirement_seals_again_what_the_retiring_key_sealed_and_refuses_while_no_key_opens_one(
    key: Path, store: Store, world: World
) -> None:
    group = await world.group("g")
    keyring_before = load_keyring(key)
    world.box = keyring_before.active
    sealed_old = await world.deploy_token(await world.project("a", group), name="gitlab-deploy-token")
    encryption_keys.stage(key)
    encryption_keys.activate(key, now=later())
    world.box = SecretBox(b"\x09" * 32)  # a key this installation never had (a database restored with another key)
    lost = await world.deploy_token(await world.project("b", group), name="gitlab-deploy-token")
    with pytest.raises(RotationError, match=f"no key of the keyring opens 1 secret: deploy token {lost.token.id} "):
        await encryption_keys.retire(key, store, wait=False, now=later())
    assert retiring_path(key).exists()
    # What the retiring key sealed was sealed again on the way, and is readable without it.
    keyring = load_keyring(key)
    token = await store.get_deploy_token(sealed_old.token.id)
    assert token is not None and token.token_encrypted is not None
    assert keyring.active.open(token.token_encrypted, purpose=DEPLOY_TOKEN_PURPOSE) == sealed_old.secret
    await store.delete_deploy_token(lost.token.id)
    retired, done = await encryption_keys.retire(key, store, wait=False, now=later())
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
        assert keys.reload() is False  # the next check of the files: the same failure is not said again
    assert keys.current is before
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "encryption keys not reloaded, the ones loaded before stay in use"
    ]
    assert str(path) in caplog.text


def test_a_reload_takes_a_staged_key_and_logs_only_key_ids(key: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = EncryptionKeys(key)
    assert keys.reload() is False  # nothing changed
    staged = encryption_keys.stage(key)
    with caplog.at_level(logging.INFO, "gateway.encryption"):
        assert keys.reload() is True
    assert [b.key_id for b in keys.current.boxes] == [SecretBox(key.read_bytes()).key_id, staged.key_id]
    assert f"{staged.key_id} opens only" in caplog.text
    assert staged_path(key).read_bytes().hex() not in caplog.text


def test_retirement_waits_a_refresh_tokens_life_and_a_day(key: Path) -> None:
    """encryption_keys keeps its own copy of the refresh tokens' life (registry_auth imports it, not the reverse); the
    day is for refresh tokens MACed with the old key by a process that had not reloaded the files yet."""
    from gateway.registry_auth import REFRESH_LIFETIME

    assert REFRESH_LIFETIME.total_seconds() == encryption_keys.REFRESH_TOKEN_LIFE
    assert encryption_keys.retire_after(key) == key.stat().st_mtime + REFRESH_LIFETIME.total_seconds() + 86400


async def test_a_backup_during_which_a_key_changed_fails_rather_than_miss_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotation step between the database snapshot and the copy of the key files could leave the backup with a
    secret sealed by a key it lacks (`retire` deleted it, or `activate` sealed with a key staged after the copy)."""
    from gateway import backup
    from gateway.store import open_store
    from tests.conftest import make_config

    config = make_config(tmp_path)
    key = Path(config.storage.encryption_key)
    ensure_key_file(key)
    store = await open_store(config)
    await store.migrate()
    await store.close()
    copy_store = backup.copy_store

    async def copy_while_a_key_is_staged(source: Store, target: Store) -> object:
        copied = await copy_store(source, target)
        encryption_keys.stage(key)
        return copied

    monkeypatch.setattr(backup, "copy_store", copy_while_a_key_is_staged)
    with pytest.raises(backup.BackupError, match="a key file changed while the database was copied"):
        await backup.take(config, tmp_path / "backup", lambda line: None)
    monkeypatch.undo()
    manifest = await backup.take(config, tmp_path / "again", lambda line: None)  # the key is staged: it is kept
    assert manifest["keys"]["encryption_key_staged"] == "keys/encryption_key_staged"
