"""Line tests a person must answer (SCENARIO: "tested once or twice a day; the other side answers").

The testing station sends TEST on its schedule (``test_times_utc``) or on demand; the peer's
station receipts it at once (machine level) and a duty officer there answers with TEST_ANSWER,
signed by that person, within ``test_answer_seconds``. The testing station alone decides the
outcome and records it as TEST_RESULT (passed / missed). Both ends alarm on a miss: the tester when
its deadline passes, the answering side when its own copy of the deadline passes unanswered.
Each side's copy runs on its own window (``test_answer_seconds``): a TEST's ``answer_within_ms`` is
advisory (``model.window_ms``), so a peer cannot make our station alarm a miss early or never.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redline.ops.model import Entry, Intent, Outbox, ref_id, window_ms

TEST_TEXT = "Line test. Please answer to confirm the line is attended."
MISSED_HERE = "LINE TEST MISSED here: the peer's test was not answered in time"


@dataclass
class LineTest:
    entry: Entry
    deadline: int  # ms, on the storing station's clock
    receipted_at: int | None = None
    answer: Entry | None = None
    result: str | None = None  # passed | missed
    alarmed: bool = False

    @property
    def answer_ms(self) -> int | None:
        return None if self.answer is None else self.answer.stored_at - self.entry.stored_at


def slot_times(now: int, times: tuple[str, ...]) -> list[tuple[str, int]]:
    """Today's and yesterday's scheduled slots as (label, ms), latest first, not after ``now``."""
    day = datetime.fromtimestamp(now / 1000, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    slots = []
    for d in (day, day - timedelta(days=1)):
        for t in times:
            hh, mm = (int(x) for x in t.split(":"))
            at = d + timedelta(hours=hh, minutes=mm)
            ms = int(at.timestamp() * 1000)
            if ms <= now:
                slots.append((at.strftime("%Y-%m-%dT%H:%MZ"), ms))
    return sorted(slots, key=lambda s: -s[1])


class LineTests:
    def __init__(
        self, *, answer_ms: int, times: tuple[str, ...], since: int, bounds: tuple[int, int] | None = None
    ) -> None:
        self.answer_window = answer_ms
        self.bounds = bounds
        self.times = times
        self.since = since  # the line's creation: no slot before it
        self.ours: dict[str, LineTest] = {}  # tests we sent, by id
        self.theirs: dict[str, LineTest] = {}  # tests we must answer, by id
        self.slots_sent: set[str] = set()

    def observe(self, e: Entry, out: Outbox) -> None:
        if e.kind == "TEST":
            window = window_ms(e.content.get("answer_within_ms"), self.answer_window, self.bounds)
            (self.ours if e.ours else self.theirs)[e.id] = LineTest(e, e.stored_at + window)
            if e.ours and isinstance(e.content.get("slot"), str):
                self.slots_sent.add(e.content["slot"])
            if not e.ours:
                out.alarm("alarm", f"LINE TEST from the peer: a duty officer must answer it ('redline answer') "
                                   f"within {window // 1000} s", e.stored_at)  # fmt: skip
        elif e.kind == "TEST_ANSWER":
            test = (self.theirs if e.ours else self.ours).get(ref_id(e.content.get("test")) or "")
            if test is not None and test.answer is None:
                test.answer = e
        elif e.kind == "TEST_RESULT":
            test = (self.ours if e.ours else self.theirs).get(ref_id(e.content.get("test")) or "")
            if test is not None:
                test.result = str(e.content.get("result"))
                if not e.ours and test.result == "missed" and not test.alarmed:
                    # The tester decided before our own copy of the deadline passed: alarm here too.
                    test.alarmed = True
                    out.alarm("alarm", MISSED_HERE, e.stored_at)

    def receipted(self, test_id: str, at: int) -> None:
        t = self.ours.get(test_id)
        if t is not None and t.receipted_at is None:
            t.receipted_at = at

    def due(self, now: int, out: Outbox) -> None:
        for t in self.ours.values():
            if t.result is not None:
                continue
            if t.answer is not None and t.answer.stored_at <= t.deadline:
                out.intents.append(_result(t, "passed"))
            elif now > t.deadline:
                out.intents.append(_result(t, "missed"))
                if not t.alarmed:
                    t.alarmed = True
                    dead = "" if t.receipted_at else " and the peer station never receipted it: the line may be dead"
                    within = (t.deadline - t.entry.stored_at) // 1000
                    out.alarm("alarm", f"LINE TEST MISSED: no answer within {within} s{dead}", now)
        for t in self.theirs.values():
            if t.answer is None and t.result is None and now > t.deadline and not t.alarmed:
                t.alarmed = True
                out.alarm("alarm", MISSED_HERE, now)
        for label, at in slot_times(now, self.times)[:1]:  # only the latest slot: no storm after downtime
            if at >= self.since and label not in self.slots_sent:
                out.intents.append(self.intent(label))

    def intent(self, slot: str | None, text: str = TEST_TEXT) -> Intent:
        content: dict[str, Any] = {"text": text, "answer_within_ms": self.answer_window}
        if slot:
            content["slot"] = slot
        return Intent(kind="TEST", prio="PRIORITY", content=content, idem=f"test:slot:{slot}" if slot else None)

    def history(self, now: int) -> dict[str, Any]:
        tests = sorted(self.ours.values(), key=lambda t: t.entry.stored_at)
        answered = [t.answer_ms for t in tests if t.answer_ms is not None and t.result == "passed"]
        proven = [t.answer.stored_at for t in tests if t.answer is not None and t.result == "passed"]
        return {
            "sent": len(tests),
            "passed": sum(1 for t in tests if t.result == "passed"),
            "missed": sum(1 for t in tests if t.result == "missed"),
            "pending": sum(1 for t in tests if t.result is None),
            "answer_ms_median": statistics.median(answered) if answered else None,
            "answer_ms_worst": max(answered) if answered else None,
            "since_last_proven_ms": now - max(proven) if proven else None,
            "tests": [
                {
                    "id": t.entry.id, "sent_at": t.entry.stored_at, "receipted_at": t.receipted_at,
                    "answered_at": t.answer.stored_at if t.answer else None,
                    "answered_by": (t.answer.content.get("person") or {}).get("name") if t.answer else None,
                    "answer_ms": t.answer_ms, "result": t.result or "pending",
                }
                for t in tests
            ],
            "to_answer": [
                {"id": t.entry.id, "sent_at": t.entry.stored_at, "deadline": t.deadline}
                for t in self.theirs.values() if t.answer is None
            ],
        }  # fmt: skip


def _result(t: LineTest, result: str) -> Intent:
    content: dict[str, Any] = {"test": t.entry.ref, "result": result}
    if t.answer is not None:
        content["answered_by"] = (t.answer.content.get("person") or {}).get("name")
        content["answer_ms"] = t.answer_ms
    return Intent(kind="TEST_RESULT", prio="PRIORITY", content=content, idem=f"test-result:{t.entry.id}")
