"""Keys, fingerprints and key certificates.

A station has three keys (DESIGN.md guarantee 6):
- the **root key**: offline-capable; pinned by the peer at pairing; signs only key certificates;
- the **signing key**: online; signs envelopes, receipts and checkpoints;
- the **TLS key**: online; authenticates the station's TLS connections (self-signed X.509).

The root certifies the other two with a key certificate (canonical JSON + Ed25519), so the peer
trusts them only through the pinned root. Every signature carries a key id from day one.

Ed25519 is libsodium's (PyNaCl): ``crypto_sign_verify_detached`` rejects small-order public keys
and R values, non-canonical S (S >= L) and non-canonical encodings of A and R. docs/PROTOCOL.md
names this rule because a peer whose verifier differs could accept what we reject.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redline import canonical
from redline.errors import ConfigError, SchemaError, SignatureError
from redline.firstuse import dataclass_on_first_use

if TYPE_CHECKING:  # PyNaCl loads with the first key used: 'redline log' signs and verifies nothing
    import nacl.signing

HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")
HEX32 = re.compile(r"\A[0-9a-f]{32}\Z")


def is_hex(value: str, size: int) -> bool:
    """Whether ``value`` is ``size`` bytes as lower-case hex (what redline writes), nothing else."""
    return len(value) == 2 * size and all(c in "0123456789abcdef" for c in value)


DOMAIN_KEYCERT = "keycert"
ROLES = ("signing", "tls")


def domain(kind: str) -> bytes:
    """Domain separation prefix: every signature says what it is a signature of."""
    return b"redline/1/" + kind.encode("ascii") + b"\x00"


def fingerprint(public_key: bytes) -> str:
    """Station fingerprint: hex SHA-256 of the raw 32-byte root public key."""
    return hashlib.sha256(public_key).hexdigest()


def key_id(public_key: bytes) -> str:
    """Key id: first 16 bytes (hex) of SHA-256 of the raw public key."""
    return hashlib.sha256(public_key).hexdigest()[:32]


def show_fingerprint(fp: str) -> str:
    """Fingerprint grouped for reading aloud: the first 32 hex digits in groups of four."""
    return " ".join(fp[i : i + 4] for i in range(0, 32, 4))


def sign(key: nacl.signing.SigningKey, kind: str, data: bytes) -> bytes:
    return key.sign(domain(kind) + data).signature


def verify_raw(public_key: bytes, message: bytes, signature: bytes, what: str = "signature") -> None:
    """Strict Ed25519 verification (libsodium ``crypto_sign_verify_detached``) of raw bytes."""
    if len(signature) != 64:
        raise SignatureError(f"{what}: signature must be 64 bytes, got {len(signature)}")
    try:
        _verify_key(public_key).verify(message, signature)
    except Exception as exc:
        import nacl.exceptions  # loaded by now (with the key); nothing to import on the path that verifies

        if isinstance(exc, (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError)):
            raise SignatureError(f"{what}: signature does not verify under key {key_id(public_key)}") from exc
        raise


@functools.lru_cache(maxsize=256)
def _verify_key(public_key: bytes) -> nacl.signing.VerifyKey:
    import nacl.signing

    return nacl.signing.VerifyKey(public_key)


def verify(public_key: bytes, kind: str, data: bytes, signature: bytes, what: str) -> None:
    """Strict Ed25519 verification of ``signature`` over the domain-separated data."""
    verify_raw(public_key, domain(kind) + data, signature, what)


def require(obj: dict[str, Any], what: str, fields: Mapping[str, type | tuple[type, ...]]) -> None:
    """Check that ``obj`` has exactly ``fields`` with the given types (bool is not an int)."""
    if set(obj) != set(fields):
        missing = sorted(set(fields) - set(obj))
        extra = sorted(set(obj) - set(fields))
        raise SchemaError(f"{what}: missing fields {missing}, unexpected fields {extra}")
    for name, typ in fields.items():
        value = obj[name]
        if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise SchemaError(f"{what}: field {name!r} must be an integer")
        if typ is not int and not isinstance(value, typ):
            raise SchemaError(f"{what}: field {name!r} has the wrong type")


@dataclass_on_first_use(frozen=True, kw_only=True)
class KeyCert:
    """A root key's statement that ``key`` is the station's current ``role`` key."""

    station: str  # root fingerprint
    name: str
    role: str
    key: str  # signing: hex raw public key; tls: hex SHA-256 of the certificate's SPKI DER
    key_id: str
    issued_at: int  # ms since the Unix epoch, UTC

    def __post_init__(self) -> None:
        if not HEX64.match(self.station) or not HEX64.match(self.key):
            raise SchemaError("key certificate: station and key must be 64 lowercase hex digits")
        if self.role not in ROLES:
            raise SchemaError(f"key certificate: role must be one of {ROLES}")
        if not HEX32.match(self.key_id):
            raise SchemaError("key certificate: key id must be 32 lowercase hex digits")
        if not 0 < len(self.name) <= 64:
            raise SchemaError("key certificate: station name must be 1..64 characters")

    def to_obj(self) -> dict[str, Any]:
        return {
            "v": 1,
            "station": self.station,
            "name": self.name,
            "role": self.role,
            "key": self.key,
            "key_id": self.key_id,
            "issued_at": self.issued_at,
        }

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> KeyCert:
        require(
            obj,
            "key certificate",
            {"v": int, "station": str, "name": str, "role": str, "key": str, "key_id": str, "issued_at": int},
        )
        if obj["v"] != 1:
            raise SchemaError(f"key certificate: version {obj['v']} is not supported")
        return cls(**{k: v for k, v in obj.items() if k != "v"})


@dataclass_on_first_use(frozen=True)
class SignedCert:
    """A key certificate as bytes, with the root's signature: what travels and is stored."""

    data: bytes
    sig: bytes

    def verify(self, root_public: bytes, *, station: str | None = None) -> KeyCert:
        """Signed by ``root_public`` and naming ``station``: the station's identity, which is the
        fingerprint of its first root (the default), also after a root rotation (section 5.9)."""
        verify(root_public, DOMAIN_KEYCERT, self.data, self.sig, "key certificate")
        cert = KeyCert.from_obj(canonical.decode_object(self.data, "key certificate"))
        if cert.station != (station or fingerprint(root_public)):
            raise SignatureError("key certificate names a different station than the root that signed it")
        if cert.role == "signing" and cert.key_id != key_id(bytes.fromhex(cert.key)):
            raise SchemaError("key certificate: key id does not match the key")
        return cert

    def to_obj(self) -> dict[str, str]:
        return {"data": self.data.hex(), "sig": self.sig.hex()}

    @classmethod
    def from_obj(cls, obj: Any) -> SignedCert:
        try:
            return cls(bytes.fromhex(obj["data"]), bytes.fromhex(obj["sig"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError("key certificate: expected hex fields 'data' and 'sig'") from exc


def certify(root: nacl.signing.SigningKey, cert: KeyCert) -> SignedCert:
    data = canonical.encode(cert.to_obj())
    return SignedCert(data, sign(root, DOMAIN_KEYCERT, data))


def write_secret(path: Path, data: bytes) -> None:
    """Write a key file readable by its owner only (0600), durably."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_secret(path: Path) -> bytes:
    """Read a key file, refusing one that others can read."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError as exc:
        raise ConfigError(f"key file {path} is missing; was this station initialised with 'redline init'?") from exc
    if mode & 0o077:
        raise ConfigError(f"key file {path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
    return path.read_bytes()


def load_signing_key(path: Path) -> nacl.signing.SigningKey:
    import nacl.exceptions
    import nacl.signing

    raw = read_secret(path)
    try:
        return nacl.signing.SigningKey(bytes.fromhex(raw.decode("ascii").strip()))
    except (ValueError, UnicodeDecodeError, nacl.exceptions.ValueError) as exc:
        raise ConfigError(f"key file {path} does not hold a 32-byte Ed25519 seed in hex") from exc


def new_signing_key(path: Path) -> nacl.signing.SigningKey:
    import nacl.signing

    key = nacl.signing.SigningKey.generate()
    write_secret(path, key.encode().hex().encode("ascii") + b"\n")
    return key


def spki_hash(cert_der: bytes) -> str:
    """Hex SHA-256 of a certificate's SubjectPublicKeyInfo: what a station pins for TLS."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    cert = x509.load_der_x509_certificate(cert_der)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def new_tls_identity(key_path: Path, cert_path: Path, name: str) -> bytes:
    """Create an Ed25519 TLS key and a self-signed certificate; return the certificate as DER.

    The certificate's own signature means nothing to a peer: trust comes from the root key's
    certificate over its SPKI hash, checked against the pinned root (see transport.py).
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.x509.oid import NameOID

    key = Ed25519PrivateKey.generate()
    # The key's own hash is in the name: a peer trusts pinned certificates as anchors looked up by
    # subject, so two stations (or two keys of one station) must never share a subject.
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tag = hashlib.sha256(spki).hexdigest()[:16]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"redline station {name} {tag}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, None)
    )
    write_secret(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert.public_bytes(serialization.Encoding.DER)
