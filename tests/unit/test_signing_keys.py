"""Registry signing keys: the libtrust kid (distribution's test vector), generation, certificates, loading."""

from __future__ import annotations

import base64
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway import signing_keys
from gateway.errors import ConfigError

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def b64url_int(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def test_libtrust_kid_test_vector() -> None:
    # EC P-256 example key of distribution docs/spec/auth/jwt.md (shared/notes/registry.md §1).
    public = ec.EllipticCurvePublicNumbers(
        b64url_int("m7zUpx3b-zmVE5cymSs64POG9QcyEpJaYCD82-549_Q"),
        b64url_int("dU3biz8sZ_8GPB-odm8Wxz3lNDr1xcAQQPQaOcr1fmc"),
        ec.SECP256R1(),
    ).public_key()
    assert signing_keys.libtrust_kid(public) == "PYYO:TEWU:V7JH:26JV:AQTZ:LJC3:SXVJ:XGHA:34F2:2LAQ:ZRMK:Z7Q6"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_kid_shape_and_uniqueness(algorithm: signing_keys.Algorithm) -> None:
    kids = {signing_keys.libtrust_kid(signing_keys.generate_key(algorithm).public_key()) for _ in range(2)}
    assert len(kids) == 2
    for kid in kids:
        groups = kid.split(":")
        assert len(groups) == 12 and all(len(g) == 4 for g in groups)
        assert set(kid.replace(":", "")) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


@pytest.mark.parametrize(
    ("algorithm", "key_type", "size_or_curve"),
    [("RS256", rsa.RSAPrivateKey, 2048), ("ES256", ec.EllipticCurvePrivateKey, "secp256r1")],
)
def test_ensure_creates_key_and_certificate(
    tmp_path: Path, algorithm: signing_keys.Algorithm, key_type: type, size_or_curve: object
) -> None:
    key_path, cert_path = tmp_path / "keys" / "registry.key", tmp_path / "keys" / "registry.crt"
    created = signing_keys.ensure(key_path, cert_path, algorithm=algorithm, common_name="my-issuer", now=NOW)
    assert created == [key_path, cert_path]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600

    loaded = signing_keys.load(key_path, cert_path, algorithm=algorithm)
    assert isinstance(loaded.private_key, key_type)
    if isinstance(loaded.private_key, rsa.RSAPrivateKey):
        assert loaded.private_key.key_size == size_or_curve
    else:
        assert loaded.private_key.curve.name == size_or_curve
    assert loaded.algorithm == algorithm

    cert = loaded.certificate
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    # The certificate is of this key, signed by itself, named after the issuer, valid ten years from about now.
    assert cert.public_key().public_bytes(der, spki) == loaded.private_key.public_key().public_bytes(der, spki)
    cert.verify_directly_issued_by(cert)
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "my-issuer"
    assert cert.not_valid_before_utc <= NOW < cert.not_valid_after_utc
    assert cert.not_valid_after_utc - NOW == timedelta(days=3650)
    assert loaded.kid == signing_keys.libtrust_kid(cert.public_key())  # type: ignore[arg-type]
    assert base64.b64decode(loaded.x5c[0]) == cert.public_bytes(der)


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_a_signed_jwt_verifies_with_the_certificate(tmp_path: Path, algorithm: signing_keys.Algorithm) -> None:
    key_path, cert_path = tmp_path / "k.pem", tmp_path / "c.pem"
    signing_keys.ensure(key_path, cert_path, algorithm=algorithm, common_name="issuer")
    key = signing_keys.load(key_path, cert_path)
    token = jwt.encode({"sub": "x"}, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})
    assert jwt.get_unverified_header(token)["kid"] == key.kid
    assert jwt.decode(token, key.certificate.public_key(), algorithms=[algorithm]) == {"sub": "x"}  # type: ignore[arg-type]


def test_ensure_is_idempotent_and_never_replaces_a_key(tmp_path: Path) -> None:
    key_path, cert_path = tmp_path / "k.pem", tmp_path / "c.pem"
    signing_keys.ensure(key_path, cert_path, algorithm="RS256", common_name="i")
    before = key_path.read_bytes(), cert_path.read_bytes()
    assert signing_keys.ensure(key_path, cert_path, algorithm="RS256", common_name="i") == []
    assert (key_path.read_bytes(), cert_path.read_bytes()) == before
    # A lost certificate is re-issued for the same key.
    cert_path.unlink()
    assert signing_keys.ensure(key_path, cert_path, algorithm="RS256", common_name="i") == [cert_path]
    assert key_path.read_bytes() == before[0]
    assert signing_keys.load(key_path, cert_path).kid == signing_keys.libtrust_kid(
        serialization.load_pem_private_key(before[0], None).public_key()  # type: ignore[arg-type]
    )


def test_load_finds_the_matching_certificate_in_a_bundle(tmp_path: Path) -> None:
    # Key rotation: the bundle lists an old and a new certificate (registry.md §1).
    old_key, old_cert = tmp_path / "old.key", tmp_path / "old.crt"
    new_key, new_cert = tmp_path / "new.key", tmp_path / "new.crt"
    signing_keys.ensure(old_key, old_cert, algorithm="ES256", common_name="i")
    signing_keys.ensure(new_key, new_cert, algorithm="RS256", common_name="i")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(old_cert.read_bytes() + new_cert.read_bytes())
    assert signing_keys.load(new_key, bundle).certificate == signing_keys.load(new_key, new_cert).certificate
    assert signing_keys.load(old_key, bundle).algorithm == "ES256"


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing key", "registry.signing_key: .* is missing"),
        ("missing certificate", "registry.certificate: .* is missing"),
        ("garbage key", "not an unencrypted PEM private key"),
        ("garbage certificate", "holds no PEM certificate"),
        ("other key's certificate", "no certificate in .* matches"),
        ("wrong algorithm", "registry.algorithm is ES256 but .* is an RS256 key"),
        ("unsupported curve", "unsupported key type"),
    ],
)
def test_load_errors_name_the_key(tmp_path: Path, case: str, message: str) -> None:
    key_path, cert_path = tmp_path / "k.pem", tmp_path / "c.pem"
    signing_keys.ensure(key_path, cert_path, algorithm="RS256", common_name="i")
    algorithm: signing_keys.Algorithm | None = None
    if case == "missing key":
        key_path.unlink()
    elif case == "missing certificate":
        cert_path.unlink()
    elif case == "garbage key":
        write(key_path, b"not a key")
    elif case == "garbage certificate":
        write(cert_path, b"-----BEGIN NOTHING-----\n")
    elif case == "other key's certificate":
        signing_keys.ensure(tmp_path / "o.pem", tmp_path / "o.crt", algorithm="RS256", common_name="i")
        cert_path = tmp_path / "o.crt"
    elif case == "wrong algorithm":
        algorithm = "ES256"
    elif case == "unsupported curve":
        p384 = ec.generate_private_key(ec.SECP384R1())
        pem = p384.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write(key_path, pem)
    with pytest.raises(ConfigError, match=message):
        signing_keys.load(key_path, cert_path, algorithm=algorithm)


def test_ensure_refuses_a_certificate_without_its_key(tmp_path: Path) -> None:
    key_path, cert_path = tmp_path / "k.pem", tmp_path / "c.pem"
    signing_keys.ensure(key_path, cert_path, algorithm="RS256", common_name="i")
    key_path.unlink()
    with pytest.raises(ConfigError, match="exists but its key"):
        signing_keys.ensure(key_path, cert_path, algorithm="RS256", common_name="i")
    assert not key_path.exists()


def test_ensure_refuses_to_mix_algorithms(tmp_path: Path) -> None:
    key_path, cert_path = tmp_path / "k.pem", tmp_path / "c.pem"
    signing_keys.ensure(key_path, cert_path, algorithm="ES256", common_name="i")
    with pytest.raises(ConfigError, match=r"registry\.algorithm is RS256"):
        signing_keys.ensure(key_path, cert_path, algorithm="RS256", common_name="i")


def test_repr_shows_no_key_material(tmp_path: Path) -> None:
    signing_keys.ensure(tmp_path / "k", tmp_path / "c", algorithm="ES256", common_name="i")
    key = signing_keys.load(tmp_path / "k", tmp_path / "c")
    assert repr(key) == f"SigningKey(alg=ES256, kid={key.kid})"
