"""Call recordings: each direction of a voice call kept as an Ogg Opus file in the station directory.

A recording is evidence, not the store (the store is the ledger): what makes it evidence is that
the packets it holds hash, by ``media.AudioHash``, to the digest the recording station signed into
its CALL_AUDIO (PROTOCOL.md section 8.10). ``gate.accept_recording`` is the rule; this module only
writes and reads the files.

Format (RFC 3533 Ogg, RFC 7845 Opus in Ogg), one file per call and direction,
``recordings/<line>/<call>.<sent|received>.opus``:

- logical stream 1, Ogg Opus: OpusHead, OpusTags, then each Opus packet exactly as the station
  hashed it, one packet per page, granule position = 48 kHz samples decoded so far; any Ogg Opus
  player plays it;
- logical stream 2, the index (codec id ``RLAUDIDX``, ignored by players): a header naming the call,
  the sender of the packets and the direction, then for each audio packet its ``u32 seq || u32 ts``
  (the seq and timestamp the hash covers), in the page just before that packet's page.

The container is written here by hand rather than by PyAV's (ffmpeg's) Ogg muxer, because the
file must be recoverable packet by packet after a kill -9 (the station seals the surviving part at
restart and files its digests as ``interrupted``): every packet is one ``write`` of two whole pages
at once, so a crash leaves at most a torn last page that a CRC finds and sealing cuts off; ffmpeg's
muxer buffers pages, writes at close and has no way to carry the per-packet seq and ts the hash
needs. A recording still open is named ``….opus.part``; sealing cuts any torn tail, marks the last
page of each stream end-of-stream and writes the result as ``….opus`` through a fsynced temporary
file and a rename (a crash while sealing leaves the ``.part`` or the sealed file, see ``seal``).

Pure functions (``pages``, ``parse``) over bytes; ``Recorder`` and ``seal`` are the only file I/O.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from redline.errors import RecordingError, VerificationError
from redline.media import AudioPacket

if TYPE_CHECKING:
    from redline.kinds import CallAudio
    from redline.ledger.verify import LineReport

log = logging.getLogger("redline.recording")

OPUS_SERIAL: Final = 0x524C0001
INDEX_SERIAL: Final = 0x524C0002
INDEX_MAGIC: Final = b"RLAUDIDX"
INDEX_VERSION: Final = 1
PRE_SKIP: Final = 312  # libopus's look-ahead at 48 kHz (Chromium's WebCodecs and PyAV both use libopus)
DIRECTIONS: Final = ("sent", "received")
MAX_PACKET: Final = 255 * 255  # one packet per page; the station's own limit is far below
BOS, EOS = 0x02, 0x04
_PAGE = struct.Struct("<4sBBqIIIB")  # capture, version, flags, granule, serial, page seq, crc, segments
_ITEM = struct.Struct(">II")  # seq, ts
_INDEX_HEAD = struct.Struct(">8sB32s32sB")  # magic, version, call, sender, direction


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, no reflection, initial 0, no final xor; RFC 3533)."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[(crc >> 24) ^ b]
    return crc


def page(serial: int, seqno: int, granule: int, packet: bytes, flags: int = 0) -> bytes:
    """One Ogg page holding exactly one whole packet."""
    if len(packet) >= MAX_PACKET:
        raise ValueError(f"a packet of {len(packet)} bytes does not fit one Ogg page")
    lacing = bytes([255] * (len(packet) // 255) + [len(packet) % 255])
    head = _PAGE.pack(b"OggS", 0, flags, granule, serial, seqno, 0, len(lacing)) + lacing
    crc = ogg_crc(head + packet)
    return head[:22] + crc.to_bytes(4, "little") + head[26:] + packet


@dataclass(frozen=True)
class Page:
    offset: int
    flags: int
    granule: int
    serial: int
    seqno: int
    packet: bytes
    end: int  # offset just after the page


def pages(data: bytes) -> Iterator[Page]:
    """The whole pages of ``data`` from the start, each holding one whole packet; stops at the first
    one that is torn, has a bad CRC or is not a one-packet page (the caller tells a torn tail from a
    damaged file by where it stopped)."""
    at = 0
    while at + _PAGE.size <= len(data):
        capture, version, flags, granule, serial, seqno, crc, nseg = _PAGE.unpack_from(data, at)
        lacing_end = at + _PAGE.size + nseg
        if capture != b"OggS" or version != 0 or nseg == 0 or lacing_end > len(data):
            return
        lacing = data[at + _PAGE.size : lacing_end]
        if any(v != 255 for v in lacing[:-1]) or lacing[-1] == 255:
            return  # not exactly one packet completed on this page: not ours
        end = lacing_end + sum(lacing)
        if end > len(data):
            return
        raw = bytearray(data[at:end])
        raw[22:26] = b"\0\0\0\0"
        if ogg_crc(bytes(raw)) != crc:
            return
        yield Page(at, flags, granule, serial, seqno, data[lacing_end:end], end)
        at = end


def opus_samples(packet: bytes) -> int:
    """Samples at 48 kHz one Opus packet decodes to (RFC 6716 section 3.1: the TOC byte and, for
    code 3, the frame count byte); 0 for what is not a valid packet."""
    if not packet:
        return 0
    toc = packet[0]
    config = toc >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        per = (480, 960, 1920, 2880)[config & 3]
    elif config < 16:  # hybrid: 10, 20 ms
        per = (480, 960)[config & 1]
    else:  # CELT: 2.5, 5, 10, 20 ms
        per = (120, 240, 480, 960)[config & 3]
    code = toc & 3
    frames = 1 if code == 0 else 2 if code in (1, 2) else (packet[1] & 0x3F if len(packet) > 1 else 0)
    return per * frames


def opus_head(channels: int) -> bytes:
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, PRE_SKIP, 48_000, 0, 0)


def opus_tags(call: str, sender: str, direction: str) -> bytes:
    vendor = b"redline"
    comments = [f"REDLINE_CALL={call}", f"REDLINE_SENDER={sender}", f"REDLINE_DIRECTION={direction}"]
    out = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", len(comments))
    for c in comments:
        out += struct.pack("<I", len(c)) + c.encode()
    return out


@dataclass
class Parsed:
    """What a recording holds (untrusted until ``gate.accept_recording`` matched it to a digest)."""

    call: str
    sender: str  # fingerprint of the station whose packets these are
    direction: str  # sent | received, as the recording station saw them
    packets: list[tuple[int, int, bytes]] = field(default_factory=list)  # (seq, ts, data) in order
    sealed: bool = False  # both streams ended (EOS) at the very end of the data
    whole: int = 0  # bytes up to the end of the last complete (index, audio) pair or header


def parse(data: bytes, *, partial: bool = False) -> Parsed:
    """Read a recording. ``partial`` (a recording a crash left open): stop quietly at a torn or
    damaged tail, keeping every complete packet before it; otherwise the whole file must be a
    sealed recording, and anything else raises ``RecordingError``."""
    it = pages(data)
    first = [next(it, None) for _ in range(3)]
    if any(p is None for p in first):
        raise RecordingError("not a redline recording: fewer than three whole Ogg pages")
    head, idx, tags = first
    assert head is not None and idx is not None and tags is not None
    if head.serial != OPUS_SERIAL or not head.packet.startswith(b"OpusHead") or not head.flags & BOS:
        raise RecordingError("not a redline recording: it does not start with an Ogg Opus stream")
    if idx.serial != INDEX_SERIAL or len(idx.packet) != _INDEX_HEAD.size or not idx.flags & BOS:
        raise RecordingError("not a redline recording: no index stream after the Opus header")
    magic, version, call, sender, direction = _INDEX_HEAD.unpack(idx.packet)
    if magic != INDEX_MAGIC or version != INDEX_VERSION or direction > 1:
        raise RecordingError(f"not a redline recording: index header {magic!r} version {version}")
    if tags.serial != OPUS_SERIAL or not tags.packet.startswith(b"OpusTags"):
        raise RecordingError("not a redline recording: no OpusTags after the index header")
    out = Parsed(call=call.hex(), sender=sender.hex(), direction=DIRECTIONS[direction], whole=tags.end)
    ended = {OPUS_SERIAL: bool(tags.flags & EOS), INDEX_SERIAL: bool(idx.flags & EOS)}
    expect = {OPUS_SERIAL: tags.seqno + 1, INDEX_SERIAL: idx.seqno + 1}
    pending: Page | None = None
    problem: str | None = None
    for p in it:
        if p.serial not in expect or p.seqno != expect[p.serial] or ended[p.serial]:
            problem = f"page at byte {p.offset} is out of order"
            break
        expect[p.serial] += 1
        ended[p.serial] = bool(p.flags & EOS)
        if p.serial == INDEX_SERIAL:
            if pending is not None or len(p.packet) != _ITEM.size:
                problem = f"index page at byte {p.offset} does not name exactly one audio packet"
                break
            pending = p
            continue
        if pending is None:
            problem = f"audio page at byte {p.offset} has no index entry"
            break
        seq, ts = _ITEM.unpack(pending.packet)
        out.packets.append((seq, ts, p.packet))
        out.whole, pending = p.end, None
    else:
        if out.whole != len(data) and not partial:
            problem = f"the file ends in {len(data) - out.whole} bytes that are not a whole packet"
    if problem is not None and not partial:
        raise RecordingError(f"recording of call {out.call[:12]}: {problem}")
    out.sealed = problem is None and out.whole == len(data) and all(ended.values())
    if not out.sealed and not partial:
        raise RecordingError(f"recording of call {out.call[:12]} was not sealed (no end-of-stream page)")
    return out


class Recorder:
    """One direction of one call, written as the station hashes it. Disk trouble is logged and ends
    the recording (the call goes on; the digests in CALL_AUDIO do not depend on the file)."""

    def __init__(self, path: Path, call: str, sender: str, direction: str) -> None:
        self.path = path  # the sealed name; ``.part`` while open
        self.call, self.sender, self.direction = call, sender, direction
        self._fd: int | None = None
        self._seq = {OPUS_SERIAL: 0, INDEX_SERIAL: 0}
        self._granule = 0
        self.failed: str | None = None
        self.packets = 0

    @property
    def part(self) -> Path:
        return self.path.with_name(self.path.name + ".part")

    def _page(self, serial: int, packet: bytes, flags: int = 0) -> bytes:
        out = page(serial, self._seq[serial], self._granule, packet, flags)
        self._seq[serial] += 1
        return out

    def _start(self, channels: int) -> None:
        for d in (self.path.parent.parent, self.path.parent):  # recordings/, recordings/<line>/: owner only
            d.mkdir(exist_ok=True, mode=0o700)
        self._fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        head = _INDEX_HEAD.pack(INDEX_MAGIC, INDEX_VERSION, bytes.fromhex(self.call), bytes.fromhex(self.sender),
                                DIRECTIONS.index(self.direction))  # fmt: skip
        os.write(self._fd, self._page(OPUS_SERIAL, opus_head(channels), BOS) + self._page(INDEX_SERIAL, head, BOS)
                 + self._page(OPUS_SERIAL, opus_tags(self.call, self.sender, self.direction)))  # fmt: skip

    def add(self, seq: int, ts: int, data: bytes) -> None:
        if self.failed is not None:
            return
        try:
            if self._fd is None:
                self._start(2 if data and data[0] & 0x04 else 1)  # the TOC's stereo bit of the first packet
            assert self._fd is not None
            self._granule += opus_samples(data)
            pair = self._page(INDEX_SERIAL, _ITEM.pack(seq, ts)) + self._page(OPUS_SERIAL, data)
            os.write(self._fd, pair)  # one write per packet: a crash tears at most this pair
            self.packets += 1
        except (OSError, ValueError) as exc:
            self.failed = str(exc)
            log.error("recording of call %s (%s) stopped: %s", self.call[:12], self.direction, exc)
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def seal(self) -> Path | None:
        """End both streams, fsync, and give the file its sealed name; None if it failed."""
        if self.failed is None and self._fd is None:
            self._start(1)  # no packet in this direction: an empty recording still says so
        self._close()
        if self.failed is not None:
            return None
        try:
            return seal(self.part)
        except (OSError, RecordingError) as exc:
            log.error("recording of call %s (%s) could not be sealed: %s", self.call[:12], self.direction, exc)
            return None


def _fsync_dir(d: Path) -> None:
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)  # a rename or unlink in it survives a power cut
    finally:
        os.close(dfd)


def seal(part: Path) -> Path:
    """Seal an open recording (``….opus.part``): cut a torn tail, mark the last page of each stream
    end-of-stream, rename to ``….opus``. Returns the sealed path.

    The ``.part`` is never written: the sealed copy is written whole to ``….opus.sealing``, fsynced
    and renamed to ``….opus`` (directory fsynced), and only then is the ``.part`` removed. A crash
    (kill -9, power cut) at any point leaves the unsealed ``.part`` (sealed again at restart, the
    half-written copy overwritten) or the sealed ``.opus``, beside a ``.part`` that ``recover``
    removes; never less than the ``.part`` held. Costs the size of one recording on disk for a moment."""
    data = part.read_bytes()
    parsed = parse(data, partial=True)
    last: dict[int, Page] = {}
    for p in pages(data[: parsed.whole]):
        last[p.serial] = p
    out = bytearray(data[: parsed.whole])
    for p in last.values():
        if not p.flags & EOS:
            out[p.offset : p.end] = page(p.serial, p.seqno, p.granule, p.packet, p.flags | EOS)
    final = part.with_name(part.name.removesuffix(".part"))
    temp = final.with_name(final.name + ".sealing")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(out)
        while view:  # os.write may write less than asked (a large recording, a signal)
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, final)
    _fsync_dir(final.parent)
    part.unlink()
    _fsync_dir(final.parent)
    return final


def directory(home: Path, line: str) -> Path:
    return home / "recordings" / line


def path_of(home: Path, line: str, call: str, direction: str) -> Path:
    return directory(home, line) / f"{call}.{direction}.opus"


def find(home: Path, line: str, call: str, direction: str) -> tuple[Path, bool] | None:
    """The recording of one direction of a call: (path, sealed), the sealed one first."""
    final = path_of(home, line, call, direction)
    if final.is_file():
        return final, True
    part = final.with_name(final.name + ".part")
    return (part, False) if part.is_file() else None


def sealed_recordings(home: Path, line: str, calls: Iterable[str] = ()) -> list[Path]:
    """The sealed recordings of ``line``; with ``calls`` (CALL_RING ids or prefixes of 6+ hex digits)
    only theirs, and a prefix that names no call recorded here, or more than one, is refused."""
    d = directory(home, line)
    found = sorted(d.glob("*.opus")) if d.is_dir() else []
    wanted = list(calls)
    if not wanted:
        return found
    held = sorted({p.name.split(".", 1)[0] for p in found})
    chosen: set[str] = set()
    for prefix in wanted:
        p = prefix.strip().lower()
        matches = [c for c in held if len(p) >= 6 and c.startswith(p)]
        if len(matches) != 1:
            what = "no call" if not matches else f"{len(matches)} calls"
            raise RecordingError(
                f"{prefix[:64]!r} names {what} recorded on this line (give 6+ hex digits of a call id)"
            )
        chosen.add(matches[0])
    return [f for f in found if f.name.split(".", 1)[0] in chosen]


class CallRecording:
    """Both directions of one call at one station (``media.CallMedia.sink``)."""

    def __init__(self, home: Path, line: str, call: str, us: str, peer: str) -> None:
        self.sent = Recorder(path_of(home, line, call, "sent"), call, us, "sent")
        self.received = Recorder(path_of(home, line, call, "received"), call, peer, "received")

    def add(self, sent: bool, packet: AudioPacket) -> None:
        (self.sent if sent else self.received).add(packet.seq, packet.ts, packet.data)

    def seal(self) -> list[str]:
        """Seal both; what failed, for an alarm (the call's digests stand without the files)."""
        failed = []
        for r in (self.sent, self.received):
            if r.seal() is None:
                failed.append(f"{r.direction}: {r.failed or 'could not be sealed'}")
        return failed


Packets = list[tuple[int, int, bytes]]  # (seq, ts, data) in hash order


def recover(home: Path, line: str, call: str, us: str, peer: str) -> tuple[dict[str, Packets], list[str]]:
    """A call this station was recording when it stopped: seal what each direction's file kept
    (cutting a torn tail) and return its packets, with what could not be read (for an alarm)."""
    packets: dict[str, Packets] = {}
    problems = []
    for direction, sender in (("sent", us), ("received", peer)):
        found = find(home, line, call, direction)
        packets[direction] = []
        try:
            if found is None:
                Recorder(path_of(home, line, call, direction), call, sender, direction).seal()
                continue
            path, sealed = found
            parsed = parse(path.read_bytes(), partial=not sealed)
            if (parsed.call, parsed.sender, parsed.direction) != (call, sender, direction):
                raise RecordingError(f"{path.name} is not the {direction} recording of this call")
            if not sealed:
                seal(path)
            else:  # a crash in ``seal`` after its rename left the ``.part`` it was sealed from
                path.with_name(path.name + ".part").unlink(missing_ok=True)
            packets[direction] = parsed.packets
        except (OSError, RecordingError) as exc:
            problems.append(f"{direction}: {exc}")
    return packets, problems


@dataclass
class KeptCheck:
    """What ``check_kept`` found: recordings that match, problems (where, what), notes."""

    matched: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_kept(home: Path, line: str, us: str, peer: str, audio: Iterable[CallAudio]) -> KeptCheck:
    """``redline verify`` on a store: this station's own recordings of each call against the digests
    it signed in its (verified) CALL_AUDIO ``audio``, by the one rule, ``gate.accept_recording``.

    An altered, cut, swapped or unsealed recording is a problem (the station seals both before it
    files CALL_AUDIO). A missing one is a note, not a failure: the transcript's proof does not rest
    on it (both stations signed the digests), and an operator may have moved old recordings off the
    station (``redline export --recording``)."""
    from redline.gate import accept_recording  # gate imports this module (``parse``)

    out = KeptCheck()
    for body in audio:
        call = body.ring.id
        for direction in DIRECTIONS:
            signed = body.sent if direction == "sent" else body.received
            where = f"recording {call[:12]} {direction}"
            found = find(home, line, call, direction)
            if found is None:
                out.notes.append(f"{where}: not kept on this station ({signed.packets} packets signed in CALL_AUDIO)")
                continue
            path, sealed = found
            if not sealed:
                out.problems.append((where, "not sealed, though its CALL_AUDIO was filed (a station seals it first)"))
                continue
            try:
                rec = accept_recording(path.read_bytes(), body, us, peer)
            except OSError as exc:
                out.problems.append((where, f"cannot be read: {exc.strerror or exc}"))
                continue
            except VerificationError as exc:
                out.problems.append((where, str(exc)))
                continue
            if rec.direction != direction:  # the other direction's file under this name
                out.problems.append((where, f"the file holds the {rec.direction} recording: swapped"))
                continue
            out.matched.append(f"{direction} {call[:12]} ({signed.packets} packets)")
    return out


def verify_kept(home: Path, raws: Iterable[bytes], line: str, us: str, peer: str, report: LineReport) -> None:
    """Add to ``report`` (a verified line) the check of this station's own recordings against the
    CALL_AUDIO ``raws`` (its stored envelopes of that kind) among the envelopes verify accepted:
    ``check_kept``. ``redline verify`` and the console's verify both call this one function."""
    from redline import canonical, kinds
    from redline.envelope import split
    from redline.ledger.verify import Problem

    audio = []
    for raw in raws:
        try:
            env = split(raw)
            seq = canonical.decode_object(env.header_bytes, "header")["seq"]
            if env.body_bytes is None or seq > report.chain_sizes.get(us, 0):
                continue  # redacted, or beyond what verified (that is already a problem of the report)
            audio.append(kinds.CallAudio.parse(canonical.decode_object(env.body_bytes, "body")["content"]))
        except (VerificationError, KeyError, TypeError):
            continue  # an envelope verify refused is reported as such
    found = check_kept(home, line, us, peer, audio)
    report.recordings += found.matched
    report.notes += found.notes
    report.problems += [Problem(where, what) for where, what in found.problems]
