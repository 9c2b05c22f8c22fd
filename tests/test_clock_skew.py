"""Clock skew of an hour between the stations (issue item 6, DESIGN guarantee 7 "time is a claim").

EUCOM runs one hour fast (settable clock, REDLINE_SETTABLE_CLOCK=1, moved +3,600,000 ms after
pairing; nothing is added to redline for this). Traffic still flows both ways over both paths,
heartbeats measure the skew on every path and ``redline status`` shows it, line tests in both
directions are answered by a named person and pass (each deadline runs on the deciding station's
own clock, from its own events), and both transcripts verify.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from redline.home import StationDir
from tests.chaos import traffic_texts
from tests.procs import StationProc, both, paired_stations, pipelined, wait_until
from tests.test_e2e_line import raw_chain
from tests.test_e2e_ops import ENV, PASSWORD, _pending_test, _test_result, ok, rl

HOUR_MS = 3_600_000
TOLERANCE_MS = 2_000  # loopback round trips are milliseconds; this covers a slow CI machine
N = 200


async def _skews(p: StationProc) -> list[float | None]:
    return [s["skew_ms"] for s in (await p.status_line())["paths"].values() if s["up"]]


async def _skew_is(p: StationProc, expected: int) -> bool:
    skews = await _skews(p)
    return len(skews) == 2 and all(s is not None and abs(s - expected) < TOLERANCE_MS for s in skews)


async def _tests_view(p: StationProc, line: str) -> dict[str, Any]:
    result: dict[str, Any] = await p.call({"op": "view", "line": line, "what": "tests"})
    return result


async def _line_test(tester: StationProc, answerer: StationProc, line: str, person: str) -> dict[str, Any]:
    """``tester`` sends a line test, ``person`` at ``answerer`` answers it; return the tester's record."""
    t = await asyncio.to_thread(_cli, tester.home, "test", line[:8], "--json")
    await wait_until(lambda: _pending_test(answerer, line), f"{answerer.home.name} to hold the test")
    pending = (await _tests_view(answerer, line))["to_answer"]
    # the answering side's own deadline is on its own clock, from when it stored the test
    assert all(0 < p["deadline"] - p["sent_at"] <= 300_000 for p in pending), pending
    await asyncio.to_thread(_cli, answerer.home, "answer", line[:8], "--user", person, "--json", stdin=PASSWORD)
    await wait_until(lambda: _test_result(tester, line, t["id"], "passed"), f"{tester.home.name}'s test to pass")
    await wait_until(lambda: _test_result_seen(answerer, line), f"{answerer.home.name} to hold the result")
    record: dict[str, Any] = next(x for x in (await _tests_view(tester, line))["tests"] if x["id"] == t["id"])
    return record


def _cli(home: Path, *args: str, stdin: str = "") -> Any:
    """``redline ARGS`` run to success, for asyncio.to_thread: the test's loop carries both paths (the
    relays), so a process run on it, and it takes a second or so, would stall the line meanwhile."""
    return ok(rl(home, *args, stdin=stdin))


async def _test_result_seen(p: StationProc, line: str) -> bool:
    return not (await _tests_view(p, line))["to_answer"]


@pytest.mark.timeout(300)
def test_an_hour_of_clock_skew_traffic_tests_and_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)

    async def main() -> None:
        a, b, line, relays = await paired_stations(tmp_path, relays=True)
        try:
            await asyncio.to_thread(_cli, a.home, "user", "add", "Duty EUCOM", "--role", "duty", stdin=PASSWORD)
            await asyncio.to_thread(_cli, b.home, "user", "add", "Dezhurny", "--role", "duty", stdin=PASSWORD)
            before = (await a.call({"op": "status"}))["lines"][0]
            now = (await a.call({"op": "clock", "advance_ms": HOUR_MS}))["now"]

            # heartbeats on both paths measure the hour, with the sign from each side's view
            await wait_until(lambda: _skew_is(a, -HOUR_MS), "EUCOM to measure NDMC an hour behind", timeout=30)
            await wait_until(lambda: _skew_is(b, +HOUR_MS), "NDMC to measure EUCOM an hour ahead", timeout=30)
            assert before["active"] and now > 0

            # ``redline status`` shows it, per path
            human = await asyncio.to_thread(rl, b.home, "status")
            assert human.returncode == 0, human.stderr
            shown = [int(s) for s in re.findall(r"([+-]\d+) ms", human.stdout) if abs(int(s)) > 60_000]
            assert len(shown) == 2 and all(abs(s - HOUR_MS) < TOLERANCE_MS for s in shown), human.stdout
            as_json = json.loads((await asyncio.to_thread(rl, a.home, "status", "--json")).stdout)
            assert all(abs(p["skew_ms"] + HOUR_MS) < TOLERANCE_MS for p in as_json["lines"][0]["paths"].values())

            # traffic both ways, exactly once and in order
            texts = {"a": [f"EUCOM skewed {i:04d}" for i in range(N)], "b": [f"НЦУО skewed {i:04d}" for i in range(N)]}
            replies = await asyncio.gather(
                pipelined(a.home, [{"op": "send", "line": line, "text": t} for t in texts["a"]]),
                pipelined(b.home, [{"op": "send", "line": line, "text": t} for t in texts["b"]]),
            )
            assert all(r["ok"] for rs in replies for r in rs)
            await wait_until(
                lambda: both(a, b, lambda ln: ln["outbox"] == 0 and ln["unreceipted"] == 0 and ln["their_seq"] >= N),
                "all traffic receipted", timeout=120,
            )  # fmt: skip

            # line tests both ways: the fast station tests the slow one, and the other way round
            fast = await _line_test(a, b, line, "Dezhurny")
            slow = await _line_test(b, a, line, "Duty EUCOM")
            for rec in (fast, slow):
                assert rec["result"] == "passed" and rec["receipted_at"] is not None
                assert 0 <= rec["answer_ms"] < 60_000, rec  # measured on one clock: no hour in it
            hist = await _tests_view(a, line)
            assert hist["passed"] == 1 and hist["missed"] == 0
            await asyncio.sleep(1.5)  # a tick or two: nothing is judged missed because of the hour
            assert (await _tests_view(b, line))["missed"] == 0
            alarms = (await a.call({"op": "status"}))["alarms"] + (await b.call({"op": "status"}))["alarms"]
            assert not [x for x in alarms if "MISSED" in x["text"]], alarms
        finally:
            a.stop()
            b.stop()
            for r in relays:
                await r.cut()
        fa, fb = StationDir(a.home).load_keys().fingerprint, StationDir(b.home).load_keys().fingerprint
        assert traffic_texts(raw_chain(b.home, line, fa), "EUCOM skewed") == texts["a"]  # exactly once, in order
        assert traffic_texts(raw_chain(a.home, line, fb), "НЦУО skewed") == texts["b"]
        assert raw_chain(a.home, line, fa) == raw_chain(b.home, line, fa)
        assert raw_chain(a.home, line, fb) == raw_chain(b.home, line, fb)
        for home in (a.home, b.home):
            assert "VERIFIED" in (await asyncio.to_thread(rl, home, "verify")).stdout

    asyncio.run(main())
