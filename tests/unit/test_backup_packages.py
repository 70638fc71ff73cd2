"""The package files of a backup: pointers before blobs, unfinished uploads left out, and blobs hard-linked to an
earlier backup's where it holds them, copied where a link cannot be made."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from gateway import backup


def store_with(root: Path, blobs: dict[str, bytes]) -> None:
    for name, content in blobs.items():
        (root / "blobs" / name[:2]).mkdir(parents=True, exist_ok=True)
        (root / "blobs" / name[:2] / name).write_bytes(content)
        pointer = root / "generic" / "1" / f".f.{name}"
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.write_text(name)
    (root / "tmp").mkdir(exist_ok=True)
    (root / "tmp" / "upload.part").write_bytes(b"unfinished")


@pytest.mark.parametrize(
    ("link_fails", "linked"),
    [
        (None, 1),
        (errno.EXDEV, 0),  # the earlier backup on another file system
        (errno.EPERM, 0),  # a file system without hard links
    ],
)
def test_blobs_are_linked_or_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link_fails: int | None, linked: int
) -> None:
    store_with(tmp_path / "store", {"aa11": b"kept", "bb22": b"new"})
    store_with(tmp_path / "earlier", {"aa11": b"kept"})
    if link_fails is not None:

        def refuse(*_: object) -> None:
            raise OSError(link_fails, os.strerror(link_fails))

        monkeypatch.setattr(os, "link", refuse)
    filed = backup._copy_packages(tmp_path / "store", tmp_path / "copy", tmp_path / "earlier")
    assert (filed.files, filed.linked) == (4, linked)
    copy = tmp_path / "copy"
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file()) == [
        "blobs/aa/aa11",
        "blobs/bb/bb22",
        "generic/1/.f.aa11",
        "generic/1/.f.bb22",
    ]
    assert (copy / "blobs/aa/aa11").read_bytes() == b"kept" and (copy / "blobs/bb/bb22").read_bytes() == b"new"
    same = (copy / "blobs/aa/aa11").stat().st_ino == (tmp_path / "earlier/blobs/aa/aa11").stat().st_ino
    assert same == bool(linked)
