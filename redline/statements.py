"""Signed statements that sit beside the chains: receipts and co-signed checkpoints.

Both are canonical JSON plus an Ed25519 signature under a domain of their own. On the wire and in
the store a statement is ``u32 len | data | sig (64)``.

- A **receipt** is the receiver station's cumulative statement "stored your envelopes up to seq N,
  id H, at time T". Receipts are kept but not chained: the ``seen`` header field already proves
  receipt inside the chain.
- A **checkpoint** is proposed by one station over both chains' RFC 9162 tree heads as it holds
  them, with its clock; the other station countersigns (a **cosign** statement adding its clock)
  only if it holds exactly those prefixes. Checkpoints are numbered and each names the hash of the
  previous one, so they form a third, jointly signed chain. They are not envelopes: an envelope
  would change the very heads it attests.
"""

from __future__ import annotations

import hashlib
import struct
from typing import TYPE_CHECKING, Any

from redline import canonical
from redline.errors import EncodingError, SchemaError
from redline.firstuse import dataclass_on_first_use
from redline.identity import HEX32, HEX64, domain, require, sign, verify

if TYPE_CHECKING:
    import nacl.signing

_U32 = struct.Struct(">I")


@dataclass_on_first_use(frozen=True)
class Signed:
    """Statement bytes with their signature, kept exactly as received."""

    data: bytes
    sig: bytes

    def encode(self) -> bytes:
        return _U32.pack(len(self.data)) + self.data + self.sig

    @classmethod
    def decode(cls, raw: bytes) -> Signed:
        if len(raw) < 4 + 64:
            raise EncodingError("signed statement is too short")
        (n,) = _U32.unpack_from(raw, 0)
        if 4 + n + 64 != len(raw):
            raise EncodingError("signed statement lengths do not add up: truncated or trailing bytes")
        return cls(raw[4 : 4 + n], raw[4 + n :])

    def digest(self, kind: str) -> str:
        return hashlib.sha256(domain(kind) + self.data).hexdigest()


def _check_hex(value: str, pattern: Any, what: str) -> None:
    if not pattern.match(value):
        raise SchemaError(f"{what} must be lowercase hex of the right length")


@dataclass_on_first_use(frozen=True, kw_only=True)
class Receipt:
    line: str
    by: str  # receiving station
    key: str  # receiver's signing key id
    of: str  # sending station whose chain is receipted
    seq: int
    id: str
    received_at: int

    DOMAIN = "receipt"

    def __post_init__(self) -> None:
        _check_hex(self.line, HEX32, "receipt line")
        _check_hex(self.key, HEX32, "receipt key id")
        for v in (self.by, self.of, self.id):
            _check_hex(v, HEX64, "receipt station or id")
        if self.seq < 1 or self.received_at < 0:
            raise SchemaError("receipt: seq must be >= 1 and time >= 0")

    def to_obj(self) -> dict[str, Any]:
        return {
            "v": 1, "line": self.line, "by": self.by, "key": self.key, "of": self.of,
            "seq": self.seq, "id": self.id, "received_at": self.received_at,
        }  # fmt: skip

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Receipt:
        fields = {"v": int, "line": str, "by": str, "key": str, "of": str, "seq": int, "id": str, "received_at": int}
        require(obj, "receipt", fields)
        if obj["v"] != 1:
            raise SchemaError("receipt: unsupported version")
        return cls(**{k: v for k, v in obj.items() if k != "v"})

    def sign(self, key: nacl.signing.SigningKey) -> Signed:
        data = canonical.encode(self.to_obj())
        return Signed(data, sign(key, self.DOMAIN, data))

    @classmethod
    def open(cls, signed: Signed, public: bytes, *, peeked: Receipt | None = None) -> Receipt:
        """Verified under ``public``. ``peeked``: what ``peek(signed)`` gave for this very
        ``signed``, when the caller parsed it to find the key (not parsed again)."""
        verify(public, cls.DOMAIN, signed.data, signed.sig, "receipt")
        return peeked if peeked is not None else cls.peek(signed)

    @classmethod
    def peek(cls, signed: Signed) -> Receipt:
        """Parse without verifying, to find out which key to verify with."""
        return cls.from_obj(canonical.decode_object(signed.data, "receipt"))


@dataclass_on_first_use(frozen=True, kw_only=True)
class Head:
    """One chain's RFC 9162 tree head: its size and root (hex)."""

    station: str
    size: int
    root: str

    def to_obj(self) -> dict[str, Any]:
        return {"station": self.station, "size": self.size, "root": self.root}


@dataclass_on_first_use(frozen=True, kw_only=True)
class Checkpoint:
    line: str
    n: int  # 1, 2, 3... per line
    prev: str | None  # digest of checkpoint n-1
    heads: tuple[Head, Head]  # sorted by station fingerprint
    by: str
    key: str
    time: int

    DOMAIN = "checkpoint"

    def __post_init__(self) -> None:
        _check_hex(self.line, HEX32, "checkpoint line")
        _check_hex(self.key, HEX32, "checkpoint key id")
        _check_hex(self.by, HEX64, "checkpoint proposer")
        if self.n < 1 or (self.n == 1) != (self.prev is None):
            raise SchemaError("checkpoint: numbering starts at 1 and only the first has no prev")
        if self.prev is not None:
            _check_hex(self.prev, HEX64, "checkpoint prev")
        if self.time < 0:
            raise SchemaError("checkpoint: time must be milliseconds since 1970 (UTC)")
        a, b = self.heads
        if not a.station < b.station:
            raise SchemaError("checkpoint: heads must name two stations in fingerprint order")
        if self.by not in (a.station, b.station):
            raise SchemaError("checkpoint: proposer is not one of the line's stations")
        for h in self.heads:
            _check_hex(h.station, HEX64, "checkpoint head station")
            _check_hex(h.root, HEX64, "checkpoint head root")
            if h.size < 0:
                raise SchemaError("checkpoint: tree size must be >= 0")

    def head(self, station: str) -> Head:
        for h in self.heads:
            if h.station == station:
                return h
        raise SchemaError(f"checkpoint has no head for station {station[:16]}")

    def to_obj(self) -> dict[str, Any]:
        return {
            "v": 1, "line": self.line, "n": self.n, "prev": self.prev,
            "heads": [h.to_obj() for h in self.heads], "by": self.by, "key": self.key, "time": self.time,
        }  # fmt: skip

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Checkpoint:
        fields: dict[str, type | tuple[type, ...]] = {
            "v": int, "line": str, "n": int, "prev": (str, type(None)), "heads": list,
            "by": str, "key": str, "time": int,
        }  # fmt: skip
        require(obj, "checkpoint", fields)
        if obj["v"] != 1 or len(obj["heads"]) != 2:
            raise SchemaError("checkpoint: unsupported version or not exactly two heads")
        heads = []
        for h in obj["heads"]:
            if not isinstance(h, dict):
                raise SchemaError("checkpoint: a head must be an object")
            require(h, "checkpoint head", {"station": str, "size": int, "root": str})
            heads.append(Head(**h))
        return cls(
            line=obj["line"], n=obj["n"], prev=obj["prev"], heads=(heads[0], heads[1]),
            by=obj["by"], key=obj["key"], time=obj["time"],
        )  # fmt: skip

    def sign(self, key: nacl.signing.SigningKey) -> Signed:
        data = canonical.encode(self.to_obj())
        return Signed(data, sign(key, self.DOMAIN, data))

    @classmethod
    def peek(cls, signed: Signed) -> Checkpoint:
        return cls.from_obj(canonical.decode_object(signed.data, "checkpoint"))

    @classmethod
    def open(cls, signed: Signed, public: bytes, *, peeked: Checkpoint | None = None) -> Checkpoint:
        """Verified under ``public`` (``peeked``: as for ``Receipt.open``)."""
        verify(public, cls.DOMAIN, signed.data, signed.sig, "checkpoint")
        return peeked if peeked is not None else cls.peek(signed)


@dataclass_on_first_use(frozen=True, kw_only=True)
class Cosign:
    """The second station's countersignature over a checkpoint, adding its own clock."""

    line: str
    checkpoint: str  # Signed.digest("checkpoint") of the proposal
    by: str
    key: str
    time: int

    DOMAIN = "cosign"

    def __post_init__(self) -> None:
        _check_hex(self.line, HEX32, "cosign line")
        _check_hex(self.key, HEX32, "cosign key id")
        _check_hex(self.checkpoint, HEX64, "cosign checkpoint digest")
        _check_hex(self.by, HEX64, "cosign station")
        if self.time < 0:
            raise SchemaError("cosign: time must be milliseconds since 1970 (UTC)")

    def to_obj(self) -> dict[str, Any]:
        return {
            "v": 1, "line": self.line, "checkpoint": self.checkpoint, "by": self.by, "key": self.key,
            "time": self.time,
        }  # fmt: skip

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Cosign:
        require(obj, "cosign", {"v": int, "line": str, "checkpoint": str, "by": str, "key": str, "time": int})
        if obj["v"] != 1:
            raise SchemaError("cosign: unsupported version")
        return cls(**{k: v for k, v in obj.items() if k != "v"})

    def sign(self, key: nacl.signing.SigningKey) -> Signed:
        data = canonical.encode(self.to_obj())
        return Signed(data, sign(key, self.DOMAIN, data))

    @classmethod
    def peek(cls, signed: Signed) -> Cosign:
        return cls.from_obj(canonical.decode_object(signed.data, "cosign"))

    @classmethod
    def open(cls, signed: Signed, public: bytes) -> Cosign:
        verify(public, cls.DOMAIN, signed.data, signed.sig, "checkpoint countersignature")
        return cls.peek(signed)
