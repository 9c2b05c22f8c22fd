"""Call requests, replies, call records and each side's readout, side by side.

A principal (role) asks for a call with the peer's principal: CALL_REQUEST with subject, proposed
windows and expiry. The peer replies CALL_REPLY (accept, with a time, or decline, with a reason);
if it does not reply before the expiry the requesting side records CALL_EXPIRED (it alone decides).
Either side files the CALL_RECORD (start, end, participants) once a call happened, and each side
files its own READOUT in its own language; both are shown side by side and neither is authoritative
over the other: the transcript settles what was requested, answered and held.

Numbers in the peer's bodies decide nothing here: a peer's ``expires`` is shown, never run (only the
requester decides expiry, on its own request); a call's ``start`` and ``end`` are shown and counted
only when they are times (``model.as_time``), so a huge or negative one cannot break the summary.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redline.ops.model import Entry, Intent, Outbox, as_int, as_time, ref_id

DAY_MS = 86_400_000
MAX_PRINCIPALS = 16  # of a CALL_RECORD's principals, the first this many name its pair


@dataclass
class Request:
    entry: Entry
    expires: int
    reply: Entry | None = None
    expired: bool = False

    @property
    def state(self) -> str:
        if self.expired:  # the requester's decision stands, even over a reply that crossed it
            return "expired"
        if self.reply is not None:
            return "accepted" if self.reply.content.get("answer") == "accept" else "declined"
        return "open"

    @property
    def pair(self) -> tuple[str, str]:
        c = self.entry.content
        a, b = str(c.get("from_role", "?")), str(c.get("to_role", "?"))
        return (a, b) if a <= b else (b, a)


@dataclass
class Call:
    entry: Entry
    readouts: dict[bool, Entry] = field(default_factory=dict)  # ours? -> READOUT

    @property
    def pair(self) -> tuple[str, str]:
        principals = self.entry.content.get("principals")
        if isinstance(principals, list) and principals:
            roles = sorted(str(r)[:200] for r in principals[:MAX_PRINCIPALS])
        else:
            roles = ["?"]
        return (roles[0], roles[-1])


class Calls:
    def __init__(self, *, ttl_ms: int = 7 * DAY_MS) -> None:
        self.ttl_ms = ttl_ms  # a request without its own expiry lapses after this
        self.requests: dict[str, Request] = {}
        self.calls: dict[str, Call] = {}

    def observe(self, e: Entry, out: Outbox) -> None:
        c = e.content
        if e.kind == "CALL_REQUEST":
            self.requests[e.id] = Request(e, as_int(c.get("expires"), e.stored_at + self.ttl_ms))
            if not e.ours:
                out.alarm("warning", f"CALL REQUEST from the peer's {c.get('from_role')} to our {c.get('to_role')}: "
                                     f"{c.get('subject')}", e.stored_at)  # fmt: skip
        elif e.kind == "CALL_REPLY":
            r = self.requests.get(ref_id(c.get("request")) or "")
            if r is not None and r.reply is None and not r.expired and e.ours != r.entry.ours:
                r.reply = e
        elif e.kind == "CALL_EXPIRED":
            r = self.requests.get(ref_id(c.get("request")) or "")
            if r is not None and e.ours == r.entry.ours:  # only the requester decides
                r.expired = True
        elif e.kind == "CALL_RECORD":
            self.calls[e.id] = Call(e)
        elif e.kind == "READOUT":
            call = self.calls.get(ref_id(c.get("call")) or "")
            if call is not None:
                call.readouts.setdefault(e.ours, e)

    def due(self, now: int, out: Outbox) -> None:
        for r in self.requests.values():
            # A reply stored after the expiry is late: the deadline runs on our clock (as for tests).
            late = r.reply is None or r.reply.stored_at > r.expires
            if r.entry.ours and not r.expired and late and now > r.expires:
                out.intents.append(Intent(kind="CALL_EXPIRED", prio="PRIORITY", content={"request": r.entry.ref},
                                          idem=f"call-expired:{r.entry.id}"))  # fmt: skip

    def summary(self, now: int, us: str, peer: str) -> list[dict[str, Any]]:
        pairs: dict[tuple[str, str], dict[str, Any]] = {}

        def slot(pair: tuple[str, str]) -> dict[str, Any]:
            return pairs.setdefault(pair, {
                "principals": list(pair), "requests": {us: 0, peer: 0}, "declined": 0, "unanswered": 0,
                "accepted": 0, "open": 0, "calls": [], "last_call_at": None, "days_since_last_call": None,
            })  # fmt: skip

        for r in sorted(self.requests.values(), key=lambda r: r.entry.stored_at):
            s = slot(r.pair)
            s["requests"][r.entry.sender] = s["requests"].get(r.entry.sender, 0) + 1
            key = {"declined": "declined", "expired": "unanswered", "accepted": "accepted", "open": "open"}[r.state]
            s[key] += 1
        for call in sorted(self.calls.values(), key=lambda c: as_time(c.entry.content.get("start")) or 0):
            s = slot(call.pair)
            c = call.entry.content
            s["calls"].append({
                "id": call.entry.id, "start": as_time(c.get("start")), "end": as_time(c.get("end")),
                "participants": c.get("participants"), "filed_by": call.entry.sender,
                "readouts": {
                    ("ours" if ours else "theirs"): {
                        "text": ro.content.get("text"), "lang": ro.lang,
                        "by": (ro.content.get("person") or {}).get("name"),
                    }
                    for ours, ro in call.readouts.items()
                },
            })  # fmt: skip
            end = as_time(c.get("end"))
            if end is not None and (s["last_call_at"] is None or end > s["last_call_at"]):
                s["last_call_at"] = end
        for s in pairs.values():
            if s["last_call_at"] is not None:
                s["days_since_last_call"] = _days(s["last_call_at"], now)
            calls = s["calls"]
            for prev, nxt in itertools.pairwise(calls):
                nxt["days_since_previous"] = _days(as_time(prev["end"]) or 0, as_time(nxt["start"]) or 0)
        return list(pairs.values())


def _days(earlier: int, later: int) -> int:
    """Calendar days between two times, counted by UTC date as the press counts them."""
    a = datetime.fromtimestamp(earlier / 1000, UTC).date()
    b = datetime.fromtimestamp(later / 1000, UTC).date()
    return (b - a).days
