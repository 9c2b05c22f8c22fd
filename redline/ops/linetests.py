"""Line tests a person must answer (SCENARIO: "tested once or twice a day; the other side answers").

The testing station sends TEST on its schedule (``test_times_utc``) or on demand; the peer's
station receipts it at once (machine level) and a duty officer there answers with TEST_ANSWER,
signed by that person, within ``test_answer_seconds``.

One side decides each outcome (guarantee 7): the tester alone, on its own clock, records it as
TEST_RESULT (passed / missed) and alarms a miss. The answering side shows that verdict and never a
guess of its own: while a test waits for an answer or a verdict it is "awaiting the tester's
verdict"; when its own copy of the deadline passes unanswered it *warns* its duty officer to answer
now (the tester may still take the answer: its clock, window and the network are not ours); it
alarms "LINE TEST MISSED here" only when the tester's verdict says missed, and says so when a
verdict says passed after such a warning. Each side's copy runs on its own window
(``test_answer_seconds``): a TEST's ``answer_within_ms`` is advisory (``model.window_ms``), so a
peer cannot make our station warn early or never.
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redline import kinds
from redline.ops.model import Entry, Intent, Outbox, still_open, window_ms
from redline.ops.views import LineTestsView, ReceivedTest, SentTest, ToAnswer

TEST_TEXT = "Line test. Please answer to confirm the line is attended."
AWAITING = "awaiting the tester's verdict"


@dataclass
class LineTest:
    entry: Entry
    deadline: int  # ms, on the storing station's clock
    receipted_at: int | None = None
    answer: Entry | None = None
    answered_by: str | None = None  # the name in the answer's person signature
    result: str | None = None  # passed | missed: the tester's TEST_RESULT, first one only
    result_at: int | None = None  # when the verdict was stored here
    alarmed: bool = False  # the verdict's alarm was raised here (tester: missed; answerer: missed)
    warned: bool = False  # answering side: our copy of the deadline passed unanswered

    @property
    def answer_ms(self) -> int | None:
        return None if self.answer is None else self.answer.stored_at - self.entry.stored_at


Slots = tuple[tuple[int, int], ...]  # the schedule as (hour, minute) UTC: Limits.test_slots, checked at load


def slot_times(now: int, times: Slots) -> list[tuple[str, int]]:
    """Today's and yesterday's scheduled slots as (label, ms), latest first, not after ``now``."""
    day = datetime.fromtimestamp(now / 1000, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    slots = []
    for d in (day, day - timedelta(days=1)):
        for hh, mm in times:
            at = d + timedelta(hours=hh, minutes=mm)
            ms = int(at.timestamp() * 1000)
            if ms <= now:
                slots.append((at.strftime("%Y-%m-%dT%H:%MZ"), ms))
    return sorted(slots, key=lambda s: -s[1])


def _next_slot(now: int, times: Slots) -> float:
    """The first slot after ``now`` (ms; infinity with no slots), today's or tomorrow's."""
    day = datetime.fromtimestamp(now / 1000, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    later = []
    for d in (day, day + timedelta(days=1)):
        for hh, mm in times:
            later.append(int((d + timedelta(hours=hh, minutes=mm)).timestamp() * 1000))
    return min((ms for ms in later if ms > now), default=float("inf"))


@functools.lru_cache(maxsize=4)
def _latest_slot(now: int, times: Slots) -> tuple[tuple[str, int], ...]:
    """The latest slot not after ``now`` (or none): the station asks for every line at each tick
    with the same ``now`` and times, so it is worked out once per tick, not once per line."""
    return tuple(slot_times(now, times)[:1])


class LineTests:
    def __init__(
        self, *, answer_ms: int, times: Slots, since: int, bounds: tuple[int, int] | None = None
    ) -> None:
        self.answer_window = answer_ms
        self.bounds = bounds
        self.times = times
        self.since = since  # the line's creation: no slot before it
        self.ours: dict[str, LineTest] = {}  # tests we sent, by id
        self.theirs: dict[str, LineTest] = {}  # tests we must answer, by id
        # Of those, the ones that may still fall due (``still_open``): ours without a verdict, theirs
        # not yet answered, decided or urged.
        self._open_ours: dict[str, LineTest] = {}
        self._open_theirs: dict[str, LineTest] = {}
        self.slots_sent: set[str] = set()

    def observe(self, e: Entry, body: kinds.Body, out: Outbox) -> None:
        match body:
            case kinds.Test():
                window = window_ms(body.answer_within_ms, self.answer_window, self.bounds)
                new = LineTest(e, e.stored_at + window)
                (self.ours if e.ours else self.theirs)[e.id] = new
                (self._open_ours if e.ours else self._open_theirs)[e.id] = new
                if e.ours and body.slot is not None:
                    self.slots_sent.add(body.slot)
                if not e.ours:
                    out.alarm("alarm", "test.received", e.stored_at, seconds=window // 1000)
            case kinds.TestAnswer():
                test = (self.theirs if e.ours else self.ours).get(body.test.id)
                if test is not None and test.answer is None:
                    test.answer, test.answered_by = e, body.person.name
            case kinds.TestResult():
                test = (self.ours if e.ours else self.theirs).get(body.test.id)
                if test is None or test.result is not None:
                    return
                test.result, test.result_at = body.result, e.stored_at
                if e.ours:
                    return
                if body.result == "missed" and not test.alarmed:
                    test.alarmed = True
                    out.alarm("alarm", "test.missed_here", e.stored_at, at=test.entry.stored_at)
                elif body.result == "passed" and test.warned:
                    out.alarm("info", "test.passed_late", e.stored_at, at=test.entry.stored_at)

    def answered_by_voice(self, test_id: str, pickup: Entry, person: str) -> None:
        """A voice line test (``ops.voice``): the peer's pick-up of the ring naming our test, or our
        pick-up of the peer's, is the answer, signed by the person who picked up."""
        test = self.ours.get(test_id) if not pickup.ours else self.theirs.get(test_id)
        if test is not None and test.answer is None:
            test.answer, test.answered_by = pickup, person

    def receipted(self, test_id: str, at: int) -> None:
        t = self.ours.get(test_id)
        if t is not None and t.receipted_at is None:
            t.receipted_at = at

    # -- the schedule: worked out here once, read by ``due`` (acts) and ``next_due`` (when to look) --
    @staticmethod
    def _verdict(t: LineTest) -> tuple[int, str] | None:
        """When (wall ms) our test ``t`` gets which verdict if nothing is observed first; None once
        recorded. Answered within its deadline: passed, due already (0); else missed, after it."""
        if t.result is not None:
            return None
        if t.answer is not None and t.answer.stored_at <= t.deadline:
            return 0, "passed"
        return t.deadline + 1, "missed"

    @staticmethod
    def _urge_at(t: LineTest) -> int | None:
        """When (wall ms) we urge an answer to the peer's test ``t``: after our copy of its deadline,
        once, while it is unanswered and has no verdict."""
        return t.deadline + 1 if t.answer is None and t.result is None and not t.warned else None

    def _slots_due(self, now: int) -> list[str]:
        """The slot to test now, if its test is not filed yet (only the latest: no storm after downtime)."""
        latest = _latest_slot(now, self.times)
        return [label for label, at in latest if at >= self.since and label not in self.slots_sent]

    def _open(self) -> tuple[list[LineTest], list[LineTest]]:
        """Our tests without a verdict, and the peer's we may still urge an answer to."""
        return (still_open(self._open_ours, lambda t: self._verdict(t) is not None),
                still_open(self._open_theirs, lambda t: self._urge_at(t) is not None))  # fmt: skip

    def due(self, now: int, out: Outbox) -> None:
        ours, theirs = self._open()
        for t in ours:
            verdict = self._verdict(t)
            if verdict is None or now < verdict[0]:
                continue
            out.intents.append(_result(t, verdict[1]))
            if verdict[1] == "missed" and not t.alarmed:
                t.alarmed = True
                within = (t.deadline - t.entry.stored_at) // 1000
                out.alarm("alarm", "test.missed" if t.receipted_at else "test.missed_dead", now, seconds=within)
        for t in theirs:
            # Not a verdict: the tester decides, on its own clock (guarantee 7). We only urge an answer.
            urge = self._urge_at(t)
            if urge is not None and now >= urge:
                t.warned = True
                out.alarm("warning", "test.unanswered", now, at=t.entry.stored_at)
        for label in self._slots_due(now):
            out.intents.append(self.intent(label))

    def next_due(self, now: int) -> float:
        """When ``due`` may next record or alarm anything, if nothing is observed first (wall ms;
        ``now`` or before when something is due already): a verdict, an answer overdue, the next
        slot. From the same schedule ``due`` acts on."""
        if self._slots_due(now):
            return now
        ours, theirs = self._open()
        verdicts = (v[0] for t in ours if (v := self._verdict(t)) is not None)
        urges = (u for t in theirs if (u := self._urge_at(t)) is not None)
        return min([*verdicts, *urges, _next_slot(now, self.times)])

    def intent(self, slot: str | None, text: str = TEST_TEXT) -> Intent:
        body = kinds.Test(text=text, answer_within_ms=self.answer_window, slot=slot or None)
        return Intent(kind="TEST", prio=kinds.default_priority("TEST"), content=body.to_content(),
                      idem=f"test:slot:{slot}" if slot else None)  # fmt: skip

    def history(self, now: int) -> LineTestsView:
        """Our tests with the verdicts we recorded, and the peer's tests with the verdicts the
        peer recorded: ``tests[i].result`` here is ``received[j].result`` at the peer, for the
        same id, once the verdict has arrived there (until then "pending")."""
        tests = sorted(self.ours.values(), key=lambda t: t.entry.stored_at)
        answered = [t.answer_ms for t in tests if t.answer_ms is not None and t.result == "passed"]
        proven = [t.answer.stored_at for t in tests if t.answer is not None and t.result == "passed"]
        return LineTestsView(
            sent=len(tests),
            passed=sum(1 for t in tests if t.result == "passed"),
            missed=sum(1 for t in tests if t.result == "missed"),
            pending=sum(1 for t in tests if t.result is None),
            answer_ms_median=statistics.median(answered) if answered else None,
            answer_ms_worst=max(answered) if answered else None,
            since_last_proven_ms=now - max(proven) if proven else None,
            tests=tuple(
                SentTest(
                    id=t.entry.id, sent_at=t.entry.stored_at, deadline=t.deadline, receipted_at=t.receipted_at,
                    answered_at=t.answer.stored_at if t.answer else None, answered_by=t.answered_by,
                    answer_ms=t.answer_ms, result=t.result or "pending",
                )
                for t in tests
            ),
            received=tuple(
                ReceivedTest(
                    id=t.entry.id, stored_at=t.entry.stored_at, deadline=t.deadline,
                    answered_at=t.answer.stored_at if t.answer else None, answered_by=t.answered_by,
                    result=t.result or "pending", decided_at=t.result_at,
                    state=t.result or (AWAITING if t.answer is not None or now > t.deadline else "to answer"),
                )
                for t in sorted(self.theirs.values(), key=lambda t: t.entry.stored_at)
            ),
            to_answer=tuple(
                ToAnswer(id=t.entry.id, sent_at=t.entry.stored_at, deadline=t.deadline)
                for t in self.theirs.values() if t.answer is None
            ),
        )  # fmt: skip


def _result(t: LineTest, result: str) -> Intent:
    answered = t.answer is not None
    body = kinds.TestResult(
        test=t.entry.reference(), result=result, answered_by=t.answered_by if answered else None,
        answer_ms=t.answer_ms if answered else None,
    )  # fmt: skip
    return Intent(kind="TEST_RESULT", prio=kinds.default_priority("TEST_RESULT"), content=body.to_content(),
                  idem=f"test-result:{t.entry.id}")  # fmt: skip
