"""Rotation of the registry signing key without a moment in which the registry refuses the gateway's tokens:
stage a new key beside the active one, activate it once the registry trusts both, retire the old certificate.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway import random_ids, signing_keys
from gateway.config import RegistryConfig
from gateway.errors import GatewayError
from gateway.key_watch import CHECK_INTERVAL, SETTLE, lagging
from gateway.signing_keys import Algorithm, SigningKey
from gateway.store.base import KeyHolder

# How the registry is asked whether it trusts a key: the longest wait for its answer, and the probe token's life.
PROBE_TIMEOUT = 10.0
PROBE_TTL = 60


class RotationError(GatewayError):
    """A step of the rotation that would break token verification, or that the files do not allow (exit 1)."""


@dataclass(frozen=True)
class Certificate:
    """One certificate of the bundle (registry.certificate, the registry's rootcertbundle) and whose key it is."""

    kid: str
    algorithm: Algorithm
    not_after: datetime
    role: str  # "active" (registry.signing_key's), "staged" (the next key's) or "retiring" (neither: an old key's)


def files(config: RegistryConfig) -> tuple[Path, Path, Path]:
    """What a server watches (key_watch.py): the active key, its certificate bundle, the staged key."""
    key_path = Path(config.signing_key)
    return key_path, Path(config.certificate), staged_path(key_path)


def staged_path(key_path: Path) -> Path:
    """Where the next key waits until it is activated: beside the active one, so it is on the same volume and
    in the same backup, and the final rename is atomic."""
    return key_path.with_name(key_path.name + ".next")


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _bundle(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except FileNotFoundError:
        raise RotationError(f"registry.certificate: {path} is missing (run `gateway init`)") from None
    except ValueError:
        raise RotationError(f"registry.certificate: {path} holds no PEM certificate") from None


def _write_bundle(path: Path, certs: Sequence[x509.Certificate]) -> None:
    """Replace the bundle in one rename: a registry (re)starting meanwhile reads the old bundle or the new one,
    never half of one, which would make it exit or trust nothing."""
    data = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, path.stat().st_mode & 0o777)  # the registry's user reads it as before
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _loaded(key_path: Path, cert_path: Path, what: str) -> SigningKey:
    try:
        return signing_keys.load(key_path, cert_path)
    except GatewayError as exc:
        raise RotationError(f"{what}: {exc}") from None


def certificates(config: RegistryConfig) -> list[Certificate]:
    """The bundle's certificates, in its order, each with the role of its key."""
    key_path, cert_path = Path(config.signing_key), Path(config.certificate)
    roles = {_spki(_loaded(key_path, cert_path, "the active key").certificate): "active"}
    if (staged := staged_path(key_path)).exists():
        roles[_spki(_loaded(staged, cert_path, "the staged key").certificate)] = "staged"
    return [
        Certificate(
            signing_keys.libtrust_kid(cert.public_key()),  # type: ignore[arg-type]  # RSA or P-256: load() checked
            signing_keys.algorithm_of(cert.public_key()),  # type: ignore[arg-type]
            cert.not_valid_after_utc,
            roles.get(_spki(cert), "retiring"),
        )
        for cert in _bundle(cert_path)
    ]


def stage(config: RegistryConfig, algorithm: Algorithm, now: datetime) -> SigningKey:
    """Make the next key (mode 0600) and add its certificate to the bundle; the active key keeps signing.

    The registry reads its rootcertbundle only when it starts (registry.md §1): restarted now, it trusts both keys,
    so the switch that follows needs no moment in which either one is refused."""
    key_path, cert_path = Path(config.signing_key), Path(config.certificate)
    _loaded(key_path, cert_path, "the active key")  # files that do not work now are not rotated
    staged = staged_path(key_path)
    if staged.exists():
        raise RotationError(
            f"a key is staged already ({staged}): activate it (`gateway registry-key activate`), or delete that file"
            " to stage another"
        )
    key = signing_keys.generate_key(algorithm)
    cert = signing_keys.self_signed_certificate(key, config.issuer, now)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    signing_keys.write_private(staged, pem)
    try:
        _write_bundle(cert_path, [*_bundle(cert_path), cert])
    except BaseException:
        staged.unlink()
        raise
    return SigningKey(key, cert)


async def trusted(config: RegistryConfig, key: SigningKey, now: datetime) -> tuple[bool, str]:
    """Whether the registry at registry.backend accepts a token signed by `key`: `GET /v2/` with a token that
    grants nothing, as `docker login` sends. 200: trusted; 401: not (its error says why)."""
    iat = int(now.timestamp())
    claims = {
        "iss": config.issuer,
        "aud": config.service,
        "sub": "gateway-key-rotation",
        "iat": iat,
        "nbf": iat - 10,
        "exp": iat + PROBE_TTL,
        "jti": random_ids.uuid4(),
        "access": [],
    }
    token = key.sign(claims, include_x5c=config.include_x5c)
    url = config.backend.rstrip("/") + "/v2/"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT)) as session,
            session.get(url, headers={"Authorization": f"Bearer {token}"}, allow_redirects=False) as response,
        ):
            body = (await response.content.read(2000)).decode("utf-8", "replace")
            return response.status == 200, f"HTTP {response.status} {body.strip()}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise RotationError(
            f"cannot ask the registry at {url} whether it trusts the new key ({exc or type(exc).__name__});"
            " check registry.backend, or pass --no-check once you know it does"
        ) from None


async def activate(config: RegistryConfig, *, check: bool, now: datetime) -> SigningKey:
    """Make the staged key the active one. First, unless told not to, the registry must show that it trusts it:
    activated too early, every token the gateway signs would be refused until the registry restarted."""
    key_path, cert_path = Path(config.signing_key), Path(config.certificate)
    staged = staged_path(key_path)
    if not staged.exists():
        raise RotationError(f"no key is staged ({staged} is missing): `gateway registry-key rotate` first")
    key = _loaded(staged, cert_path, "the staged key")
    if check and not config.backend:
        raise RotationError(
            "registry.backend is not set, so the registry cannot be asked whether it trusts the staged key: restart"
            " the registry so that it reads the bundle, then pass --no-check"
        )
    if check:
        accepted, answer = await trusted(config, key, now)
        if not accepted:
            raise RotationError(
                f"the registry does not trust the staged key yet ({answer}): restart it so that it reads"
                f" {cert_path} again, then activate"
            )
    # The moment of activation, which `retire` waits a token lifetime after: set before the rename, so the key
    # arrives with it (a crash between the two would have left the staging time).
    os.utime(staged)
    os.replace(staged, key_path)  # the old private key is gone: what a rotation after a leak needs
    return key


def retire(
    config: RegistryConfig, *, wait: bool, holders: Sequence[KeyHolder] = (), now: float | None = None
) -> list[Certificate]:
    """Drop from the bundle every certificate whose key is neither active nor staged; the ones dropped.

    Tokens the old key signed are refused once the registry restarts with the smaller bundle: not before the last of
    them expired (registry.token_ttl after the activation), unless told not to wait."""
    key_path, cert_path = Path(config.signing_key), Path(config.certificate)
    found = certificates(config)
    old = [c for c in found if c.role == "retiring"]
    if not old:
        return []
    waited = (now if now is not None else time.time()) - key_path.stat().st_mtime
    if wait and waited < config.token_ttl:  # the longer wait first: the shorter one's end would only lead to it
        raise RotationError(
            f"the key was activated {int(waited)} s ago: tokens the old one signed live registry.token_ttl"
            f" ({config.token_ttl} s); retire in {int(config.token_ttl - waited) + 1} s, or pass --now"
        )
    if waited < SETTLE:
        # Even with --now: a process still signing with the old key would hand out tokens the registry, restarted
        # with the smaller bundle, refuses. Every process loads the activated key within key_watch.CHECK_INTERVAL.
        raise RotationError(
            f"the key was activated {int(waited)} s ago: every gateway process loads the key files within"
            f" {int(CHECK_INTERVAL)} s (at once on SIGHUP); retire in {int(SETTLE - waited) + 1} s"
        )
    active = next((c.kid for c in found if c.role == "active"), "")
    # `holders`: the processes running (key_watch.recent). One signing with the old key (a new algorithm not yet
    # restarted into, a key file it cannot read) would hand out tokens the registry refuses after this.
    behind = lagging(holders, lambda h: h.registry_kid == active, "do not sign with the active key")
    if behind:
        raise RotationError(behind)
    kept = [cert for cert, c in zip(_bundle(cert_path), found, strict=True) if c.role != "retiring"]
    _write_bundle(cert_path, kept)
    return old
