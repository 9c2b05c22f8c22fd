"""kill -9 in the middle of operations, over two real station processes (guarantees 7 and 8).

A station that dies while a FLASH escalation or a line test is pending rebuilds both from its
ledger on restart, and whatever fell due while it was down is decided at once, in order, and
recorded exactly once (each decision carries an idempotency key, so a decision accepted just
before a crash is not filed again).

Time is driven through the stations' settable clocks (REDLINE_SETTABLE_CLOCK=1), never by
sleeping. The offset of a test clock lives in the process, so a restarted station comes back on
the system clock; the test then sets it to where it would be had it kept running (``restore``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from redline import canonical
from redline.envelope import split
from redline.home import StationDir
from tests.procs import StationProc, paired_stations, wait_until

ENV = {"REDLINE_SETTABLE_CLOCK": "1", "REDLINE_PWHASH_COST": "interactive"}
SECOND = 1000


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


async def clock(p: StationProc, *, advance: int = 0) -> int:
    """Advance a station's clock (and run its tick at once); return its time."""
    return int((await p.call({"op": "clock", "advance_ms": advance}))["now"])


async def restore(p: StationProc, at: int) -> int:
    """Set a restarted station's clock to ``at``; the tick that follows runs what is due."""
    return int((await p.call({"op": "clock", "set_ms": at}))["now"])


async def view(p: StationProc, line: str, what: str) -> Any:
    return await p.call({"op": "view", "line": line, "what": what})


async def flash_of(p: StationProc, line: str, fid: str) -> dict[str, Any] | None:
    return next((f for f in await view(p, line, "flash") if f["id"] == fid), None)


async def steps(p: StationProc, line: str, fid: str) -> list[str]:
    f = await flash_of(p, line, fid)
    return [] if f is None else [e["level"] for e in f["escalations"]]


async def line_test(p: StationProc, line: str, tid: str) -> dict[str, Any] | None:
    return next((t for t in (await view(p, line, "tests"))["tests"] if t["id"] == tid), None)


async def alarms(p: StationProc, text: str) -> list[str]:
    return [a["text"] for a in (await p.call({"op": "status"}))["alarms"] if text in a["text"]]


async def quiet(a: StationProc, b: StationProc) -> bool:
    """Both in sync with nothing waiting: every decision taken is signed, sent and receipted."""
    for p in (a, b):
        ln = await p.status_line()
        if not (ln["synced"] and ln["outbox"] == 0 and ln["unreceipted"] == 0):
            return False
    return True


def stored(home: Path, line: str) -> list[tuple[dict[str, Any], dict[str, Any], int]]:
    """Every envelope in a stopped station's ledger as (header, content, stored_at), in storage order."""
    ledger = StationDir(home).open_ledger()
    try:
        out = []
        for _, _, raw, stored_at in ledger.stored_in_order(line):
            env = split(raw)
            header = canonical.decode_object(env.header_bytes, "header")
            body = canonical.decode_object(env.body_bytes, "body")["content"] if env.body_bytes else {}
            out.append((header, body, stored_at))
        return out
    finally:
        ledger.close()


async def _flash_escalation_survives_kill_9(tmp_path: Path) -> None:
    a, b, line, _ = await paired_stations(tmp_path, relays=False)
    try:
        f = await a.call({"op": "send", "line": line, "text": "FLASH: aircraft near the border", "kind": "FLASH",
                          "priority": "flash"})  # fmt: skip
        fid = f["id"]
        await wait_until(lambda: flash_of(b, line, fid), "NDMC to hold the FLASH")
        flash_at_b = (await flash_of(b, line, fid) or {})["accepted_at"]
        # First step (deputy, at 40 of 120 s), seen by the sender.
        await clock(a, advance=41 * SECOND)
        await clock(b, advance=41 * SECOND)

        async def deputy() -> bool:
            return await steps(a, line, fid) == ["deputy"]

        await wait_until(deputy, "escalation to deputy, seen by EUCOM")

        # NDMC dies in the middle of the escalation; its clock runs on past the supervisor step
        # (80 s) and the deadline (120 s) while it is down.
        b.kill9()
        now = await clock(a, advance=90 * SECOND)
        await b.start()
        restarted = await restore(b, now)
        assert restarted >= flash_at_b + 120 * SECOND

        # The overdue steps are decided on the first tick after the restart, in order.
        async def all_steps() -> bool:
            return await steps(a, line, fid) == ["deputy", "supervisor", "deadline-missed"]

        await wait_until(all_steps, "the overdue steps, seen by EUCOM")
        at_b = (await flash_of(b, line, fid) or {})["escalations"]
        assert [e["level"] for e in at_b] == ["deputy", "supervisor", "deadline-missed"]
        # Recorded at once, not one step per later tick: both new steps within moments of the restart.
        assert all(restarted <= e["at"] < restarted + 10 * SECOND for e in at_b[1:]), at_b
        assert (await flash_of(a, line, fid) or {})["state"] == "deadline missed"
        await wait_until(lambda: alarms(a, "NOT acknowledged by the peer in time"), "EUCOM to alarm")
        assert await alarms(b, "from the peer was not acknowledged in time")

        # Another crash right after, and more time: nothing is decided twice.
        b.kill9()
        await b.start()
        await restore(b, now + 60 * SECOND)
        await clock(a, advance=60 * SECOND)
        await wait_until(lambda: quiet(a, b), "both stations in sync with nothing waiting")
        assert await steps(a, line, fid) == ["deputy", "supervisor", "deadline-missed"]
        assert await steps(b, line, fid) == ["deputy", "supervisor", "deadline-missed"]
    finally:
        a.stop()
        b.stop()
    for home in (a.home, b.home):
        escalated = [(c["level"], c["step"]) for h, c, _ in stored(home, line)
                     if h["kind"] == "ESCALATED" and c["flash"]["id"] == fid]  # fmt: skip
        assert escalated == [("deputy", 1), ("supervisor", 2), ("deadline-missed", 3)], home.name


@pytest.mark.timeout(120)
def test_kill_9_receiver_in_the_middle_of_a_flash_escalation(tmp_path: Path) -> None:
    asyncio.run(_flash_escalation_survives_kill_9(tmp_path))


async def _line_test_survives_kill_9(tmp_path: Path) -> None:
    a, b, line, _ = await paired_stations(tmp_path, relays=False)
    try:
        t = await a.call({"op": "act", "line": line, "kind": "TEST", "priority": "priority",
                          "content": {"text": "Line test. Please answer."}})  # fmt: skip
        tid = t["id"]

        async def receipted() -> bool:
            test = await line_test(a, line, tid)
            return test is not None and test["receipted_at"] is not None

        await wait_until(receipted, "NDMC to receipt the test")
        assert [x["id"] for x in (await view(b, line, "tests"))["to_answer"]] == [tid]
        sent_at = (await line_test(a, line, tid) or {})["sent_at"]

        # EUCOM dies while its test is pending; the deadline (300 s) passes while it is down.
        a.kill9()
        now = await clock(b, advance=301 * SECOND)
        # NDMC's own copy of the deadline passes: it urges an answer, and decides nothing (guarantee 7).
        await wait_until(lambda: alarms(b, "still unanswered after our copy of its deadline"), "NDMC to urge an answer")
        assert await alarms(b, "MISSED") == []
        await a.start()
        restarted = await restore(a, now)
        assert restarted > sent_at + 300 * SECOND

        # Rebuilt from the ledger, the test is found overdue on the first tick and recorded missed.
        async def missed() -> bool:
            test = await line_test(a, line, tid)
            return test is not None and test["result"] == "missed"

        await wait_until(missed, "EUCOM to record the test missed")
        raised = await alarms(a, "LINE TEST MISSED")
        assert raised == ["LINE TEST MISSED: no answer within 300 s"]  # receipted, so not "the line may be dead"
        hist = await view(a, line, "tests")
        assert (hist["missed"], hist["passed"], hist["pending"]) == (1, 0, 0)

        # Another crash and more time: the result is not filed twice, nor the alarm raised again.
        a.kill9()
        await a.start()
        await restore(a, now + 60 * SECOND)
        await clock(b, advance=60 * SECOND)
        await wait_until(lambda: quiet(a, b), "both stations in sync with nothing waiting")
        assert await alarms(a, "LINE TEST MISSED") == []  # this process found it already decided
        [missed_here] = await alarms(b, "LINE TEST MISSED")  # on EUCOM's verdict, once
        assert missed_here.startswith("LINE TEST MISSED here: the tester recorded that its test was not answered")
        assert [t["result"] for t in (await view(b, line, "tests"))["received"]] == ["missed"]
    finally:
        a.stop()
        b.stop()
    for home in (a.home, b.home):
        results = [(c["result"], at) for h, c, at in stored(home, line)
                   if h["kind"] == "TEST_RESULT" and c["test"]["id"] == tid]  # fmt: skip
        assert [r for r, _ in results] == ["missed"], home.name
        if home == a.home:  # decided on the first tick after the restart, not on some later one
            assert restarted <= results[0][1] < restarted + 10 * SECOND


@pytest.mark.timeout(120)
def test_kill_9_tester_while_its_test_is_pending(tmp_path: Path) -> None:
    asyncio.run(_line_test_survives_kill_9(tmp_path))


async def _receipt_time_survives_kill_9(tmp_path: Path) -> None:
    a, b, line, _ = await paired_stations(tmp_path, relays=False)
    try:
        # Both clocks an hour on, so a time taken from the restarted process's own clock shows.
        await clock(a, advance=3_600 * SECOND)
        await clock(b, advance=3_600 * SECOND)
        t = await a.call({"op": "act", "line": line, "kind": "TEST", "priority": "priority",
                          "content": {"text": "Line test."}})  # fmt: skip

        async def receipted() -> bool:
            test = await line_test(a, line, t["id"])
            return test is not None and test["receipted_at"] is not None

        await wait_until(receipted, "NDMC to receipt the test")
        before = (await line_test(a, line, t["id"]) or {})["receipted_at"]
        a.kill9()
        await a.start()
        await restore(a, before + 2 * SECOND)
        # A receipt held in memory when EUCOM died is sent again by NDMC when the path opens.
        await wait_until(receipted, "the receipt known again after the restart")
        after = (await line_test(a, line, t["id"]) or {})["receipted_at"]
        assert abs(after - before) < 5 * SECOND, (before, after)
    finally:
        a.stop()
        b.stop()


@pytest.mark.timeout(120)
def test_receipt_times_survive_kill_9(tmp_path: Path) -> None:
    asyncio.run(_receipt_time_survives_kill_9(tmp_path))
