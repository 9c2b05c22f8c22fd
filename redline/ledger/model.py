"""What the ledger stores, as plain typed records (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 2  # 2: Merkle subtrees, chain byte totals, the operations index, the clean-close mark


@dataclass(frozen=True, kw_only=True)
class LineRecord:
    """A pairing of our station with one peer: the peer's pinned keys and its paths."""

    line: str
    peer: str  # peer root fingerprint
    peer_name: str
    peer_root: str  # hex raw Ed25519 root public key, pinned at pairing
    peer_tls_cert: str  # hex DER of the peer's TLS certificate, pinned at pairing
    paths: tuple[str, ...]  # HOST:PORT of the peer, primary first
    peer_lang: str
    we_invited: bool
    confirmed_local: bool = False
    confirmed_peer: bool = False
    safety_code: str = ""
    created_at: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Traffic flows only once both operators have confirmed the safety code."""
        return self.confirmed_local and self.confirmed_peer

    def to_obj(self) -> dict[str, Any]:
        return {
            "line": self.line, "peer": self.peer, "peer_name": self.peer_name, "peer_root": self.peer_root,
            "peer_tls_cert": self.peer_tls_cert, "paths": list(self.paths), "peer_lang": self.peer_lang,
            "we_invited": self.we_invited, "confirmed_local": self.confirmed_local,
            "confirmed_peer": self.confirmed_peer, "safety_code": self.safety_code,
            "created_at": self.created_at, "extra": self.extra,
        }  # fmt: skip

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> LineRecord:
        return cls(**{**obj, "paths": tuple(obj["paths"])})


@dataclass(frozen=True, kw_only=True)
class OutboxItem:
    """A message accepted (durable) but not yet signed into our chain."""

    local: int  # outbox row number, stable across restarts
    line: str
    kind: str
    prio: str
    content: dict[str, Any]
    idem: str | None
    accepted_at: int
    seq: int | None = None  # set once signed
    envelope_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class Equivocation:
    line: str
    sender: str
    seq: int
    first: bytes  # the envelope we hold at that seq (wire bytes)
    second: bytes  # the other validly signed envelope (wire bytes)
    detected_at: int
