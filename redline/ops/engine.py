"""One line's operations, derived from its transcript: tests, FLASH, calls, rosters, translations.

Fed every stored envelope (``observe``) and the receipts (``receipted``); asked what is due at a
given time (``due``). Pure: no I/O, no clock reads. The station replays the ledger into a fresh
``LineOps`` at start, so pending escalations, tests and requests survive a crash and anything
overdue fires on the first ``due``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redline.config import Limits
from redline.errors import RedlineError
from redline.ops.calls import Calls
from redline.ops.flash import FlashTracker
from redline.ops.linetests import LineTests
from redline.ops.model import Alarm, Entry, Intent, Outbox, ref_id
from redline.ops.notices import Notice, NoticeBoard
from redline.persons import PERSON_SIGNED_KINDS, Person, check_content, parse_roster


class LineOps:
    def __init__(self, *, us: str, peer: str, limits: Limits, since: int) -> None:
        self.us, self.peer = us, peer
        self.tests = LineTests(
            answer_ms=int(limits.test_answer_seconds * 1000), times=limits.test_times_utc, since=since
        )
        self.flash = FlashTracker(ack_ms=int(limits.flash_ack_seconds * 1000), levels=limits.escalation_levels)
        self.calls = Calls(ttl_ms=int(limits.call_request_ttl_seconds * 1000))
        self.rosters: dict[bool, dict[str, Person]] = {True: {}, False: {}}  # ours? -> name -> person
        self.translations: dict[str, list[dict[str, Any]]] = {}
        self.board = NoticeBoard()
        self.notice_refs: dict[str, str] = {}  # notice ref ("<filer>:<seq>") -> envelope id
        # Envelopes ops may need to find again by id. Plain TEXT is not kept here (a line carries
        # mostly text, and memory must stay flat): references to it are found in the ledger.
        self.entries: dict[str, Entry] = {}
        self.refused: list[tuple[Entry, str]] = []
        self._our_seq_to_id: dict[int, str] = {}

    def observe(self, e: Entry) -> list[Alarm]:
        out = Outbox()
        if e.kind != "TEXT":
            self.entries[e.id] = e
        if e.ours:
            self._our_seq_to_id[e.seq] = e.id
        if e.kind == "ROSTER":
            try:
                self.rosters[e.ours] = parse_roster(e.content)
            except RedlineError as exc:
                out.alarm("warning", f"ROSTER seq {e.seq} is malformed and was ignored: {exc}", e.stored_at)
            return out.alarms
        if e.kind in PERSON_SIGNED_KINDS:
            try:
                check_content(e.content, self.rosters[e.ours])
            except RedlineError as exc:
                # The envelope stays in the transcript (it is the sender's signed statement), but it
                # does not count as an acknowledgement, answer, record or readout.
                self.refused.append((e, str(exc)))
                who = "our" if e.ours else "the peer's"
                out.alarm("alarm", f"refused {e.kind} seq {e.seq} from {who} station: {exc}", e.stored_at)
                return out.alarms
        if e.kind in ("NOTICE", "NOTICE_WITHDRAW"):
            self._notice(e, out)
            return out.alarms
        if e.kind == "TRANSLATION":
            target = ref_id(e.content.get("ref"))
            if target:
                self.translations.setdefault(target, []).append(
                    {"lang": e.lang, "text": e.content.get("text"), "translator": e.content.get("translator"),
                     "ours": e.ours}
                )
        self.tests.observe(e, out)
        self.flash.observe(e, out)
        self.calls.observe(e, out)
        return out.alarms

    def _notice(self, e: Entry, out: Outbox) -> None:
        """Both ends run the same check on the same notices, so both see the same conflicts."""
        who = "our" if e.ours else "the peer's"
        try:
            if e.kind == "NOTICE":
                ref = f"{e.sender}:{e.seq}"
                notice = Notice.from_content(e.content, ref=ref)
                conflicts = self.board.add(notice)
                self.notice_refs[ref] = e.id
                for c in conflicts:
                    other = self.board.get(c.other(ref))
                    whose = "our" if other is not None and other.filer == self.us else "the peer's"
                    out.alarm(
                        "alarm",
                        f"NOTICE CONFLICT: {who} {notice.kind} notice seq {e.seq} conflicts with {whose} "
                        f"{other.kind if other else ''} notice: {c.distance_m} m apart (margin {c.margin_m} m), "
                        f"{_window(c.time_overlap)}, {c.band_overlap[0]}-{c.band_overlap[1]} m",
                        e.stored_at,
                    )
            else:
                target = e.content.get("notice")
                ref = f"{target.get('sender')}:{target.get('seq')}" if isinstance(target, dict) else ""
                self.board.withdraw(ref, by=e.sender)
        except RedlineError as exc:
            self.refused.append((e, str(exc)))
            out.alarm("warning", f"{who} {e.kind} seq {e.seq} could not be checked: {exc}", e.stored_at)

    def notices_view(self, now: int) -> dict[str, Any]:
        return {
            "active": [
                {"ref": n.ref, "id": self.notice_refs.get(n.ref), "ours": n.filer == self.us, **n.to_content()}
                for n in self.board.active()
            ],
            "conflicts": [
                {**c.to_content(), "ids": [self.notice_refs.get(c.a), self.notice_refs.get(c.b)]}
                for c in self.board.conflicts()
            ],
        }

    def receipted(self, our_seq: int, at: int) -> None:
        """The peer receipted our chain up to ``our_seq``."""
        # Our seqs are inserted in order, so the receipted ones are at the front: pop just those
        # (a scan of the whole dict per receipt made a restart's replay quadratic).
        pending = self._our_seq_to_id
        while pending:
            seq = next(iter(pending))
            if seq > our_seq:
                break
            eid = pending.pop(seq)
            self.tests.receipted(eid, at)
            self.flash.receipted(eid, at)

    def due(self, now: int) -> tuple[list[Intent], list[Alarm]]:
        out = Outbox()
        self.tests.due(now, out)
        self.flash.due(now, out)
        self.calls.due(now, out)
        for ref in self.board.expire(now):
            self.notice_refs.pop(ref, None)
        return out.intents, out.alarms

    def person_roster(self) -> dict[str, Person]:
        """The roster we last published (what the peer checks our people against)."""
        return self.rosters[True]


# What an operator may file, and which earlier envelope (if any) it must name, by content field.
OPERATOR_KINDS: dict[str, str | None] = {
    "TEXT": None, "FLASH": None, "TEST": None, "TEST_ANSWER": "test", "ACK": "ref", "READ": "ref",
    "CALL_REQUEST": None, "CALL_REPLY": "request", "CALL_RECORD": "request?", "READOUT": "call",
    "TRANSLATION": "ref", "NOTICE": None, "NOTICE_WITHDRAW": "notice",
}  # fmt: skip
# The kind each reference must point at, and whose it must be (the peer's, ours, or either).
_TARGETS: dict[str, tuple[tuple[str, ...], str]] = {
    "TEST_ANSWER": (("TEST",), "peer"),
    "ACK": (("FLASH", "TEXT"), "peer"),
    "READ": (("FLASH", "TEXT"), "peer"),
    "CALL_REPLY": (("CALL_REQUEST",), "peer"),
    "CALL_RECORD": (("CALL_REQUEST",), "either"),
    "READOUT": (("CALL_RECORD",), "either"),
    "TRANSLATION": (("TEXT", "FLASH", "READOUT", "NOTICE", "CALL_REQUEST", "CALL_REPLY", "TEST"), "either"),
    "NOTICE_WITHDRAW": (("NOTICE",), "ours"),
}


def check_operator_content(
    ops: LineOps, kind: str, content: dict[str, Any], find: Callable[[str], list[Entry]] | None = None
) -> dict[str, Any]:
    """Refuse what an operator may not file, before it is accepted; return the content with each
    reference completed to (sender, seq, id) from a unique id prefix. ``find`` looks up envelopes
    ops does not keep (plain TEXT) by id prefix."""
    from redline.errors import LocalProtocolError

    if kind not in OPERATOR_KINDS:
        raise LocalProtocolError(f"{kind} is not something an operator files")
    if kind == "NOTICE":
        return _check_notice(ops, content, find)
    field = OPERATOR_KINDS[kind]
    if field is None:
        return content
    optional = field.endswith("?")
    field = field.rstrip("?")
    if optional and field not in content:
        return content
    wanted = content.get(field)
    prefix = wanted.get("id") if isinstance(wanted, dict) else wanted
    if not isinstance(prefix, str) or len(prefix) < 6:
        raise LocalProtocolError(f"{kind} must name the envelope it answers ('{field}': an id of 6+ hex digits)")
    kinds, whose = _TARGETS[kind]
    matches = [e for eid, e in ops.entries.items() if eid.startswith(prefix)]
    if find is not None:
        matches += [e for e in find(prefix) if e.id not in ops.entries]
    if len(matches) != 1:
        raise LocalProtocolError(f"no single envelope on this line has an id starting {prefix!r}")
    target = matches[0]
    if target.kind not in kinds or (whose == "peer" and target.ours) or (whose == "ours" and not target.ours):
        side = {"peer": "the peer's ", "ours": "our own ", "either": ""}[whose]
        raise LocalProtocolError(f"{kind} must answer {side}{' or '.join(kinds)}, not {target.kind} seq {target.seq}")
    return {**content, field: target.ref}


def _check_notice(ops: LineOps, content: dict[str, Any], find: Callable[[str], list[Entry]] | None) -> dict[str, Any]:
    """A notice is validated in full before it is accepted: bad geometry, inverted windows or bands
    are refused with the reason and nothing is sent. ``amends`` names our earlier notice by id."""
    from redline.errors import LocalProtocolError

    amends = content.get("amends")
    if isinstance(amends, str) and ":" not in amends:
        matches = [e for eid, e in ops.entries.items() if eid.startswith(amends) and e.kind == "NOTICE" and e.ours]
        if len(matches) != 1:
            raise LocalProtocolError(f"amends must name one of our own notices; no single one has id {amends!r}")
        content = {**content, "amends": f"{matches[0].sender}:{matches[0].seq}"}
        if content["amends"] not in ops.notice_refs:
            raise LocalProtocolError("that notice is no longer active (withdrawn or expired); file a new one")
    Notice.from_content(content, ref=f"{ops.us}:0")
    return content


def _window(span: tuple[int, int]) -> str:
    from datetime import UTC, datetime

    a, b = (datetime.fromtimestamp(t / 1000, UTC).strftime("%d %b %H:%MZ") for t in span)
    return f"{a} to {b}"
