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

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from redline import kinds
from redline.ops.model import Entry, Intent, Outbox, as_time, still_open
from redline.ops.views import CallPairView, CallRecordView, CallReplyView, CallRequestView, ReadoutView

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

    def view(self) -> CallRequestView:
        # An expired request shows no reply at either end: a reply that crossed the requester's
        # CALL_EXPIRED is held where it arrived first and ignored where it arrived after (guarantee 7).
        reply = None if self.reply is None or self.answer is None or self.expired else CallReplyView(
            answer=self.answer.answer, time=as_time(self.answer.time), reason=self.answer.reason,
            lang=self.reply.lang, at=self.reply.stored_at,
        )  # fmt: skip
        return CallRequestView(
            id=self.entry.id, seq=self.entry.seq, ours=self.entry.ours, requested_by=self.entry.sender,
            from_role=self.body.from_role, to_role=self.body.to_role, subject=self.body.subject,
            lang=self.entry.lang, windows=self.body.windows, sent_at=self.entry.stored_at,
            expires=as_time(self.body.expires), state=self.state,
            time=as_time(self.answer.time) if self.answer is not None and not self.expired else None, reply=reply,
        )  # fmt: skip


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
        self._open: dict[str, Request] = {}  # our requests that may still expire (``still_open``)

    def observe(self, e: Entry, body: kinds.Body, out: Outbox) -> None:
        match body:
            case kinds.CallRequest():
                self.requests[e.id] = self._open[e.id] = Request(e, body)
                if not e.ours:
                    out.alarm("warning", "call.request", e.stored_at, from_role=body.from_role, to_role=body.to_role,
                              subject=body.subject)  # fmt: skip
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

    @staticmethod
    def _expiry(r: Request) -> int | None:
        """When (wall ms) ``due`` records our request ``r`` expired if nothing is observed first:
        after its expiry, unless it has a reply in time or is recorded expired already. ``due`` and
        ``next_due`` both read it. A reply stored after the expiry is late: the deadline runs on
        our clock (as for tests)."""
        late = r.reply is None or r.reply.stored_at > r.expires
        return r.expires + 1 if r.entry.ours and not r.expired and late else None

    def due(self, now: int, out: Outbox) -> None:
        for r in still_open(self._open, lambda r: self._expiry(r) is not None):
            at = self._expiry(r)
            if at is not None and now >= at:
                body = kinds.CallExpired(request=r.entry.reference())
                out.intents.append(Intent(kind="CALL_EXPIRED", prio=kinds.default_priority("CALL_EXPIRED"),
                                          content=body.to_content(), idem=f"call-expired:{r.entry.id}"))  # fmt: skip

    def next_due(self, now: int) -> float:
        """When ``due`` may next expire one of our requests (wall ms; ``now`` or before: due
        already), if nothing is observed first."""
        requests = still_open(self._open, lambda r: self._expiry(r) is not None)
        return min((at for r in requests if (at := self._expiry(r)) is not None), default=float("inf"))

    def requests_view(self) -> tuple[CallRequestView, ...]:
        """Every call request of the line, oldest first, with its reply and state."""
        return tuple(r.view() for r in sorted(self.requests.values(), key=lambda r: r.entry.stored_at))

    def summary(
        self, now: int, us: str, peer: str, evidence: Mapping[str, str | None] | None = None
    ) -> tuple[CallPairView, ...]:
        """Per pair of principals; ``evidence``: voice call (CALL_RING id) -> its audio evidence."""
        requests: dict[tuple[str, str], list[Request]] = {}
        calls: dict[tuple[str, str], list[Call]] = {}
        for r in sorted(self.requests.values(), key=lambda r: r.entry.stored_at):
            requests.setdefault(r.pair, []).append(r)
        for call in sorted(self.calls.values(), key=lambda c: c.body.start):
            calls.setdefault(call.pair, []).append(call)
        return tuple(
            _pair_view(pair, requests.get(pair, []), calls.get(pair, []), now, us, peer, evidence or {})
            for pair in dict.fromkeys([*requests, *calls])
        )


def _pair_view(
    pair: tuple[str, str], requests: list[Request], calls: list[Call], now: int, us: str, peer: str,
    evidence: Mapping[str, str | None],
) -> CallPairView:
    made = {us: 0, peer: 0}
    for r in requests:
        made[r.entry.sender] = made.get(r.entry.sender, 0) + 1
    states = [r.state for r in requests]
    records: list[CallRecordView] = []
    last: int | None = None
    for call in calls:
        c = call.body
        start, end = as_time(c.start), as_time(c.end)
        records.append(CallRecordView(
            id=call.entry.id, start=start, end=end, participants=tuple(c.participants),
            filed_by=call.entry.sender,
            readouts={
                ("ours" if ours else "theirs"): ReadoutView(text=ro.text, lang=entry.lang, by=ro.person.name)
                for ours, (entry, ro) in call.readouts.items()
            },
            days_since_previous=_days(records[-1].end or 0, start or 0) if records else None,
            voice=c.voice.id if c.voice else None, audio_evidence=evidence.get(c.voice.id) if c.voice else None,
        ))  # fmt: skip
        if end is not None and (last is None or end > last):
            last = end
    return CallPairView(
        principals=pair, requests=made, declined=states.count("declined"), unanswered=states.count("expired"),
        accepted=states.count("accepted"), open=states.count("open"), outcomes=tuple(r.view() for r in requests),
        calls=tuple(records), last_call_at=last, days_since_last_call=None if last is None else _days(last, now),
    )  # fmt: skip


def _days(earlier: int, later: int) -> int:
    """Calendar days between two times, counted by UTC date as the press counts them."""
    a = datetime.fromtimestamp(earlier / 1000, UTC).date()
    b = datetime.fromtimestamp(later / 1000, UTC).date()
    return (b - a).days
