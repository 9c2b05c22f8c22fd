"""Frames on the wire: ``u32 big-endian length | u8 type | payload``; length counts type + payload.

The decoder is sans-IO: feed it any slice of the byte stream (whole, byte by byte, or with
trailing data) and it yields complete frames. A length over the limit is the peer's fault and the
connection cannot recover from it (we no longer know where the next frame starts).
"""

from __future__ import annotations

import struct
from enum import IntEnum

from redline.errors import RemoteProtocolError

_HEAD = struct.Struct(">IB")


class FrameType(IntEnum):
    HELLO = 1
    ENVELOPE = 2
    RECEIPT = 3
    HEARTBEAT = 4
    GAP = 5
    CHECKPOINT = 6
    COSIGN = 7
    CONFIRM = 8
    ERROR = 9
    PAIR = 10
    AUDIO = 11  # voice packets (media.py): demultiplexed by the station, never fed to the link


def encode_frame(ftype: FrameType, payload: bytes) -> bytes:
    return _HEAD.pack(len(payload) + 1, ftype) + payload


class FrameDecoder:
    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[FrameType, bytes]]:
        self._buf += data
        frames: list[tuple[FrameType, bytes]] = []
        while len(self._buf) >= 4:  # the length alone decides (a zero length is refused before a 5th byte)
            length = int.from_bytes(self._buf[:4], "big")
            if length == 0 or length > self.max_frame_bytes:
                raise RemoteProtocolError(
                    f"peer sent a frame of {length} bytes; the limit is {self.max_frame_bytes} (max_frame_bytes)"
                )
            if len(self._buf) < 4 + length:
                break
            ftype = self._buf[4]
            payload = bytes(self._buf[5 : 4 + length])
            del self._buf[: 4 + length]
            try:
                frames.append((FrameType(ftype), payload))
            except ValueError:
                raise RemoteProtocolError(f"peer sent unknown frame type {ftype}") from None
        return frames

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)
