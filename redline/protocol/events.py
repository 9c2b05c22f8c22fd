"""What the link tells the station (events) and asks of the transport (actions).

Frozen, keyword-only dataclasses (h11's ``_events.py`` way). Raw envelope, receipt and checkpoint
bytes stay bytes here: the station verifies them before anything is trusted or stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redline.envelope import RawEnvelope


@dataclass(frozen=True, kw_only=True)
class ChainHead:
    seq: int
    id: str | None

    def __post_init__(self) -> None:
        if self.seq < 0 or (self.seq == 0) != (self.id is None):
            raise ValueError("a chain head is (0, None) or (seq >= 1, id)")


EMPTY = ChainHead(seq=0, id=None)


# -- actions for the transport ------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Send:
    path: str
    data: bytes


@dataclass(frozen=True, kw_only=True)
class Close:
    path: str
    reason: str


# -- events for the station ---------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class PathOpen:
    """The peer's HELLO arrived on ``path``; its view of both chains is in it."""

    path: str
    peer_head: ChainHead  # the peer's own chain, as the peer holds it
    peer_has_ours: ChainHead  # our chain, as the peer holds it
    peer_time: int
    peer_confirmed: bool
    peer_checkpoint: int = 0  # the last checkpoint the peer holds co-signed (0: none, or an older peer)
    peer_term: int | None = None  # the peer's HA lease term (None: not an HA pair, or an older peer)
    peer_addresses: tuple[str, ...] = ()  # where the peer says it may be dialled (HOST:PORT, checked, at most 8)


@dataclass(frozen=True, kw_only=True)
class PathDown:
    path: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class Synced:
    """Heads agree: the station may sign new envelopes (guarantee 2)."""


@dataclass(frozen=True, kw_only=True)
class Recovering:
    """The peer holds more of our own chain than we do (we were restored from an old copy).
    Nothing new may be signed until ``to_seq`` is recovered and verified."""

    from_seq: int
    to_seq: int


@dataclass(frozen=True, kw_only=True)
class Forked:
    """The peer's view of our chain at ``seq`` has a different id from ours: a split history."""

    seq: int
    ours: str | None
    theirs: str | None


@dataclass(frozen=True, kw_only=True)
class ResendFrom:
    """Send our envelopes after ``seq`` on ``path`` (the peer does not hold them)."""

    path: str
    seq: int


@dataclass(frozen=True, kw_only=True)
class GapRequest:
    """The peer asks for envelopes ``from_seq``..``to_seq`` of ``station``'s chain on ``path``."""

    path: str
    station: str
    from_seq: int
    to_seq: int


@dataclass(frozen=True, kw_only=True)
class EnvelopeIn:
    """The next envelope of the peer's chain, in order, not yet verified."""

    seq: int
    raw: bytes
    # ``raw`` as the link split it, its header parsed (None: split it again); not part of the event's identity
    split: RawEnvelope | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class OwnEnvelopeIn:
    """One of our own envelopes, returned by the peer during recovery, not yet verified."""

    seq: int
    raw: bytes


@dataclass(frozen=True, kw_only=True)
class SuspectDuplicate:
    """An envelope at a seq we already hold whose id we do not recognise: equivocation or noise;
    the station checks it against the ledger and verifies it before deciding."""

    seq: int
    raw: bytes


@dataclass(frozen=True, kw_only=True)
class ReceiptIn:
    raw: bytes


@dataclass(frozen=True, kw_only=True)
class CheckpointIn:
    path: str
    raw: bytes


@dataclass(frozen=True, kw_only=True)
class CosignIn:
    raw: bytes


@dataclass(frozen=True, kw_only=True)
class ConfirmIn:
    """The peer's operator confirmed the safety code."""


@dataclass(frozen=True, kw_only=True)
class Measured:
    path: str
    rtt_ms: float
    skew_ms: float


@dataclass(frozen=True, kw_only=True)
class PeerError:
    path: str
    message: str


Action = Send | Close
Event = (
    PathOpen | PathDown | Synced | Recovering | Forked | ResendFrom | GapRequest | EnvelopeIn | OwnEnvelopeIn
    | SuspectDuplicate | ReceiptIn | CheckpointIn | CosignIn | ConfirmIn | Measured | PeerError
)
Output = Action | Event
