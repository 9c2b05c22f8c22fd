"""PROTOCOL.md 8.2: a frame whose length is 0 (or over the limit) is refused before its payload
is read: on its four length bytes alone, not when a fifth byte happens to arrive (a bare
``00 00 00 00`` went unanswered until the path died of silence)."""

from __future__ import annotations

import pytest

from redline.errors import RemoteProtocolError
from redline.protocol.framing import FrameDecoder


def test_a_zero_length_frame_is_refused_on_its_four_length_bytes() -> None:
    with pytest.raises(RemoteProtocolError, match="frame of 0 bytes"):
        FrameDecoder(1024).feed(b"\x00\x00\x00\x00")


def test_an_oversized_length_is_refused_on_its_four_length_bytes() -> None:
    with pytest.raises(RemoteProtocolError, match="limit is 1024"):
        FrameDecoder(1024).feed((1025).to_bytes(4, "big"))


def test_three_length_bytes_wait_for_the_fourth() -> None:
    assert FrameDecoder(1024).feed(b"\x00\x00\x00") == []
