"""Call requests, replies, call records and each side's readout, side by side.

A principal (role) asks for a call with the peer's principal: CALL_REQUEST with subject, proposed
windows and expiry. The peer replies CALL_REPLY (accept, with a time, or decline, with a reason);
if it does not reply before the expiry the requesting side records CALL_EXPIRED (it alone decides).
Either side files the CALL_RECORD (start, end, participants) once a call happened, and each side
files its own READOUT in its own language; both are shown side by side and neither is authoritative
over the other: the transcript settles what was requested, answered and held.

One side decides each outcome (guarantee 7), so both ends show the same: the replier's first
CALL_REPLY stored in time, or the requester's CALL_EXPIRED, which stands over a reply that crossed
it. Numbers in the peer's bodies decide nothing here: a peer's ``expires`` is shown, never run (only
the requester decides expiry, on its own request); a call's ``start`` and ``end`` are shown as dates
only up to the year 9999 (``model.as_time``), so a huge one cannot break the summary.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redline import kinds
from redline.ops.model import Entry, Intent, Outbox, as_time

DAY_MS = 86_400_000
MAX_PRINCIPALS = 16  # of a CALL_RECORD's principals, the first this many name its pair
MAX_ROLE = 200  # characters of a principal's name shown


@dataclass
class Request:
    entry: Entry
    body: kinds.CallRequest
    reply: Entry | None = None
    answer: kinds.CallReply | None = None
    expired: bool = False

    @property
    def expires(self) -> int:
        return self.body.expires

    @property
    def state(self) -> str:
        if self.expired:  # the requester's decision stands, even over a reply that crossed it
            return "expired"
        if self.answer is not None:
            return "accepted" if self.answer.answer == "accept" else "declined"
        return "open"

    @property
    def pair(self) -> tuple[str, str]:
        a, b = self.body.from_role[:MAX_ROLE], self.body.to_role[:MAX_ROLE]
        return (a, b) if a <= b else (b, a)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.entry.id, "seq": self.entry.seq, "requested_by": self.entry.sender,
            "from_role": self.body.from_role, "to_role": self.body.to_role, "subject": self.body.subject,
            "expires": as_time(self.body.expires), "state": self.state,
            "time": as_time(self.answer.time) if self.answer is not None and not self.expired else None,
        }  # fmt: skip


@dataclass
class Call:
    entry: Entry
    body: kinds.CallRecord
    readouts: dict[bool, tuple[Entry, kinds.Readout]] = field(default_factory=dict)  # ours? -> READOUT

    @property
    def pair(self) -> tuple[str, str]:
        roles = sorted(r[:MAX_ROLE] for r in self.body.principals[:MAX_PRINCIPALS])
        return (roles[0], roles[-1])


class Calls:
    def __init__(self) -> None:
        self.requests: dict[str, Request] = {}
        self.calls: dict[str, Call] = {}

    def observe(self, e: Entry, body: kinds.Body, out: Outbox) -> None:
        match body:
            case kinds.CallRequest():
                self.requests[e.id] = Request(e, body)
                if not e.ours:
                    out.alarm("warning", f"CALL REQUEST from the peer's {body.from_role} to our {body.to_role}: "
                                         f"{body.subject}", e.stored_at)  # fmt: skip
            case kinds.CallReply():
                r = self.requests.get(body.request.id)
                if r is not None and r.reply is None and not r.expired and e.ours != r.entry.ours:
                    r.reply, r.answer = e, body
            case kinds.CallExpired():
                r = self.requests.get(body.request.id)
                if r is not None and e.ours == r.entry.ours:  # only the requester decides
                    r.expired = True
            case kinds.CallRecord():
                self.calls[e.id] = Call(e, body)
            case kinds.Readout():
                call = self.calls.get(body.call.id)
                if call is not None:
                    call.readouts.setdefault(e.ours, (e, body))

    def due(self, now: int, out: Outbox) -> None:
        for r in self.requests.values():
            # A reply stored after the expiry is late: the deadline runs on our clock (as for tests).
            late = r.reply is None or r.reply.stored_at > r.expires
            if r.entry.ours and not r.expired and late and now > r.expires:
                body = kinds.CallExpired(request=r.entry.reference())
                out.intents.append(Intent(kind="CALL_EXPIRED", prio=kinds.default_priority("CALL_EXPIRED"),
                                          content=body.to_content(), idem=f"call-expired:{r.entry.id}"))  # fmt: skip

    def summary(self, now: int, us: str, peer: str) -> list[dict[str, Any]]:
        pairs: dict[tuple[str, str], dict[str, Any]] = {}

        def slot(pair: tuple[str, str]) -> dict[str, Any]:
            return pairs.setdefault(pair, {
                "principals": list(pair), "requests": {us: 0, peer: 0}, "declined": 0, "unanswered": 0,
                "accepted": 0, "open": 0, "outcomes": [], "calls": [], "last_call_at": None,
                "days_since_last_call": None,
            })  # fmt: skip

        for r in sorted(self.requests.values(), key=lambda r: r.entry.stored_at):
            s = slot(r.pair)
            s["requests"][r.entry.sender] = s["requests"].get(r.entry.sender, 0) + 1
            key = {"declined": "declined", "expired": "unanswered", "accepted": "accepted", "open": "open"}[r.state]
            s[key] += 1
            s["outcomes"].append(r.view())
        for call in sorted(self.calls.values(), key=lambda c: c.body.start):
            s = slot(call.pair)
            c = call.body
            s["calls"].append({
                "id": call.entry.id, "start": as_time(c.start), "end": as_time(c.end),
                "participants": list(c.participants), "filed_by": call.entry.sender,
                "readouts": {
                    ("ours" if ours else "theirs"): {"text": ro.text, "lang": entry.lang, "by": ro.person.name}
                    for ours, (entry, ro) in call.readouts.items()
                },
            })  # fmt: skip
            end = as_time(c.end)
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
