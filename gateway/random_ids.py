"""Random identifiers (request ids, JWT ids) cut from a pool of operating-system randomness: one getrandom call per
4 KiB instead of one per request, a system call that drops and retakes the GIL twice on the /jwt/auth hot path.

Secrets (tokens, passwords, session ids) keep calling `secrets` directly: a pooled byte must never be a secret.
"""

from __future__ import annotations

import os
import threading
import uuid

POOL_BYTES = 4096


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes = b""
        self._at = 0

    def take(self, count: int) -> bytes:
        with self._lock:
            if self._at + count > len(self._bytes):
                self._bytes, self._at = os.urandom(max(POOL_BYTES, count)), 0
            taken = self._bytes[self._at : self._at + count]
            self._at += count
            return taken

    def forget(self) -> None:
        """After a fork: a child that kept its parent's pool would repeat the ids of the parent and its siblings."""
        self._lock = threading.Lock()
        self._bytes, self._at = b"", 0


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.forget)


def hex_id(nbytes: int) -> str:
    return _pool.take(nbytes).hex()


def uuid4() -> str:
    """A random (version 4) UUID, as GitLab's SecureRandom.uuid `jti`."""
    return str(uuid.UUID(bytes=_pool.take(16), version=4))
