"""What ops/ sees of the transcript and what it asks the station to send.

ops/ is pure domain logic: it is fed every stored envelope of a line (both chains, in the order
they were stored) as an ``Entry`` and the time as an argument, and answers with ``Intent``s
(envelopes the station should send) and ``Alarm``s. Rebuilding after a crash is replaying the
ledger into a fresh instance; anything overdue comes out of the first ``due(now)`` at once.
Each intent carries an idempotency key, so a decision is accepted once even when it is re-derived
before the first copy was signed. An ``Entry`` carries the content as stored; ops parses it once,
into the kind's body type (``kinds``), and reads only typed fields from there on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redline import kinds
from redline.alarmtext import AlarmCode, Param, render
from redline.clock import MAX_TIME_MS as MAX_TIME_MS  # re-exported: ops reads it from here


@dataclass(frozen=True, kw_only=True)
class Entry:
    sender: str
    ours: bool
    seq: int
    id: str
    kind: str
    prio: str
    sent_at: int  # the sender's claim, ms
    stored_at: int  # when this station stored it, ms
    lang: str
    content: dict[str, Any]
    seen: int = 0  # the other chain's seq its sender had seen (what the root in force depends on)

    @property
    def ref(self) -> dict[str, Any]:
        """How bodies name an envelope: (sender, seq, id)."""
        return {"sender": self.sender, "seq": self.seq, "id": self.id}

    def reference(self) -> kinds.Ref:
        """``ref`` as the typed reference of a body."""
        return kinds.Ref(sender=self.sender, seq=self.seq, id=self.id)


@dataclass(frozen=True, kw_only=True)
class Intent:
    kind: str
    prio: str
    content: dict[str, Any]
    idem: str | None


@dataclass(frozen=True, kw_only=True)
class Alarm:
    level: str  # info | warning | alarm
    code: AlarmCode  # redline/alarmtext.py: what the alarm says, in any language, with ``params``
    params: dict[str, Param]
    at: int

    @property
    def text(self) -> str:
        """The alarm in English (the terminal's, the log's, the English console's)."""
        return render(self.code, self.params)


@dataclass
class Outbox:
    """Collects what one call produced."""

    intents: list[Intent] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)

    def alarm(self, level: str, code: AlarmCode, at: int, /, **params: Param) -> None:
        self.alarms.append(Alarm(level=level, code=code, params=params, at=at))



_T = TypeVar("_T")


def still_open(items: dict[str, _T], is_open: Callable[[_T], bool]) -> list[_T]:
    """``items``' values that may still fall due, after dropping from ``items`` those ``is_open``
    says are closed. Each module keeps such a dict beside its history (which the views read) and
    walks it in ``due`` and ``next_due``, so a year of line tests and FLASHes is not walked after
    every change. Sound because every schedule here only closes: a verdict, an ACK, an escalation
    step, an expiry or a reply in time is never undone, so a closed item never falls due again."""
    for key in [k for k, v in items.items() if not is_open(v)]:
        del items[key]
    return list(items.values())


def as_time(value: int | None) -> int | None:
    """A time a view can show as a UTC date, or None when it is past the year 9999 (or absent)."""
    return value if value is not None and 0 <= value <= MAX_TIME_MS else None


def window_ms(requested: int | None, own_ms: int, bounds: tuple[int, int] | None) -> int:
    """The window a deadline runs on at this station: our own (``own_ms``), unless we honour a
    requested one (``bounds`` given, from config), and then clamped to ``bounds``. The request in a
    peer's envelope is advisory: whatever its size, it cannot move our deadlines outside what we
    configured."""
    if bounds is None or requested is None:
        return own_ms
    low, high = bounds
    return min(max(requested, low), high)
