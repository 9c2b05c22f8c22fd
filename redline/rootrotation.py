"""Root rotation (guarantee 6, issue 13 point 2; PROTOCOL.md section 5.9 ``ROOT``): a station's
new root key, certified by the old one, TUF-style.

A station's identity is the fingerprint of its first root and stays so: what changes is the key
that certifies its online keys. The statement "station S's root version N + 1 is key R', after key
R" is signed by BOTH R (the root in force, so a thief of R' alone cannot take over) and R' (so the
new root is held by whoever claims it). A key counts once (python-tuf GHSA-r7vq-6425-j94w): R' must
differ from R, so one key can never stand for both signatures.

It travels in a ROOT envelope of S's chain. The peer does not trust it yet: its operator compares
a NEW safety code (``safety_code``) with S's operator by voice, exactly as at pairing, and only
then files a ROOT_CONFIRM naming the ROOT. From the envelope of S that has seen that ROOT_CONFIRM
on, certificates signed by R' are S's (the gate holds the history: ``gate.TrustedLine.root_for``).
This module is only the statement's form and the code; it does no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import nacl.signing

from redline import canonical, identity
from redline.errors import SchemaError
from redline.identity import HEX64

DOMAIN = "root"


@dataclass(frozen=True, kw_only=True)
class RootRotation:
    """The statement, signed under the domain ``root`` by the old root (``prev``) and the new
    (``root``), both as public keys in hex."""

    station: str  # the station's identity: the fingerprint of its FIRST root
    version: int  # the new root's version: 2 for the first rotation, one more each time
    prev: str  # the root in force (public key, 64 hex digits)
    root: str  # the new root (public key, 64 hex digits)
    issued_at: int  # ms since 1970 UTC (the signer's claim)

    def __post_init__(self) -> None:
        if not (HEX64.match(self.station) and HEX64.match(self.prev) and HEX64.match(self.root)):
            raise SchemaError("root rotation: station, prev and root are 64 lowercase hex digits")
        if self.version < 2:
            raise SchemaError("root rotation: the new root's version is 2 or more (the pairing root is version 1)")
        if self.prev == self.root:
            raise SchemaError("root rotation: the new root is the old one (a key counts once)")

    def to_obj(self) -> dict[str, Any]:
        return {"v": 1, "station": self.station, "version": self.version, "prev": self.prev, "root": self.root,
                "issued_at": self.issued_at}  # fmt: skip

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> RootRotation:
        identity.require(obj, "root rotation", {"v": int, "station": str, "version": int, "prev": str, "root": str,
                                                "issued_at": int})  # fmt: skip
        if obj["v"] != 1 or set(obj) != {"v", "station", "version", "prev", "root", "issued_at"}:
            raise SchemaError("root rotation: version 1 has exactly the members of PROTOCOL.md section 5.9")
        return cls(station=obj["station"], version=obj["version"], prev=obj["prev"], root=obj["root"],
                   issued_at=obj["issued_at"])  # fmt: skip

    def encode(self) -> bytes:
        return canonical.encode(self.to_obj())

    def sign(self, old: nacl.signing.SigningKey, new: nacl.signing.SigningKey) -> dict[str, str]:
        """The ``rotation`` member of a ROOT content: the statement and both signatures."""
        if bytes(old.verify_key).hex() != self.prev or bytes(new.verify_key).hex() != self.root:
            raise SchemaError("root rotation: sign with the old root (prev) and the new root (root) it names")
        data = self.encode()
        return {"data": data.hex(), "prev_sig": identity.sign(old, DOMAIN, data).hex(),
                "root_sig": identity.sign(new, DOMAIN, data).hex()}  # fmt: skip


def open_rotation(signed: dict[str, str], *, station: str, current: bytes, version: int) -> RootRotation:
    """The ``rotation`` member of a ROOT, checked against the root in force: ``current`` (its
    public key) at ``version``. Signed by both, each key once; the next version; after ``current``.
    Raises ``SignatureError`` or ``SchemaError``."""
    try:
        data, prev_sig, root_sig = (bytes.fromhex(signed[k]) for k in ("data", "prev_sig", "root_sig"))
    except (KeyError, ValueError, TypeError) as exc:
        raise SchemaError("root rotation: data, prev_sig and root_sig are hex") from exc
    rot = RootRotation.from_obj(canonical.decode_object(data, "root rotation"))
    if rot.station != station:
        raise SchemaError(f"root rotation names station {rot.station[:12]}, not the sender")
    if rot.prev != current.hex():
        raise SchemaError(f"root rotation is after root {rot.prev[:12]}, not the root in force ({current.hex()[:12]})")
    if rot.version != version + 1:
        raise SchemaError(f"root rotation to version {rot.version}: the root in force is version {version}, so the "
                          f"next is {version + 1}")  # fmt: skip
    identity.verify(current, DOMAIN, data, prev_sig, "root rotation (the old root's signature)")
    identity.verify(bytes.fromhex(rot.root), DOMAIN, data, root_sig, "root rotation (the new root's signature)")
    return rot


def digest(signed: dict[str, str]) -> str:
    """The rotation's digest: what the safety code and a ROOT_CONFIRM are bound to."""
    return hashlib.sha256(identity.domain(DOMAIN) + bytes.fromhex(signed["data"])).hexdigest()


def safety_code(line: str, prev: bytes, root: bytes, rotation_digest: str) -> str:
    """The NEW safety code of a root rotation: eight decimal digits read aloud as ``1234-5678``,
    as at pairing, over the line, both roots and the statement. Both operators see it (the
    rotating station when it files the ROOT, the peer when it holds it) and compare by voice."""
    bound = bytes.fromhex(line) + prev + root + bytes.fromhex(rotation_digest)
    h = hashlib.sha256(identity.domain("rootsafety") + bound)
    n = int.from_bytes(h.digest()[:8], "big") % 100_000_000
    return f"{n // 10000:04d}-{n % 10000:04d}"


def content(signed: dict[str, str]) -> dict[str, Any]:
    """A ROOT envelope's content (PROTOCOL.md section 5.9)."""
    return {"rotation": dict(signed)}


def confirm_content(ref: dict[str, Any], rotation_digest: str) -> dict[str, Any]:
    """A ROOT_CONFIRM's content: the peer's ROOT (sender, seq, id) and the rotation's digest."""
    return {"root": dict(ref), "rotation": rotation_digest}
