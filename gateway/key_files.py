"""Private key files (the encryption key, the registry's signing key): read, with a warning when others than their
owner may read them, as ssh warns of an unprotected private key (found by a review: a restore or a copy through an
archive tool left them 0644, and nothing said so).
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

log = logging.getLogger("gateway.keys")
_warned: set[tuple[str, int]] = set()


def read_private(path: Path, setting: str) -> bytes:
    """The file's bytes; OSError as Path.read_bytes raises it."""
    data = path.read_bytes()
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077 and (str(path), mode) not in _warned:
        _warned.add((str(path), mode))  # once per file and mode in a process: key files are read again on reloads
        log.warning(
            "%s: %s is readable by others than its owner (mode %04o): `chmod 600 %s`", setting, path, mode, path
        )
    return data
