"""The package files of a backup: pointers before blobs, unfinished uploads left out, and blobs hard-linked to an
earlier backup's where it holds them, copied where a link cannot be made."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from gateway import backup

KEPT, NEW = hashlib.sha256(b"kept").hexdigest(), hashlib.sha256(b"new").hexdigest()


def store_with(root: Path, blobs: dict[str, bytes]) -> None:
    """Blobs named by the SHA-256 of what they should hold (`content` may be damaged)."""
    for name, content in blobs.items():
        (root / "blobs" / name[:2]).mkdir(parents=True, exist_ok=True)
        (root / "blobs" / name[:2] / name).write_bytes(content)
        pointer = root / "generic" / "1" / f".f.{name}"
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.write_text(name)
    (root / "tmp").mkdir(exist_ok=True)
    (root / "tmp" / "upload.part").write_bytes(b"unfinished")


@pytest.mark.parametrize(
    ("link_fails", "earlier", "linked"),
    [
        (None, b"kept", 1),
        (errno.EXDEV, b"kept", 0),  # the earlier backup on another file system
        (errno.EPERM, b"kept", 0),  # a file system without hard links
        (None, b"kepT", 0),  # damaged in place, same size: copied anew, never linked (found by a review)
    ],
)
def test_blobs_are_linked_or_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link_fails: int | None, earlier: bytes, linked: int
) -> None:
    store_with(tmp_path / "store", {KEPT: b"kept", NEW: b"new"})
    store_with(tmp_path / "earlier", {KEPT: earlier})
    if link_fails is not None:

        def refuse(*_: object) -> None:
            raise OSError(link_fails, os.strerror(link_fails))

        monkeypatch.setattr(os, "link", refuse)
    filed = backup._copy_packages(tmp_path / "store", tmp_path / "copy", tmp_path / "earlier")
    assert (filed.files, filed.linked) == (4, linked)
    copy = tmp_path / "copy"
    kept, new = f"blobs/{KEPT[:2]}/{KEPT}", f"blobs/{NEW[:2]}/{NEW}"
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file()) == sorted(
        [kept, new, f"generic/1/.f.{KEPT}", f"generic/1/.f.{NEW}"]
    )
    assert (copy / kept).read_bytes() == b"kept" and (copy / new).read_bytes() == b"new"
    same = (copy / kept).stat().st_ino == (tmp_path / "earlier" / kept).stat().st_ino
    assert same == bool(linked)


def test_symbolic_links_are_never_followed(tmp_path: Path) -> None:
    """Found by a review: Path.rglob followed `packages/x -> elsewhere` out of the tree (a backup's into a restore)."""
    store_with(tmp_path / "store", {KEPT: b"kept"})
    outside = tmp_path / "outside" / "sub"
    outside.mkdir(parents=True)
    (outside / "id_rsa").write_bytes(b"secret")
    (tmp_path / "store" / "generic2").symlink_to(tmp_path / "outside")
    (tmp_path / "store" / "generic" / "inner").symlink_to(tmp_path / "outside")
    (tmp_path / "store" / "generic" / "file-link").symlink_to(outside / "id_rsa")
    filed = backup._copy_packages(tmp_path / "store", tmp_path / "copy")
    copied = sorted(str(p.relative_to(tmp_path / "copy")) for p in (tmp_path / "copy").rglob("*") if p.is_file())
    assert filed.files == 2 and not any("id_rsa" in c for c in copied), copied
    problems = backup._check_packages(tmp_path / "store", lambda _: None)
    assert sorted(p.split(" ")[0].rsplit("/", 1)[-1] for p in problems if "symbolic link" in p) == [
        "file-link",
        "generic2",
        "inner",
    ]
