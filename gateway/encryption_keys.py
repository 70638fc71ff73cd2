"""The encryption key with the keys beside it during a rotation (staged: `.next`, retiring: `.previous`), loaded as
one Keyring, loaded again on SIGHUP, and rotated in three steps by `gateway encryption-key`.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import key_files
from gateway.errors import ConfigError, GatewayError
from gateway.key_watch import CHECK_INTERVAL, FORGOTTEN_AFTER, SETTLE, lagging, recent
from gateway.secretbox import KEY_BYTES, SecretBox, load

if TYPE_CHECKING:
    from gateway.store.base import KeyHolder, Store

log = logging.getLogger("gateway.encryption")

# What sealed values hold, bound as associated data (tokens.create_token): the secret of a `gitlab-deploy-token`.
DEPLOY_TOKEN_PURPOSE = b"deploy-token"
# How long `retire` waits after the activation: the life of a refresh token (registry_auth.REFRESH_LIFETIME), the
# one thing the old key vouches for that cannot be sealed again. Kept here, not imported: registry_auth needs this
# module's Keyring.
REFRESH_TOKEN_LIFE = 365 * 24 * 3600


class RotationError(GatewayError):
    """A step of the rotation that would lose a secret, or that the files do not allow (exit 1)."""


def staged_path(key_path: Path) -> Path:
    """The next key, until it is activated: beside the active one (same volume, same backup, atomic renames)."""
    return key_path.with_name(key_path.name + ".next")


def retiring_path(key_path: Path) -> Path:
    """The key before the active one, until it is retired: opens what it sealed, never seals."""
    return key_path.with_name(key_path.name + ".previous")


def files(key_path: Path) -> tuple[Path, Path, Path]:
    """What a server watches (key_watch.py): the active, staged and retiring key files."""
    return key_path, staged_path(key_path), retiring_path(key_path)


@dataclass(frozen=True)
class Keyring:
    """Seals with the active key; opens and checks with any key it holds (AES-GCM: a wrong key fails its tag)."""

    active: SecretBox
    others: tuple[SecretBox, ...] = ()
    # Why a staged or retiring key file was left out (load_keyring(strict=False)): said, never silently ignored.
    damaged: tuple[str, ...] = field(default=(), compare=False)
    _derived: dict[bytes, tuple[bytes, ...]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def boxes(self) -> tuple[SecretBox, ...]:
        return (self.active, *self.others)

    def seal(self, plaintext: str, *, purpose: bytes) -> bytes:
        return self.active.seal(plaintext, purpose=purpose)

    def opener(self, sealed: bytes, *, purpose: bytes) -> tuple[SecretBox, str] | None:
        """The key that sealed `sealed` with its plaintext, or None when no key here did (or it was tampered with)."""
        for box in self.boxes:
            if (plaintext := box.open(sealed, purpose=purpose)) is not None:
                return box, plaintext
        return None

    def open(self, sealed: bytes, *, purpose: bytes) -> str | None:
        found = self.opener(sealed, purpose=purpose)
        return found[1] if found is not None else None

    def derived(self, purpose: bytes) -> tuple[bytes, ...]:
        """The key of each box for `purpose` (SecretBox.derive), the active one's first: it makes, the others check."""
        if purpose not in self._derived:
            self._derived[purpose] = tuple(box.derive(purpose) for box in self.boxes)
        return self._derived[purpose]


def _optional(path: Path) -> SecretBox | None:
    try:
        return SecretBox(key_files.read_private(path, "storage.encryption_key"))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"storage.encryption_key: cannot read {path}: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_keyring(key_path: Path, *, strict: bool = True) -> Keyring:
    """The active key (storage.encryption_key), then the staged and the retiring one where they exist. Not `strict`:
    a staged or retiring key file that does not load is left out and said in Keyring.damaged (a process starting,
    a command reading secrets: the active key opens what matters most); the active key must load either way."""
    active = _optional(key_path) or load(key_path)  # load: the error of a missing key file
    others, damaged = [], []
    for path in (staged_path(key_path), retiring_path(key_path)):
        try:
            box = _optional(path)
        except ConfigError as exc:
            if strict:
                raise
            damaged.append(str(exc))
            continue
        if box is not None:
            others.append(box)
    return Keyring(active, tuple(others), damaged=tuple(damaged))


def say_damaged(keyring: Keyring) -> None:
    """Log each key file load_keyring(strict=False) left out."""
    for problem in keyring.damaged:
        log.error("encryption key file left out, the other keys are in use: %s", problem)


class EncryptionKeys:
    """The Keyring this process uses now: a reload (SIGHUP, after each step of a rotation) replaces it whole."""

    def __init__(self, key_path: Path, keyring: Keyring | None = None) -> None:
        self.key_path = key_path
        self._failure = ""
        self._damaged: tuple[str, ...] = ()
        if keyring is None:
            keyring = load_keyring(key_path, strict=False)
            self._said_damaged(keyring)
        self.current = keyring

    def _said_damaged(self, keyring: Keyring) -> None:
        if keyring.damaged != self._damaged:  # once, not at every look
            say_damaged(keyring)
        self._damaged = keyring.damaged

    def reload(self, *, fresh: bool = False) -> bool:
        """Load the key files again; True when they changed. Files that do not load leave the keys in use (said
        once per failure, not at every check). `fresh` (a worker starting with what its supervisor loaded, maybe
        long ago): the files' active key wins, and only a staged or retiring file that does not load is left out."""
        try:
            keyring = load_keyring(self.key_path, strict=not fresh)
        except ConfigError as exc:
            if str(exc) != self._failure:
                log.error("encryption keys not reloaded, the ones loaded before stay in use: %s", exc)
            self._failure = str(exc)
            return False
        self._failure = ""
        self._said_damaged(keyring)
        if [b.key_id for b in keyring.boxes] == [b.key_id for b in self.current.boxes]:
            return False
        self.current = keyring
        log.info(
            "encryption keys reloaded: %s active%s",
            keyring.active.key_id,
            "".join(f", {b.key_id} opens only" for b in keyring.others),
        )
        return True


# --- the three steps ----------------------------------------------------------------------------------------------


def _write_new_key(path: Path) -> SecretBox:
    """A new random key at `path` (0600), whole or not at all: written beside it, then linked, which fails rather
    than replace a key that is there."""
    key = secrets.token_bytes(KEY_BYTES)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp makes it 0600
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        os.link(temporary, path)
    finally:
        os.unlink(temporary)
    _sync_folder(path.parent)
    return SecretBox(key)


def _load(path: Path, what: str) -> SecretBox:
    try:
        box = _optional(path)
    except ConfigError as exc:
        raise RotationError(f"{what}: {exc}") from None
    if box is None:
        raise RotationError(f"{what} ({path}) is missing")
    return box


def _wait(since: float, what: str, now: float | None) -> None:
    """Refused until SETTLE after `since`: every process has loaded the key files of the step before by then."""
    left = since + SETTLE - (now if now is not None else time.time())
    if left > 0:
        raise RotationError(
            f"{what} {int(SETTLE - left)} s ago: every gateway process loads the key files within"
            f" {int(CHECK_INTERVAL)} s (at once on SIGHUP); run this again in {int(left) + 1} s"
        )


def _sync_folder(folder: Path) -> None:
    """A rename or link survives a crash only once its folder is on disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stage(key_path: Path) -> SecretBox:
    """Step 1: a new key beside the active one; every process loads it (CHECK_INTERVAL, SIGHUP) and checks the
    refresh tokens it will MAC."""
    load(key_path)  # the active key must be there, and sound
    staged, retiring = staged_path(key_path), retiring_path(key_path)
    if staged.exists():
        raise RotationError(f"a key is already staged ({staged}): `gateway encryption-key activate` it")
    if retiring.exists():
        raise RotationError(
            f"the key before the active one is not retired yet ({retiring}): `gateway encryption-key retire` first"
        )
    return _write_new_key(staged)


@dataclass(frozen=True)
class Activated:
    old: SecretBox
    new: SecretBox
    switched: bool  # False: the files were switched by an earlier run (its sealing again had not finished)


def activate(key_path: Path, *, holders: Sequence[KeyHolder] = (), now: float | None = None) -> Activated:
    """Step 2: the staged key becomes the active one and the active one retiring.

    Two steps on disk, each atomic, and the whole can be run again after a crash between them: the old key is linked
    as `.previous` first, so no moment exists in which a file holds no copy of it. Run again once the files are
    switched, it switches nothing (the caller seals again what the old key sealed). `holders`: the processes running
    (key_watch.recent), each of which must hold the staged key first."""
    staged, retiring = staged_path(key_path), retiring_path(key_path)
    old = _load(key_path, "storage.encryption_key")
    if not staged.exists():
        if retiring.exists() and (previous := _load(retiring, "the retiring key")).key_id != old.key_id:
            return Activated(previous, old, switched=False)
        raise RotationError(f"no key is staged ({staged} is missing): `gateway encryption-key rotate` first")
    new = _load(staged, "the staged key")
    if retiring.exists():
        if _load(retiring, "the retiring key").key_id != old.key_id:  # not this activation's own first step
            raise RotationError(
                f"the key before the active one is not retired yet ({retiring}): `gateway encryption-key retire` first"
            )
    else:
        # Before any file changes: a process that has not loaded the staged key would not check the refresh tokens
        # the new key MACs (and count each as a failed sign-in).
        _wait(staged.stat().st_mtime, "the key was staged", now)
        behind = lagging(holders, lambda h: new.key_id in h.encryption_keys, "lack the staged key")
        if behind:
            raise RotationError(behind)
        os.link(key_path, retiring)
        _sync_folder(key_path.parent)
    # The moment of activation, which `retire` waits after: set before the rename, so the key arrives with it.
    os.utime(staged)
    os.replace(staged, key_path)
    _sync_folder(key_path.parent)
    return Activated(old, new, switched=True)


@dataclass(frozen=True)
class Resealed:
    """What `reseal` found among the sealed secrets: sealed again with the active key, already sealed with it, and
    sealed with no key of the keyring (the ids)."""

    resealed: int
    current: int
    unreadable: tuple[int, ...]


async def reseal(store: Store, keyring: Keyring) -> Resealed:
    """Seal again with the active key every secret another key of the keyring sealed: once none is left, the other
    keys can go. A secret changed meanwhile (its token deleted) is left as it now is."""
    resealed = current = 0
    unreadable = []
    for token_id, sealed in await store.list_sealed_deploy_tokens():
        found = keyring.opener(sealed, purpose=DEPLOY_TOKEN_PURPOSE)
        if found is None:
            unreadable.append(token_id)
        elif found[0] is keyring.active:
            current += 1
        elif await store.reseal_deploy_token(token_id, sealed, keyring.seal(found[1], purpose=DEPLOY_TOKEN_PURPOSE)):
            resealed += 1
    return Resealed(resealed, current, tuple(unreadable))


def activated_at(key_path: Path) -> float:
    return key_path.stat().st_mtime


def retire_after(key_path: Path) -> float:
    """When the retiring key vouches for nothing alive any more: a refresh token's life after the activation, and a
    day (key_watch.FORGOTTEN_AFTER) for the refresh tokens a process MACed with it until it reloaded the files (10 s
    at most when it can read them; longer for one that could not, or a replica with its own copy, updated late)."""
    return activated_at(key_path) + REFRESH_TOKEN_LIFE + FORGOTTEN_AFTER


async def retire(
    key_path: Path, store: Store, *, wait: bool, now: float | None = None
) -> tuple[SecretBox, Resealed] | None:
    """Step 3: seal again what was sealed with the retiring key since the activation (a process not reloaded yet),
    then delete the key; None when no key is retiring. Refused while a secret would be lost with it, and, unless told
    not to wait, while refresh tokens it MACed may be alive (docker clients that logged in before the activation
    would have to log in again)."""
    retiring = retiring_path(key_path)
    if not retiring.exists():
        return None
    keyring, retired = load_keyring(key_path), _load(retiring, "the retiring key")
    if staged_path(key_path).exists():
        raise RotationError("a key is staged: `gateway encryption-key activate` it before retiring the one before")
    until = retire_after(key_path)
    left = until - (now if now is not None else time.time())
    if wait and left > 0:  # the longer wait first: the shorter one's end would only lead to it
        raise RotationError(
            f"refresh tokens MACed with the retiring key live until {time.strftime('%Y-%m-%d', time.gmtime(until))}"
            f" ({int(left // 86400) + 1} days): docker clients that logged in before the activation would have to log"
            " in again. Retire it then, or now with --now (after a leak of the key: do)"
        )
    # Even with --now: a process still sealing with the old key would seal secrets nothing could open after this.
    _wait(activated_at(key_path), "the key was activated", now)
    active = keyring.active.key_id
    holders = await recent(store)
    behind = lagging(holders, lambda h: h.encryption_keys[:1] == (active,), "still seal with the old key")
    if behind:
        raise RotationError(behind)
    done = await reseal(store, keyring)
    if done.unreadable:
        raise RotationError(
            f"no key of the keyring opens {_count(len(done.unreadable))}: {_ids(done.unreadable)} (sealed with a key"
            " this installation no longer has); delete or recreate those tokens, then retire"
        )
    os.unlink(retiring)
    _sync_folder(key_path.parent)
    return retired, done


def _count(n: int) -> str:
    return f"{n} secret{'s' if n != 1 else ''}"


def _ids(ids: Sequence[int]) -> str:
    return "deploy token" + ("s " if len(ids) > 1 else " ") + ", ".join(str(i) for i in ids[:20])
