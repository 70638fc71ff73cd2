"""Build an OCI image layout by hand (no docker): one random, incompressible gzip layer (registry.md §7)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path


def _blob(root: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / "sha256" / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def build_image(
    root: Path, *, tag: str = "v1", size: int = 64 * 1024, seed: bytes | None = None, compresslevel: int = 1
) -> str:
    """Write an image layout with a layer of `size` random bytes to `root`; return the manifest digest."""
    payload = seed * (size // len(seed) + 1) if seed else os.urandom(size)
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w") as tar:
        info = tarfile.TarInfo("payload.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(payload[:size]))
    raw_tar = tar_buffer.getvalue()
    layer = gzip.compress(raw_tar, compresslevel=compresslevel, mtime=0)
    layer_digest, layer_size = _blob(root, layer)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(raw_tar).hexdigest()}"]},
        }
    ).encode()
    config_digest, config_size = _blob(root, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}
            ],
        }
    ).encode()
    manifest_digest, manifest_size = _blob(root, manifest)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (root / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": manifest_digest,
                        "size": manifest_size,
                        "annotations": {"org.opencontainers.image.ref.name": tag},
                    }
                ],
            }
        )
    )
    return manifest_digest
