"""Legal frame types per path state: the whole connection state machine in one table.

Rules (h11's ``_state.py`` way):
- A path starts in AWAIT_HELLO. Each side sends HELLO first; the peer's HELLO moves it to OPEN.
- In AWAIT_HELLO only HELLO, HEARTBEAT and ERROR may arrive; anything else is the peer's error.
- In OPEN a second HELLO is an error; PAIR frames never travel on a paired line.
- ERROR from the peer, a frame not allowed in the current state, or undecodable input moves the
  path to ERROR; a path in ERROR or CLOSED accepts nothing and stays there (it is redialled as a
  new connection with a fresh state machine).
"""

from __future__ import annotations

from enum import Enum

from redline.protocol.framing import FrameType


class PathState(Enum):
    AWAIT_HELLO = "await-hello"
    OPEN = "open"
    CLOSED = "closed"
    ERROR = "error"


ALLOWED: dict[PathState, frozenset[FrameType]] = {
    PathState.AWAIT_HELLO: frozenset({FrameType.HELLO, FrameType.HEARTBEAT, FrameType.ERROR}),
    PathState.OPEN: frozenset(
        {
            FrameType.ENVELOPE, FrameType.RECEIPT, FrameType.HEARTBEAT, FrameType.GAP,
            FrameType.CHECKPOINT, FrameType.COSIGN, FrameType.CONFIRM, FrameType.ERROR,
        }
    ),
    PathState.CLOSED: frozenset(),
    PathState.ERROR: frozenset(),
}

# Frames that carry transcript traffic: refused until both operators confirmed the safety code.
TRAFFIC = frozenset({FrameType.ENVELOPE, FrameType.RECEIPT, FrameType.GAP, FrameType.CHECKPOINT, FrameType.COSIGN})

TRANSITIONS: dict[tuple[PathState, FrameType], PathState] = {
    (PathState.AWAIT_HELLO, FrameType.HELLO): PathState.OPEN,
    (PathState.AWAIT_HELLO, FrameType.ERROR): PathState.ERROR,
    (PathState.OPEN, FrameType.ERROR): PathState.ERROR,
}


def next_state(state: PathState, ftype: FrameType) -> PathState:
    """State after receiving ``ftype``; raises KeyError-free: unknown pairs keep the state."""
    return TRANSITIONS.get((state, ftype), state)
