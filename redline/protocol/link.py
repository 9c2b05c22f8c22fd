"""The line's link state machine, sans-IO: bytes and time in, actions and events out.

One ``Link`` per line, with one or more paths. Every path carries the same traffic; the first copy
of an envelope wins and later copies are dropped by (seq, id) before any signature is checked.
The station feeds it:

- ``path_up(path, now, wall)`` when a TLS connection on a path is authenticated,
- ``receive(path, data, now, wall)`` with whatever bytes arrived (any split),
- ``tick(now, wall)`` regularly (heartbeats, dead paths, gap retries),
- ``signed`` / ``stored`` / ``receipted`` as the ledger changes,

and performs the ``Send``/``Close`` actions it returns, handling the events itself. ``now`` is a
monotonic clock in seconds (deadlines); ``wall`` is Unix time in ms (claims sent to the peer).
Nothing here reads a clock, a socket or a file.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from redline import canonical
from redline.config import Limits, parse_hostport
from redline.envelope import RawEnvelope, plain_header, plain_route, split
from redline.errors import ConfigError, LocalProtocolError, RedlineError, RemoteProtocolError, VerificationError
from redline.identity import HEX64
from redline.protocol.events import (
    EMPTY,
    ChainHead,
    CheckpointIn,
    Close,
    ConfirmIn,
    CosignIn,
    EnvelopeIn,
    Forked,
    GapRequest,
    Measured,
    Output,
    OwnEnvelopeIn,
    PathDown,
    PathOpen,
    PeerError,
    ReceiptIn,
    Recovering,
    ResendFrom,
    Send,
    SuspectDuplicate,
    Synced,
)
from redline.protocol.framing import FrameDecoder, FrameType, encode_frame
from redline.protocol.state import ALLOWED, TRAFFIC, PathState, next_state

VERSIONS = (1,)
_RECENT_IDS = 8192  # seq -> id kept for the last envelopes delivered, to drop copies cheaply


@dataclass
class _Path:
    decoder: FrameDecoder
    state: PathState = PathState.AWAIT_HELLO
    last_rx: float = 0.0
    last_hb: float = -1e9
    sent_hb: dict[int, float] = field(default_factory=dict)  # our wall ms -> our monotonic s
    peer_t: int | None = None
    peer_t_at: float = 0.0
    rtt_ms: float | None = None
    skew_ms: float | None = None


@dataclass
class _Resend:
    """Our envelopes still to put on one path: what its HELLO said the peer lacks, or the rest of a
    GAP answer. The station puts on what may go now (``resend_due``), a part at a time, and the
    rest as the peer's receipts come, so that no number of the peer's sets how much goes out in
    one step."""

    next: int  # our next seq to put on the path
    last: int | None  # our last seq asked for; None: up to our head, as it grows
    acked: int  # the highest of our seqs the peer holds, as it said then and its receipts say since
    # (next, acked) as ``Link.tick`` last saw them, and since when (monotonic s): a resend that
    # stands still for ``path_dead_after`` is given up (``_give_up_stalled``).
    seen: tuple[int, int] | None = None
    since: float = 0.0

    def hi(self, head: int) -> int:
        return head if self.last is None else min(self.last, head)


def _head_obj(h: ChainHead) -> dict[str, Any]:
    return {"seq": h.seq, "id": h.id}


def _int(value: Any) -> TypeGuard[int]:
    """A JSON integer (``True`` is not one, though Python says it is an int)."""
    return isinstance(value, int) and not isinstance(value, bool)


MAX_ADDRESSES = 8  # as many as a pairing token may advertise (pairing.MAX_ADDRS)


def _addresses(value: Any) -> tuple[str, ...]:
    """HELLO ``addresses`` (§8.3): absent, or 1 to 8 HOST:PORT strings. Peer data: checked here,
    bounded in number, never a count or a bound of anything else."""
    if value is None:
        return ()
    if not isinstance(value, list) or not 0 < len(value) <= MAX_ADDRESSES:
        raise RemoteProtocolError(f"HELLO addresses must be a list of 1 to {MAX_ADDRESSES} HOST:PORT strings")
    for addr in value:
        try:
            if not isinstance(addr, str) or len(addr) > 300:
                raise ConfigError("not a HOST:PORT string")
            parse_hostport(addr)
        except ConfigError:
            raise RemoteProtocolError("HELLO addresses hold one that is not HOST:PORT") from None
    return tuple(value)


def _head(obj: Any, what: str) -> ChainHead:
    """A chain head as the peer claims it (§8.3): ``seq`` an integer ≥ 0, ``id`` null at 0 and an
    envelope id (64 lower-case hex digits) after it; anything else is a malformed HELLO."""
    try:
        seq, eid = obj["seq"], obj["id"]
        if not _int(seq) or not (eid is None or (isinstance(eid, str) and HEX64.match(eid))):
            raise TypeError("seq must be an integer and id an envelope id or null")
        return ChainHead(seq=seq, id=eid)  # refuses a negative seq, and an id with seq 0 or none after it
    except (KeyError, TypeError, ValueError) as exc:
        raise RemoteProtocolError(f"{what} is not a chain head") from exc


class Link:
    def __init__(
        self,
        *,
        line: str,
        us: str,
        peer: str,
        limits: Limits,
        our_head: ChainHead,
        their_head: ChainHead,
        active: bool,
        confirmed: bool,
    ) -> None:
        self.line, self.us, self.peer, self.limits = line, us, peer, limits
        self.our_head = our_head
        self.their_head = their_head  # stored by us
        self.next_in = their_head.seq + 1  # next seq of theirs to hand to the station
        self.peer_has_ours = 0  # highest of our seqs the peer holds (HELLO or receipts)
        self.sent_hi = our_head.seq  # highest seq put on any path
        self.active = active  # both operators confirmed: traffic may flow
        self.confirmed = confirmed  # our operator confirmed
        self.synced = False
        self.recover_to = 0  # > our_head.seq while recovering our own chain from the peer
        self._own_hi = 0  # highest of our own seqs handed over as OwnEnvelopeIn while recovering
        self._own_cap = 1 << 62  # none beyond this is handed over (the station had no room; see forget_own)
        self._recover_path: str | None = None  # where our recovery request went; None: ask again
        self.halted = False  # the peer equivocated: nothing more is accepted from it
        self._paths: dict[str, _Path] = {}
        self._resend: dict[str, _Resend] = {}  # path -> our envelopes still to put on it
        self._buffer: dict[int, bytes] = {}
        self._recent: OrderedDict[int, str] = OrderedDict()
        self._gap_asked: tuple[int, float] = (0, -1e9)
        self.checkpoint_n = 0  # our last co-signed checkpoint, told in HELLO (the station keeps it current)
        self._peer_said = 0  # the peer's own head as its HELLO said: what we may still ask it for
        self.term: int | None = None  # our HA lease term, told in HELLO (None: not an HA pair, not told)
        self.addresses: tuple[str, ...] = ()  # where the peer may dial us, told in HELLO (the inviter's)

    # -- frames out ------------------------------------------------------------------------------
    def _frame(self, path: str, ftype: FrameType, obj: Any) -> Send:
        payload = obj if isinstance(obj, bytes) else canonical.encode(obj)
        return Send(path=path, data=encode_frame(ftype, payload))

    def _hello(self, path: str, wall: int) -> Send:
        return self._frame(
            path,
            FrameType.HELLO,
            {
                "versions": list(VERSIONS), "line": self.line, "station": self.us,
                "mine": _head_obj(self.our_head), "yours": _head_obj(self.their_head),
                "time": wall, "confirmed": self.confirmed, "checkpoint": self.checkpoint_n,
                **({} if self.term is None else {"term": self.term}),
                **({"addresses": list(self.addresses)} if self.addresses else {}),
            },
        )  # fmt: skip

    def _open_paths(self) -> list[str]:
        return [p for p, s in self._paths.items() if s.state is PathState.OPEN]

    @property
    def paths(self) -> dict[str, PathState]:
        return {p: s.state for p, s in self._paths.items()}

    def path_info(self, path: str) -> tuple[PathState, float | None, float | None, float]:
        p = self._paths[path]
        return p.state, p.rtt_ms, p.skew_ms, p.last_rx

    # -- station inputs ------------------------------------------------------------------------
    def path_up(self, path: str, now: float, wall: int) -> list[Output]:
        self._paths[path] = _Path(FrameDecoder(self.limits.max_frame_bytes), last_rx=now)
        return [self._hello(path, wall)]

    def path_down(self, path: str, reason: str) -> list[Output]:
        if self._paths.pop(path, None) is None:
            return []
        self._resend.pop(path, None)
        out: list[Output] = [PathDown(path=path, reason=reason)]
        if not self._open_paths():
            self.synced = False  # the next HELLO decides again
        if path == self._recover_path:
            # The answer to our recovery request may be lost with the path: ask on another one,
            # or on the next path whose HELLO arrives.
            self._recover_path = None
            others = [p for p in self._open_paths() if p != path]
            if self.recover_to and others:
                out += self._ask_recovery(others[0])
        return out

    def refused(self, path: str, reason: str) -> list[Output]:
        """A frame the transport refused before it reached ``receive`` (its announced length over
        ``max_frame_bytes``: the payload is never read): the same answer as any protocol error,
        ERROR with the reason, then close (PROTOCOL.md 8.2)."""
        return self._error(path, reason)

    def can_send(self) -> bool:
        """May the station sign and send another envelope now?"""
        return (
            self.active and self.synced and not self.recover_to
            and self.sent_hi - self.peer_has_ours < self.limits.window
        )  # fmt: skip

    def send_envelope(self, seq: int, raw: bytes, path: str | None = None, *, ours: bool = True) -> list[Send]:
        """Put an envelope on every open path (or one path, for a resend). ``ours`` is False for the
        peer's own envelopes returned for its recovery: those do not count against our window. A new
        envelope of ours skips a path still resending up to our head behind it: that resend puts it
        on there, in order."""
        if not self.active:
            raise LocalProtocolError("the line is not confirmed by both operators; nothing may be sent")
        if ours:
            self.sent_hi = max(self.sent_hi, seq)
        if path is not None:
            return [self._frame(path, FrameType.ENVELOPE, raw)] if path in self._paths else []
        out: list[Send] = []
        for p in self._open_paths():
            r = self._resend.get(p)
            if ours and r is not None and r.last is None:
                if r.next < seq:
                    continue
                r.next = max(r.next, seq + 1)
                if r.next > self.our_head.seq:
                    del self._resend[p]
            out.append(self._frame(p, FrameType.ENVELOPE, raw))
        return out

    def resend(self, path: str, first: int, last: int | None) -> None:
        """Put our envelopes ``first``..``last`` (None: up to our head) on ``path``, a part at a
        time (``resend_due``). Asked while a resend is under way on that path, the two join: from
        the lower seq (the peer may have dropped one it had no room for) to the higher last."""
        if path not in self._paths:
            return
        cur = self._resend.get(path)
        if cur is None:
            self._resend[path] = _Resend(first, last, acked=first - 1)
            return
        cur.next = min(cur.next, first)
        cur.last = None if cur.last is None or last is None else max(cur.last, last)

    def resend_due(self, path: str | None = None) -> list[tuple[str, int, int]]:
        """(path, first, last) of our envelopes that may go out now on ``path`` (or every path):
        what is still to resend there, no further than ``window`` past what the peer holds."""
        out: list[tuple[str, int, int]] = []
        for p, r in list(self._resend.items()):
            if path is not None and p != path:
                continue
            last = r.hi(self.our_head.seq)
            if r.next > last:
                del self._resend[p]
                continue
            last = min(last, r.acked + self.limits.window)  # what the peer holds: it said, or receipted since
            if r.next <= last:
                out.append((p, r.next, last))
        return out

    def resent(self, path: str, upto: int) -> None:
        """The station put our envelopes up to ``upto`` on ``path`` for ``resend_due``."""
        r = self._resend.get(path)
        if r is not None:
            r.next = max(r.next, upto + 1)
            if r.next > r.hi(self.our_head.seq):
                del self._resend[path]

    def resend_waits_for(self, seq: int) -> bool:
        """Would a receipt of our ``seq`` let a resend go on? (A peer restored from an older copy
        receipts seqs below the ones it had receipted before: those still pace the resend.)"""
        return any(r.acked < seq for r in self._resend.values())

    def resend_acked(self, seq: int) -> None:
        """A receipt of our ``seq``, verified: the resends may go on past it."""
        for r in self._resend.values():
            r.acked = max(r.acked, seq)

    def send_raw(self, ftype: FrameType, payload: bytes, path: str | None = None) -> list[Send]:
        """A receipt, checkpoint or cosign: to one path, or to every open path."""
        targets = [path] if path is not None else self._open_paths()
        return [self._frame(p, ftype, payload) for p in targets if p in self._paths]

    def signed(self, head: ChainHead) -> list[Output]:
        """Our chain grew (a new envelope, or one recovered from the peer)."""
        self.our_head = head
        out: list[Output] = []
        if self.recover_to and head.seq < self.recover_to:
            out += self._release()
            if head.seq >= self._own_hi and self._recover_path:
                out += self._ask_recovery(self._recover_path)  # the peer capped its answer: ask for the rest
            return out
        if self.recover_to and head.seq >= self.recover_to:
            self.recover_to = 0
            self._recover_path = None
            if self._open_paths():
                self.synced = True
                out.append(Synced())
            # The peer's envelopes held back while we recovered can be verified now.
            while self.next_in in self._buffer:
                nxt = self._buffer.pop(self.next_in)
                out.append(self._deliver(self.next_in, nxt, split(nxt).id))
            return out
        return []

    def stored(self, head: ChainHead) -> None:
        """The station stored the peer's envelopes up to ``head``."""
        self.their_head = head

    def rejected(self, seq: int, reason: str, held: int) -> list[Output]:
        """The station could not verify the peer's envelope ``seq``: drop it and what follows,
        close the paths, and let the next HELLO restart from what we hold. ``held``: the peer's seq
        the station holds, those verified and not yet stored included (the stored head alone would
        take us back past them: their copies would be asked for, and refused, again)."""
        self._buffer.clear()
        self.next_in = held + 1
        out: list[Output] = []
        for p in list(self._paths):
            out += self._error(p, f"envelope seq {seq} refused: {reason}")
        return out

    def receipted(self, seq: int) -> None:
        self.peer_has_ours = max(self.peer_has_ours, seq)
        self.resend_acked(seq)

    def confirm(self, wall: int) -> list[Output]:
        """Our operator confirmed the safety code: tell the peer on every path."""
        self.confirmed = True
        return [self._frame(p, FrameType.CONFIRM, {"line": self.line}) for p in self._paths]

    def halt(self) -> list[Output]:
        """The peer equivocated: stop accepting its envelopes (guarantee 2)."""
        self.halted = True
        self._buffer.clear()
        return []

    # -- bytes in ------------------------------------------------------------------------------
    def receive(self, path: str, data: bytes, now: float, wall: int) -> list[Output]:
        p = self._paths.get(path)
        if p is None or p.state in (PathState.CLOSED, PathState.ERROR):
            return []
        out: list[Output] = []
        try:
            for ftype, payload in p.decoder.feed(data):
                p.last_rx = now
                if ftype not in ALLOWED[p.state]:
                    raise RemoteProtocolError(f"{ftype.name} frame is not allowed while the path is {p.state.value}")
                if ftype in TRAFFIC and not self.active:
                    raise RemoteProtocolError(f"{ftype.name} frame before both operators confirmed the safety code")
                out += self._handle(path, p, ftype, payload, now, wall)
                p.state = next_state(p.state, ftype)
                if p.state is PathState.ERROR:
                    out.append(Close(path=path, reason="peer reported an error"))
                    break
        except (RemoteProtocolError, VerificationError) as exc:
            out += self._error(path, str(exc))
        return out

    def _error(self, path: str, message: str) -> list[Output]:
        p = self._paths.get(path)
        out: list[Output] = []
        if p is not None and p.state not in (PathState.ERROR, PathState.CLOSED):
            out.append(self._frame(path, FrameType.ERROR, {"message": message[:500]}))
            p.state = PathState.ERROR
        out.append(Close(path=path, reason=message))
        return out

    def _handle(self, path: str, p: _Path, ftype: FrameType, payload: bytes, now: float, wall: int) -> list[Output]:
        if ftype is FrameType.ENVELOPE:
            return self._envelope(path, payload, now)
        if ftype is FrameType.RECEIPT:
            return [ReceiptIn(raw=payload)]
        if ftype is FrameType.CHECKPOINT:
            return [CheckpointIn(path=path, raw=payload)]
        if ftype is FrameType.COSIGN:
            return [CosignIn(raw=payload)]
        obj = canonical.decode_object(payload, f"{ftype.name} frame")
        if ftype is FrameType.HELLO:
            return self._on_hello(path, obj)
        if ftype is FrameType.HEARTBEAT:
            return self._on_heartbeat(path, p, obj, now, wall)
        if ftype is FrameType.GAP:
            return self._on_gap(path, obj)
        if ftype is FrameType.CONFIRM:
            return [ConfirmIn()]
        if ftype is FrameType.ERROR:
            return [PeerError(path=path, message=str(obj.get("message", ""))[:500])]  # the peer's words, bounded
        raise RemoteProtocolError(f"unexpected {ftype.name} frame")  # pragma: no cover - table forbids it

    def _on_hello(self, path: str, obj: dict[str, Any]) -> list[Output]:
        versions = obj.get("versions")
        if not isinstance(versions, list) or not all(_int(v) for v in versions):
            raise RemoteProtocolError("HELLO versions must be a list of integers")
        if not set(versions) & set(VERSIONS):
            raise RemoteProtocolError(f"peer speaks protocol versions {versions}, we speak {list(VERSIONS)}")
        if obj.get("line") != self.line or obj.get("station") != self.peer:
            raise RemoteProtocolError("HELLO names another line or station than this connection is paired for")
        mine, yours = _head(obj.get("mine"), "HELLO mine"), _head(obj.get("yours"), "HELLO yours")
        t, confirmed = obj.get("time"), obj.get("confirmed")
        if not _int(t) or not isinstance(confirmed, bool):
            raise RemoteProtocolError("HELLO time or confirmed field is malformed")
        cp = obj.get("checkpoint", 0)  # an older peer does not say: 0
        term = obj.get("term")  # only a station of an HA pair says (§8.3): compared, never a bound
        if term is not None and (not _int(term) or term < 1):
            raise RemoteProtocolError("HELLO term is malformed")
        addresses = _addresses(obj.get("addresses"))
        self._peer_said = max(self._peer_said, mine.seq)
        out: list[Output] = [
            PathOpen(path=path, peer_head=mine, peer_has_ours=yours, peer_time=t, peer_confirmed=confirmed,
                     peer_checkpoint=cp if _int(cp) and cp >= 0 else 0, peer_term=term, peer_addresses=addresses)
        ]  # fmt: skip
        self.peer_has_ours = max(self.peer_has_ours, min(yours.seq, self.our_head.seq))
        if yours.seq > self.our_head.seq:
            # The peer holds more of our chain than we do: we were restored from an old copy.
            if self.recover_to < yours.seq:
                self.recover_to = yours.seq
                self.synced = False
                out.append(Recovering(from_seq=self.our_head.seq + 1, to_seq=yours.seq))
                self._recover_path = None
            if self._recover_path is None:
                out += self._ask_recovery(path)
            return out
        if yours.seq == self.our_head.seq and yours.id != self.our_head.id:
            out.append(Forked(seq=yours.seq, ours=self.our_head.id, theirs=yours.id))
            return out + self._error(path, f"the peer holds a different envelope at our seq {yours.seq}")
        if yours.seq < self.our_head.seq:
            out.append(ResendFrom(path=path, seq=yours.seq))
        if not self.synced and not self.recover_to:
            self.synced = True
            out.append(Synced())
        return out

    def _ask_recovery(self, path: str) -> list[Output]:
        """Ask the peer for our own envelopes we do not hold (nor were already handed)."""
        self._recover_path = path
        self._own_cap = self.recover_to  # asked again: whatever was forgotten may be handed over
        first = max(self.our_head.seq, self._own_hi) + 1
        gap = {"station": self.us, "from": first, "to": self.recover_to}
        return [*self.send_raw(FrameType.GAP, canonical.encode(gap), path)] if first <= self.recover_to else []

    def _on_heartbeat(self, path: str, p: _Path, obj: dict[str, Any], now: float, wall: int) -> list[Output]:
        t, echo, hold = obj.get("t"), obj.get("echo"), obj.get("hold")
        if not _int(t) or not (echo is None or _int(echo)) or not _int(hold):
            raise RemoteProtocolError("heartbeat fields are malformed")
        p.peer_t, p.peer_t_at = t, now
        out: list[Output] = []
        if echo is not None and echo in p.sent_hb:
            rtt = max(0.0, (now - p.sent_hb.pop(echo)) * 1000 - hold)
            p.rtt_ms = rtt
            p.skew_ms = t - (wall - rtt / 2)  # peer clock minus ours, at the moment it sent
            out.append(Measured(path=path, rtt_ms=rtt, skew_ms=p.skew_ms))
        return out

    def _on_gap(self, path: str, obj: dict[str, Any]) -> list[Output]:
        station, a, b = obj.get("station"), obj.get("from"), obj.get("to")
        if station not in (self.us, self.peer) or not _int(a) or not _int(b) or not 0 < a <= b:
            raise RemoteProtocolError("gap request is malformed")
        if b - a >= self.limits.max_gap_buffer:  # either chain: the asker asks again for the rest
            b = a + self.limits.max_gap_buffer - 1
        return [GapRequest(path=path, station=str(station), from_seq=a, to_seq=b)]

    def _envelope(self, path: str, raw: bytes, now: float) -> list[Output]:
        # Routing only (seq, sender): the station checks canonical form and signature later. A
        # header in the plain canonical form (every header a station of ours writes) is read with
        # one pattern match, and the header built from it goes on with the envelope; any other is
        # read as JSON, and the station parses it (and refuses it, saying why).
        seq: object
        sender: object
        try:
            env = split(raw, self.limits.max_frame_bytes)
            plain = plain_header(env.header_bytes)
            if plain is not None:
                seq, sender = plain_route(plain)
            else:
                header = json.loads(env.header_bytes)
                if not isinstance(header, dict):
                    raise RemoteProtocolError("envelope header is not a JSON object")
                seq, sender = header.get("seq"), header.get("sender")
        except (RedlineError, ValueError, RecursionError) as exc:
            raise RemoteProtocolError(f"malformed envelope: {exc}") from exc
        if not _int(seq) or seq < 1:
            raise RemoteProtocolError("envelope header has no valid seq")
        if sender == self.us:
            if self.recover_to and max(self.our_head.seq, self._own_hi) < seq <= min(self.recover_to, self._own_cap):
                self._own_hi = seq  # each of our own envelopes is handed over once, even if asked twice
                return [OwnEnvelopeIn(seq=seq, raw=raw)]
            return []  # a late copy of our own envelope: nothing to do
        if sender != self.peer:
            raise RemoteProtocolError("envelope from a station that is not on this line")
        if self.halted:
            return []
        if seq < self.next_in:
            if self._recent.get(seq) == env.id:
                return []  # the first copy already won
            return [SuspectDuplicate(seq=seq, raw=raw)]
        if self.recover_to:
            # Our own chain is being recovered from the peer: its envelopes may name our seqs we
            # do not hold yet, so each is held until we do (and ours may name its seqs: both
            # chains come back in causal order, guarantee 2).
            if seq not in self._buffer:
                self._hold(seq, raw)
            return self._release()
        if seq > self.next_in:
            out: list[Output] = []
            self._hold(seq, raw)
            asked, at = self._gap_asked
            if asked != self.next_in or now - at > 1.0:
                self._gap_asked = (self.next_in, now)
                gap = {"station": self.peer, "from": self.next_in, "to": seq - 1}
                out += self.send_raw(FrameType.GAP, canonical.encode(gap), path)
            return out
        out = [self._deliver(seq, raw, env.id, env.parsed(plain) if plain is not None else env)]
        while self.next_in in self._buffer:
            nxt = self._buffer.pop(self.next_in)
            out.append(self._deliver(self.next_in, nxt, split(nxt).id))
        # Copies of already-delivered seqs may linger in the buffer; drop them.
        for s in [s for s in self._buffer if s < self.next_in]:
            del self._buffer[s]
        return out

    def _release(self) -> list[Output]:
        """While recovering: hand over the peer's held envelopes, in order, that name only seqs of
        ours we hold again."""
        out: list[Output] = []
        while self.next_in in self._buffer:
            raw = self._buffer[self.next_in]
            try:
                seen = json.loads(split(raw).header_bytes).get("seen", {}).get("seq", 0)
            except (RedlineError, ValueError, AttributeError):
                seen = 0  # malformed: let the station refuse it
            if _int(seen) and seen > self.our_head.seq:
                break
            del self._buffer[self.next_in]
            out.append(self._deliver(self.next_in, raw, split(raw).id))
        if self.next_in not in self._buffer and self.next_in <= self._peer_said and self._gap_asked[0] != self.next_in:
            # What the gap buffer had no room for while we recovered: ask for it again, once per seq.
            path = self._recover_path or next(iter(self._open_paths()), None)
            if path is not None:
                self._gap_asked = (self.next_in, self._gap_asked[1])
                last = min(self._peer_said, self.next_in + self.limits.max_gap_buffer - 1)
                gap = {"station": self.peer, "from": self.next_in, "to": last}
                out += self.send_raw(FrameType.GAP, canonical.encode(gap), path)
        return out

    def own_rejected(self, seq: int, reason: str) -> list[Output]:
        """The station could not verify our own envelope ``seq`` the peer returned for our recovery:
        forget it and what follows, close the paths (as for the peer's envelopes, ``rejected``), and
        let the next HELLO ask again from what we hold."""
        self.forget_own(seq)
        self._recover_path = None
        out: list[Output] = []
        for p in list(self._paths):
            out += self._error(p, f"our own envelope seq {seq} refused: {reason}")
        return out

    def forget_own(self, seq: int) -> None:
        """The station had no room for our own recovered envelope ``seq``: hand over nothing from it
        on until recovery asks for it again (when the station has signed what it holds)."""
        self._own_hi = min(self._own_hi, seq - 1)
        self._own_cap = min(self._own_cap, seq - 1)

    def _hold(self, seq: int, raw: bytes) -> None:
        """Keep an out-of-order envelope while its gap is refilled, within count and byte budgets
        (what does not fit is dropped: the peer resends it after the gap closes)."""
        if len(self._buffer) >= self.limits.max_gap_buffer:
            return
        if sum(map(len, self._buffer.values())) + len(raw) > self.limits.max_gap_buffer_bytes:
            return
        self._buffer[seq] = raw

    def _deliver(self, seq: int, raw: bytes, envelope_id: str, env: RawEnvelope | None = None) -> EnvelopeIn:
        self.next_in = seq + 1
        self._recent[seq] = envelope_id
        if len(self._recent) > _RECENT_IDS:
            self._recent.popitem(last=False)
        return EnvelopeIn(seq=seq, raw=raw, split=env)

    # -- time ----------------------------------------------------------------------------------
    def tick(self, now: float, wall: int) -> list[Output]:
        out: list[Output] = []
        self._give_up_stalled(now)
        for path, p in list(self._paths.items()):
            if p.state in (PathState.CLOSED, PathState.ERROR):
                continue
            if now - p.last_rx > self.limits.path_dead_after:
                p.state = PathState.CLOSED
                out.append(Close(path=path, reason=f"no frames for {self.limits.path_dead_after:g} s"))
                continue
            if now - p.last_hb >= self.limits.heartbeat_interval:
                p.last_hb = now
                p.sent_hb[wall] = now
                if len(p.sent_hb) > 16:
                    p.sent_hb.pop(next(iter(p.sent_hb)))
                hold = int((now - p.peer_t_at) * 1000) if p.peer_t is not None else 0
                out.append(self._frame(path, FrameType.HEARTBEAT, {"t": wall, "echo": p.peer_t, "hold": hold}))
        return out

    def _give_up_stalled(self, now: float) -> None:
        """A resend goes on as the peer's receipts come. If none comes (the HELLO that started it
        was older than a receipt that came on another path, so the peer holds what is still to go
        and receipts nothing more), it would stand still for ever, and our new envelopes, which wait
        behind it on its path, would never go there: the line up, and nothing reaching the peer once
        the other path died. A resend that has not moved for ``path_dead_after`` goes on from what
        the peer has receipted on any path (the envelopes that waited behind it included: they go
        out at the station's next pump, ``resend_due``); one that has nothing left past that ends.
        Anything the peer still lacks it asks for with a GAP (8.5)."""
        for path, r in list(self._resend.items()):
            mark = (r.next, r.acked)
            if r.seen != mark:
                r.seen, r.since = mark, now
            elif now - r.since > self.limits.path_dead_after:
                r.acked = max(r.acked, self.peer_has_ours)
                r.next = max(r.next, self.peer_has_ours + 1)
                r.seen, r.since = (r.next, r.acked), now
                if r.next > r.hi(self.our_head.seq):
                    del self._resend[path]

    def next_due(self) -> float:
        """The earliest ``now`` at which ``tick`` may have something to do (a heartbeat to send, a
        silent path to close), if no input comes first: a station with many idle lines ticks each
        only then. Input only moves these later (``receive`` and the heartbeats it carries), except
        ``path_up``, after which the station ticks the line anyway."""
        due = float("inf")
        for p in self._paths.values():
            if p.state not in (PathState.CLOSED, PathState.ERROR):
                due = min(due, p.last_rx + self.limits.path_dead_after, p.last_hb + self.limits.heartbeat_interval)
        return due


__all__ = ["EMPTY", "Link"]
