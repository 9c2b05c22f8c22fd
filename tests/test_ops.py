"""Operations as pure domain logic (redline.ops): line tests, FLASH escalation, rosters, calls.

No processes, no sleeps: two ``LineOps`` (one per station) joined by ``Line`` below, which plays
the station's part. Whatever one side files (an operator action or an ``Intent`` from ``due``) is
stored at once by its own station (ours=True) and, while the line is up, by the peer (ours=False),
which receipts it. Time is an explicit integer clock (ms since 1970, UTC).

What must hold (guarantees 7 and 8):
- line tests go out at the scheduled UTC slots (only the latest after downtime, none before the
  line existed); an answer within the deadline passes, none misses; both ends alarm on a miss and
  the tester says "dead" when its test was never even receipted; the history gives the figures;
- a FLASH escalates duty -> deputy -> supervisor -> deadline-missed at equal shares of the
  deadline, decided by the receiver alone; a valid ACK by a rostered person stops it; an ACK without
  a person signature, by someone not on the roster, or with a signature that does not verify is
  refused at both ends (kept in ``refused``, alarmed) and does not stop it;
- a call request is open until accepted, declined or expired; only the requester decides expiry and
  both ends then agree; a late reply does not count;
- every decision carries an idempotency key that is the same however often (and by whichever
  instance) it is re-derived, and replaying the transcript into a fresh ``LineOps`` gives the same
  state, with anything overdue decided on the first ``due``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import nacl.signing
import pytest

from redline.config import Limits
from redline.errors import SchemaError
from redline.ops.engine import LineOps, check_operator_content
from redline.ops.linetests import slot_times
from redline.ops.model import Alarm, Entry, Intent
from redline.ops.views import FlashView
from redline.persons import Person, parse_roster, roster_content, sign_content

SECOND, MINUTE, HOUR, DAY = 1000, 60_000, 3_600_000, 86_400_000


def utc(text: str) -> int:
    """'2022-05-13T08:00:00' (UTC) as ms since 1970."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


EUCOM = hashlib.sha256(b"EUCOM").hexdigest()  # the stations' fingerprints: references name them
NDMC = hashlib.sha256(b"NDMC").hexdigest()
T0 = utc("2022-05-13T09:00:00")  # the morning of the 13 May call; the 08:00 slot has passed
QUIET = Limits(test_times_utc=())  # no scheduled tests, so a test about something else sees only that


# --- people ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Officer:
    person: Person
    key: nacl.signing.SigningKey

    def sign(self, content: dict[str, Any]) -> dict[str, Any]:
        return sign_content(content, self.person, self.key)


def officer(name: str, role: str) -> Officer:
    key = nacl.signing.SigningKey(hashlib.sha256(name.encode()).digest())
    return Officer(Person(name=name, role=role, key=bytes(key.verify_key).hex()), key)


DUTY_EUCOM = officer("Duty EUCOM", "duty")
DEZHURNY = officer("Dezhurny", "duty")
ZAMESTITEL = officer("Zamestitel", "deputy")
NACHALNIK = officer("Nachalnik", "supervisor")
OUTSIDER = officer("Outsider", "duty")  # a valid key pair, never on NDMC's roster


# --- two stations joined by a line ------------------------------------------------------------


class Side:
    def __init__(self, name: str, peer: str, lang: str, limits: Limits, since: int) -> None:
        self.name, self.lang, self.limits, self.since = name, lang, limits, since
        self.ops = LineOps(us=name, peer=peer, limits=limits, since=since)
        self.seq = 0
        self.alarms: list[Alarm] = []
        self.filed: set[str] = set()  # idempotency keys already accepted (the station's outbox)
        self.log: list[tuple[str, Any]] = []  # what this station stored and when: enough to rebuild

    def observe(self, e: Entry) -> None:
        self.log.append(("observe", e))
        self.alarms += self.ops.observe(e)

    def receipted(self, seq: int, at: int) -> None:
        self.log.append(("receipted", (seq, at)))
        self.ops.receipted(seq, at)

    def texts(self) -> list[str]:
        return [a.text for a in self.alarms]


class Line:
    """EUCOM (a) and NDMC (b), each with its own LineOps; every envelope is stored by its sender
    at once and by the peer when the line is up (else when it comes back)."""

    def __init__(self, *, since: int = T0, limits: Limits = QUIET) -> None:
        self.now = since
        self.a = Side(EUCOM, NDMC, "en", limits, since)
        self.b = Side(NDMC, EUCOM, "ru", limits, since)
        self.up = True
        self.in_flight: list[tuple[Side, Entry]] = []

    def peer(self, side: Side) -> Side:
        return self.b if side is self.a else self.a

    def at(self, when: int) -> None:
        assert when >= self.now, "time runs forward"
        self.now = when
        if self.up:
            self.deliver()

    def advance(self, ms: int) -> None:
        self.at(self.now + ms)

    def file(self, side: Side, kind: str, content: dict[str, Any], *, prio: str = "PRIORITY") -> Entry:
        side.seq += 1
        eid = hashlib.sha256(f"{side.name}/{side.seq}/{kind}".encode()).hexdigest()
        e = Entry(sender=side.name, ours=True, seq=side.seq, id=eid, kind=kind, prio=prio, sent_at=self.now,
                  stored_at=self.now, lang=side.lang, content=content)  # fmt: skip
        side.observe(e)
        self.in_flight.append((side, e))
        if self.up:
            self.deliver()
        return e

    def deliver(self) -> None:
        for sender, e in self.in_flight:
            self.peer(sender).observe(replace(e, ours=False, stored_at=self.now))
            sender.receipted(e.seq, self.now)
        self.in_flight.clear()

    def cut(self) -> None:
        self.up = False

    def restore(self) -> None:
        self.up = True
        self.deliver()

    def tick(self, side: Side) -> list[Intent]:
        """The station's tick: record every decision that is due, once per idempotency key. Each
        tick also holds ``next_due`` (by which the station's ticker skips idle lines) to never
        saying "later" when ``due`` had something to record, alarm or expire."""
        due_at, notices = side.ops.next_due(self.now), dict(side.ops.notice_refs)
        intents, alarms = side.ops.due(self.now)
        if intents or alarms or side.ops.notice_refs != notices:
            assert due_at <= self.now, f"next_due said {due_at}, but at {self.now} due() did {intents} {alarms}"
        nothing_open_dropped(side.ops)
        side.alarms += alarms
        for intent in intents:
            assert intent.idem is not None, f"{intent.kind} decided by the station carries an idempotency key"
            # Once a decision is stored, ops must see it and not derive it again.
            assert intent.idem not in side.filed, f"{intent.idem} decided again after it was stored"
            side.filed.add(intent.idem)
            self.file(side, intent.kind, intent.content, prio=intent.prio)
        side.ops.next_due(self.now)  # worked out now, as the ticker does, kept until something changes
        return intents

    def ticks(self) -> tuple[list[Intent], list[Intent]]:
        return self.tick(self.a), self.tick(self.b)


def kinds(intents: list[Intent]) -> list[str]:
    return [i.kind for i in intents]


def nothing_open_dropped(ops: LineOps) -> None:
    """What ``due`` and ``next_due`` walk (the open items, ``ops.model.still_open``) holds every item
    of the whole history whose schedule may still act: what they drop is closed for good."""
    t, f, c = ops.tests, ops.flash, ops.calls
    assert {k for k, x in t.ours.items() if t._verdict(x) is not None} <= t._open_ours.keys()
    assert {k for k, x in t.theirs.items() if t._urge_at(x) is not None} <= t._open_theirs.keys()
    assert {k for k, x in f.flashes.items() if f._open_steps(x)} <= f._open.keys()
    assert {k for k, x in c.requests.items() if c._expiry(x) is not None} <= c._open.keys()


def levels(intents: list[Intent]) -> list[str]:
    return [i.content["level"] for i in intents if i.kind == "ESCALATED"]


def rosters(line: Line) -> None:
    line.file(line.a, "ROSTER", roster_content([DUTY_EUCOM.person]))
    line.file(line.b, "ROSTER", roster_content([DEZHURNY.person, ZAMESTITEL.person, NACHALNIK.person]))


def flash_view(side: Side, flash: Entry) -> FlashView:
    return side.ops.flash.flashes[flash.id].view()


# --- line tests: the schedule ----------------------------------------------------------------------


def test_slot_times_are_the_latest_utc_slots_not_after_now() -> None:
    slots = slot_times(utc("2022-05-13T09:00:00"), ((8, 0), (20, 0)))
    assert slots == [
        ("2022-05-13T08:00Z", utc("2022-05-13T08:00:00")),
        ("2022-05-12T20:00Z", utc("2022-05-12T20:00:00")),
        ("2022-05-12T08:00Z", utc("2022-05-12T08:00:00")),
    ]
    assert slot_times(utc("2022-05-13T08:00:00"), ((8, 0), (20, 0)))[0][0] == "2022-05-13T08:00Z"  # inclusive
    assert slot_times(utc("2022-05-13T07:59:59.999"), ((8, 0), (20, 0)))[0][0] == "2022-05-12T20:00Z"


def slots(intents: list[Intent]) -> list[str]:
    return [i.content["slot"] for i in intents if i.kind == "TEST"]


def test_scheduled_test_goes_out_at_each_slot_once() -> None:
    line = Line(since=utc("2022-05-13T07:00:00"), limits=Limits())
    line.at(utc("2022-05-13T07:59:59.999"))
    assert line.tick(line.a) == []
    line.at(utc("2022-05-13T08:00:00"))
    sent = line.tick(line.a)
    assert kinds(sent) == ["TEST"] and sent[0].content["slot"] == "2022-05-13T08:00Z"
    assert sent[0].idem == "test:slot:2022-05-13T08:00Z" and sent[0].content["answer_within_ms"] == 300 * SECOND
    line.at(utc("2022-05-13T19:59:59"))
    assert slots(line.tick(line.a)) == []  # the slot is done (Line.tick also asserts it is not re-derived)
    line.at(utc("2022-05-13T20:00:00"))
    assert slots(line.tick(line.a)) == ["2022-05-13T20:00Z"]
    # Both stations run the same schedule: each tests the other.
    assert slots(line.tick(line.b)) == ["2022-05-13T20:00Z"]


def test_no_slot_before_the_line_existed() -> None:
    line = Line(since=utc("2022-05-13T08:30:00"), limits=Limits())
    line.at(utc("2022-05-13T09:00:00"))
    assert line.ticks() == ([], [])  # 08:00 was before the pairing
    line.at(utc("2022-05-13T20:00:00"))
    assert kinds(line.tick(line.a)) == ["TEST"]


def test_only_the_latest_slot_after_downtime() -> None:
    line = Line(since=utc("2022-05-10T00:00:00"), limits=Limits())
    line.at(utc("2022-05-13T21:00:00"))  # the station was down for seven slots
    assert slots(line.tick(line.a)) == ["2022-05-13T20:00Z"]
    line.advance(HOUR)
    assert slots(line.tick(line.a)) == []


# --- line tests: answers, deadlines, alarms ------------------------------------------------------------


def answer(line: Line, test: Entry, who: Officer = DEZHURNY) -> Entry:
    return line.file(line.b, "TEST_ANSWER", who.sign({"test": test.ref, "text": "Test received."}))


def test_answer_within_the_deadline_passes() -> None:
    line = Line()
    rosters(line)
    test = line.file(line.a, "TEST", line.a.ops.tests.intent(None).content)
    assert any("LINE TEST from the peer" in t for t in line.b.texts())
    assert line.b.ops.tests.history(line.now).to_answer[0].deadline == T0 + 300 * SECOND
    line.advance(300 * SECOND)  # exactly at the deadline still counts
    answer(line, test)
    result = line.tick(line.a)
    assert kinds(result) == ["TEST_RESULT"]
    assert result[0].content == {"test": test.ref, "result": "passed", "answered_by": "Dezhurny",
                                 "answer_ms": 300 * SECOND}  # fmt: skip
    assert result[0].idem == f"test-result:{test.id}"
    # Both ends now agree; nobody alarms afterwards.
    line.advance(HOUR)
    line.ticks()
    assert line.a.ops.tests.ours[test.id].result == "passed" == line.b.ops.tests.theirs[test.id].result
    assert not any("MISSED" in t for t in line.a.texts() + line.b.texts())
    assert line.b.ops.tests.history(line.now).to_answer == ()
    # Decided at both ends: kept in the history, no longer walked by due() and next_due().
    assert test.id not in line.a.ops.tests._open_ours and test.id not in line.b.ops.tests._open_theirs


@pytest.mark.parametrize("first", ["tester", "answerer"])
def test_no_answer_by_the_deadline_misses_and_both_ends_alarm(first: str) -> None:
    """Whichever end notices first (the tester's TEST_RESULT may reach the answering side before
    its own copy of the deadline passes, or after), both ends alarm the miss, once each; the
    answering side only on the tester's verdict (guarantee 7), before it only urging an answer."""
    line = Line()
    rosters(line)
    test = line.file(line.a, "TEST", line.a.ops.tests.intent(None).content)
    line.advance(300 * SECOND)
    assert line.ticks() == ([], [])  # at the deadline: not yet missed
    line.advance(1)
    if first == "answerer":
        assert line.tick(line.b) == []  # the answering side decides nothing
        assert not any("MISSED" in t for t in line.b.texts())  # and guesses no verdict
        [urge] = [t for t in line.b.texts() if "still unanswered after our copy of its deadline" in t]
        assert "awaiting the tester's verdict" in urge
        assert line.b.ops.tests.history(line.now).received[0].state == "awaiting the tester's verdict"
    result = line.tick(line.a)
    assert [(i.kind, i.content["result"]) for i in result] == [("TEST_RESULT", "missed")]
    missed = [t for t in line.a.texts() if "LINE TEST MISSED" in t]
    assert len(missed) == 1 and "dead" not in missed[0]  # it was receipted: the station is up, nobody answered
    line.tick(line.b)
    assert sum("LINE TEST MISSED here" in t for t in line.b.texts()) == 1
    # Alarms are raised once, however often the stations tick afterwards.
    for _ in range(3):
        line.advance(MINUTE)
        line.ticks()
    assert sum("LINE TEST MISSED" in t for t in line.a.texts()) == 1
    assert sum("LINE TEST MISSED" in t for t in line.b.texts()) == 1
    assert line.b.ops.tests.theirs[test.id].result == "missed"
    assert line.b.ops.tests.history(line.now).to_answer[0].id == test.id  # still shown as unanswered


def test_an_answer_after_the_deadline_still_misses() -> None:
    line = Line()
    rosters(line)
    test = line.file(line.a, "TEST", line.a.ops.tests.intent(None).content)
    line.advance(300 * SECOND + 1)
    answer(line, test)  # stored by the tester after its deadline, before its next tick
    assert [i.content["result"] for i in line.tick(line.a)] == ["missed"]
    assert line.a.ops.tests.history(line.now).passed == 0


def test_a_test_never_receipted_says_the_line_may_be_dead() -> None:
    line = Line()
    line.cut()
    line.file(line.a, "TEST", line.a.ops.tests.intent(None).content)
    line.advance(301 * SECOND)
    assert [i.content["result"] for i in line.tick(line.a)] == ["missed"]
    [missed] = [t for t in line.a.texts() if "LINE TEST MISSED" in t]
    assert "never receipted" in missed and "the line may be dead" in missed
    hist = line.a.ops.tests.history(line.now)
    assert hist.tests[0].receipted_at is None and hist.since_last_proven_ms is None


def test_history_figures() -> None:
    line = Line()
    rosters(line)
    start = line.now
    for took in (10 * SECOND, 30 * SECOND, 20 * SECOND):
        test = line.file(line.a, "TEST", line.a.ops.tests.intent(None).content)
        line.advance(took)
        answer(line, test)
        line.tick(line.a)
        line.advance(HOUR)
    last_answer = start + 2 * HOUR + 60 * SECOND  # the third test's answer
    line.file(line.a, "TEST", line.a.ops.tests.intent(None).content)  # left unanswered
    line.advance(10 * MINUTE)
    line.tick(line.a)
    line.file(line.a, "TEST", line.a.ops.tests.intent(None).content)  # still pending
    hist = line.a.ops.tests.history(line.now)
    assert (hist.sent, hist.passed, hist.missed, hist.pending) == (5, 3, 1, 1)
    assert hist.answer_ms_median == 20 * SECOND and hist.answer_ms_worst == 30 * SECOND
    assert hist.since_last_proven_ms == line.now - last_answer
    assert [t.result for t in hist.tests] == ["passed", "passed", "passed", "missed", "pending"]
    assert {t.answered_by for t in hist.tests[:3]} == {"Dezhurny"}
    assert all(t.receipted_at == t.sent_at for t in hist.tests)


def test_a_test_answer_without_a_valid_person_signature_does_not_pass() -> None:
    line = Line()
    rosters(line)
    test = line.file(line.a, "TEST", line.a.ops.tests.intent(None).content)
    line.advance(SECOND)
    line.file(line.b, "TEST_ANSWER", {"test": test.ref, "text": "Test received."})  # nobody signed it
    answer(line, test, OUTSIDER)  # not on NDMC's roster
    assert line.tick(line.a) == []
    assert [e.kind for e, _ in line.a.ops.refused] == ["TEST_ANSWER", "TEST_ANSWER"]
    line.advance(300 * SECOND)
    assert [i.content["result"] for i in line.tick(line.a)] == ["missed"]


# --- FLASH: escalation, acknowledgement -------------------------------------------------------------


def flash(line: Line, text: str = "FLASH: aircraft near the border") -> Entry:
    return line.file(line.a, "FLASH", {"text": text}, prio="FLASH")


def test_flash_escalates_duty_deputy_supervisor_then_deadline_missed() -> None:
    line = Line()
    rosters(line)
    f = flash(line)
    said = f"FLASH from the peer: duty must acknowledge within 120 s: seq {f.seq}, id {f.id[:8]} ('redline ack LINE"
    assert any(t.startswith(said) for t in line.b.texts()), line.b.texts()
    assert line.b.ops.flash.pending_levels(line.now) == {f.id: "duty"}
    steps: list[tuple[int, str]] = []
    for offset in range(0, 130 * SECOND, 500):  # a tick every half second
        line.at(T0 + offset)
        a_did, b_did = line.ticks()
        assert a_did == []  # the sender never decides an escalation
        steps += [(offset, lv) for lv in levels(b_did)]
    assert steps == [(40 * SECOND, "deputy"), (80 * SECOND, "supervisor"), (120 * SECOND, "deadline-missed")]
    # The sender sees every step as the receiver recorded it, and both ends alarm.
    view = flash_view(line.a, f)
    assert [(s.level, s.at - T0) for s in view.escalations] == [
        ("deputy", 40 * SECOND), ("supervisor", 80 * SECOND), ("deadline-missed", 120 * SECOND)]  # fmt: skip
    assert view.state == "deadline missed" and view.receipted_at == T0 and view.acked_by is None
    assert sum("NOT acknowledged by the peer in time" in t for t in line.a.texts()) == 1
    assert sum("was not acknowledged in time" in t for t in line.b.texts()) == 1
    assert [t for t in line.b.texts() if "escalated to" in t] == [
        f"FLASH seq {f.seq} not acknowledged: escalated to deputy",
        f"FLASH seq {f.seq} not acknowledged: escalated to supervisor",
    ]
    assert line.b.ops.flash.pending_levels(line.now) == {f.id: "supervisor"}


def test_overdue_escalation_steps_all_fire_at_once_in_order() -> None:
    line = Line()
    f = flash(line)
    line.advance(130 * SECOND)  # the receiver was not ticking (busy, or down)
    did = line.tick(line.b)
    assert levels(did) == ["deputy", "supervisor", "deadline-missed"]
    assert [i.content["step"] for i in did] == [1, 2, 3]
    assert [i.idem for i in did] == [f"escalated:{f.id}:{lv}" for lv in ("deputy", "supervisor", "deadline-missed")]
    assert [s.level for s in flash_view(line.a, f).escalations] == ["deputy", "supervisor", "deadline-missed"]


def test_a_valid_ack_stops_the_escalation() -> None:
    line = Line()
    rosters(line)
    f = flash(line)
    line.advance(40 * SECOND)
    assert levels(line.tick(line.b)) == ["deputy"]
    line.advance(5 * SECOND)
    ack = line.file(line.b, "ACK", ZAMESTITEL.sign({"ref": f.ref}), prio="FLASH")
    for _ in range(4):
        line.advance(40 * SECOND)
        assert line.ticks() == ([], [])
    view = flash_view(line.a, f)
    assert view.state == "acknowledged" and view.acked_by == "Zamestitel" and view.acked_at == ack.stored_at
    assert [s.level for s in view.escalations] == ["deputy"]
    assert line.a.ops.refused == [] and line.b.ops.refused == []
    assert line.b.ops.flash.pending_levels(line.now) == {}
    assert not any("NOT acknowledged" in t for t in line.a.texts())


def _acks_refused(line: Line, f: Entry, content: dict[str, Any], reason: str) -> None:
    """The ACK is refused at both ends (kept, alarmed) and the escalation goes on."""
    line.advance(10 * SECOND)
    ack = line.file(line.b, "ACK", content, prio="FLASH")
    for side, who in ((line.a, "the peer's"), (line.b, "our")):
        refused, why = side.ops.refused[-1]
        assert refused.id == ack.id and reason in why
        assert f"refused ACK seq {ack.seq} from {who} station" in side.texts()[-1]
    for _ in range(12):
        line.advance(10 * SECOND)
        line.ticks()
    view = flash_view(line.a, f)
    assert view.acked_by is None and view.state == "deadline missed"
    assert [s.level for s in view.escalations] == ["deputy", "supervisor", "deadline-missed"]


def test_ack_without_a_person_signature_is_refused() -> None:
    line = Line()
    rosters(line)
    f = flash(line)
    _acks_refused(line, f, {"ref": f.ref}, "ACK content has no 'person'")


def test_ack_by_someone_not_on_the_roster_is_refused() -> None:
    line = Line()
    rosters(line)
    f = flash(line)
    _acks_refused(line, f, OUTSIDER.sign({"ref": f.ref}), "not on the sending station's published roster")


def test_ack_before_any_roster_is_refused() -> None:
    line = Line()
    f = flash(line)
    _acks_refused(line, f, DEZHURNY.sign({"ref": f.ref}), "not on the sending station's published roster")


def test_ack_with_a_tampered_signature_is_refused() -> None:
    line = Line()
    rosters(line)
    other = flash(line, "an earlier, harmless FLASH")
    f = flash(line)
    # Dezhurny's signature over an ACK of the other FLASH, moved onto this one.
    moved = {**DEZHURNY.sign({"ref": other.ref}), "ref": f.ref}
    _acks_refused(line, f, moved, "does not verify")


def test_ack_with_a_truncated_signature_is_refused() -> None:
    line = Line()
    rosters(line)
    f = flash(line)
    signed = DEZHURNY.sign({"ref": f.ref})
    _acks_refused(line, f, {**signed, "person": {**signed["person"], "sig": signed["person"]["sig"][:-2]}},
                  "'sig' is not a signature (128 lower-case hex digits)")  # fmt: skip


def test_ack_with_the_wrong_key_for_a_rostered_name_is_refused() -> None:
    line = Line()
    rosters(line)
    f = flash(line)
    impostor = Officer(replace(OUTSIDER.person, name="Nachalnik", role="supervisor"), OUTSIDER.key)
    _acks_refused(line, f, impostor.sign({"ref": f.ref}), "not the one on the roster")


def test_an_ack_by_the_flash_sender_itself_does_not_count() -> None:
    line = Line()
    rosters(line)
    f = flash(line)
    line.file(line.a, "ACK", DUTY_EUCOM.sign({"ref": f.ref}), prio="FLASH")
    line.advance(40 * SECOND)
    assert levels(line.tick(line.b)) == ["deputy"]
    assert flash_view(line.a, f).acked_by is None


def test_escalation_recorded_by_the_flash_sender_does_not_count() -> None:
    """Only the receiving station decides escalation steps: an ESCALATED filed by the sender of the
    FLASH (buggy or hostile) must neither be shown as a step nor suppress the receiver's own."""
    line = Line()
    f = flash(line)
    for level, step in (("deputy", 1), ("supervisor", 2), ("deadline-missed", 3)):
        line.file(line.a, "ESCALATED", {"flash": f.ref, "level": level, "step": step}, prio="FLASH")
    assert flash_view(line.a, f).escalations == () == flash_view(line.b, f).escalations
    assert not any("NOT acknowledged" in t for t in line.b.texts())
    line.advance(40 * SECOND)
    assert levels(line.tick(line.b)) == ["deputy"]


def test_a_text_with_flash_priority_is_a_flash() -> None:
    line = Line()
    f = line.file(line.a, "TEXT", {"text": "urgent"}, prio="FLASH")
    line.advance(40 * SECOND)
    assert levels(line.tick(line.b)) == ["deputy"]
    assert flash_view(line.a, f).escalations[0].level == "deputy"


def test_escalation_follows_the_configured_levels_and_deadline() -> None:
    limits = Limits(flash_ack_seconds=60.0, escalation_levels=("duty", "supervisor"))
    line = Line(limits=limits)
    flash(line)
    line.advance(30 * SECOND - 1)
    assert line.tick(line.b) == []
    line.advance(1)
    assert levels(line.tick(line.b)) == ["supervisor"]
    line.advance(30 * SECOND)
    did = line.tick(line.b)
    assert levels(did) == ["deadline-missed"] and did[0].content["step"] == 2


# --- rosters ------------------------------------------------------------------------------------------


def test_roster_parsing() -> None:
    content = roster_content([DEZHURNY.person, NACHALNIK.person])
    assert parse_roster(content) == {"Dezhurny": DEZHURNY.person, "Nachalnik": NACHALNIK.person}
    good = DEZHURNY.person.to_obj()
    for bad, reason in (
        ({"users": []}, "'users' must hold at least 1 item"),
        ({}, "ROSTER content has no 'users'"),
        ({"users": "Dezhurny"}, "'users' must be a list"),
        ({"users": ["Dezhurny"]}, "must be an object"),
        ({"users": [{**good, "role": "tsar"}]}, "'role' must be one of duty, deputy"),
        ({"users": [{**good, "key": "ab" * 31}]}, "64 hex digits"),
        ({"users": [{**good, "key": "AB" * 32}]}, "64 hex digits"),
        ({"users": [{**good, "name": ""}]}, "is not a person name"),
        ({"users": [{**good, "name": "x" * 64}]}, "is not a person name"),
        ({"users": [good, good]}, "lists Dezhurny twice"),
    ):
        with pytest.raises(SchemaError, match=reason):
            parse_roster(bad)


def test_roster_user_without_a_string_name_is_refused() -> None:
    key = DEZHURNY.person.key
    for bad in ({"role": "duty", "key": key}, {"name": None, "role": "duty", "key": key},
                {"name": 7, "role": "duty", "key": key}):  # fmt: skip
        with pytest.raises(SchemaError):
            parse_roster({"users": [bad]})


def test_a_malformed_roster_is_ignored_and_the_previous_one_stays() -> None:
    line = Line()
    rosters(line)
    line.file(line.b, "ROSTER", {"users": [{"name": "Dezhurny", "role": "tsar", "key": "00" * 32}]})
    assert any("is malformed and was ignored" in t for t in line.a.texts())
    f = flash(line)
    line.file(line.b, "ACK", DEZHURNY.sign({"ref": f.ref}), prio="FLASH")
    assert flash_view(line.a, f).acked_by == "Dezhurny"


def test_each_side_is_checked_against_its_own_roster() -> None:
    """EUCOM's roster does not vouch for NDMC's people (and vice versa)."""
    line = Line()
    line.file(line.a, "ROSTER", roster_content([DUTY_EUCOM.person, DEZHURNY.person]))
    f = flash(line)
    line.file(line.b, "ACK", DEZHURNY.sign({"ref": f.ref}), prio="FLASH")
    assert flash_view(line.a, f).acked_by is None
    assert "not on the sending station's published roster" in line.a.ops.refused[0][1]


# --- calls ------------------------------------------------------------------------------------------


def request(line: Line, *, expires: int | None = None, subject: str = "Ceasefire") -> Entry:
    """EUCOM's operator files a call request (its station fills in a missing expiry)."""
    content: dict[str, Any] = {"from_role": "Secretary", "to_role": "Minister", "subject": subject, "windows": []}
    if expires is not None:
        content["expires"] = expires
    return line.file(line.a, "CALL_REQUEST", check_operator_content(line.a.ops, "CALL_REQUEST", content, now=line.now))


def states(line: Line, r: Entry) -> tuple[str, str]:
    return line.a.ops.calls.requests[r.id].state, line.b.ops.calls.requests[r.id].state


def test_a_call_request_is_open_until_accepted() -> None:
    line = Line()
    r = request(line, expires=T0 + DAY)
    assert states(line, r) == ("open", "open")
    assert any("CALL REQUEST from the peer's Secretary to our Minister: Ceasefire" in t for t in line.b.texts())
    line.advance(HOUR)
    line.file(line.b, "CALL_REPLY", {"request": r.ref, "answer": "accept", "time": utc("2022-05-13T11:00:00")})
    assert states(line, r) == ("accepted", "accepted")
    line.advance(2 * DAY)
    assert line.ticks() == ([], [])  # an answered request never expires


def test_a_call_request_declined() -> None:
    line = Line()
    r = request(line, expires=T0 + DAY)
    line.file(line.b, "CALL_REPLY", {"request": r.ref, "answer": "decline", "reason": "not now"})
    assert states(line, r) == ("declined", "declined")
    # A second reply does not change the first.
    line.file(line.b, "CALL_REPLY", {"request": r.ref, "answer": "accept", "time": T0 + DAY})
    assert states(line, r) == ("declined", "declined")


def test_a_reply_by_the_requester_itself_does_not_count() -> None:
    line = Line()
    r = request(line, expires=T0 + DAY)
    line.file(line.a, "CALL_REPLY", {"request": r.ref, "answer": "accept", "time": T0 + DAY})
    assert states(line, r) == ("open", "open")


def test_an_unanswered_request_expires_decided_by_the_requester_only() -> None:
    line = Line()
    r = request(line, expires=T0 + DAY)
    line.at(T0 + DAY)
    assert line.ticks() == ([], [])  # at the expiry: still open
    line.advance(1)
    assert line.tick(line.b) == []  # the peer never decides
    did = line.tick(line.a)
    assert [(i.kind, i.content, i.idem) for i in did] == [("CALL_EXPIRED", {"request": r.ref},
                                                             f"call-expired:{r.id}")]  # fmt: skip
    assert states(line, r) == ("expired", "expired")
    # A reply after the expiry is ignored at both ends.
    line.advance(MINUTE)
    line.file(line.b, "CALL_REPLY", {"request": r.ref, "answer": "accept", "time": T0 + DAY})
    assert states(line, r) == ("expired", "expired")
    line.advance(DAY)
    assert line.ticks() == ([], [])


def test_a_request_without_expiry_lapses_after_the_configured_time() -> None:
    line = Line(limits=Limits(test_times_utc=(), call_request_ttl_seconds=3600.0))
    r = request(line)
    line.advance(HOUR)
    assert line.tick(line.a) == []
    line.advance(1)
    assert kinds(line.tick(line.a)) == ["CALL_EXPIRED"]
    assert states(line, r) == ("expired", "expired")


def test_default_expiry_is_seven_days() -> None:
    line = Line()
    r = request(line)
    line.advance(7 * DAY)
    assert line.tick(line.a) == []
    line.advance(1)
    assert kinds(line.tick(line.a)) == ["CALL_EXPIRED"]
    assert states(line, r) == ("expired", "expired")


def test_a_reply_crossing_the_expiry_in_flight_both_ends_agree_expired() -> None:
    """The peer replies while the requester, not having it yet, records the expiry: the two
    envelopes cross. The requester alone decides, so both ends must end up at "expired"."""
    line = Line()
    r = request(line, expires=T0 + DAY)
    line.cut()
    line.at(T0 + DAY + 1)
    line.file(line.b, "CALL_REPLY", {"request": r.ref, "answer": "accept", "time": T0 + DAY})
    assert kinds(line.tick(line.a)) == ["CALL_EXPIRED"]
    line.restore()
    assert states(line, r) == ("expired", "expired")


def test_a_reply_stored_after_the_expiry_is_late_even_before_the_requester_ticks() -> None:
    """The requester was down across the expiry; the reply is stored on restart before its first
    tick. The deadline runs on the requester's clock from its own events (as for line tests)."""
    line = Line()
    r = request(line, expires=T0 + DAY)
    line.cut()
    line.at(T0 + DAY + 10 * MINUTE)
    line.restore()
    line.file(line.b, "CALL_REPLY", {"request": r.ref, "answer": "accept", "time": T0 + DAY})
    assert kinds(line.tick(line.a)) == ["CALL_EXPIRED"]
    assert states(line, r) == ("expired", "expired")


def test_call_record_and_both_readouts_side_by_side() -> None:
    line = Line(since=utc("2022-02-01T00:00:00"))
    rosters(line)
    line.at(utc("2022-02-18T16:00:00"))
    feb = line.file(line.a, "CALL_RECORD", DUTY_EUCOM.sign({
        "start": utc("2022-02-18T15:00:00"), "end": utc("2022-02-18T15:50:00"),
        "principals": ["Secretary", "Minister"], "participants": ["Secretary", "Minister"]}))  # fmt: skip
    line.at(utc("2022-05-12T09:00:00"))
    r = request(line, expires=utc("2022-05-20T00:00:00"), subject="Lines of communication")
    declined = request(line, expires=utc("2022-05-20T00:00:00"), subject="Another")
    line.file(line.b, "CALL_REPLY", {"request": declined.ref, "answer": "decline"})
    line.file(line.b, "CALL_REPLY", {"request": r.ref, "answer": "accept", "time": utc("2022-05-13T11:00:00")})
    line.at(utc("2022-05-13T12:10:00"))
    rec = line.file(line.a, "CALL_RECORD", DUTY_EUCOM.sign({
        "start": utc("2022-05-13T11:00:00"), "end": utc("2022-05-13T12:00:00"), "request": r.ref,
        "principals": ["Secretary", "Minister"], "participants": ["Secretary", "Minister"]}))  # fmt: skip
    line.file(line.a, "READOUT", DUTY_EUCOM.sign({"call": rec.ref, "text": "The Secretary urged a ceasefire."}))
    line.file(line.b, "READOUT", NACHALNIK.sign({"call": rec.ref, "text": "Обсуждены актуальные вопросы."}))
    line.file(line.b, "READOUT", {"call": rec.ref, "text": "unsigned: refused"})
    line.file(line.b, "REQUEST_BY_A_NEWER_PEER", {"call": rec.ref})  # unknown kinds change nothing
    now = utc("2022-05-16T08:00:00")
    for side, us, peer, mine, theirs in ((line.a, EUCOM, NDMC, "en", "ru"), (line.b, NDMC, EUCOM, "ru", "en")):
        [pair] = side.ops.calls.summary(now, us, peer)
        assert pair.principals == ("Minister", "Secretary")
        assert pair.requests == {EUCOM: 2, NDMC: 0}
        assert (pair.accepted, pair.declined, pair.unanswered, pair.open) == (1, 1, 0, 0)
        assert [c.id for c in pair.calls] == [feb.id, rec.id]
        may = pair.calls[1]
        assert may.days_since_previous == 84  # "the first in 84 days"
        assert pair.calls[0].days_since_previous is None and pair.calls[0].readouts == {}
        assert may.filed_by == EUCOM and may.participants == ("Secretary", "Minister")
        assert may.readouts["ours"].lang == mine and may.readouts["theirs"].lang == theirs
        assert {ro.by for ro in may.readouts.values()} == {"Duty EUCOM", "Nachalnik"}
        assert pair.last_call_at == utc("2022-05-13T12:00:00") and pair.days_since_last_call == 3
    assert [e.kind for e, _ in line.a.ops.refused] == ["READOUT"]


def test_days_between_calls_are_counted_by_utc_date() -> None:
    line = Line(since=utc("2022-02-01T00:00:00"))
    rosters(line)

    def record(start: str, end: str) -> None:
        line.at(max(line.now, utc(end)))
        line.file(line.a, "CALL_RECORD", DUTY_EUCOM.sign({
            "start": utc(start), "end": utc(end), "principals": ["Chairman", "Chief of General Staff"],
            "participants": ["Chairman", "Chief of General Staff"]}))  # fmt: skip

    record("2022-02-11T23:00:00", "2022-02-11T23:30:00")
    record("2022-02-12T00:30:00", "2022-02-12T01:00:00")  # one hour later, but the next UTC day
    record("2022-02-12T22:00:00", "2022-02-12T23:59:59")  # the same UTC day
    [pair] = line.a.ops.calls.summary(utc("2022-02-13T00:00:01"), EUCOM, NDMC)
    assert [c.days_since_previous for c in pair.calls] == [None, 1, 0]
    assert pair.days_since_last_call == 1


def test_summary_counts_requests_by_side_and_outcome() -> None:
    line = Line()
    outcomes = []
    for answer_ in ("accept", "decline", None, None):
        r = request(line, expires=T0 + HOUR)
        if answer_:
            time = {"time": T0 + DAY} if answer_ == "accept" else {}
            line.file(line.b, "CALL_REPLY", {"request": r.ref, "answer": answer_, **time})
        outcomes.append(r)
    line.file(line.b, "CALL_REQUEST", {"from_role": "Minister", "to_role": "Secretary", "subject": "x", "windows": [],
                                       "expires": T0 + 3 * HOUR})  # fmt: skip
    line.advance(2 * HOUR)
    line.ticks()  # two of ours expire; the peer's is still open
    [pair] = line.a.ops.calls.summary(line.now, EUCOM, NDMC)
    assert pair.requests == {EUCOM: 4, NDMC: 1}
    assert (pair.accepted, pair.declined, pair.unanswered, pair.open) == (1, 1, 2, 1)
    assert pair.calls == () and pair.days_since_last_call is None
    # The same at both ends but for which side made each request.
    theirs = tuple(replace(o, ours=not o.ours) for o in pair.outcomes)
    assert line.b.ops.calls.summary(line.now, NDMC, EUCOM) == (replace(pair, outcomes=theirs),)


# --- idempotency and rebuilding ---------------------------------------------------------------------


def test_due_twice_before_the_decision_is_stored_gives_the_same_decisions_and_alarms_once() -> None:
    """Between ``due`` and the moment the envelope is signed and observed (the line may be out of
    sync for a while), the station ticks again: the same decisions come out with the same keys,
    so the outbox accepts each once, and the alarms are not repeated on every tick."""
    line = Line(since=utc("2022-05-13T07:00:00"), limits=Limits())
    line.at(utc("2022-05-13T08:00:00"))
    test = line.file(line.a, "TEST", line.a.ops.tests.intent("2022-05-13T08:00Z").content)
    f = line.file(line.b, "FLASH", {"text": "FLASH"}, prio="FLASH")
    r = request(line, expires=line.now + MINUTE)
    line.cut()
    line.at(utc("2022-05-13T20:00:00"))  # the next slot, every deadline passed
    first = line.a.ops.due(line.now)
    again = line.a.ops.due(line.now + SECOND)
    assert [(i.kind, i.idem, i.content) for i in first[0]] == [(i.kind, i.idem, i.content) for i in again[0]]
    assert sorted(i.idem or "" for i in first[0]) == sorted([
        f"test-result:{test.id}", f"escalated:{f.id}:deputy", f"escalated:{f.id}:supervisor",
        f"escalated:{f.id}:deadline-missed", f"call-expired:{r.id}", "test:slot:2022-05-13T20:00Z"])  # fmt: skip
    assert first[1] and again[1] == []  # each alarm once
    # A fresh instance fed the same transcript derives the very same keys.
    fresh = rebuild(line.a)
    assert [i.idem for i in fresh.due(line.now)[0]] == [i.idem for i in first[0]]


def rebuild(side: Side) -> LineOps:
    """What the station does after a crash: replay what it stored, in order, into a fresh LineOps."""
    ops = LineOps(us=side.ops.us, peer=side.ops.peer, limits=side.limits, since=side.since)
    for what, item in side.log:
        if what == "observe":
            ops.observe(item)
        else:
            ops.receipted(*item)
    return ops


def snapshot(ops: LineOps, now: int) -> dict[str, Any]:
    return {
        "tests": ops.tests.history(now),
        "flash": [f.view() for f in ops.flash.flashes.values()],
        "pending": ops.flash.pending_levels(now),
        "calls": ops.calls.summary(now, ops.us, ops.peer),
        "requests": {k: r.state for k, r in ops.calls.requests.items()},
        "refused": [(e.id, reason) for e, reason in ops.refused],
        "rosters": ops.rosters,
        "pins": {side: pins.people for side, pins in ops.pins.items()},
        "slots": ops.tests.slots_sent,
    }


def test_replaying_the_transcript_rebuilds_the_same_state_and_fires_what_is_overdue() -> None:
    line = Line(since=utc("2022-05-13T07:00:00"), limits=Limits())
    rosters(line)
    line.at(utc("2022-05-13T08:00:00"))
    line.ticks()  # both send their 08:00 tests
    [a_test] = [e for k, e in line.a.log if k == "observe" and e.kind == "TEST" and e.ours]
    [b_test] = [e for k, e in line.b.log if k == "observe" and e.kind == "TEST" and e.ours]
    answer(line, a_test)  # NDMC answers EUCOM's test; EUCOM leaves NDMC's unanswered
    f_done = flash(line, "answered")
    f_open = flash(line, "pending")
    line.file(line.b, "ACK", DEZHURNY.sign({"ref": f_done.ref}), prio="FLASH")
    line.file(line.b, "ACK", OUTSIDER.sign({"ref": f_open.ref}), prio="FLASH")  # refused
    req = request(line, expires=line.now + HOUR)
    line.advance(45 * SECOND)
    line.ticks()  # EUCOM: passed; NDMC: f_open escalated to deputy
    assert [s.level for s in flash_view(line.a, f_open).escalations] == ["deputy"]
    # Crash both stations; rebuild each from what it stored.
    for side in (line.a, line.b):
        assert snapshot(rebuild(side), line.now) == snapshot(side.ops, line.now)
    # Down for two hours: on restart everything overdue is decided on the first due, once.
    later = line.now + 2 * HOUR
    fresh_a, fresh_b = rebuild(line.a), rebuild(line.b)
    a_did, a_alarms = fresh_a.due(later)
    b_did, b_alarms = fresh_b.due(later)
    assert [(i.kind, i.idem) for i in a_did] == [("CALL_EXPIRED", f"call-expired:{req.id}")]
    assert [(i.kind, i.content.get("level") or i.content.get("result")) for i in b_did] == [
        ("TEST_RESULT", "missed"), ("ESCALATED", "supervisor"), ("ESCALATED", "deadline-missed")]  # fmt: skip
    assert b_did[0].content["test"] == b_test.ref
    assert any("LINE TEST MISSED: no answer within 300 s" in a.text for a in b_alarms)
    # EUCOM failed to answer NDMC's test: it urges an answer, the verdict is NDMC's to record.
    assert any("still unanswered after our copy of its deadline" in a.text for a in a_alarms)
    assert not any("MISSED" in a.text for a in a_alarms)
    assert any("from the peer was not acknowledged in time" in a.text for a in b_alarms)


# --- bad input from the peer ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["soon", None, [1], {"ms": 1}, -1, True])
def test_malformed_numbers_from_the_peer_are_refused_and_do_not_break_ops(bad: Any) -> None:
    """The other end need not run our code: a FLASH, TEST, CALL_REQUEST or CALL_RECORD whose numbers
    are not what PROTOCOL.md 5.9 says is stored (it is signed evidence) but refused at both ends with
    the reason, never tracked with a guessed default; observe and due do not raise (which would wedge
    the line on every retry and stop the station from replaying its ledger), and the line works on."""
    line = Line()
    rosters(line)
    request = {"from_role": "Secretary", "to_role": "Minister", "subject": "x", "windows": [], "expires": bad}
    record = {"start": bad, "end": bad, "principals": ["A"], "participants": ["A"]}
    filed = [
        line.file(line.a, "FLASH", {"text": "x", "ack_within_ms": bad}, prio="FLASH"),
        line.file(line.a, "TEST", {"text": "x", "answer_within_ms": bad}),
        line.file(line.a, "CALL_REQUEST", request),
        line.file(line.a, "CALL_RECORD", DUTY_EUCOM.sign(record)),
    ]
    for side in (line.a, line.b):
        assert [e.id for e, _ in side.ops.refused] == [e.id for e in filed]
        assert all("content" in why and "must be" in why for _, why in side.ops.refused)
        assert side.ops.flash.flashes == {} and side.ops.tests.theirs == side.ops.tests.ours == {}
        assert side.ops.calls.requests == side.ops.calls.calls == {}
    assert sum("refused FLASH seq" in t for t in line.b.texts()) == 1
    line.advance(8 * DAY)
    assert line.ticks() == ([], [])
    assert line.b.ops.calls.summary(line.now, NDMC, EUCOM) == ()
    assert snapshot(rebuild(line.b), line.now) == snapshot(line.b.ops, line.now)
    f = flash(line)  # the line still works
    assert flash_view(line.b, f).deadline == line.now + 120 * SECOND


def test_unknown_kinds_are_kept_and_shown_never_acted_on() -> None:
    """A newer peer's kind is stored (the station did that), findable by id, not refused, and said
    once per kind; nothing else changes. (KEY and REVOKE are acted on by the gate, which refuses
    one that is not as section 5.9 says before ops see it: tests/test_keys*.py.)"""
    line = Line()
    rosters(line)
    before = snapshot(line.b.ops, line.now)
    weather = [line.file(line.a, "WEATHER", {"text": f"rain {i}"}) for i in range(3)]
    for side in (line.a, line.b):
        assert side.ops.unknown_kinds == {"WEATHER": 3}
        assert side.ops.refused == [] and {e.id for e in weather} <= set(side.ops.entries)
    infos = [a for a in line.b.alarms if a.level == "info"]
    n = weather[0].seq
    said = [a.text.split(":")[0] for a in infos]
    assert said == [f"the peer's WEATHER seq {n}"]
    assert "not one this station knows" in infos[0].text
    after = snapshot(line.b.ops, line.now)
    assert {k: v for k, v in after.items() if k != "refused"} == {k: v for k, v in before.items() if k != "refused"}


def test_a_tls_key_rotation_is_told_as_a_tls_rotation_not_a_signing_one() -> None:
    """runbook review: a KEY carrying only a TLS certificate was announced at both ends as 'rotated
    the signing key; envelopes after seq N are signed by the new key', which it does not do."""
    line = Line()
    cert = {"data": "ab" * 40, "sig": "cd" * 64}
    tls = line.file(line.a, "KEY", {"certs": [cert], "tls_der": "30" * 20})
    signing = line.file(line.a, "KEY", {"certs": [cert]})
    both = line.file(line.a, "KEY", {"certs": [cert, cert], "tls_der": "30" * 20})
    seqs = (tls.seq, signing.seq, both.seq)
    said = {seq: [t for t in line.b.texts() if t.startswith(f"KEY seq {seq}:")] for seq in seqs}
    assert said[tls.seq] == [f"KEY seq {tls.seq}: the peer rotated the TLS key; the paths prove the new one from now "
                             "on, certified by the station's root"], said  # fmt: skip
    assert len(said[signing.seq]) == 1 and "rotated the signing key" in said[signing.seq][0]
    assert "TLS" not in said[signing.seq][0]
    assert len(said[both.seq]) == 1 and "signing key" in said[both.seq][0] and "TLS key" in said[both.seq][0]
