"""Voice audio between two stations: the AUDIO frame's packets, their evidence hash, their bounds.

Audio rides the line's own TLS paths as AUDIO frames (``protocol.framing.FrameType.AUDIO``), outside
the ledger: nothing here is stored, signed or receipted. What makes it evidence is the running hash
(PROTOCOL.md section 8.9): each station hashes, per direction and in packet order, the encoded
packets it sent and those it received; at the end of the call each station files its two digests
in a CALL_AUDIO envelope, and the two stations' digests of one direction must be equal.

Rules of this module:

- The station never decodes or re-encodes audio: what it hashes and relays is exactly what the
  speaker's encoder (the console's WebCodecs Opus encoder, or a headless participant) produced.
  So this module has no codec; tests make real Opus packets with PyAV (``participant.opus_packets``).
- Packets are sent on every open path (like envelopes); the first copy of a packet seq wins, later
  copies are dropped. Packets are hashed in seq order: one arriving early (a new path got ahead of
  an old one) waits in a bounded reorder buffer.
- Lost in flight, sent again for the record: a path can swallow what was written to it before it
  is found dead (``path_dead_after``). The sender keeps its last ``RESEND_PACKETS`` packets and
  sends them again on every path that opens during the call, marked as copies (the top bit of
  ``ts``, ``RESENT``); the receiver takes the ones it lacks, in seq order, into its hash with the
  mark cleared (duplicates are dropped as ever), and plays none of them: the record is whole, the
  ear is not fed stale audio. No clock is involved, so a stepped clock cannot mute a call.
- Bounded: a packet over ``max_audio_packet_bytes``, packets faster than
  ``max_audio_packets_per_second`` (a bucket that holds one resend burst), packets for a call that
  is not live here (before the pick-up, after the end, another call) are dropped and counted, and
  close nothing: an attacker on a path can stall audio (TLS stops it injecting any), a confused
  peer cannot take the line down.
- Pure: no I/O, no clock; ``now`` is passed in (ms).
"""

from __future__ import annotations

import hashlib
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final

from redline.errors import RemoteProtocolError
from redline.ops.views import DirectionView, PathAudioView

DOMAIN: Final = b"redline/1/audio\x00"
_HEAD = struct.Struct(">32sII")  # call (the ring's envelope id), packet seq, timestamp (ms since pick-up)
_ITEM = struct.Struct(">III")  # seq, timestamp, length: the packet boundary in the hash
REORDER_PACKETS: Final = 64  # packets held while an earlier seq may still come on another path
RESEND_PACKETS: Final = 250  # 5 s of 20 ms packets: more than a dead path goes unnoticed (path_dead_after)
RESENT: Final = 0x8000_0000  # the top bit of ts: a copy sent again for the record (ts itself stays under 2^31 ms)


@dataclass(frozen=True, kw_only=True)
class AudioPacket:
    """One encoded audio packet (an Opus packet of 20 ms, as produced by the speaker's encoder)."""

    call: str  # the CALL_RING envelope id, hex
    seq: int  # 0, 1, 2... per call and direction
    ts: int  # ms since the call was picked up, on the sender's clock
    data: bytes
    resent: bool = False  # a copy sent again for the record (for no playout), RESENT on the wire

    def encode(self) -> bytes:
        ts = (self.ts & ~RESENT) | (RESENT if self.resent else 0)
        return _HEAD.pack(bytes.fromhex(self.call), self.seq, ts) + self.data

    @classmethod
    def decode(cls, payload: bytes) -> AudioPacket:
        if len(payload) < _HEAD.size + 1:
            raise RemoteProtocolError(f"AUDIO frame of {len(payload)} bytes is shorter than a packet")
        call, seq, ts = _HEAD.unpack_from(payload)
        return cls(call=call.hex(), seq=seq, ts=ts & ~RESENT, data=payload[_HEAD.size :], resent=bool(ts & RESENT))


class AudioHash:
    """The running SHA-256 of one direction of one call (PROTOCOL.md section 8.9):
    ``SHA-256(DOMAIN || call id (32 bytes) || sender fingerprint (32 bytes) ||
    for each packet in seq order: u32 seq || u32 ts || u32 len || data)``."""

    def __init__(self, call: str, sender: str) -> None:
        self._h = hashlib.sha256(DOMAIN + bytes.fromhex(call) + bytes.fromhex(sender))
        self.packets = 0
        self.first_ts: int | None = None
        self.last_ts = 0

    def add(self, seq: int, ts: int, data: bytes) -> None:
        self._h.update(_ITEM.pack(seq, ts, len(data)) + data)
        self.packets += 1
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = ts

    @property
    def ms(self) -> int:
        return 0 if self.first_ts is None else max(0, self.last_ts - self.first_ts)

    def digest(self) -> str:
        return self._h.copy().hexdigest()

    def result(self) -> dict[str, int | str]:
        """The CALL_AUDIO direction object."""
        return {"digest": self.digest(), "packets": self.packets, "ms": self.ms}

    def view(self) -> DirectionView:
        """The same, for the read views."""
        return DirectionView(digest=self.digest(), packets=self.packets, ms=self.ms)


def digest_of(call: str, sender: str, packets: list[tuple[int, int, bytes]]) -> str:
    """The digest of a whole direction at once (for tests, vectors and ``verify``)."""
    h = AudioHash(call, sender)
    for seq, ts, data in packets:
        h.add(seq, ts, data)
    return h.digest()


@dataclass
class PathAudio:
    """Audio health of one path as seen by the receiver."""

    packets: int = 0  # copies received on this path (first or not)
    first: int = 0  # packets whose first copy came on this path
    last_at: int | None = None  # ms, when the last copy arrived


@dataclass
class Counters:
    sent: int = 0
    received: int = 0
    duplicates: int = 0  # later copies of a packet already taken (another path)
    oversized: int = 0
    too_fast: int = 0
    not_live: int = 0  # before the pick-up, after the end, or another call
    malformed: int = 0
    late: int = 0  # behind the reorder window: lost for the record


@dataclass
class CallMedia:
    """One live call's audio at one station: what it sent and received, hashed."""

    call: str
    us: str
    peer: str
    started_at: int  # ms, our pick-up (or the peer's, as we stored it)
    max_bytes: int
    max_rate: int  # packets per second, per direction
    sent: AudioHash = field(init=False)
    received: AudioHash = field(init=False)
    counters: Counters = field(default_factory=Counters)
    paths: dict[str, PathAudio] = field(default_factory=dict)
    next_out: int = 0
    next_in: int = 0
    _held: dict[int, tuple[int, bytes, bool]] = field(default_factory=dict)  # seq -> (ts, data, resent)
    _bucket: tuple[int, float] | None = None  # (ms, packets allowed now): the rate limit
    recent: deque[AudioPacket] = field(default_factory=lambda: deque(maxlen=RESEND_PACKETS))  # ours, to resend
    ended: bool = False
    # Told each packet as it enters a hash (True: sent), in hash order: the station's recording.
    sink: Callable[[bool, AudioPacket], None] | None = None

    def __post_init__(self) -> None:
        self.sent = AudioHash(self.call, self.us)
        self.received = AudioHash(self.call, self.peer)

    def packet(self, data: bytes, now: int) -> AudioPacket:
        """Our next packet: numbered, timestamped and hashed as sent (call only while live)."""
        if self.ended:
            raise ValueError("this call's audio is over here")
        if len(data) + _HEAD.size > self.max_bytes:
            raise ValueError(f"audio packet of {len(data)} bytes is over max_audio_packet_bytes")
        p = AudioPacket(call=self.call, seq=self.next_out, ts=min(max(0, now - self.started_at), RESENT - 1), data=data)
        self.next_out += 1
        self.sent.add(p.seq, p.ts, p.data)
        self.recent.append(p)
        self.counters.sent += 1
        if self.sink is not None:
            self.sink(True, p)
        return p

    def receive(self, path: str, payload: bytes, now: int) -> list[AudioPacket]:
        """A peer's AUDIO frame on ``path``: the packets now in order (none, one, or several released
        from the reorder buffer), each ``resent`` or not (a copy for the record: not to be played).
        Whatever is refused is counted, never raised."""
        c = self.counters
        if len(payload) > self.max_bytes:
            c.oversized += 1
            return []
        try:
            p = AudioPacket.decode(payload)
        except RemoteProtocolError:
            c.malformed += 1
            return []
        if p.call != self.call or self.ended:
            c.not_live += 1
            return []
        health = self.paths.setdefault(path, PathAudio())
        health.packets += 1
        health.last_at = now
        if p.seq < self.next_in or p.seq in self._held:
            c.duplicates += 1
            return []
        # A bucket of max(rate, one resend burst) packets, refilled at max_rate per second: a peer
        # sending again what a dead path swallowed is not refused, a flood still is.
        capacity = max(self.max_rate, RESEND_PACKETS)
        last, tokens = self._bucket if self._bucket is not None else (now, float(capacity))
        tokens = min(float(capacity), tokens + max(0, now - last) * self.max_rate / 1000)
        if tokens < 1:
            c.too_fast += 1
            self._bucket = (now, tokens)
            return []
        self._bucket = (now, tokens - 1)
        health.first += 1
        if p.seq > self.next_in:
            if len(self._held) >= REORDER_PACKETS or p.seq - self.next_in > 10 * REORDER_PACKETS:
                # The gap will not fill in time: skip over it (those packets are lost for the
                # record, and the digests will say so).
                c.late += p.seq - self.next_in - len(self._held)
                self._release_all()
                self.next_in = p.seq
            else:
                self._held[p.seq] = (p.ts, p.data, p.resent)
                return []
        out = [self._take(p.seq, p.ts, p.data, p.resent)]
        while self.next_in in self._held:
            ts, data, resent = self._held.pop(self.next_in)
            out.append(self._take(self.next_in, ts, data, resent))
        return out

    def _take(self, seq: int, ts: int, data: bytes, resent: bool = False) -> AudioPacket:
        self.received.add(seq, ts, data)
        self.counters.received += 1
        self.next_in = seq + 1
        p = AudioPacket(call=self.call, seq=seq, ts=ts, data=data, resent=resent)
        if self.sink is not None:
            self.sink(False, p)
        return p

    def _release_all(self) -> None:
        for seq in sorted(self._held):
            ts, data, resent = self._held.pop(seq)
            self._take(seq, ts, data, resent)

    def resend(self) -> list[bytes]:
        """Our last packets (``RESEND_PACKETS``) as AUDIO payloads marked ``RESENT``, oldest first."""
        return [replace(p, resent=True).encode() for p in self.recent]

    def restore(self, sent: list[tuple[int, int, bytes]], received: list[tuple[int, int, bytes]]) -> None:
        """After a restart mid-call: the hashes of what the recordings kept, and no more audio."""
        for seq, ts, data in sent:
            self.sent.add(seq, ts, data)
        for seq, ts, data in received:
            self.received.add(seq, ts, data)
        self.next_out = sent[-1][0] + 1 if sent else 0
        self.next_in = received[-1][0] + 1 if received else 0
        self.ended = True

    def end(self) -> dict[str, object]:
        """Stop taking packets; the content of our CALL_AUDIO (without ``ring``)."""
        if not self.ended:
            self._release_all()
            self.ended = True
            # The station seals the recording next: let go of it, so that nothing can write to a sealed
            # recording (a Recorder written after sealing would open its ``.part`` again); ``receive``
            # and ``packet`` refuse an ended call's audio as well.
            self.sink = None
        return {"sent": self.sent.result(), "received": self.received.result()}

    def health(self, now: int) -> dict[str, PathAudioView]:
        """Per path: packets received, how many came first there, ms since the last one."""
        return {
            p: PathAudioView(packets=h.packets, first=h.first, silent_ms=None if h.last_at is None else now - h.last_at)
            for p, h in self.paths.items()
        }
