"""The embedded package file store (generic and Maven without a backend): content-addressed blobs plus one small
pointer file per package path, both published by an atomic rename, so a reader sees a whole file or none.

Layout under storage.data_dir/packages (docs/packages.md, "Embedded store"):
  blobs/<sha256[:2]>/<sha256>                           the bytes, written once
  <format>/<project_id>/<segments...>/.f.<file name>   pointer: JSON {sha256, sha1, md5, size, stored_at}
  tmp/                                                  uploads in progress (same file system: rename is atomic)
Stored names never start with '.', so pointers and temporary files cannot collide with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.errors import Conflict

POINTER_PREFIX = ".f."
READ_CHUNK = 1024 * 1024
WRITE_BATCH = 1024 * 1024


@dataclass(frozen=True)
class StoredFile:
    blob: Path
    size: int
    sha256: str
    sha1: str | None
    md5: str | None
    stored_at: str


@dataclass(frozen=True)
class PutResult:
    file: StoredFile
    created: bool  # False when the same bytes were already stored at that path


class _Sink:
    """A temporary file and its running digests; written from a worker thread (hashing releases the GIL)."""

    def __init__(self, path: Path, algorithms: Sequence[str]) -> None:
        self.path = path
        self.file = path.open("xb")
        self.hashes = {name: hashlib.new(name, usedforsecurity=False) for name in algorithms}
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        for h in self.hashes.values():
            h.update(chunk)
        self.size += len(chunk)

    def finish(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class PackageStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _pointer(self, fmt: str, project_id: int, segments: Sequence[str]) -> Path:
        return self.root.joinpath(fmt, str(project_id), *segments[:-1], POINTER_PREFIX + segments[-1])

    def _blob(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    def _tmp(self, suffix: str) -> Path:
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / f"{secrets.token_hex(12)}.{suffix}"

    def get(self, fmt: str, project_id: int, segments: Sequence[str]) -> StoredFile | None:
        try:
            meta: dict[str, Any] = json.loads(self._pointer(fmt, project_id, segments).read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            return None
        return StoredFile(
            self._blob(meta["sha256"]),
            meta["size"],
            meta["sha256"],
            meta.get("sha1"),
            meta.get("md5"),
            meta["stored_at"],
        )

    async def put(
        self,
        fmt: str,
        project_id: int,
        segments: Sequence[str],
        chunks: AsyncIterator[bytes],
        *,
        mutable: bool,
        algorithms: Sequence[str] = ("sha256",),
    ) -> PutResult:
        """Stream `chunks` to disk, then publish. Immutable paths keep their first content: the same bytes again
        succeed (created=False), different bytes raise Conflict. If `chunks` raises (client gone, too large),
        nothing becomes visible and the temporary file is removed."""
        sink = _Sink(self._tmp("part"), ("sha256", *[a for a in algorithms if a != "sha256"]))
        # One write in flight while the next chunks are read: disk and digests overlap with the network. Chunks
        # are gathered to WRITE_BATCH first so a thread hop costs little per byte.
        pending: asyncio.Future[None] | None = None
        batch: list[bytes] = []
        batched = 0
        try:
            async for chunk in chunks:
                batch.append(chunk)
                batched += len(chunk)
                if batched < WRITE_BATCH:
                    continue
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(asyncio.to_thread(sink.write, b"".join(batch)))
                batch, batched = [], 0
            if pending is not None:
                await pending
            if batch:
                await asyncio.to_thread(sink.write, b"".join(batch))
            await asyncio.to_thread(sink.finish)
        except BaseException:
            if pending is not None:
                with contextlib.suppress(BaseException):
                    await pending  # the worker thread must be done with the file before it is removed
            sink.discard()
            raise
        digests = {name: h.hexdigest() for name, h in sink.hashes.items()}
        blob = self._blob(digests["sha256"])
        try:
            blob.parent.mkdir(parents=True, exist_ok=True)
            if blob.exists():
                sink.discard()  # the same bytes are already stored (content addressing)
            else:
                os.replace(sink.path, blob)
        except BaseException:
            sink.discard()
            raise
        stored = StoredFile(
            blob, sink.size, digests["sha256"], digests.get("sha1"), digests.get("md5"), datetime.now(UTC).isoformat()
        )
        meta = {
            "sha256": stored.sha256,
            "sha1": stored.sha1,
            "md5": stored.md5,
            "size": stored.size,
            "stored_at": stored.stored_at,
        }
        pointer = self._pointer(fmt, project_id, segments)
        pointer.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp("ptr")
        with tmp.open("xb") as f:
            f.write(json.dumps(meta).encode())
            f.flush()
            os.fsync(f.fileno())
        try:
            if mutable:
                os.replace(tmp, pointer)
                return PutResult(stored, True)
            try:
                # link() refuses an existing target: of two concurrent uploads exactly one publishes.
                os.link(tmp, pointer)
                return PutResult(stored, True)
            except FileExistsError:
                existing = self.get(fmt, project_id, segments)
                if existing is not None and existing.sha256 == stored.sha256:
                    return PutResult(existing, False)
                raise Conflict("already exists with different content") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    @staticmethod
    async def digest(stored: StoredFile, algorithm: str) -> str:
        """A checksum of a stored file: recorded ones at once, others (sha512) computed by reading the blob."""
        recorded = {"sha256": stored.sha256, "sha1": stored.sha1, "md5": stored.md5}.get(algorithm)
        if recorded:
            return recorded

        def compute() -> str:
            h = hashlib.new(algorithm, usedforsecurity=False)
            with stored.blob.open("rb") as f:
                while chunk := f.read(READ_CHUNK):
                    h.update(chunk)
            return h.hexdigest()

        return await asyncio.to_thread(compute)
