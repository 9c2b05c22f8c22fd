"""Frames on the wire (redline.protocol.framing): the sans-IO decoder fed whole, byte by byte and
with trailing data of the next frame (h11's ``test_io.py`` way), and refusing bad input.

Security tests are named after the attack they block; after a refusal nothing is handed on.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redline.errors import RemoteProtocolError
from redline.protocol.framing import FrameDecoder, FrameType, encode_frame

LIMIT = 1024
FRAMES: list[tuple[FrameType, bytes]] = [
    (FrameType.HELLO, b'{"versions":[1]}'),
    (FrameType.ENVELOPE, bytes(range(256)) * 2),
    (FrameType.HEARTBEAT, b""),  # empty payload: length 1 (the type byte only)
    (FrameType.ERROR, b'{"message":"bye"}'),
]
STREAM = b"".join(encode_frame(t, p) for t, p in FRAMES)


def test_wire_form_is_length_type_payload() -> None:
    assert encode_frame(FrameType.GAP, b"xyz") == b"\x00\x00\x00\x04\x05xyz"
    assert encode_frame(FrameType.HEARTBEAT, b"") == b"\x00\x00\x00\x01\x04"


def test_decode_whole_stream() -> None:
    dec = FrameDecoder(LIMIT)
    assert dec.feed(STREAM) == FRAMES
    assert dec.pending_bytes == 0


def test_decode_byte_by_byte() -> None:
    dec = FrameDecoder(LIMIT)
    got: list[tuple[FrameType, bytes]] = []
    for i in range(len(STREAM)):
        got += dec.feed(STREAM[i : i + 1])
    assert got == FRAMES
    assert dec.pending_bytes == 0


def test_decode_with_trailing_data_of_the_next_frame() -> None:
    nxt = encode_frame(FrameType.RECEIPT, b"receipt bytes")
    dec = FrameDecoder(LIMIT)
    # One whole frame and the first 7 bytes of the next (header and part of the payload).
    assert dec.feed(encode_frame(FrameType.HELLO, b"hi") + nxt[:7]) == [(FrameType.HELLO, b"hi")]
    assert dec.pending_bytes == 7
    # Trailing data shorter than a header is kept too.
    assert dec.feed(nxt[7:] + nxt[:3]) == [(FrameType.RECEIPT, b"receipt bytes")]
    assert dec.pending_bytes == 3
    assert dec.feed(nxt[3:]) == [(FrameType.RECEIPT, b"receipt bytes")]
    assert dec.pending_bytes == 0


def test_empty_feed_yields_nothing() -> None:
    dec = FrameDecoder(LIMIT)
    assert dec.feed(b"") == []
    assert dec.pending_bytes == 0


def test_frame_at_the_limit_is_accepted() -> None:
    payload = b"x" * (LIMIT - 1)  # length counts the type byte: exactly LIMIT
    assert FrameDecoder(LIMIT).feed(encode_frame(FrameType.ENVELOPE, payload)) == [(FrameType.ENVELOPE, payload)]


def test_oversize_length_is_refused_before_the_payload_is_buffered() -> None:
    """Memory exhaustion: a peer announces a huge frame and trickles it in. The header alone is
    enough to refuse it; we never wait for (or buffer) the payload."""
    dec = FrameDecoder(LIMIT)
    with pytest.raises(RemoteProtocolError, match="max_frame_bytes"):
        dec.feed(struct.pack(">IB", LIMIT + 1, FrameType.ENVELOPE))
    with pytest.raises(RemoteProtocolError, match="limit"):
        FrameDecoder(LIMIT).feed(struct.pack(">IB", 0xFFFFFFFF, FrameType.ENVELOPE) + b"x" * 10)


def test_oversize_length_fed_byte_by_byte_is_refused_at_the_header() -> None:
    header = struct.pack(">IB", LIMIT + 1, FrameType.ENVELOPE)
    dec = FrameDecoder(LIMIT)
    for b in header[:3]:
        assert dec.feed(bytes([b])) == []
    with pytest.raises(RemoteProtocolError):  # on the length alone, before the type byte (section 8.2)
        dec.feed(header[3:4])


def test_zero_length_frame_is_refused() -> None:
    """A zero length has no room for the type byte: the stream is not framed by us."""
    with pytest.raises(RemoteProtocolError):
        FrameDecoder(LIMIT).feed(b"\x00\x00\x00\x00\x01")


def test_unknown_frame_type_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="unknown frame type 99"):
        FrameDecoder(LIMIT).feed(struct.pack(">IB", 3, 99) + b"ab")
    with pytest.raises(RemoteProtocolError, match="unknown frame type 0"):
        FrameDecoder(LIMIT).feed(struct.pack(">IB", 1, 0))


def test_unknown_frame_type_after_a_good_frame_is_refused() -> None:
    dec = FrameDecoder(LIMIT)
    assert dec.feed(encode_frame(FrameType.HELLO, b"a")) == [(FrameType.HELLO, b"a")]
    with pytest.raises(RemoteProtocolError):
        dec.feed(struct.pack(">IB", 1, 200))


def test_every_frame_type_round_trips() -> None:
    for t in FrameType:
        assert FrameDecoder(LIMIT).feed(encode_frame(t, t.name.encode())) == [(t, t.name.encode())]


_frame = st.tuples(st.sampled_from(list(FrameType)), st.binary(max_size=300))


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(_frame, max_size=12), data=st.data())
def test_any_frames_split_anywhere_decode_to_the_same_frames(
    frames: list[tuple[FrameType, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(t, p) for t, p in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20), label="cuts"))
    dec = FrameDecoder(LIMIT)
    got: list[tuple[FrameType, bytes]] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        got += dec.feed(stream[start:cut])
        start = cut
    assert got == frames
    assert dec.pending_bytes == 0


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(_frame, min_size=1, max_size=6), keep=st.integers(1, 4))
def test_a_truncated_stream_yields_only_whole_frames(frames: list[tuple[FrameType, bytes]], keep: int) -> None:
    stream = b"".join(encode_frame(t, p) for t, p in frames)
    dec = FrameDecoder(LIMIT)
    got = dec.feed(stream[:-keep])
    assert got == frames[:-1]
    assert dec.pending_bytes == len(encode_frame(*frames[-1])) - keep
