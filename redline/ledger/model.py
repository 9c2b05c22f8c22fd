"""What the ledger stores, as plain typed records (no I/O here), and what a reader of one line's
transcript sees (``LineSource``: a store's rows or a bundle's ``LineData``, for ``ledger.verify``).

The verification types live here, not in ``ledger.verify``, so that opening a store (``redline
log``, the console) does not import verification and the trust gate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import field
from typing import TYPE_CHECKING, Any, Protocol

from redline.errors import LineNotFoundError
from redline.firstuse import dataclass_on_first_use

if TYPE_CHECKING:
    from redline.identity import SignedCert
    from redline.statements import Signed

SCHEMA_VERSION = 2  # 2: Merkle subtrees, chain byte totals, the operations index, the clean-close mark


@dataclass_on_first_use(frozen=True, kw_only=True)
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


LINE_PREFIX_MIN = 8  # hex digits of a line id that name it (docs/OPERATIONS.md); fewer name no line


def find_line(records: list[LineRecord], wanted: str) -> LineRecord:
    """A line by id, id prefix (``LINE_PREFIX_MIN`` hex digits or more) or peer station name: the
    rule of both stores. A shorter prefix names no line, not the only one there is: ``redline send
    '' hi`` sent on it."""
    by_id = len(wanted) >= LINE_PREFIX_MIN
    matches = [r for r in records if r.peer_name == wanted or (by_id and r.line.startswith(wanted))]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(f"{r.line[:8]} ({r.peer_name})" for r in records) or "none yet"
    if not matches:
        also = "" if by_id else f" (an id needs at least {LINE_PREFIX_MIN} of its hex digits)"
        raise LineNotFoundError(f"no line matches {wanted!r}{also}; lines at this station: {known}")
    raise LineNotFoundError(f"{wanted!r} matches more than one line; give more of the id: {known}")


@dataclass_on_first_use(frozen=True, kw_only=True)
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


@dataclass_on_first_use(frozen=True, kw_only=True)
class Equivocation:
    line: str
    sender: str
    seq: int
    first: bytes  # the envelope we hold at that seq (wire bytes)
    second: bytes  # the other validly signed envelope (wire bytes)
    detected_at: int


@dataclass_on_first_use(frozen=True)
class StoredRow:
    """One stored envelope: the index columns as stored, and the bytes."""

    seq: int
    id: str
    raw: bytes


class ChainPart(Protocol):
    """A run of one chain's rows that a worker process can read by itself (picklable)."""

    def rows(self) -> list[StoredRow]: ...


class LineSource(Protocol):
    """Everything held for one line, as bytes: what ``verify_line`` reads."""

    @property
    def line(self) -> str: ...

    @property
    def names(self) -> dict[str, str]: ...  # station fingerprint -> name (for messages only)

    @property
    def certs(self) -> dict[str, list[SignedCert]]: ...  # station fingerprint -> certificates held

    @property
    def checkpoints(self) -> list[tuple[int, Signed, Signed]]: ...

    @property
    def equivocations(self) -> list[tuple[str, int, bytes, bytes]]: ...  # sender, seq, a, b

    def stations(self) -> list[str]:
        """The fingerprints of the chains held, sorted."""
        ...

    def chain(self, station: str) -> Iterator[StoredRow]:
        """The chain's rows in stored seq order."""
        ...

    def chain_parts(self, station: str, size: int) -> Iterator[ChainPart]:
        """The same rows, in runs of at most ``size`` that a worker process reads by itself."""
        ...

    def held(self, station: str) -> int:
        """How many rows the chain holds."""
        ...

    def iter_receipts(self) -> Iterator[Signed]:
        """Every receipt held, in the order stored."""
        ...


@dataclass_on_first_use(frozen=True)
class _HeldRows:
    """Rows already in memory, sent to a worker as they are."""

    held_rows: list[StoredRow]

    def rows(self) -> list[StoredRow]:
        return self.held_rows


@dataclass_on_first_use(frozen=True, kw_only=True)
class LineData:
    """A line held in memory (a bundle, a test): a ``LineSource``."""

    line: str
    names: dict[str, str]  # station fingerprint -> name (for messages only)
    certs: dict[str, list[SignedCert]]  # station fingerprint -> certificates held
    chains: dict[str, list[StoredRow]]  # station fingerprint -> rows in stored seq order
    receipts: list[Signed] = field(default_factory=list)
    checkpoints: list[tuple[int, Signed, Signed]] = field(default_factory=list)
    equivocations: list[tuple[str, int, bytes, bytes]] = field(default_factory=list)  # sender, seq, a, b

    def stations(self) -> list[str]:
        return sorted(self.chains)

    def chain(self, station: str) -> Iterator[StoredRow]:
        return iter(self.chains[station])

    def chain_parts(self, station: str, size: int) -> Iterator[ChainPart]:
        rows = self.chains[station]
        return (_HeldRows(rows[i : i + size]) for i in range(0, len(rows), size))

    def held(self, station: str) -> int:
        return len(self.chains.get(station, []))

    def iter_receipts(self) -> Iterator[Signed]:
        return iter(self.receipts)
