"""FLASH messages: acknowledgement by a named person, escalation level by level.

The receiving station alerts its roster level by level (``escalation_levels``: duty officer, then
deputy, then supervisor) until a person acknowledges (ACK, signed by that person). It alone decides
each step and records it as ESCALATED, so the sender sees every step: accepted, receipted, read,
escalated to whom, acknowledged by whom and when. When the deadline passes unacknowledged, a final
ESCALATED with level "deadline-missed" is recorded and both ends alarm.

The deadline runs on the receiver's own window (``flash_ack_seconds``): a FLASH's
``ack_within_ms`` is the sender's request, honoured only when the receiver is configured to, and
then within its own bounds (``model.window_ms``). What the peer can repeat without limit (READ,
ESCALATED) is kept once per reader and per level, so the view stays small.

The peer decides how many FLASHes we receive, and each makes us sign up to one ESCALATED per level:
unbounded, the peer would spend our disk budget about four times faster than its own. So the
ESCALATED we sign take at most what the peer's FLASHes took (``credit``: each FLASH counted at the
least its envelope takes, each ESCALATED at the most) plus an allowance; a
step past that is alerted here and alarmed, not filed. (ESCALATED is not a reserve kind either:
the reserve is for what our people file.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redline import canonical, kinds
from redline.ops.model import Entry, Intent, Outbox, still_open, window_ms
from redline.ops.views import EscalationMark, FlashView, ReadMark

# The one word for a FLASH of the peer our ACK answers from our outbox (``Flash.state``): the API,
# the CLI and the console (strings.js "ack.acknowledged, sending") all show this state.
ACK_SENDING = "acknowledged, sending"
MAX_KEPT = 32  # READs (one per reader) and ESCALATED steps (one per level) kept per FLASH
MAX_SHOWN = 100  # characters of a reader's name or a level kept
# What an envelope takes on disk beyond its content's canonical JSON (header, the body's wrapper and
# salt, framing, signature), bounded so that the escalation credit (``FlashTracker.credit``) errs
# on our side: a FLASH of the peer earns the least its envelope can take (seq and sent_at of one
# digit, no prev, nothing seen), an ESCALATED of ours costs the most ours can (every number at its
# widest, 64-character ids): what we sign for escalations never passes what the peer spent.
FLASH_LEAST_OVERHEAD = 460  # 466 for a TEXT with priority FLASH, seq 1, sent_at 0, language "en"
ESCALATED_MOST_OVERHEAD = 680  # 673 with every number at 2**53-1 and a 35-character language tag


def envelope_cost(content: dict[str, object], overhead: int) -> int:
    """What a FLASH or an ESCALATED counts for in the escalation credit."""
    return len(canonical.encode(content)) + overhead


@dataclass
class Flash:
    entry: Entry
    text: str
    deadline: int
    receipted_at: int | None = None
    read: list[tuple[str, int]] = field(default_factory=list)  # (who, when)
    escalations: list[tuple[str, int]] = field(default_factory=list)  # (level, when)
    ack: Entry | None = None
    acked_by: str | None = None
    # Our ACK of it is in our outbox, accepted (durable) and not signed yet (the line is down or
    # out of sync): it stops the escalation as the signed one does (no ESCALATED after the ACK).
    ack_accepted: bool = False
    missed_alarmed: bool = False
    alarmed: set[str] = field(default_factory=set)  # levels alarmed here: once each, however often re-derived
    unfiled: set[str] = field(default_factory=set)  # levels alerted here, not filed (no credit): not tried again

    @property
    def state(self) -> str:
        """Decided by the FLASH's receiver alone (its ACK, its ESCALATED), so both ends say the same,
        save one step only the receiver sees: its ACK accepted into its outbox, not signed yet (the
        line down or out of sync). "waiting" there would have the officer who just acknowledged do
        it again or think it failed; the peer says "waiting" until the ACK reaches it."""
        if self.ack is not None:
            return "acknowledged"
        if self.ack_accepted:
            return ACK_SENDING
        if any(lv == "deadline-missed" for lv, _ in self.escalations):
            return "deadline missed"
        return "waiting for acknowledgement"

    def view(self) -> FlashView:
        return FlashView(
            id=self.entry.id, seq=self.entry.seq, ours=self.entry.ours, text=self.text, lang=self.entry.lang,
            accepted_at=self.entry.stored_at, receipted_at=self.receipted_at,
            read=tuple(ReadMark(by=w, at=t) for w, t in self.read),
            escalations=tuple(EscalationMark(level=lv, at=t) for lv, t in self.escalations),
            acked_by=self.acked_by, acked_at=self.ack.stored_at if self.ack else None,
            deadline=self.deadline, state=self.state,
        )  # fmt: skip


class FlashTracker:
    def __init__(
        self, *, ack_ms: int, levels: tuple[str, ...], bounds: tuple[int, int] | None = None, allowance: int = 1 << 20
    ) -> None:
        self.ack_ms, self.levels, self.bounds = ack_ms, levels, bounds
        self.flashes: dict[str, Flash] = {}
        self._open: dict[str, Flash] = {}  # those with an escalation step still to come (``still_open``)
        # What our ESCALATED may still take: ``allowance`` plus the peer's FLASHes, less our ESCALATED
        # (those observed, and those filed and not signed yet: ``_charged``, by idempotency key).
        # Rebuilt by the replay at start, like everything here.
        self.credit = allowance
        self._charged: set[str] = set()

    def observe(self, e: Entry, body: kinds.Body, out: Outbox) -> None:
        match body:
            case kinds.Flash() | kinds.Text() if e.kind == "FLASH" or e.prio == "FLASH":
                requested = body.ack_within_ms if isinstance(body, kinds.Flash) else None
                window = window_ms(requested, self.ack_ms, self.bounds)
                self.flashes[e.id] = self._open[e.id] = Flash(e, body.text, e.stored_at + window)
                if not e.ours:
                    self.credit += envelope_cost(e.content, FLASH_LEAST_OVERHEAD)
                    # which FLASH, so that two waiting are never taken for one on the serve terminal
                    out.alarm("alarm", "flash.received", e.stored_at, role=self.levels[0], seconds=window // 1000,
                              seq=e.seq, id=e.id[:8])  # fmt: skip
            case kinds.Read():
                target = self._answered(e, body.ref)
                by = body.by[:MAX_SHOWN]
                if target is not None and len(target.read) < MAX_KEPT and all(w != by for w, _ in target.read):
                    target.read.append((by, e.stored_at))
            case kinds.Escalated():
                if e.ours:  # charged when filed, or now (filed before a restart, or by an earlier version)
                    key = _escalated_idem(body.flash.id, body.level)
                    if key in self._charged:
                        self._charged.discard(key)
                    else:
                        self.credit -= envelope_cost(e.content, ESCALATED_MOST_OVERHEAD)
                target = self._answered(e, body.flash)
                if target is None:
                    return
                level = body.level[:MAX_SHOWN]
                room = len(target.escalations) < MAX_KEPT or level == "deadline-missed"
                if room and all(lv != level for lv, _ in target.escalations):
                    target.escalations.append((level, e.stored_at))
                if not e.ours and body.level == "deadline-missed" and not target.missed_alarmed and target.ack is None:
                    target.missed_alarmed = True
                    out.alarm("alarm", "flash.not_acked_by_peer", e.stored_at, seq=target.entry.seq)
            case kinds.Ack():
                target = self._answered(e, body.ref)
                if target is not None and target.ack is None:
                    target.ack, target.acked_by = e, body.person.name

    def _answered(self, e: Entry, ref: kinds.Ref) -> Flash | None:
        """The FLASH ``e`` reads, escalates or acknowledges: only its receiver may."""
        target = self.flashes.get(ref.id)
        return None if target is None or e.ours == target.entry.ours else target

    def ack_accepted(self, flash_id: str) -> None:
        """Our ACK of the peer's FLASH ``flash_id`` was accepted into our outbox (or is found there
        at start): no escalation step of it is filed from now on."""
        f = self.flashes.get(flash_id)
        if f is not None and not f.entry.ours:
            f.ack_accepted = True

    def receipted(self, envelope_id: str, at: int) -> None:
        f = self.flashes.get(envelope_id)
        if f is not None and f.receipted_at is None:
            f.receipted_at = at

    def _open_steps(self, f: Flash) -> list[tuple[int, str, int]]:
        """The escalation steps not recorded yet of a FLASH we received and nobody acknowledged, as
        (when, wall ms; level; its number): each level gets an equal share of the deadline, and the
        last step, numbered ``len(levels)``, is the deadline missed. ``due`` and ``next_due`` both
        read the schedule here."""
        if f.entry.ours or f.ack is not None or f.ack_accepted:
            return []
        step = (f.deadline - f.entry.stored_at) // max(1, len(self.levels))
        done = {lv for lv, _ in f.escalations} | f.unfiled
        steps = [(f.entry.stored_at + i * step, level, i)
                 for i, level in enumerate(self.levels[1:], start=1) if level not in done]  # fmt: skip
        if "deadline-missed" not in done:
            steps.append((f.deadline, "deadline-missed", len(self.levels)))
        return steps

    def due(self, now: int, out: Outbox) -> None:
        """Escalation steps for FLASHes we received that have come."""
        for f in still_open(self._open, lambda f: bool(self._open_steps(f))):
            for at, level, i in self._open_steps(f):
                if now < at:
                    continue
                intent = self._escalate(f, level, i)
                filed = self._charge(intent)
                if filed:
                    out.intents.append(intent)
                else:  # alerted here all the same; the record of it is what the credit does not cover
                    f.unfiled.add(level)
                    out.alarm("alarm", "flash.escalation_not_filed", now, seq=f.entry.seq, level=level)
                if i == len(self.levels):
                    if not f.missed_alarmed:
                        f.missed_alarmed = True
                        out.alarm("alarm", "flash.missed", now, seq=f.entry.seq)
                elif level not in f.alarmed:
                    f.alarmed.add(level)
                    out.alarm("alarm", "flash.escalated", now, seq=f.entry.seq, level=level)

    def _charge(self, intent: Intent) -> bool:
        """Take ``intent``'s cost from the credit, once per idempotency key (a step re-derived
        before its first copy was signed costs nothing more); False if the credit does not cover it."""
        key = intent.idem or ""
        if key in self._charged:
            return True
        cost = envelope_cost(intent.content, ESCALATED_MOST_OVERHEAD)
        if cost > self.credit:
            return False
        self.credit -= cost
        self._charged.add(key)
        return True

    def next_due(self, now: int) -> float:
        """When ``due`` may next escalate (wall ms), if nothing is observed first: the earliest open
        step of any FLASH (``now`` or before: due now)."""
        flashes = still_open(self._open, lambda f: bool(self._open_steps(f)))
        return min((at for f in flashes for at, _, _ in self._open_steps(f)), default=float("inf"))

    def _escalate(self, f: Flash, level: str, step: int) -> Intent:
        body = kinds.Escalated(flash=f.entry.reference(), level=level, step=step)
        return Intent(kind="ESCALATED", prio=kinds.default_priority("ESCALATED"), content=body.to_content(),
                      idem=_escalated_idem(f.entry.id, level))  # fmt: skip

    def pending_levels(self, now: int) -> dict[str, str]:
        """For each unacknowledged FLASH we received: the level currently alerted."""
        out = {}
        for f in self.flashes.values():
            if not f.entry.ours and f.ack is None:
                levels = [lv for lv, _ in f.escalations if lv != "deadline-missed"]
                out[f.entry.id] = levels[-1] if levels else self.levels[0]
        return out


def _escalated_idem(flash_id: str, level: str) -> str:
    return f"escalated:{flash_id}:{level}"
