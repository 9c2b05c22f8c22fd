"""What ``redline status``, the API's status and the console show of a station now: one typed
object built by the station, sent as JSON over the control socket and the API (``to_obj``) and
read back by the CLI (``from_obj``). Standard library only (and ``readmodel``, which reads it back
from its fields): the fast commands import it alone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from redline.firstuse import dataclass_on_first_use


@dataclass_on_first_use(frozen=True)
class Accepted:
    """What the station says when it accepts an operator's message: durable in the outbox, and
    signed with its seq and id if the line was in sync."""

    line: str
    outbox: int
    seq: int | None
    id: str | None
    kind: str
    state: str

    def to_obj(self) -> dict[str, Any]:
        # Written out, not ``asdict``: every send answers with one, and asdict's deep copy of six
        # plain fields cost more than the rest of the reply (tests/test_readviews.py holds the two equal).
        return {"line": self.line, "outbox": self.outbox, "seq": self.seq, "id": self.id, "kind": self.kind,
                "state": self.state}  # fmt: skip


@dataclass_on_first_use(frozen=True)
class PathView:
    """One path of a line as the station sees it now."""

    up: bool
    rtt_ms: float | None
    skew_ms: float | None
    last_rx: int | None
    reason: str

    def to_obj(self) -> dict[str, Any]:
        return asdict(self)


@dataclass_on_first_use(frozen=True)
class LineStatus:
    """A line now: confirmation, sync, both heads, what waits, each path."""

    line: str
    peer: str
    peer_fingerprint: str
    peer_lang: str
    confirmed_local: bool
    confirmed_peer: bool
    safety_code: str | None  # shown until both operators confirmed, then None
    active: bool
    synced: bool
    halted: bool
    our_seq: int
    their_seq: int
    outbox: int
    unreceipted: int
    paths: Mapping[str, PathView]
    # Runs of envelopes signed by a revoked key (a REVOKE, PROTOCOL.md section 5.9), in words.
    revoked: tuple[str, ...] = ()
    # The peer's root rotation awaiting our operator's typed safety code: that code (section 5.9, ROOT).
    root_code: str | None = None

    def to_obj(self) -> dict[str, Any]:
        obj = {k: v for k, v in asdict(self).items() if k not in ("confirmed_local", "confirmed_peer", "paths")}
        obj["revoked"] = list(self.revoked)
        obj["confirmed"] = {"local": self.confirmed_local, "peer": self.confirmed_peer}
        obj["paths"] = {name: p.to_obj() for name, p in self.paths.items()}
        return obj

    @staticmethod
    def json_fields(obj: dict[str, Any]) -> dict[str, Any]:
        """``to_obj``'s JSON as this view's fields, for ``readmodel.from_obj`` (which checks every
        field against its type): the two confirmations are one object there, ``confirmed``."""
        confirmed = obj.get("confirmed")
        if type(confirmed) is not dict or set(confirmed) != {"local", "peer"}:
            raise ValueError("expected 'confirmed' to be an object of 'local' and 'peer'")
        if "confirmed_local" in obj or "confirmed_peer" in obj:
            raise ValueError("extra fields found (confirmed_local or confirmed_peer)")
        fields = {k: v for k, v in obj.items() if k != "confirmed"}
        fields["confirmed_local"], fields["confirmed_peer"] = confirmed["local"], confirmed["peer"]
        return fields


@dataclass_on_first_use(frozen=True)
class HaView:
    """This process in an HA pair on PostgreSQL (redline/standby.py): its role, the lease's term
    and since when (the database's clock, ISO 8601), who holds it, and the database's role."""

    role: str  # "active", "standby" or "deposed"
    holder: str  # this process (host:pid:random)
    term: int | None  # the lease's term as last read (ours while active)
    since: str  # when that term began
    expires: str  # when it lapses unless renewed
    active_holder: str  # who holds it ("" if nobody yet)
    active_address: str
    database: str  # "primary", "standby" (read-only) or "unreachable: why"
    store: str  # the store's URL, never a password

    def to_obj(self) -> dict[str, Any]:
        return asdict(self)


@dataclass_on_first_use(frozen=True)
class StationStatus:
    """What ``redline status``, the API's status and the console show: one typed object, sent as
    JSON over the control socket and the API (``to_obj``) and read back by the CLI (``from_obj``)."""

    station: str
    fingerprint: str
    listen: tuple[str, ...]
    lines: tuple[LineStatus, ...]
    alarms: tuple[Mapping[str, Any], ...]
    ha: HaView | None = None  # a station on PostgreSQL: this process's part in the pair

    def to_obj(self) -> dict[str, Any]:
        return {
            "station": self.station, "fingerprint": self.fingerprint, "listen": list(self.listen),
            "lines": [ln.to_obj() for ln in self.lines], "alarms": [dict(a) for a in self.alarms],
            **({"ha": self.ha.to_obj()} if self.ha is not None else {}),
        }  # fmt: skip

    @classmethod
    def from_obj(cls, obj: Any) -> StationStatus:
        """``to_obj``'s JSON back as the typed status, exactly that shape (``readmodel.from_obj``:
        anything else is a ``ControlError``, one line)."""
        from redline.readmodel import from_obj

        return from_obj(obj, cls, "status")
