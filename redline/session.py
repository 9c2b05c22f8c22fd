"""One line's running session: the link state machine joined to the ledger and the keys.

This is the station layer's per-line core, kept free of sockets and clocks so the end-to-end
rules can be tested with two sessions in memory (``redline.testing``): it takes bytes and time,
returns ``Send``/``Close`` actions, and does its storage through the ledger. The asyncio station
(``station.py``) only moves bytes and calls ``flush`` after each burst of input.

Ordering rule for guarantee 1: ``flush`` commits first and only then returns the frames that
tell the peer anything (receipts, new envelopes, cosigns). The caller must send them only after
``flush`` returned, i.e. after the fsync.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from redline import canonical, identity
from redline import keys as keyfiles
from redline.alarmtext import AlarmCode, Param, render
from redline.config import Limits
from redline.display import shown
from redline.envelope import (
    MEMBER_OVERHEAD,
    OPERATIONAL_KINDS,
    RESERVE_KINDS,
    SALT_BYTES,
    Envelope,
    Header,
    RawEnvelope,
    content_member,
    make_body,
    peek_seen_seq,
    seal,
    split,
)
from redline.errors import (
    CheckpointNumberError,
    ConfigError,
    EquivocationError,
    IdempotencyConflictError,
    LimitError,
    LocalProtocolError,
    PairingError,
    ReceiptBeyondChainError,
    RedlineError,
    WrongSenderError,
)
from redline.gate import LastCheckpoint, Tail, TrustedLine, claimed_roots, verified_keys
from redline.home import StationKeys
from redline.identity import SignedCert
from redline.ledger.interface import LedgerStore
from redline.ledger.model import LineRecord, OutboxItem
from redline.protocol import events as ev
from redline.protocol.events import Action, ChainHead, Close, Send
from redline.protocol.framing import FrameType
from redline.protocol.link import MAX_ADDRESSES, Link
from redline.protocol.state import PathState
from redline.statements import Checkpoint, Cosign, Head, Receipt, Signed
from redline.status import LineStatus, PathView


class AlarmSink(Protocol):
    """Where a line's alarms go: (level, code, params), redline/alarmtext.py."""

    def __call__(self, level: str, code: AlarmCode, /, **params: Param) -> None: ...
StoredSink = Callable[[Envelope, bool, int], None]  # (envelope, ours, stored_at): feeds ops/
ReceiptSink = Callable[[int, int], None]  # (our seq receipted, at)
AcceptSink = Callable[[str, dict[str, Any]], None]  # (kind, content) of an item accepted, not signed yet


@dataclass
class PathStatus:
    up: bool = False
    rtt_ms: float | None = None
    skew_ms: float | None = None
    last_rx_wall: int | None = None
    reason: str = ""


@dataclass
class _Pending:
    envelopes: list[Envelope] = field(default_factory=list)
    own: list[Envelope] = field(default_factory=list)
    suspects: list[Envelope] = field(default_factory=list)  # valid envelopes at a seq already taken
    bytes: int = 0  # disk the pending envelopes will take
    receipt: Signed | None = None
    receipt_seq: int = 0


def peer_keys(root_hex: str, certs: list[SignedCert], later: list[bytes] | None = None) -> dict[str, bytes]:
    """Signing keys of a station that its pinned root certified: key id -> public key. A
    certificate under a later root its ROOT envelopes name (``later``) is left to the gate, which
    trusts it when it replays the KEY naming it under the root in force there (section 5.9)."""
    root = bytes.fromhex(root_hex)
    station = identity.fingerprint(root)
    keys: dict[str, bytes] = {}
    for signed in certs:
        if later and not verified_keys({station: root}, {station: [signed]}, {station: later})[station]:
            continue
        cert = signed.verify(root)
        if cert.role == "signing":
            keys[cert.key_id] = bytes.fromhex(cert.key)
    return keys


# A body is the content plus a salt and a small wrapper (envelope.py); the content limit is ours.
BODY_OVERHEAD = 1024
# What a body adds to its content member: the salt, in hex, and its name.
_SALT_BYTES = len(make_body({}, bytes(SALT_BYTES))) - len(content_member({}))
ENCODED_KEPT = 4096  # encoded contents kept for sealing (what the line signs in a few commits)


class _LedgerView:
    """What the gate reads of the chains: the ledger, and the peer's envelopes verified in this
    batch but not yet stored."""

    def __init__(self, session: LineSession) -> None:
        self._s = session

    def id_at(self, station: str, seq: int) -> str | None:
        s = self._s
        if station == s.peer:
            for env in s._pending.envelopes:
                if env.seq == seq:
                    return env.id
        else:
            for env in s._pending.own:
                if env.seq == seq:
                    return env.id
        head = s.ledger.head(s.line, station)  # kept in memory: what a receipt names nearly always
        return head[1] if seq == head[0] else s.ledger.envelope_id(s.line, station, seq)

    def root_at(self, station: str, size: int) -> bytes | None:
        log = self._s.ledger.log(self._s.line, station)
        return log.root(size) if size <= log.size else None


class LineSession:
    def __init__(
        self, ledger: LedgerStore, keys: StationKeys, record: LineRecord, *, lang: str, limits: Limits, alarm: AlarmSink
    ) -> None:
        self.ledger, self.keys, self.record, self.lang, self.limits = ledger, keys, record, lang, limits
        self.alarm = alarm
        self.on_stored: StoredSink = lambda env, ours, at: None
        self.on_receipted: ReceiptSink = lambda seq, at: None
        self.on_accepted: AcceptSink = lambda kind, content: None
        self.us, self.peer, self.line = keys.fingerprint, record.peer, record.line
        our = ChainHead(seq=ledger.head(self.line, self.us)[0], id=ledger.head(self.line, self.us)[1])
        their = ChainHead(seq=ledger.head(self.line, self.peer)[0], id=ledger.head(self.line, self.peer)[1])
        self.link = Link(
            line=self.line, us=self.us, peer=self.peer, limits=limits, our_head=our, their_head=their,
            active=record.active, confirmed=record.confirmed_local,
        )  # fmt: skip
        self.paths: dict[str, PathStatus] = {}
        kept = record.extra.get("peer_term")  # the peer's HA lease term, the highest its HELLO said
        self.peer_term: int | None = kept if isinstance(kept, int) and not isinstance(kept, bool) else None
        self.new_paths: list[str] = []  # addresses the peer announced and the station has yet to dial
        self._pending = _Pending()
        last_cp = ledger.last_checkpoint(self.line)
        self.link.checkpoint_n = last_cp[0] if last_cp else 0
        # The one gate (gate.py) holds the trusted state: keys, both tails (the peer's including
        # verified-but-unstored envelopes), seen links, receipts, the checkpoint chain.
        self.gate = TrustedLine(
            self.line,
            {self.us: {**peer_keys(keys.root_public.hex(), [c for _, _, c in ledger.certs(self.us)],
                                   _claimed(ledger, self.line, self.us)),
                       keys.key_id: bytes(keys.signing.verify_key)},
             self.peer: peer_keys(record.peer_root, [c for _, _, c in ledger.certs(record.peer)],
                                  _claimed(ledger, self.line, record.peer))},
            _LedgerView(self),
            tails={self.us: Tail(our.seq, our.id), self.peer: Tail(their.seq, their.id)},
            seen={self.us: self._seen_of(self.us, our.seq), self.peer: self._seen_of(self.peer, their.seq)},
            last_checkpoint=LastCheckpoint(
                last_cp[0], last_cp[1].digest(Checkpoint.DOMAIN),
                {h.station: h.size for h in Checkpoint.peek(last_cp[1]).heads},
            ) if last_cp else None,
            roots={self.us: keys.root_public, self.peer: bytes.fromhex(record.peer_root)},
        )  # fmt: skip
        self._resume_keys(our.seq, their.seq)
        latest = ledger.latest_receipt(self.line, self.peer)
        # The highest of our seqs the peer has receipted in a signed receipt we hold (stored, or
        # pending in this batch). HELLO's unsigned claim moves the link's flow control only; what
        # status, log and senders waiting for a receipt call "receipted" is this.
        self.receipted_seq = latest[0] if latest else 0
        if latest:
            self.link.receipted(latest[0])
        # Our own envelopes the peer returned while we recover, waiting (unverified) for the peer's
        # envelopes they name: within max_gap_buffer and max_gap_buffer_bytes, as the link's gap buffer.
        self._own_waiting: deque[tuple[int, bytes]] = deque()
        self._own_waiting_bytes = 0
        self._receipt_later: bytes | None = None  # the peer's receipt of what we are still recovering
        self._peer_checkpoint = 0  # the last checkpoint the peer holds, as its HELLO said
        self._resent_at = 0  # when the proposer last sent the peer what it lacks (wall ms)
        self._resent: set[str] = set()  # digests of stored checkpoints sent again: their cosigns are copies
        # Digests of the checkpoints this session stored last: the peer answers the copy of a
        # proposal on every path, and a slow path's answer may come after later ones completed.
        self._stored_cps: deque[str] = deque(maxlen=64)
        self._proposal: Signed | None = None  # our outstanding checkpoint proposal
        self._checkpoint_due = False
        self._last_checkpoint_wall = 0
        self._op_seq = 0  # our latest operational envelope: a checkpoint must cover it once receipted
        self.halted = bool(ledger.equivocations(self.line))
        if self.halted:
            self.link.halt()
        self.synced = False
        self._receipt_saved = 0
        # The peer's latest receipt, verified and counted, kept for the next commit that happens
        # anyway (or the next second, or ``close``): a receipt alone is not worth an fsync. If we are
        # killed first, the peer sends it again when a path opens.
        self._held: tuple[Signed, int] | None = None
        # The furthest seq of ours a receipt under the peer's revoked key reached (flagged, said once):
        # repeats up to it are dropped before verification, so a thief cannot make us verify and
        # alarm the same receipt again and again.
        self._flagged_receipt_seq = 0
        # The bytes of the last receipt taken (verified, counted or flagged): the peer sends each on
        # every path, and the copy is dropped by a comparison before it is parsed (so is the same
        # receipt sent again and again). One refused is not remembered: its copy is judged again.
        self._last_receipt_raw = b""
        self._cp_sizes: dict[str, int] | None = None  # heads of the last checkpoint, cached
        self._down_since: float | None = None
        self._down_alarmed = False
        self.disk_ours = ledger.line_bytes(self.line, self.us)  # each direction has its own budget
        self.disk_theirs = ledger.line_bytes(self.line, self.peer)
        self._disk_warned: set[str] = set()
        self.outbox_count = ledger.pending_count(self.line)  # kept in memory: checked on every accept
        # Disk the outbox's unsigned items will take once signed, each counted at its envelope's
        # widest (``_envelope_bound``): accept checks our budget against signed + this, so what it
        # takes can all be signed without going past ``max_line_disk_bytes`` (which the peer
        # enforces on our chain by refusing the envelope and closing the path, again on every
        # reconnect: the line would be down both ways).
        wide = canonical.MAX_SAFE_INT
        self._header_base = len(
            Header(
                line=self.line, sender=self.us, key=keys.key_id, seq=wide, sent_at=wide, kind="TEXT",
                prio="ROUTINE", prev="0" * 64, seen_seq=wide, seen_id="0" * 64, body_hash="0" * 64, lang=lang,
            ).encode()
        ) - len("TEXT") - len("ROUTINE")  # fmt: skip
        self.outbox_bytes = 0
        # ACKs, NOTICEs and NOTICE_WITHDRAWs waiting unsigned: told to ops (``watch_accepted``)
        self._accepted_before: list[tuple[str, dict[str, Any]]] = []
        if self.outbox_count > 0:
            for item in ledger.pending(self.line):
                self.outbox_bytes += self._envelope_bound(item.kind, item.prio, len(content_member(item.content)))
                if item.kind in ("ACK", "NOTICE", "NOTICE_WITHDRAW"):
                    self._accepted_before.append((item.kind, item.content))
        # An item at the head of the outbox is held back at signing (over the budget, alarmed once):
        # nothing behind it is signed either until a restart with a raised limit, so no flush tries.
        self._held_back = False
        self._max_local = ledger.max_outbox_local()
        # Outbox items accepted here, by number: their content and its canonical member, encoded
        # at acceptance for the size check and reused as the body when the item is sealed.
        self._encoded: dict[int, tuple[dict[str, Any], bytes]] = {}

    def _resume_keys(self, our_seq: int, their_seq: int) -> None:
        """Both chains' key windows from the KEY envelopes they hold (guarantee 6), and our signing
        key for this line: the one our own chain says signs its next seq. The chain decides, not
        the key files: after a crash between sealing a KEY and promoting the key files, this line
        signs with the next key while keys/signing.key still holds the old one (redline/keys.py)."""
        # The peer's TLS certificates in order: the one pinned at pairing, then each its KEYs named.
        self.peer_tls: list[tuple[bytes, str]] = []
        self._add_peer_tls(bytes.fromhex(self.record.peer_tls_cert))
        # The roots first: the KEYs below are checked under the root in force where each stands.
        self.gate.resume_roots([_stored(raw) for station in (self.us, self.peer) for kind in ("ROOT", "ROOT_CONFIRM")
                                for raw in self.ledger.raw_of_kind(self.line, station, kind)])  # fmt: skip
        for station, seq in ((self.us, our_seq), (self.peer, their_seq)):
            if seq == 0:
                continue
            first = _stored(self.ledger.raw_envelope(self.line, station, 1)).header.key
            rotations = [_stored(raw) for kind in ("KEY", "REVOKE")
                         for raw in self.ledger.raw_of_kind(self.line, station, kind)]  # fmt: skip
            self.gate.resume_keys(station, first, rotations)
            if station == self.peer:
                for env in sorted(rotations, key=lambda e: e.seq):
                    self._add_peer_tls_of(env)
        # A newest key a connection proved before this start stays proven (kept with the line by
        # tls_seen): the retired key is not pinned again at a restart (PROTOCOL.md 5.9, KEY).
        if self.record.extra.get("peer_tls_proven") == self.peer_tls[-1][1]:
            self.tls_proven = True
        current = self.gate.current_key(self.us)
        if current is not None:
            keys = self.keys.for_key(current)
            if keys is None:
                raise ConfigError(
                    f"line {self.line[:8]}: our chain certified signing key {current} (its last KEY envelope), which "
                    "this station does not hold (neither keys/signing.key nor signing.next.key): it was probably "
                    "restored from a backup taken before that key rotation. Restore a newer backup if there is one; "
                    "otherwise pair the line again (docs/OPERATIONS.md section 10)"
                )
            self.keys = keys

    # -- TLS pins (a TLS key rotates with the paths up: PROTOCOL.md section 5.9, KEY) --------------
    def _add_peer_tls(self, der: bytes) -> None:
        self.peer_tls.append((der, identity.spki_hash(der)))
        # The previous key stays pinned until a connection proves the new one (tls_seen).
        self.tls_proven = len(self.peer_tls) == 1

    def _add_peer_tls_of(self, env: Envelope) -> bool:
        der = env.content().get("tls_der") if env.kind == "KEY" else None
        if not isinstance(der, str):
            return False
        self._add_peer_tls(bytes.fromhex(der))  # the gate checked it against the root's tls certificate
        return True

    def tls_pins(self) -> list[tuple[bytes, str]]:
        """The peer's TLS certificates (DER, SPKI hash) accepted now: the newest, and the one before it
        until a connection has proven the newest."""
        return self.peer_tls[-1:] if self.tls_proven else self.peer_tls[-2:]

    def tls_seen(self, spki: str | None) -> None:
        """A connection authenticated by ``spki``: the newest key proven, the old pin expires."""
        if not self.tls_proven and spki == self.peer_tls[-1][1]:
            self.tls_proven = True
            self.alarm("info", "tls.in_use", line=self.line[:8], peer=self.record.peer_name)
            # Kept with the line, so that a restart of ours does not pin the retired key again.
            record = _replace(self.record, extra={**self.record.extra, "peer_tls_proven": spki})
            try:
                self.ledger.put_line(record)
            except RedlineError as exc:  # proven in memory all the same; only a restart forgets it
                self.alarm("alarm", "tls.not_saved", line=self.line[:8], peer=self.record.peer_name, exc=str(exc))
            else:
                self.record = record

    def _seen_of(self, station: str, seq: int) -> int:
        """The ``seen`` seq of ``station``'s envelope at ``seq`` as stored (0 for none)."""
        if seq == 0:
            return 0
        raw = self.ledger.raw_envelope(self.line, station, seq)
        header = canonical.decode_object(split(raw).header_bytes, "envelope header")
        seen = header["seen"]["seq"]
        assert isinstance(seen, int)
        return seen

    @property
    def _our_tail(self) -> ChainHead:
        tail = self.gate.tails[self.us]
        return ChainHead(seq=tail.seq, id=tail.id)

    @property
    def _their_tail(self) -> ChainHead:
        """The peer's chain including verified-but-unstored envelopes."""
        tail = self.gate.tails[self.peer]
        return ChainHead(seq=tail.seq, id=tail.id)

    # -- transport-facing ------------------------------------------------------------------------
    def path_up(self, path: str, now: float, wall: int) -> list[Action]:
        self.paths[path] = PathStatus(up=True, last_rx_wall=wall)
        return self._run(self.link.path_up(path, now, wall), wall)

    def path_down(self, path: str, reason: str, wall: int) -> list[Action]:
        status = self.paths.setdefault(path, PathStatus())
        if status.up or not status.reason:  # a path we closed ourselves keeps the reason we gave
            status.reason = reason
        status.up = False
        return self._run(self.link.path_down(path, reason), wall)

    def refused(self, path: str, reason: str, wall: int) -> list[Action]:
        """The transport refused a frame on ``path`` before reading it (``link.refused``)."""
        return self._run(self.link.refused(path, reason), wall)

    def receive(self, path: str, data: bytes, now: float, wall: int) -> list[Action]:
        if path in self.paths:
            self.paths[path].last_rx_wall = wall
        return self._run(self.link.receive(path, data, now, wall), wall)

    def tick(self, now: float, wall: int) -> list[Action]:
        out = self._run(self.link.tick(now, wall), wall)
        out += self._pump()  # a resend the link moved on from what the peer receipted (_give_up_stalled)
        self._watch_line(now)
        out += self._catch_up_checkpoints(wall)
        if (
            self.is_proposer and self.link.synced and self.link.active
            and wall - self._last_checkpoint_wall >= self.limits.checkpoint_every_seconds * 1000
            and self._uncovered()
        ):  # fmt: skip
            self._checkpoint_due = True
        return out

    def _uncovered(self) -> bool:
        """A checkpoint proposed now would cover more than the last one: what ``_maybe_propose``
        compares, read from memory (the link's heads are the stored ones while in sync, and the peer
        holds no more of ours than we stored). When it would not, the timer leaves the checkpoint
        alone: otherwise an idle line past ``checkpoint_every_seconds`` opened a transaction at every
        tick only for ``_maybe_propose`` to decline."""
        if not self.link.checkpoint_n:
            return True
        ours = min(self.link.peer_has_ours, self.link.our_head.seq)
        return self._checkpointed(self.us) != ours or self._checkpointed(self.peer) != self.link.their_head.seq

    def next_due(self, now: float) -> tuple[float, float]:
        """When ``tick`` may next have something to do if nothing else happens to the line first:
        (monotonic s, wall ms). The link's heartbeats and silent paths, the line-down alarm, the
        proposer's checkpoint catch-up and timer. Input (frames, paths up or down, the operator's
        confirmation, a commit of the peer's envelopes) can bring them earlier: the station ticks a
        line after any of it, and otherwise only when this falls due (many idle lines, issue 12)."""
        mono = self.link.next_due()
        if not any(p.up for p in self.paths.values()):
            if self._down_since is None:
                mono = now
            elif not self._down_alarmed:
                mono = min(mono, self._down_since + self.limits.line_down_alarm_seconds)
        elif self._down_alarmed:
            mono = now
        wall = float("inf")
        every = self.limits.checkpoint_every_seconds * 1000
        if self.is_proposer and self.link.synced:
            if self._peer_checkpoint < self.link.checkpoint_n:
                wall = self._resent_at + every
            if self.link.active and self._uncovered():
                wall = min(wall, self._last_checkpoint_wall + every)
        return mono, wall

    @property
    def has_pending(self) -> bool:
        """Verified input waits for the next commit."""
        return bool(self._pending.envelopes or self._pending.own or self._pending.suspects)

    def _watch_line(self, now: float) -> None:
        """Alarm once when no path to the peer has been up for ``line_down_alarm_seconds`` (each
        end decides for itself, so a cut line alarms at both ends), and once when it is back."""
        if any(p.up for p in self.paths.values()):
            if self._down_alarmed:
                self.alarm("info", "line.up", peer=self.record.peer_name)
            self._down_since, self._down_alarmed = None, False
            return
        if self._down_since is None:
            self._down_since = now
        elif not self._down_alarmed and now - self._down_since >= self.limits.line_down_alarm_seconds:
            self._down_alarmed = True
            self.alarm("alarm", "line.down", peer=self.record.peer_name,
                       seconds=f"{self.limits.line_down_alarm_seconds:g}")  # fmt: skip

    @property
    def is_proposer(self) -> bool:
        """One side proposes checkpoints, so two proposals never race: the lower fingerprint."""
        return self.us < self.peer

    # -- operator-facing -----------------------------------------------------------------------
    def accept(
        self, kind: str, prio: str, content: dict[str, Any], idem: str | None, wall: int,
        *, filled: frozenset[str] = frozenset(),
    ) -> OutboxItem:  # fmt: skip
        """Make a message durable in the outbox (call inside ``ledger.batch()``). A retry under an
        idempotency key already accepted is answered with the first acceptance before any limit is
        checked: the message is in already, so a full outbox must not turn its retry into an error.
        ``filled``: members of ``content`` the station filled in itself for this request (not the
        operator's words), which a retry need not repeat."""
        if idem is not None and (earlier := self.ledger.outbox_by_idem(self.line, idem)) is not None:
            _same_as_before(earlier, kind, prio, content, filled)
            return earlier
        member = content_member(content)  # encoded once: its size here, the body when it is sealed
        size = len(member) - MEMBER_OVERHEAD
        if size > self.limits.max_body_bytes:
            raise LocalProtocolError(
                f"message body is {size} bytes; the limit is {self.limits.max_body_bytes} (max_body_bytes)"
            )
        # The reserve is at most a quarter of the budget, so a small budget still carries text.
        reserve = min(self.limits.line_disk_reserve_bytes, self.limits.max_line_disk_bytes // 4)
        room = self.limits.max_line_disk_bytes - (0 if kind in RESERVE_KINDS else reserve)
        # Against what is signed AND what waits unsigned (a batch, or an outbox filled while the
        # line was down), each at its envelope's widest: never the content's size alone.
        bound = self._envelope_bound(kind, prio, len(member))
        if self.disk_ours + self.outbox_bytes + bound > room:
            raise LimitError(
                f"our messages on line {self.line[:8]} use {self.disk_ours} bytes of disk and "
                f"{self.outbox_bytes} more wait in the outbox, at their limit "
                f"(max_line_disk_bytes, less line_disk_reserve_bytes kept for FLASH, ACK and tests); archive the "
                "transcript and raise the limit"
            )
        if self.outbox_count >= self.limits.max_outbox:
            raise LocalProtocolError(f"the outbox holds {self.limits.max_outbox} unsent messages; the line is full")
        # The content's canonical JSON is inside the member already: the outbox keeps that text.
        text = member[MEMBER_OVERHEAD - 1 : -1].decode("utf-8")
        item = self.ledger.accept(self.line, kind, prio, content, idem, wall, text=text)
        if item.local > self._max_local:  # new, not a repeat of an idempotency key
            self._max_local = item.local
            self.outbox_count += 1
            self.outbox_bytes += bound
            self.on_accepted(kind, content)
            if len(self._encoded) >= ENCODED_KEPT:  # not signed soon (the line is down or backs up):
                del self._encoded[next(iter(self._encoded))]  # the oldest is encoded again when it is
            self._encoded[item.local] = (content, member)
        return item

    def watch_accepted(self, sink: AcceptSink) -> None:
        """Tell ``sink`` of every item accepted from now on, and at once of the ACKs, NOTICEs and
        NOTICE_WITHDRAWs that wait in the outbox since before this session (ops stops a FLASH's
        escalation at our accepted ACK, and counts our unsent notices in the operator's check)."""
        self.on_accepted = sink
        for kind, content in self._accepted_before:
            sink(kind, content)
        self._accepted_before = []

    def _envelope_bound(self, kind: str, prio: str, member_len: int) -> int:
        """The most disk an envelope of ``kind``/``prio`` whose content member is ``member_len``
        bytes takes once signed (as ``disk_ours`` counts it): the widest header this session signs
        (every number at its widest), the body (the member with its salt) and the framing and
        signature. The real one is never larger, so a budget checked with it is never passed."""
        return self._header_base + len(kind) + len(prio) + member_len + _SALT_BYTES + 72

    def confirm(self, wall: int) -> list[Action]:
        self.record = _replace(self.record, confirmed_local=True)
        self.ledger.put_line(self.record)
        self._activate()
        return self._run(self.link.confirm(wall), wall)

    def _activate(self) -> None:
        was_active = self.link.active
        self.link.active = self.record.active
        if self.link.active and not was_active:
            self.alarm("info", "line.confirmed", line=self.line[:8], peer=self.record.peer_name)

    # -- events --------------------------------------------------------------------------------
    def _run(self, outputs: list[ev.Output], wall: int) -> list[Action]:
        actions: list[Action] = []
        for o in outputs:
            if isinstance(o, (Send, Close)):
                actions.append(o)
                if isinstance(o, Close):
                    self.paths.setdefault(o.path, PathStatus()).up = False
                    self.paths[o.path].reason = o.reason
            else:
                actions += self._on_event(o, wall)
        return actions

    def _on_peer_term(self, term: int | None) -> None:
        """The peer's HA lease term as its HELLO says: a higher one than last seen is a failover
        (or switchover) of the peer's pair, an alarm here once. Only compared, never a bound; a
        lower one (an older process, a HELLO that crossed the takeover) changes nothing."""
        if term is None:
            return
        last, self.peer_term = self.peer_term, max(term, self.peer_term or 0)
        if self.peer_term != last:  # kept with the line: a failover while this station was down alarms too
            self.record = _replace(self.record, extra={**self.record.extra, "peer_term": self.peer_term})
            self.ledger.put_line(self.record)
        if last is not None and term > last:
            self.alarm("alarm", "peer.failover", last=last, term=term)

    def _on_peer_addresses(self, addresses: tuple[str, ...]) -> None:
        """The peer's HELLO says where it may be dialled (§8.3): addresses we do not dial yet are
        added to the line's paths (kept in the store; the station dials them), never more than
        ``MAX_ADDRESSES`` in all; none is removed (a peer cannot talk us out of the paths we have)."""
        room = MAX_ADDRESSES - len(self.record.paths)
        new = [a for a in dict.fromkeys(addresses) if a not in self.record.paths][: max(0, room)]
        if not new:
            return
        self.record = _replace(self.record, paths=(*self.record.paths, *new))
        self.ledger.put_line(self.record)
        self.new_paths += new
        self.alarm("info", "peer.address" if len(new) == 1 else "peer.addresses", addresses=", ".join(new))

    def _on_event(self, e: ev.Event, wall: int) -> list[Action]:
        if isinstance(e, ev.EnvelopeIn):
            return self._on_envelope(e.seq, e.raw, wall, e.split)
        if isinstance(e, ev.ReceiptIn):
            return self._on_receipt(e.raw)
        if isinstance(e, ev.ResendFrom):
            # The peer lacks our envelopes past e.seq: window of them now, the rest as its receipts come
            # (its HELLO's number never sets how much is read and framed at once).
            self.link.resend(e.path, e.seq + 1, None)
            return self._pump(e.path)
        if isinstance(e, ev.GapRequest):
            if e.station == self.us:  # ours: a part now, the rest as the peer's receipts come
                self.link.resend(e.path, e.from_seq, e.to_seq)
                return self._pump(e.path)
            return self._send_run(e.path, e.station, e.from_seq, e.to_seq)[0]  # its own: it asks again
        if isinstance(e, ev.Synced):
            self.synced = True
            self._drop_own_waiting()  # recovery is done: anything still waiting is a copy, or junk
            later, self._receipt_later = self._receipt_later, None
            synced: list[Action] = self._on_receipt(later) if later is not None else []
            if self._proposal:
                synced += self.link.send_raw(FrameType.CHECKPOINT, self._proposal.encode())
            return synced
        if isinstance(e, ev.PathOpen):
            self._peer_checkpoint = e.peer_checkpoint
            self._on_peer_term(e.peer_term)
            if e.peer_addresses and not self.record.we_invited:  # only the joiner dials (§8.1)
                self._on_peer_addresses(e.peer_addresses)
            # Our latest receipt goes out on every path that opens: the peer may have lost the
            # one we sent (it was killed before saving it), and nothing else repeats it.
            latest = self.ledger.latest_receipt(self.line, self.us)
            out: list[Action] = [*self.link.send_raw(FrameType.RECEIPT, latest[1].encode(), e.path)] if latest else []
            if self._proposal is not None and self.synced and self.link.synced:
                # Our outstanding proposal goes out again on a path that opens while another kept
                # the line in sync (no Synced to send it): it, or the peer's COSIGN of it, may have
                # been lost with a path that closed meanwhile, and nothing else repeats it (chaos
                # seed 499194816: one checkpoint apart, and no checkpoint after). The peer
                # countersigns it, or gives back the pair it already holds.
                out += self.link.send_raw(FrameType.CHECKPOINT, self._proposal.encode(), e.path)
            if e.peer_confirmed and not self.record.confirmed_peer:
                return out + self._on_confirm(wall)
            return out
        if isinstance(e, ev.ConfirmIn):
            return self._on_confirm(wall)
        if isinstance(e, ev.OwnEnvelopeIn):
            return self._on_own(e.seq, e.raw, wall)
        if isinstance(e, ev.SuspectDuplicate):
            return self._on_suspect(e.seq, e.raw, wall)
        if isinstance(e, ev.CheckpointIn):
            return self._on_checkpoint(e.path, e.raw, wall)
        if isinstance(e, ev.CosignIn):
            return self._on_cosign(e.raw)
        if isinstance(e, ev.Measured):
            status = self.paths.setdefault(e.path, PathStatus())
            status.rtt_ms, status.skew_ms = e.rtt_ms, e.skew_ms
            return []
        if isinstance(e, ev.Recovering):
            self.alarm("warning", "recovering", from_seq=e.from_seq, to_seq=e.to_seq)
            return []
        if isinstance(e, ev.Forked):
            self.alarm("alarm", "fork", seq=e.seq)
            return []
        if isinstance(e, ev.PeerError):
            self.alarm("warning", "path.closed", path=e.path, message=shown(e.message, 500, newlines=False))
            return []
        if isinstance(e, ev.PathDown):
            self.synced = self.link.synced
            if not any(state is PathState.OPEN for state in self.link.paths.values()):
                self._drop_own_waiting()  # not held across reconnects: the next HELLO asks again
            return []
        return []  # pragma: no cover

    def _on_confirm(self, wall: int) -> list[Action]:
        self.record = _replace(self.record, confirmed_peer=True)
        self.ledger.put_line(self.record)
        self._activate()
        return []

    def _on_envelope(self, seq: int, raw: bytes, wall: int, rawenv: RawEnvelope | None = None) -> list[Action]:
        try:  # our limits first (nothing changes if they refuse), then every trust rule, in the gate
            if self.disk_theirs + self._pending.bytes + len(raw) > self.limits.max_line_disk_bytes:
                raise LimitError(
                    "the peer's envelopes on this line are at their disk limit (max_line_disk_bytes); not stored, "
                    "not receipted"
                )
            if rawenv is None:
                rawenv = split(raw, self.limits.max_frame_bytes)
            if rawenv.body_bytes is not None and len(rawenv.body_bytes) > self.limits.max_body_bytes + BODY_OVERHEAD:
                raise LimitError(
                    f"envelope body is {len(rawenv.body_bytes)} bytes, over this station's limit (max_body_bytes "
                    f"{self.limits.max_body_bytes}); not stored, not receipted"
                )
            env = self.gate.accept_envelope(rawenv, sender=self.peer)
        except RedlineError as exc:
            self.alarm("alarm", "envelope.refused", seq=seq, peer=self.record.peer_name, exc=str(exc))
            return self._run(self.link.rejected(seq, str(exc), self._their_tail.seq), wall)
        self._pending.envelopes.append(env)
        self._pending.bytes += len(raw)
        if env.header.kind in OPERATIONAL_KINDS:
            self._checkpoint_due = True
        return self._recover_waiting(wall)

    def _on_own(self, seq: int, raw: bytes, wall: int) -> list[Action]:
        """One of our own envelopes, returned by the peer after this store lost it. It may have
        seen envelopes of the peer this store lost too: it waits until the gate holds those, so
        both chains are recovered in causal order. What waits is unverified peer input: bounded in
        count and in bytes like the link's gap buffer; what does not fit is forgotten by the link,
        which asks for it again once what waits is signed."""
        if self._own_waiting or peek_seen_seq(raw) > self._their_tail.seq:
            room = (
                len(self._own_waiting) < self.limits.max_gap_buffer
                and self._own_waiting_bytes + len(raw) <= self.limits.max_gap_buffer_bytes
            )
            if room:
                self._own_waiting.append((seq, raw))
                self._own_waiting_bytes += len(raw)
            else:
                self.link.forget_own(seq)
            return []
        return self._recover_own(seq, raw, wall)

    def _recover_own(self, seq: int, raw: bytes, wall: int) -> list[Action]:
        try:
            env = self.gate.accept_envelope(raw, sender=self.us)
        except RedlineError as exc:
            # The link handed this seq over once and would never ask for it again: recovery could
            # not finish. As for the peer's own envelopes (§8.5), every path closes, and the next
            # HELLO asks again from what we hold.
            self.alarm("alarm", "own.unrecoverable", seq=seq, exc=str(exc))
            self._drop_own_waiting()
            return self._run(self.link.own_rejected(seq, str(exc)), wall)
        self._pending.own.append(env)
        return []

    def _recover_waiting(self, wall: int) -> list[Action]:
        out: list[Action] = []
        while self._own_waiting and peek_seen_seq(self._own_waiting[0][1]) <= self._their_tail.seq:
            seq, raw = self._own_waiting.popleft()
            self._own_waiting_bytes -= len(raw)
            out += self._recover_own(seq, raw, wall)
        return out

    def _drop_own_waiting(self) -> None:
        """Forget our own envelopes waiting for the peer's: the link asks for them again."""
        if self._own_waiting:
            self.link.forget_own(self._own_waiting[0][0])
        self._own_waiting.clear()
        self._own_waiting_bytes = 0

    def _on_suspect(self, seq: int, raw: bytes, wall: int) -> list[Action]:
        rawenv = split(raw)
        if self.ledger.has_id(self.line, rawenv.id) or any(e.id == rawenv.id for e in self._pending.envelopes):
            return []  # a copy of what we hold: dropped before any signature check
        held = self._held_raw(seq)
        if held is None:
            return []  # beyond what we hold: not a conflict, just early; it will come again in order
        flagged = len(self.gate.flagged_statements)
        try:
            _, env = self.gate.check_equivocation(held, raw, presented_now=True)
            if env.header.sender != self.peer:
                raise WrongSenderError("envelope names another sender")
        except RedlineError as exc:
            self._say_flagged(flagged)  # at a seq the peer's root revoked: said, and no halt
            return self._run(self.link.rejected(seq, str(exc), self._their_tail.seq), wall)
        # A second validly signed envelope at a seq we hold or are about to store: keep it and let
        # the ledger judge it after this batch's envelopes are in (it may still be pending here).
        self._pending.suspects.append(env)
        return []

    def _held_raw(self, seq: int) -> bytes | None:
        """The peer's envelope we hold at ``seq``: stored, or verified and waiting for this commit."""
        for env in self._pending.envelopes:
            if env.seq == seq:
                return env.encode()
        if self.ledger.envelope_id(self.line, self.peer, seq) is None:
            return None
        return self.ledger.raw_envelope(self.line, self.peer, seq)

    def _equivocated(self, exc: EquivocationError) -> list[Action]:
        """Both kept as evidence; this direction halts; both ends alarm (we tell the peer)."""
        self.halted = True
        self.link.halt()
        said: dict[str, Param] = {"line": self.line[:8], "exc": str(exc)}
        text = render("equivocation", said)
        self.alarm("alarm", "equivocation", **said)
        return [*self.link.send_raw(FrameType.ERROR, canonical.encode({"message": text}))]

    def _on_receipt(self, raw: bytes) -> list[Action]:
        if raw == self._last_receipt_raw:
            return []  # the receipt last taken, again (its copy on another path): not parsed again
        try:
            signed = Signed.decode(raw)
            peek = Receipt.peek(signed)
            older = peek.of == self.us and peek.seq <= self.receipted_seq
            if older and not self.link.resend_waits_for(peek.seq):
                return []  # a copy (another path) or an older receipt: nothing new, not verified
            if self.gate.revoked_key(self.peer, peek.key) and peek.seq <= self._flagged_receipt_seq:
                return []  # the revoked key again, no further than it already went (said once, not verified)
            flagged = len(self.gate.flagged_statements)
            receipt = self.gate.accept_receipt(signed, by=self.peer, peeked=peek)
        except RedlineError as exc:
            if isinstance(exc, ReceiptBeyondChainError) and self.link.recover_to:
                self._receipt_later = raw  # of envelopes we are still recovering: judged when done
                return []
            # Not remembered: a copy is judged again, and may be taken (its key's KEY envelope may
            # come on the other path after it).
            self.alarm("warning", "receipt.refused", peer=self.record.peer_name, exc=str(exc))
            return []
        self._last_receipt_raw = raw
        if self._say_flagged(flagged):  # the revoked key's word: what it receipted is still resent
            self._flagged_receipt_seq = max(self._flagged_receipt_seq, receipt.seq)
            return []
        if older:
            # A peer restored from an older copy receipts again what it had receipted before: that
            # paces our resend to it (link.resend_waits_for), and changes nothing else.
            self.link.resend_acked(receipt.seq)
            return self._pump()
        self._pending.receipt, self._pending.receipt_seq = signed, receipt.seq
        self.receipted_seq = receipt.seq
        self.link.receipted(receipt.seq)
        return self._pump()  # the peer took what we resent: the next part

    def _pump(self, path: str | None = None) -> list[Action]:
        """Put on what may go now of our envelopes the peer asked for again (``link.resend_due``)."""
        out: list[Action] = []
        for p, first, last in self.link.resend_due(path):
            sent, upto = self._send_run(p, self.us, first, last)
            self.link.resent(p, upto)
            out += sent
        return out

    def _send_run(self, path: str, station: str, first: int, last: int) -> tuple[list[Action], int]:
        """``station``'s envelopes ``first``..``last`` as frames for ``path``: at most
        ``max_gap_buffer_bytes`` of them (at least one, so an envelope bigger than that still goes),
        read a page at a time, so the peer's range is never what sets how much is read or built.
        Returns the frames and the last seq among them (``first - 1``: none)."""
        out: list[Action] = []
        size, upto = 0, first - 1
        if station not in (self.us, self.peer):
            return out, upto
        while upto < last:
            page = list(self.ledger.raw_envelopes(self.line, station, upto, min(last - upto, 64)))
            if not page:
                break
            for seq, raw in page:
                if upto >= first and size + 5 + len(raw) > self.limits.max_gap_buffer_bytes:  # 5: frame header
                    return out, upto
                out += self.link.send_envelope(seq, raw, path, ours=station == self.us)
                size += 5 + len(raw)
                upto = seq
        return out, upto

    # -- checkpoints ---------------------------------------------------------------------------
    def _heads(self, ours: int, theirs: int) -> tuple[Head, Head]:
        a = Head(station=self.us, size=ours, root=self.ledger.log(self.line, self.us).root(ours).hex())
        b = Head(station=self.peer, size=theirs, root=self.ledger.log(self.line, self.peer).root(theirs).hex())
        return (a, b) if a.station < b.station else (b, a)

    def _maybe_propose(self, wall: int) -> list[Action]:
        if not (self._checkpoint_due and self.is_proposer and self._proposal is None and self.link.synced):
            return []
        last = self.ledger.last_checkpoint(self.line)
        ours = min(self.link.peer_has_ours, self.ledger.head(self.line, self.us)[0])
        theirs = self.ledger.head(self.line, self.peer)[0]
        if last:
            cp = Checkpoint.peek(last[1])
            if cp.head(self.us).size == ours and cp.head(self.peer).size == theirs:
                self._checkpoint_due = False
                return []
        self._checkpoint_due = False
        self._last_checkpoint_wall = wall
        proposal = Checkpoint(
            line=self.line, n=(last[0] + 1) if last else 1,
            prev=last[1].digest(Checkpoint.DOMAIN) if last else None,
            heads=self._heads(ours, theirs), by=self.us, key=self.keys.key_id, time=wall,
        ).sign(self.keys.signing)  # fmt: skip
        self._proposal = proposal
        return [*self.link.send_raw(FrameType.CHECKPOINT, proposal.encode())]

    def _on_checkpoint(self, path: str, raw: bytes, wall: int) -> list[Action]:
        """Countersign a proposal only over what we hold and only extending the last checkpoint."""
        try:
            signed = Signed.decode(raw)
            peek = Checkpoint.peek(signed)
            if peek.by == self.us:
                return self._adopt_own_proposal(signed)
            if peek.by != self.peer:
                raise WrongSenderError("checkpoint proposal from a station that is not our peer")
            Checkpoint.open(signed, self.gate.key(self.peer, peek.key))
            last = self.ledger.last_checkpoint(self.line)
            if last and peek.n <= last[0]:
                # The proposer lost what we countersigned (it restarted before our COSIGN arrived):
                # give it back checkpoint n, its own proposal and our cosign, instead of refusing.
                # One row by its key: the peer may send an old proposal again as often as it likes.
                stored = self.ledger.checkpoint(self.line, peek.n)
                if stored is not None:
                    return [*self.link.send_raw(FrameType.CHECKPOINT, stored[1].encode(), path),
                            *self.link.send_raw(FrameType.COSIGN, stored[2].encode(), path)]  # fmt: skip
            if self.gate.revoked_key(self.peer, peek.key):
                # After its REVOKE the peer proposes under its next key (a proposal it had out under
                # the old one it drops and makes again): this one is not its word, and countersigning
                # it would spend the number its real proposal needs.
                self.alarm("alarm", "checkpoint.revoked_key", n=peek.n, peer=self.record.peer_name, key=peek.key[:12])
                return []
            cp = self.gate.check_proposal(signed)
        except CheckpointNumberError as exc:
            last_n = self.gate.last_checkpoint.n if self.gate.last_checkpoint else 0
            if Checkpoint.peek(signed).n > last_n + 1:  # we lack some (a restored store): the proposer gives them
                self.alarm("info", "checkpoint.ahead", exc=str(exc))
            else:
                self.alarm("alarm", "checkpoint.refused", exc=str(exc))
            return []
        except RedlineError as exc:
            self.alarm("alarm", "checkpoint.refused", exc=str(exc))
            return []
        cosign = Cosign(
            line=self.line, checkpoint=signed.digest(Checkpoint.DOMAIN), by=self.us, key=self.keys.key_id, time=wall
        ).sign(self.keys.signing)
        flagged = len(self.gate.flagged_statements)
        self.gate.accept_checkpoint(signed, cosign)
        self._say_flagged(flagged)
        self._store_checkpoint(cp.n, signed, cosign)
        return [*self.link.send_raw(FrameType.COSIGN, cosign.encode(), path)]

    def _adopt_own_proposal(self, signed: Signed) -> list[Action]:
        """The peer returned a proposal of ours it countersigned: make it our outstanding one, so
        the COSIGN that follows completes it (after we lost it in a restart)."""
        try:
            if self.gate.check_proposal(signed).by == self.us:
                self._proposal = signed
        except RedlineError:
            pass  # not the next checkpoint here (already stored, or stale): nothing to adopt
        return []

    def _on_cosign(self, raw: bytes) -> list[Action]:
        if self._proposal is None:
            return []
        try:
            signed = Signed.decode(raw)
            peek = Cosign.peek(signed)
            last = self.ledger.last_checkpoint(self.line)
            if (
                (last is not None and peek.checkpoint == last[1].digest(Checkpoint.DOMAIN))
                or peek.checkpoint in self._stored_cps
                or peek.checkpoint in self._resent
            ):
                # A copy (the other path, perhaps a slower one: the checkpoints after it completed
                # meanwhile), or the peer's cosign of one we gave it again.
                return []
            if peek.by != self.peer:
                raise WrongSenderError("countersignature from a station that is not our peer")
            flagged = len(self.gate.flagged_statements)
            self.gate.accept_checkpoint(self._proposal, signed)
            self._say_flagged(flagged)
        except RedlineError as exc:
            self.alarm("warning", "cosign.refused", exc=str(exc))
            return []
        self._store_checkpoint(Checkpoint.peek(self._proposal).n, self._proposal, signed)
        self._proposal = None
        self._checkpoint_due = True  # if more happened meanwhile, the next flush covers it (else a no-op)
        return []

    # -- group commit ----------------------------------------------------------------------------
    def flush(self, wall: int) -> list[Action]:
        """Store what was verified, receipt it, sign what waits in the outbox: one transaction.
        Returns the frames to send; send them only after this returns (after the fsync)."""
        if self._idle(wall):
            return []  # not even an empty transaction: the station flushes every line at every tick
        p = self._pending
        if p.receipt is not None:
            # The peer's new receipt: counted once and held in memory, saved below with this
            # commit's envelopes or once due. Alone, it costs no transaction at all.
            self.on_receipted(p.receipt_seq, wall)
            self._held, p.receipt = (p.receipt, p.receipt_seq), None
            if self._idle(wall):
                return []
        out: list[Action] = []
        pending, self._pending = self._pending, _Pending()
        with self.ledger.batch():
            for env in pending.own:
                self.ledger.append(env, wall)
                self.on_stored(env, True, wall)
                self._match_outbox(env)
            if pending.own:
                out += self._run(self.link.signed(self._our_tail), wall)
            for env in pending.envelopes:
                self.ledger.append(env, wall)
                if env.kind in ("KEY", "REVOKE"):  # the gate checked each certificate under the pinned root
                    self._put_certs(env)
                    if self._add_peer_tls_of(env):
                        self.alarm("info", "tls.rotating", line=self.line[:8], peer=self.record.peer_name, seq=env.seq)
                if env.kind == "REVOKE":
                    self._revoked(env)
                if env.kind == "ROOT":
                    self._root_rotated(env)
                self.on_stored(env, False, wall)
                self.disk_theirs += len(env.header_bytes) + len(env.body_bytes or b"") + 72
            if pending.envelopes:
                self._watch_disk(self.peer, self.disk_theirs)
            for env in pending.suspects:
                try:
                    self.ledger.append(env, wall)
                except EquivocationError as exc:
                    out += self._equivocated(exc)
            if pending.envelopes:
                last = pending.envelopes[-1]
                self.link.stored(ChainHead(seq=last.seq, id=last.id))
                receipt = Receipt(
                    line=self.line, by=self.us, key=self.keys.key_id, of=self.peer, seq=last.seq, id=last.id,
                    received_at=wall,
                ).sign(self.keys.signing)  # fmt: skip
                self.ledger.add_receipt(self.line, self.us, last.seq, receipt, wall)
                out += self.link.send_raw(FrameType.RECEIPT, receipt.encode())
            if self._held is not None and (pending.envelopes or pending.own or self._receipt_due(wall)):
                self.ledger.add_receipt(self.line, self.peer, self._held[1], self._held[0], wall)
                self._receipt_saved, self._held = wall, None
            out += self._sign_pending(wall)
            if self._count_due():
                self._checkpoint_due = True
            out += self._maybe_propose(wall)
        return out

    def _count_due(self) -> bool:
        """A checkpoint falls due by count (PROTOCOL.md 8.7): ``checkpoint_every_envelopes`` of
        either chain beyond the last checkpoint (ours as far as the peer has it, theirs as far as we
        stored it: what a proposal covers), or our operational message receipted and not covered."""
        every = self.limits.checkpoint_every_envelopes
        covered, has = self._checkpointed(self.us), self.link.peer_has_ours
        theirs = self.ledger.head(self.line, self.peer)[0] - self._checkpointed(self.peer)
        return has - covered >= every or theirs >= every or covered < self._op_seq <= has

    def _idle(self, wall: int) -> bool:
        """Nothing for ``flush`` to store, receipt, sign or propose: no verified input waits, no new
        receipt, none held that is due to be saved, nothing in the outbox may be signed now, and no
        checkpoint this side could propose now is or falls due (the conditions ``flush`` itself
        checks, read from memory). A held receipt not yet due costs no transaction: the tick's flush
        saves it once it is."""
        p = self._pending
        if p.envelopes or p.own or p.suspects or p.receipt is not None:
            return False
        if self._held is not None and self._receipt_due(wall):
            return False
        if self.outbox_count > 0 and not self.halted and self.link.can_send() and not self._held_back:
            return False
        if not (self.is_proposer and self._proposal is None and self.link.synced):
            # A checkpoint due is proposed only by the proposer, one at a time, in sync
            # (_maybe_propose). The other side's count of envelopes since the last checkpoint
            # passed checkpoint_every_envelopes and stayed there until the proposer's next one (up
            # to checkpoint_every_seconds), and every flush until then, each receipt's and each
            # tick's, opened a write transaction for nothing.
            return True
        return not (self._checkpoint_due or self._count_due())

    def close(self, wall: int) -> None:
        """A clean stop: save the peer's receipt still held in memory."""
        if self._held is not None:
            with self.ledger.batch():
                self.ledger.add_receipt(self.line, self.peer, self._held[1], self._held[0], wall)
            self._held = None

    def _match_outbox(self, env: Envelope) -> None:
        """A recovered envelope of ours may be one this (restored) store still has as pending in its
        outbox: mark that item signed so it is not signed and sent a second time."""
        kind, content = env.kind, env.content()
        for item in self.ledger.pending(self.line, 64):
            if item.kind == kind and item.content == content:
                self.ledger.mark_signed(item.local, env.seq, env.id)
                self.outbox_count -= 1
                self.outbox_bytes = max(0, self.outbox_bytes - self._signed_bound(env))
                return

    def _receipt_due(self, wall: int) -> bool:
        return wall - self._receipt_saved >= 1000

    def _checkpointed(self, station: str) -> int:
        if self._cp_sizes is None:
            last = self.ledger.last_checkpoint(self.line)
            self._cp_sizes = {h.station: h.size for h in Checkpoint.peek(last[1]).heads} if last else {}
        return self._cp_sizes.get(station, 0)

    def _store_checkpoint(self, n: int, proposal: Signed, cosign: Signed) -> None:
        self.ledger.add_checkpoint(self.line, n, proposal, cosign)
        self._stored_cps.append(proposal.digest(Checkpoint.DOMAIN))
        self._cp_sizes = None
        self.link.checkpoint_n = n

    def _catch_up_checkpoints(self, wall: int) -> list[Action]:
        """The proposer gives a peer that lacks checkpoints (its store was restored from an older
        copy: its HELLO says how far it holds) the ones it stored, a batch at a time and again at
        most every ``checkpoint_every_seconds``, then its outstanding proposal. The peer takes
        them through the gate once it holds the chains they cover, and countersigns."""
        # link.checkpoint_n is our last stored checkpoint's number (kept current): no query per tick
        behind = self.is_proposer and self.link.synced and self._peer_checkpoint < self.link.checkpoint_n
        if not behind or wall - self._resent_at < self.limits.checkpoint_every_seconds * 1000:
            return []
        self._resent_at = wall
        out: list[Action] = []
        missing = self.ledger.checkpoints(self.line, after=self._peer_checkpoint, limit=64)  # these rows only
        for n, proposal, cosign in missing:
            self._resent.add(proposal.digest(Checkpoint.DOMAIN))
            out += self.link.send_raw(FrameType.CHECKPOINT, proposal.encode())
            out += self.link.send_raw(FrameType.COSIGN, cosign.encode())
            self._peer_checkpoint = n
        if self._proposal is not None:
            out += self.link.send_raw(FrameType.CHECKPOINT, self._proposal.encode())
        return out

    def _sign_pending(self, wall: int) -> list[Action]:
        out: list[Action] = []
        if self.halted or not self.link.can_send() or self.outbox_count <= 0 or self._held_back:
            return out  # the count is kept with every accept and signing: no query for an empty outbox
        room = self.limits.window - (self.link.sent_hi - self.link.peer_has_ours)
        for item in self.ledger.pending(self.line, min(room, self.limits.group_commit_rows)):
            switch = self._switch_for(item.kind, item.content)
            if switch is False:
                break
            held = self._encoded.pop(item.local, None)
            # the encoding of this very content object (a number reused after a rollback is another)
            member = held[1] if held is not None and held[0] is item.content else None
            env = seal(
                self.keys.signing, line=self.line, sender=self.us, key=self.keys.key_id,
                seq=self._our_tail.seq + 1, sent_at=wall, kind=item.kind, prio=item.prio, prev=self._our_tail.id,
                seen_seq=self._their_tail_stored().seq, seen_id=self._their_tail_stored().id, lang=self.lang,
                content=item.content, salt=os.urandom(16), member=member,
            )  # fmt: skip
            size = len(env.header_bytes) + len(env.body_bytes or b"") + 72
            if self.disk_ours + size > self.limits.max_line_disk_bytes:
                # Never sign what the peer refuses (it would refuse it on every reconnect and the
                # line would be down both ways): held, unsigned, until the limit is raised. Accept
                # keeps this from happening; an outbox filled by an older version, or under a
                # larger limit, still can.
                self._hold_back(item, size)
                if held is not None:
                    self._encoded[item.local] = held
                break
            self.gate.accept_sealed(env)
            if isinstance(switch, StationKeys):  # sealed with the old key; the new one signs from the next seq
                self.keys = switch
                if env.kind == "REVOKE" and self._proposal is not None:
                    # The peer countersigns nothing under the revoked key now: propose again under the new one.
                    self._proposal, self._checkpoint_due = None, True
            if env.kind == "REVOKE":
                self._revoked(env)
            self.ledger.append(env, wall)
            self.on_stored(env, True, wall)
            self.disk_ours += len(env.header_bytes) + len(env.body_bytes or b"") + 72
            self._watch_disk(self.us, self.disk_ours)
            self.ledger.mark_signed(item.local, env.seq, env.id)
            self.outbox_count -= 1
            self.outbox_bytes = max(0, self.outbox_bytes - self._signed_bound(env))
            self.link.signed(self._our_tail)
            out += self.link.send_envelope(env.seq, env.encode())
            if env.kind in OPERATIONAL_KINDS:
                self._checkpoint_due = True
                self._op_seq = env.seq
        return out

    def _signed_bound(self, env: Envelope) -> int:
        """The bound ``accept`` counted for the item ``env`` signs (its body is the member and salt)."""
        return self._envelope_bound(env.kind, env.header.prio, len(env.body_bytes or b"") - _SALT_BYTES)

    def _hold_back(self, item: OutboxItem, size: int) -> None:
        if not self._held_back:
            self._held_back = True  # (the next session, under a raised limit, tries again)
            self.alarm("alarm", "disk.held", kind=item.kind, local=item.local, size=size, line=self.line[:8],
                       used=self.disk_ours, limit=self.limits.max_line_disk_bytes)  # fmt: skip

    def _switch_for(self, kind: str, content: dict[str, Any]) -> StationKeys | bool | None:
        """For our KEY in the outbox: the keys this line signs with once it is sealed (None: not a
        KEY; False: we do not hold the key it names, so it is not sealed: fail closed)."""
        if kind not in ("KEY", "REVOKE") or not any(
            canonical.decode_object(c.data, "key certificate").get("role") == "signing"
            for c in keyfiles.certs_in(content)
        ):  # fmt: skip
            return None  # a REVOKE of a retired key, or a KEY naming a TLS key only: no switch
        nxt = self.keys.next_key_id
        named = nxt is not None and self.keys.next_cert in keyfiles.certs_in(content)
        switched = self.keys.for_key(nxt) if named and nxt is not None else None
        if switched is None:
            self.alarm("alarm", "key.not_held", line=self.line[:8])
            return False
        return switched

    def _say_flagged(self, before: int) -> bool:
        """Alarm for each receipt or checkpoint signature the gate flagged since ``before`` (a key
        used after its REVOKE: a thief's, or one in flight when it was filed); True if any."""
        new = self.gate.flagged_statements[before:]
        for f in new:
            if f.station == self.peer:
                self.alarm("alarm", "flagged.peer", line=self.line[:8], what=f.describe(self.record.peer_name),
                           peer=self.record.peer_name)  # fmt: skip
            else:
                self.alarm("alarm", "flagged.ours", line=self.line[:8], what=f.describe("our station"))
        del self.gate.flagged_statements[before:]  # said: a live line keeps no list the peer can grow
        return bool(new)

    def _revoked(self, env: Envelope) -> None:
        """A REVOKE the gate accepted (ours or the peer's): said at both ends, naming exactly what
        it flags as signed by a revoked key."""
        ours = env.header.sender == self.us
        name = "our station" if ours else self.record.peer_name
        runs = [f.describe(name) for f in self.gate.flagged() if f.revoked.revoke_seq == env.seq
                and f.station == env.header.sender]  # fmt: skip
        said: dict[str, Param] = {"seq": env.seq, "line": self.line[:8]}
        if not ours:
            said["peer"] = self.record.peer_name
        if runs:
            said["runs"] = "; ".join(runs)
            self.alarm("alarm", "revoke.ours" if ours else "revoke.peer", **said)
        else:
            self.alarm("alarm", "revoke.ours.none" if ours else "revoke.peer.none", **said)

    def root_safety_code(self) -> tuple[Envelope, str] | None:
        """The peer's ROOT awaiting our confirmation and its NEW safety code, if there is one."""
        from redline import rootrotation

        pending = self.gate.pending_root(self.peer)
        if pending is None:
            return None
        env = _stored(self.ledger.raw_envelope(self.line, self.peer, pending.seq))
        prev = self.gate.root_history[self.peer][-2].public
        return env, rootrotation.safety_code(self.line, prev, pending.public, pending.digest)

    def confirm_root(self, typed: str, wall: int) -> OutboxItem:
        """Our operator typed the safety code the peer's operator read aloud: if it is the one the
        peer's pending ROOT gives, file the ROOT_CONFIRM that makes its new root trusted (section
        5.9). A wrong code changes nothing (``PairingError``)."""
        from redline import rootrotation
        from redline.pairing import normalize_code

        held = self.root_safety_code()
        if held is None:
            raise LocalProtocolError(f"{self.record.peer_name} has no root rotation awaiting confirmation")
        env, code = held
        if normalize_code(typed) != code:
            raise PairingError("the safety code does not match the one the peer's new root gives: do NOT trust it; "
                               "call the peer's operator on a known number")  # fmt: skip
        ref = {"sender": self.peer, "seq": env.seq, "id": env.id}
        content = rootrotation.confirm_content(ref, self.gate.root_history[self.peer][-1].digest)
        return self.accept("ROOT_CONFIRM", "FLASH", content, _root_confirm_idem(env.id), wall)

    def root_code_to_type(self) -> str | None:
        """The NEW safety code our operator still has to type, or None. None also once our
        ROOT_CONFIRM is filed but not sealed yet (the line down, or a restart before it went out):
        the gate trusts the new root only from the sealed ROOT_CONFIRM, but the operator has done
        their part, and a status still asking for the code would have them type it again."""
        held = self.root_safety_code()
        if held is None or self.ledger.outbox_by_idem(self.line, _root_confirm_idem(held[0].id)) is not None:
            return None
        return held[1]

    def _root_rotated(self, env: Envelope) -> None:
        held = self.root_safety_code()
        code = held[1] if held else "?"
        self.alarm("alarm", "root.rotation", line=self.line[:8], peer=self.record.peer_name, seq=env.seq, code=code)

    def _put_certs(self, env: Envelope) -> None:
        for cert in keyfiles.certs_in(env.content()):
            key = canonical.decode_object(cert.data, "key certificate")
            self.ledger.put_cert(env.header.sender, str(key["key_id"]), str(key["role"]), cert)

    def _watch_disk(self, sender: str, used: int) -> None:
        """Alarm once when a direction passes the warning fraction of its budget (again after it
        fell back below, when the limit was raised)."""
        limit = self.limits.max_line_disk_bytes
        if used < limit * self.limits.line_disk_warn_fraction:
            self._disk_warned.discard(sender)
            return
        if sender not in self._disk_warned:
            self._disk_warned.add(sender)
            said: dict[str, Param] = {"line": self.line[:8], "used": used, "limit": limit,
                                      "share": f"{used / limit:.0%}"}  # fmt: skip
            if sender == self.us:
                self.alarm("alarm", "disk.warn.ours", **said)
            else:
                self.alarm("alarm", "disk.warn.peer", peer=self.record.peer_name, **said)

    def _their_tail_stored(self) -> ChainHead:
        seq, eid = self.ledger.head(self.line, self.peer)
        return ChainHead(seq=seq, id=eid)

    # -- status ----------------------------------------------------------------------------------
    def status(self) -> LineStatus:
        our_seq = self._our_tail.seq
        return LineStatus(
            line=self.line, peer=self.record.peer_name, peer_fingerprint=self.peer, peer_lang=self.record.peer_lang,
            confirmed_local=self.record.confirmed_local, confirmed_peer=self.record.confirmed_peer,
            safety_code=self.record.safety_code if not self.record.active else None, active=self.record.active,
            synced=self.link.synced, halted=self.halted, our_seq=our_seq,
            their_seq=self.ledger.head(self.line, self.peer)[0], outbox=self.outbox_count,
            unreceipted=our_seq - self.receipted_seq,
            paths={
                p: PathView(up=s.up, rtt_ms=s.rtt_ms, skew_ms=s.skew_ms, last_rx=s.last_rx_wall, reason=s.reason)
                for p, s in self.paths.items()
            },
            revoked=tuple(f.describe("this station" if f.station == self.us else self.record.peer_name)
                          for f in self.gate.flagged()),
            root_code=self.root_code_to_type(),
        )  # fmt: skip


_FILLED_BY_STATION = frozenset({"person"})


def _same_as_before(
    earlier: OutboxItem, kind: str, prio: str, content: dict[str, Any], filled: frozenset[str] = frozenset()
) -> None:
    """A retry with an idempotency key must carry what the first request did: the key then stands
    for that message. Another message under a used key would be answered with the first one's
    acceptance and be lost without a word, so it is refused. The one place for the CLI, the API,
    the console and the control socket: each files through ``Station.act``, whose operator checks
    complete references (an id prefix typed in a form) before this compares, so both submits are
    compared in their completed form."""
    # What the station fills in itself differs between two submits of one request: a person's
    # signature (made again), and what the caller says it filled in for this submit (a CALL_REQUEST's
    # "expires", now + call_request_ttl, when the operator gave none). What the operator gave is compared.
    filled = _FILLED_BY_STATION | filled
    same_body = canonical.encode({k: v for k, v in earlier.content.items() if k not in filled}) == canonical.encode(
        {k: v for k, v in content.items() if k not in filled}
    )
    if (earlier.kind, earlier.prio) != (kind, prio) or not same_body:
        where = f"outbox #{earlier.local}, " + (f"seq {earlier.seq}" if earlier.seq is not None else "not signed yet")
        raise IdempotencyConflictError(
            f"this idempotency key was already used for a different message ({where}); this one was NOT sent"
        )


def _root_confirm_idem(root_id: str) -> str:
    """The idempotency key of our ROOT_CONFIRM of the peer's ROOT ``root_id``: typing the code
    again (after a crash, say) files nothing more."""
    return f"redline-root-confirm:{root_id}"


def _seq_of(raw: bytes) -> int:
    seq = canonical.decode_object(split(raw).header_bytes, "envelope header")["seq"]
    assert isinstance(seq, int)
    return seq


def _claimed(ledger: Any, line: str, station: str) -> list[bytes]:
    return claimed_roots(_stored(raw) for raw in ledger.raw_of_kind(line, station, "ROOT"))


def _stored(raw: bytes) -> Envelope:
    """One of the envelopes this store holds, read without a signature check (it was checked when
    stored; the gate's rotation rules run on it again)."""
    r = split(raw)
    header = Header.from_obj(canonical.decode_object(r.header_bytes, "envelope header"))
    return Envelope(header, r.header_bytes, r.body_bytes, r.sig, r.id)


def _replace(record: LineRecord, **changes: Any) -> LineRecord:
    return LineRecord.from_obj({**record.to_obj(), **changes})
