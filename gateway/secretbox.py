"""AES-256-GCM sealing of the few secrets that must be recovered (the `gitlab-deploy-token` → CI variables).

The key lives in a file (storage.encryption_key) created by `gateway init` with mode 0600.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway import key_files
from gateway.errors import ConfigError

KEY_BYTES = 32
NONCE_BYTES = 12
VERSION = b"\x01"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"storage.encryption_key: expected {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self._key = key
        # Names the key in logs and `gateway encryption-key show` without revealing it: a derived key's first bytes.
        self.key_id = self.derive(b"deploy-token-gateway key id").hex()[:16]

    def derive(self, purpose: bytes) -> bytes:
        """A 32-byte key of its own for `purpose` (HKDF-SHA256, RFC 5869): one secret file, keys that never
        double for one another."""
        return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=purpose).derive(self._key)

    def __repr__(self) -> str:
        return "SecretBox(<key redacted>)"

    def seal(self, plaintext: str, *, purpose: bytes) -> bytes:
        """version || nonce || ciphertext+tag; `purpose` is bound as associated data."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, plaintext.encode("utf-8"), purpose)

    def open(self, sealed: bytes, *, purpose: bytes) -> str | None:
        """The plaintext, or None when the data was sealed with another key or tampered with."""
        if len(sealed) < 1 + NONCE_BYTES + 16 or sealed[:1] != VERSION:
            return None
        nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, purpose).decode("utf-8")
        except InvalidTag:
            return None


def ensure_key_file(path: Path) -> bool:
    """Create a new random key file (0600) if missing; True when created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(KEY_BYTES))
    return True


def load(path: Path) -> SecretBox:
    try:
        return SecretBox(key_files.read_private(path, "storage.encryption_key"))
    except FileNotFoundError:
        raise ConfigError(f"storage.encryption_key: key file {path} is missing (run `gateway init`)") from None
    except OSError as exc:
        raise ConfigError(f"storage.encryption_key: cannot read {path}: {exc}") from None
