"""The station's clock, injected (DESIGN.md: station.py owns the clock; nothing else reads one).

``SystemClock`` is what a real station runs on. ``SettableClock`` is the system clock shifted by
an offset that the control operation ``clock`` may move: the demo replays 2022 in compressed time
with it and end-to-end tests drive deadlines with it (``redline serve --settable-clock``); a real
station refuses that operation. ``SimClock`` (redline.testing) is a clock that moves only when told.
Deadlines run on ``monotonic`` (seconds); claims and ops run on ``wall`` (ms since 1970, UTC).
"""

from __future__ import annotations

import time
from typing import Final, Protocol

# The last millisecond of the year 9999: a later wall time (which the protocol's integers can carry)
# is noise that would make ``datetime`` raise wherever it is shown.
MAX_TIME_MS: Final = 253_402_300_799_999


class Clock(Protocol):
    def wall(self) -> int:
        """Milliseconds since 1970 (UTC): what the station claims in envelopes and runs ops on."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back: what link deadlines run on."""
        ...


class SystemClock:
    def wall(self) -> int:
        return int(time.time() * 1000)

    def monotonic(self) -> float:
        return time.monotonic()


class SettableClock(SystemClock):
    """The system clock plus an offset that only a demo or test station lets be moved."""

    def __init__(self, start_ms: int | None = None) -> None:
        self.offset_ms = 0
        if start_ms is not None:
            self.set(start_ms)

    def wall(self) -> int:
        return super().wall() + self.offset_ms

    def advance(self, ms: int) -> None:
        self.offset_ms += ms

    def set(self, wall_ms: int) -> None:
        self.offset_ms = wall_ms - super().wall()
