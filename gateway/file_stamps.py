"""A file's stamp: what changes when it is written, replaced, created, deleted or given another owner or mode. Key
files (key_watch.py) and the TLS pair (tls.py) are reloaded when theirs changes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

Stamp = tuple[tuple[int, int, int, int] | None, ...]


def stamp(paths: Sequence[Path]) -> Stamp:
    """Inode (a rename over the file, as ACME clients, Kubernetes and the key steps do), size, mtime, and ctime
    (`chown gateway` after a step run as root must be noticed); None for a missing file."""
    found: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            found.append(None)
        else:
            found.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(found)
