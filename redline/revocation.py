"""Revocation of a station's signing key after a compromise (guarantee 6, PROTOCOL.md section 5.9
``REVOKE``): the root's signed statement, and the REVOKE content that carries it.

A stolen signing key can sign anything until the peer stops trusting it. The station's root (kept
offline, so not stolen with it) signs a **revocation**: "key K of station S on line L is revoked;
the last checkpoint both sides co-signed before the compromise is number N, digest D". It travels
in a REVOKE envelope together with that checkpoint's proposal and countersignature (so any
verifier can check, from the REVOKE alone and the chain it holds, that the checkpoint was co-signed
by both and covers exactly that prefix) and, when K still signs the chain, the root's certificate
over the next signing key (the REVOKE then also rotates, exactly like a KEY).

The gate (``gate.py``) checks all of it and flags every envelope of S's chain after the
checkpoint's size that K signed as "signed by a revoked key", live, in ``verify`` and in bundles.
This module is only the statement's form; it does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nacl.signing

from redline import canonical, identity
from redline.errors import SchemaError
from redline.identity import HEX32, HEX64
from redline.statements import Checkpoint, Signed

DOMAIN = "revoke"
MAX_REASON = 500


@dataclass(frozen=True, kw_only=True)
class Revocation:
    """The root's statement (signed under the domain ``revoke``)."""

    station: str  # fingerprint of the root that signs it
    line: str
    key: str  # key id of the revoked signing key
    checkpoint_n: int
    checkpoint_digest: str
    reason: str
    issued_at: int  # ms since 1970 UTC (the signer's claim)

    def __post_init__(self) -> None:
        if not HEX64.match(self.station) or not HEX32.match(self.key):
            raise SchemaError("revocation: station must be 64 and key 32 lowercase hex digits")
        if not HEX32.match(self.line):
            raise SchemaError("revocation: line must be a line id (32 lowercase hex digits)")
        if not HEX64.match(self.checkpoint_digest) or self.checkpoint_n < 1:
            raise SchemaError("revocation: the checkpoint is a number from 1 and a 64-hex-digit digest")
        if not 0 < len(self.reason) <= MAX_REASON:
            raise SchemaError(f"revocation: the reason is 1 to {MAX_REASON} characters")

    def to_obj(self) -> dict[str, Any]:
        return {
            "v": 1, "station": self.station, "line": self.line, "key": self.key,
            "checkpoint": {"n": self.checkpoint_n, "digest": self.checkpoint_digest},
            "reason": self.reason, "issued_at": self.issued_at,
        }  # fmt: skip

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Revocation:
        identity.require(obj, "revocation", {"v": int, "station": str, "line": str, "key": str, "checkpoint": dict,
                                             "reason": str, "issued_at": int})  # fmt: skip
        if obj["v"] != 1 or set(obj) != {"v", "station", "line", "key", "checkpoint", "reason", "issued_at"}:
            raise SchemaError("revocation: version 1 has exactly the members of PROTOCOL.md section 5.9")
        cp = obj["checkpoint"]
        identity.require(cp, "revocation checkpoint", {"n": int, "digest": str})
        if set(cp) != {"n", "digest"}:
            raise SchemaError("revocation: the checkpoint has exactly n and digest")
        return cls(station=obj["station"], line=obj["line"], key=obj["key"], checkpoint_n=cp["n"],
                   checkpoint_digest=cp["digest"], reason=obj["reason"], issued_at=obj["issued_at"])  # fmt: skip

    def sign(self, root: nacl.signing.SigningKey) -> Signed:
        data = canonical.encode(self.to_obj())
        return Signed(data, identity.sign(root, DOMAIN, data))

    @classmethod
    def open(cls, signed: Signed, root_public: bytes, *, station: str | None = None) -> Revocation:
        """Verified under the station's root in force, and naming ``station`` (default: that root's
        fingerprint; after a root rotation, the station's identity, its first root's)."""
        identity.verify(root_public, DOMAIN, signed.data, signed.sig, "revocation")
        rev = cls.from_obj(canonical.decode_object(signed.data, "revocation"))
        if rev.station != (station or identity.fingerprint(root_public)):
            raise SchemaError("revocation names another station than the root that signed it")
        return rev


def content(revocation: Signed, proposal: Signed, cosign: Signed, certs: list[identity.SignedCert]) -> dict[str, Any]:
    """A REVOKE envelope's content (PROTOCOL.md section 5.9)."""
    out: dict[str, Any] = {
        "revocation": {"data": revocation.data.hex(), "sig": revocation.sig.hex()},
        "checkpoint": {"proposal": proposal.encode().hex(), "cosign": cosign.encode().hex()},
    }
    if certs:
        out["certs"] = [c.to_obj() for c in certs]
    return out


def build(
    root: nacl.signing.SigningKey, *, line: str, key: str, checkpoint: tuple[int, Signed, Signed], reason: str,
    issued_at: int, certs: list[identity.SignedCert], station: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The REVOKE content for ``line``: ``key`` revoked after the co-signed ``checkpoint`` (n,
    proposal, cosign, as the ledger holds it), signed by ``root``, carrying ``certs``."""
    n, proposal, cosign = checkpoint
    rev = Revocation(
        station=station or identity.fingerprint(bytes(root.verify_key)), line=line, key=key, checkpoint_n=n,
        checkpoint_digest=proposal.digest(Checkpoint.DOMAIN), reason=reason, issued_at=issued_at,
    )  # fmt: skip
    return content(rev.sign(root), proposal, cosign, certs)
