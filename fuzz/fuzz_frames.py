"""Fuzz target: arbitrary bytes into the frame decoder and into a live Link, in arbitrary pieces.

What must hold for any input (the peer controls every byte after the TLS handshake):

- ``FrameDecoder.feed`` returns whole frames of a known type within ``max_frame_bytes``, or raises
  ``RemoteProtocolError``; never anything else, and it never holds more than one frame's worth.
- ``Link.receive`` and ``Link.tick`` never raise: bad input becomes an ERROR frame and a Close,
  and a path that errored accepts nothing more. Every frame the link sends decodes as one frame
  within the limit. The out-of-order buffer stays within ``max_gap_buffer``.

The input drives a small structure-aware generator (``Source``): the first byte picks raw bytes, or
a valid HELLO followed by frames whose payloads are raw, canonical JSON built from fuzzed keys and
values, or envelopes with fuzzed headers (the link routes envelopes by header only; signatures are
the station's business), each cut into fuzzed pieces. So the fuzzer reaches the OPEN state and the
envelope, gap, heartbeat and recovery paths, not only the length check.

Run it (atheris, libFuzzer options after the script name):

    .venv/bin/pip install atheris
    mkdir -p fuzz/corpus     # kept between runs; libFuzzer adds the inputs that reach new code
    .venv/bin/python fuzz/fuzz_frames.py -max_total_time=3600 -timeout=10 fuzz/corpus   # an hour, by hand
    .venv/bin/python fuzz/fuzz_frames.py -runs=2000      # what CI runs, via tests/test_fuzz_frames.py

A crash leaves ``crash-<sha1>`` with the input; replay it with
``.venv/bin/python fuzz/fuzz_frames.py crash-<sha1>``. tests/test_fuzz_frames.py runs this same
``one_input`` briefly under atheris when it is installed, and always under Hypothesis.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Coverage feedback for redline's own code only (instrumenting every loaded module costs seconds).
_FUZZING = __name__ == "__main__" and importlib.util.find_spec("atheris") is not None
if _FUZZING:
    import atheris

    _instrumented: contextlib.AbstractContextManager[Any] = atheris.instrument_imports(include=["redline"])
else:
    _instrumented = contextlib.nullcontext()
with _instrumented:
    from redline import canonical
    from redline.config import Limits
    from redline.errors import RemoteProtocolError
    from redline.protocol.events import ChainHead, Close, Send
    from redline.protocol.framing import FrameDecoder, FrameType, encode_frame
    from redline.protocol.link import Link
    from redline.protocol.state import PathState

LIMITS = Limits(max_frame_bytes=4096, max_gap_buffer=8, window=4, path_dead_after=3.0, heartbeat_interval=1.0)
LINE = "00112233445566778899aabbccddeeff"
US = hashlib.sha256(b"us").hexdigest()
PEER = hashlib.sha256(b"peer").hexdigest()
KEYS = ("versions", "line", "station", "mine", "yours", "time", "confirmed", "seq", "id", "t", "echo", "hold",
        "from", "to", "message", "sender", "v", "key", "kind", "prev", "seen", "body")  # fmt: skip


class Source:
    """Draws structured choices from the fuzzer's bytes; runs dry into zeros, never raises."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def int(self, bound: int) -> int:
        """0 <= n < bound (bound <= 2**32)."""
        n = 0
        for _ in range(4 if bound > 2**16 else 2 if bound > 256 else 1):
            n = n << 8 | self.byte()
        return n % bound

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def rest(self) -> bytes:
        return self.take(len(self.data))

    @property
    def dry(self) -> bool:
        return self.pos >= len(self.data)

    def value(self, depth: int = 0) -> Any:
        pick = self.int(12 if depth < 3 else 8)
        if pick == 0:
            return None
        if pick == 1:
            return bool(self.byte() & 1)
        if pick in (2, 3):
            return self.int(2**32) - 2**31
        if pick == 4:
            return [2**53 - 1, -(2**53) + 1, 0, 1, 2**31][self.int(5)]
        if pick == 5:
            return self.take(self.int(40)).decode("utf-8", "replace")
        if pick == 6:
            return [US, PEER, LINE, hashlib.sha256(self.take(4)).hexdigest()][self.int(4)]
        if pick == 7:
            return {"seq": self.int(20), "id": None if self.byte() & 1 else hashlib.sha256(self.take(2)).hexdigest()}
        if pick in (8, 9):
            return [self.value(depth + 1) for _ in range(self.int(4))]
        return {KEYS[self.int(len(KEYS))]: self.value(depth + 1) for _ in range(self.int(6))}

    def json(self) -> bytes:
        obj = {KEYS[self.int(len(KEYS))]: self.value() for _ in range(self.int(8))}
        try:
            return canonical.encode(obj)
        except Exception:  # a value outside the canonical subset: send it as plain JSON text instead
            return repr(obj).encode()

    def envelope(self, next_seq: int) -> bytes:
        header = {
            "seq": [next_seq, next_seq + 1 + self.int(20), self.int(5), 10**6 + self.int(99), "1", None][self.int(6)],
            "sender": [PEER, US, hashlib.sha256(self.take(1)).hexdigest(), 7][self.int(4)],
            "line": LINE, "kind": "TEXT",
        }  # fmt: skip
        if self.byte() & 1:
            header.update({KEYS[self.int(len(KEYS))]: self.value()})
        hb = canonical.encode(header) if self.byte() & 7 else self.take(self.int(64))
        body = self.take(self.int(64))
        raw = len(hb).to_bytes(4, "big") + hb + len(body).to_bytes(4, "big") + body + self.take(64).ljust(64, b"\0")
        return raw if self.byte() & 15 else raw[: self.int(len(raw) + 1)]


def _hello(station: str = PEER, line: str = LINE, yours: int = 0) -> bytes:
    return encode_frame(FrameType.HELLO, canonical.encode({
        "versions": [1], "line": line, "station": station, "mine": {"seq": 0, "id": None},
        "yours": {"seq": yours, "id": None if yours == 0 else "ab" * 32}, "time": 1_652_443_200_000,
        "confirmed": True,
    }))  # fmt: skip


def stream(src: Source) -> bytes:
    """The bytes the fuzzed peer sends on one path."""
    mode = src.int(4)
    if mode == 0:
        return src.rest()
    out = bytearray(_hello(yours=src.int(3)) if mode != 3 else b"")
    next_seq = 1
    while not src.dry and len(out) < 64 * 1024:
        kind = src.int(10)
        if kind < 4:
            raw = src.envelope(next_seq)
            next_seq += src.byte() & 1
            out += encode_frame(FrameType.ENVELOPE, raw)
        elif kind < 7:
            ftype = list(FrameType)[src.int(len(FrameType))]
            out += encode_frame(ftype, src.json())
        elif kind < 9:
            ftype = list(FrameType)[src.int(len(FrameType))]
            out += encode_frame(ftype, src.take(src.int(300)))
        else:
            out += src.take(src.int(16))  # raw noise between frames: a broken length or type
    return bytes(out)


def check_decoder(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(LIMITS.max_frame_bytes)
    got: list[tuple[FrameType, bytes]] = []
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    try:
        for piece in pieces:
            got += decoder.feed(piece)
            assert decoder.pending_bytes < LIMITS.max_frame_bytes + 4 + len(piece), "decoder holds too much"
    except RemoteProtocolError:
        return
    for ftype, payload in got:
        assert isinstance(ftype, FrameType) and len(payload) + 1 <= LIMITS.max_frame_bytes
    consumed = b"".join(encode_frame(t, p) for t, p in got)
    assert data.startswith(consumed) and len(data) - len(consumed) == decoder.pending_bytes


# Bugs already reported, each with a strict-xfail regression test in tests/test_fuzz_frames.py: the
# fuzzer steps over them so that it can go on finding new ones. Delete an entry once it is fixed.
# (function, exception type) pairs of bugs found and not yet fixed, so a long run keeps looking.
# Empty: the one found so far (HELLO versions holding a list or object) is fixed in link.py.
KNOWN_BUGS: set[tuple[str, type[BaseException]]] = set()


def _known(exc: BaseException) -> bool:
    tb, where = exc.__traceback__, ""
    while tb is not None:
        where, tb = tb.tb_frame.f_code.co_name, tb.tb_next
    return (where, type(exc)) in KNOWN_BUGS


def check_link(data: bytes, cuts: list[int], src: Source) -> None:
    link = Link(
        line=LINE, us=US, peer=PEER, limits=LIMITS, our_head=ChainHead(seq=2, id="cd" * 32),
        their_head=ChainHead(seq=0, id=None), active=True, confirmed=True,
    )  # fmt: skip
    now, wall = 1000.0, 1_652_443_200_000
    outputs = list(link.path_up("p", now, wall))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    closed = False
    for piece in pieces:
        try:
            out = link.receive("p", piece, now, wall)
        except Exception as exc:
            if _known(exc):
                return
            raise
        if closed:
            assert out == [], "a path that errored accepted more input"
        outputs += out
        closed = closed or any(isinstance(o, Close) for o in out)
        assert len(link._buffer) <= LIMITS.max_gap_buffer
        if src.byte() & 3 == 0:
            now += src.int(3000) / 1000
            wall += src.int(3000)
            outputs += link.tick(now, wall)
    if closed:
        assert link.paths.get("p") in (PathState.ERROR, PathState.CLOSED, None)
    for o in outputs:
        if isinstance(o, Send):
            frames = FrameDecoder(LIMITS.max_frame_bytes).feed(o.data)
            assert len(frames) == 1 and encode_frame(*frames[0]) == o.data


def one_input(data: bytes) -> None:
    src = Source(data)
    body = stream(src)
    cuts = sorted({src.int(len(body) + 1) for _ in range(src.int(6))}) if body else []
    check_decoder(body, cuts)
    check_link(body, cuts, src)


def main() -> None:
    if not _FUZZING:
        sys.exit("atheris is not installed: .venv/bin/pip install atheris")
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
