"""FLASH messages: acknowledgement by a named person, escalation level by level.

The receiving station alerts its roster level by level (``escalation_levels``: duty officer, then
deputy, then supervisor) until a person acknowledges (ACK, signed by that person). It alone decides
each step and records it as ESCALATED, so the sender sees every step: accepted, receipted, read,
escalated to whom, acknowledged by whom and when. When the deadline passes unacknowledged, a final
ESCALATED with level "deadline-missed" is recorded and both ends alarm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redline.ops.model import Entry, Intent, Outbox, as_int, ref_id


@dataclass
class Flash:
    entry: Entry
    deadline: int
    receipted_at: int | None = None
    read: list[tuple[str, int]] = field(default_factory=list)  # (who, when)
    escalations: list[tuple[str, int]] = field(default_factory=list)  # (level, when)
    ack: Entry | None = None
    missed_alarmed: bool = False
    alarmed: set[str] = field(default_factory=set)  # levels alarmed here: once each, however often re-derived

    @property
    def acked_by(self) -> str | None:
        return None if self.ack is None else (self.ack.content.get("person") or {}).get("name")

    def view(self) -> dict[str, Any]:
        return {
            "id": self.entry.id, "seq": self.entry.seq, "ours": self.entry.ours,
            "text": self.entry.content.get("text"), "accepted_at": self.entry.stored_at,
            "receipted_at": self.receipted_at, "read": [{"by": w, "at": t} for w, t in self.read],
            "escalations": [{"level": lv, "at": t} for lv, t in self.escalations],
            "acked_by": self.acked_by, "acked_at": self.ack.stored_at if self.ack else None,
            "deadline": self.deadline,
            "state": "acknowledged" if self.ack else ("deadline missed" if any(
                lv == "deadline-missed" for lv, _ in self.escalations) else "waiting for acknowledgement"),
        }  # fmt: skip


class FlashTracker:
    def __init__(self, *, ack_ms: int, levels: tuple[str, ...]) -> None:
        self.ack_ms, self.levels = ack_ms, levels
        self.flashes: dict[str, Flash] = {}

    def observe(self, e: Entry, out: Outbox) -> None:
        if e.kind == "FLASH" or (e.prio == "FLASH" and e.kind == "TEXT"):
            deadline = e.stored_at + as_int(e.content.get("ack_within_ms"), self.ack_ms)
            self.flashes[e.id] = Flash(e, deadline)
            if not e.ours:
                out.alarm("alarm", f"FLASH from the peer: {self.levels[0]} must acknowledge within "
                                   f"{self.ack_ms // 1000} s ('redline ack')", e.stored_at)  # fmt: skip
            return
        target = self.flashes.get(ref_id(e.content.get("ref") or e.content.get("flash")) or "")
        if target is None or e.ours == target.entry.ours:
            return  # only the FLASH's receiver reads, escalates and acknowledges it
        if e.kind == "READ":
            target.read.append((str(e.content.get("by", "?")), e.stored_at))
        elif e.kind == "ESCALATED":
            target.escalations.append((str(e.content.get("level")), e.stored_at))
            if not e.ours and e.content.get("level") == "deadline-missed" and not target.missed_alarmed:
                target.missed_alarmed = True
                out.alarm("alarm", f"FLASH seq {target.entry.seq} was NOT acknowledged by the peer in time",
                          e.stored_at)  # fmt: skip
        elif e.kind == "ACK" and target.ack is None:
            target.ack = e

    def receipted(self, envelope_id: str, at: int) -> None:
        f = self.flashes.get(envelope_id)
        if f is not None and f.receipted_at is None:
            f.receipted_at = at

    def due(self, now: int, out: Outbox) -> None:
        """Escalation steps for FLASHes we received: each level gets an equal share of the deadline."""
        for f in self.flashes.values():
            if f.entry.ours or f.ack is not None:
                continue
            step = (f.deadline - f.entry.stored_at) // max(1, len(self.levels))
            done = {lv for lv, _ in f.escalations}
            for i, level in enumerate(self.levels[1:], start=1):
                if now >= f.entry.stored_at + i * step and level not in done:
                    out.intents.append(self._escalate(f, level, i))
                    if level not in f.alarmed:
                        f.alarmed.add(level)
                        out.alarm("alarm", f"FLASH seq {f.entry.seq} not acknowledged: escalated to {level}", now)
            if now >= f.deadline and "deadline-missed" not in done:
                out.intents.append(self._escalate(f, "deadline-missed", len(self.levels)))
                if not f.missed_alarmed:
                    f.missed_alarmed = True
                    out.alarm("alarm", f"FLASH seq {f.entry.seq} from the peer was not acknowledged in time", now)

    def _escalate(self, f: Flash, level: str, step: int) -> Intent:
        return Intent(
            kind="ESCALATED", prio="FLASH", content={"flash": f.entry.ref, "level": level, "step": step},
            idem=f"escalated:{f.entry.id}:{level}",
        )  # fmt: skip

    def pending_levels(self, now: int) -> dict[str, str]:
        """For each unacknowledged FLASH we received: the level currently alerted."""
        out = {}
        for f in self.flashes.values():
            if not f.entry.ours and f.ack is None:
                levels = [lv for lv, _ in f.escalations if lv != "deadline-missed"]
                out[f.entry.id] = levels[-1] if levels else self.levels[0]
        return out
