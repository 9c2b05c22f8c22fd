"""The seed scenario end to end: `redline demo` replays 1 March - 13 May 2022 over two real
station processes; afterwards both stores are read back independently and must show the figures
SCENARIO.md reports. Then the same scenario between two station processes driven here, and every
outcome compared at both ends as each station shows it (guarantee 7: one side decides, both show
the same; tests/test_outcomes.py is the fast version over ops alone)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from redline import scenario
from redline.config import Limits
from redline.envelope import split
from redline.home import StationDir
from redline.ledger.sqlite import Ledger
from redline.ops.engine import LineOps
from redline.ops.model import Entry
from redline.ops.views import VIEWS, CallPairView, FlashView, LineTestsView, ReceivedTest, SentTest
from redline.readmodel import from_obj
from redline.scenario import ms
from redline.station import _entry
from tests.procs import StationProc, both, free_ports, wait_until


def replay(home: Path) -> tuple[LineOps, str]:
    """Rebuild a station's operations from its ledger alone, as a restart would."""
    ledger = Ledger(StationDir(home).ledger_path)
    try:
        record = ledger.lines()[0]
        ops = LineOps(us=ledger.station, peer=record.peer, limits=Limits(), since=record.created_at)
        for sender, _, raw, stored_at in ledger.stored_in_order(record.line):
            entry: Entry = _entry(split(raw), sender == ledger.station, stored_at)
            ops.observe(entry)
        for seq, at in ledger.receipt_times(record.line, record.peer):
            ops.receipted(seq, at)
        return ops, record.line
    finally:
        ledger.close()


@pytest.mark.timeout(600)
def test_demo_replays_the_seed_scenario(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "redline", "demo", "--no-wait", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=500,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "first in 84 days" in out.stdout
    # the voice line test the demo makes with two headless participants (redline call join)
    assert "passed, answered by Dezhurny Orlov" in out.stdout
    assert "audio evidence at both stations: match, match" in out.stdout.replace("\n", " ")
    now = ms("2022-05-13T13:00:00Z")
    eucom, _ = replay(tmp_path / "eucom")
    ndmc, _ = replay(tmp_path / "ndmc")

    # tested twice a day from 1 March (and once by voice), every test answered by a named NDMC duty officer
    tests = eucom.tests.history(now)
    assert tests.sent == tests.passed == 2 * 73 + 2 and tests.missed == 0
    assert {t.answered_by for t in tests.tests} == {"Dezhurny Orlov"}

    # weeks of unanswered requests, then the 13 May call: the first in 84 days, both readouts
    pairs = {p.principals: p for p in eucom.calls.summary(now, eucom.us, eucom.peer)}
    ministers = pairs[("Minister", "Secretary")]
    assert ministers.requests[eucom.us] == 6 and ministers.unanswered == 5 and ministers.accepted == 1
    call = ministers.calls[-1]
    assert call.days_since_previous == 84
    assert call.readouts["ours"].lang == "en" and "ceasefire" in call.readouts["ours"].text
    assert call.readouts["theirs"].lang == "ru"
    assert "американской стороны" in call.readouts["theirs"].text
    chiefs = pairs[("Chairman", "Chief of General Staff")]
    assert chiefs.unanswered == 3 and not chiefs.calls
    # the other side's record says the same, from its own side
    theirs = {p.principals: p for p in ndmc.calls.summary(now, ndmc.us, ndmc.peer)}
    assert theirs[("Minister", "Secretary")].calls[-1].readouts["ours"].lang == "ru"

    # two notices near the border conflict, at both ends; the FLASH about it acknowledged by name
    for ops in (eucom, ndmc):
        conflicts = ops.board.conflicts()
        assert len(conflicts) == 1 and conflicts[0].distance_m == 0
    flashes = [f.view() for f in eucom.flash.flashes.values() if f.entry.ours]
    assert flashes[-1].acked_by == "Dezhurny Orlov"

    # each store, read back alone, shows every outcome as the other does (guarantee 7)
    assert decided_tests(ndmc.tests.history(now), "received") == decided_tests(tests, "tests")
    assert flash_states([f.view() for f in eucom.flash.flashes.values()]) == flash_states(
        [f.view() for f in ndmc.flash.flashes.values()]
    )
    assert request_outcomes(eucom.calls.summary(now, eucom.us, eucom.peer)) == request_outcomes(
        ndmc.calls.summary(now, ndmc.us, ndmc.peer)
    )

    for home in ("eucom", "ndmc"):
        result = subprocess.run([sys.executable, "-m", "redline", "verify", "--station", str(tmp_path / home)],
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert result.returncode == 0 and "VERIFIED" in result.stdout, result.stdout


# --- every outcome, at both ends -------------------------------------------------------------------


def decided_tests(view: LineTestsView, side: str) -> dict[str, tuple[str, str | None]]:
    tests: Sequence[SentTest | ReceivedTest] = view.tests if side == "tests" else view.received
    return {t.id: (t.result, t.answered_by) for t in tests}


def flash_states(view: Sequence[FlashView]) -> dict[str, tuple[str, str | None, list[str]]]:
    return {f.id: (f.state, f.acked_by, [e.level for e in f.escalations]) for f in view}


def request_outcomes(view: Sequence[CallPairView]) -> dict[tuple[str, str], Any]:
    """Each pair's counts by outcome and each request's outcome, as one end shows them."""
    return {
        pair.principals: (
            (dict(pair.requests), pair.declined, pair.unanswered, pair.accepted, pair.open),
            sorted((o.id, o.state) for o in pair.outcomes),
        )
        for pair in view
    }


def alarms_logged(home: Path, pattern: str) -> set[str]:
    """What the station's alarms matching ``pattern`` say (its first group), from its log."""
    return set(re.findall(pattern, (home / "serve.log").read_text(errors="replace")))


@pytest.mark.timeout(600)
def test_both_ends_show_the_same_outcome_of_every_test_flash_and_call_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scenario between two station processes on settable clocks, which the script sets one
    after the other (so a test may reach NDMC before NDMC's clock has moved to the test's time: its
    copy of the deadline then passes first, as it did in the demo). At the end, as each station
    shows it: every line test has the tester's result at both ends, every FLASH the same state,
    acknowledger and escalation steps, every call request the same outcome; NDMC never alarmed a
    miss that EUCOM contradicts, and every warning it gave on its own clock was answered by
    EUCOM's verdict."""
    env = {"REDLINE_SETTABLE_CLOCK": "1", "REDLINE_PWHASH_COST": "interactive"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    eucom, ndmc = tmp_path / "eucom", tmp_path / "ndmc"
    p = free_ports(4)
    StationDir(eucom).init(name="EUCOM", lang="en", listen=[f"127.0.0.1:{p[0]}", f"127.0.0.1:{p[1]}"])
    StationDir(ndmc).init(name="NDMC", lang="ru", listen=[f"127.0.0.1:{p[2]}", f"127.0.0.1:{p[3]}"],
                          limits=Limits(test_times_utc=()))  # fmt: skip
    views: dict[str, dict[str, Any]] = {}  # what each station answers, read back as the CLI does

    async def run() -> None:
        a, b = StationProc(eucom), StationProc(ndmc)
        await a.start()
        await b.start()
        try:
            for proc in (a, b):  # as `redline demo` does: the line is set up on 1 March 2022
                await proc.call({"op": "clock", "set_ms": ms("2022-03-01T06:00:00Z")})
            scenario.add_demo_users(eucom, ndmc)
            paired = await b.call({"op": "pair", "token": (await a.call({"op": "invite"}))["token"]})
            line = paired["line"]
            await wait_until(lambda: a.status_line(), "EUCOM to record the line")
            for proc in (a, b):
                await proc.call({"op": "confirm", "line": line, "code": paired["safety_code"]})
            await wait_until(lambda: both(a, b, lambda ln: ln["active"] and ln["synced"]), "line in sync")
            await scenario.Replay(eucom, ndmc, line, lambda _: None).run()

            def settled(ln: dict[str, Any]) -> bool:
                return bool(ln["synced"] and ln["outbox"] == 0 and ln["unreceipted"] == 0)

            for _ in range(3):  # a tick on either side may decide something more: until both are quiet
                await wait_until(lambda: both(a, b, settled), "both ends to hold everything")
                for proc in (a, b):
                    await proc.call({"op": "clock", "advance_ms": 1000})
            for name, proc in (("eucom", a), ("ndmc", b)):
                # the largest page (views are paged, 649117e): the scenario's 147 tests fit in one
                views[name] = {what: from_obj(await proc.call({"op": "view", "line": line, "what": what, "limit": 500}),
                                              VIEWS[what])
                               for what in ("tests", "flash", "calls", "refused")}  # fmt: skip
        finally:
            a.stop()
            b.stop()

    asyncio.run(run())
    e, n = views["eucom"], views["ndmc"]
    ours = decided_tests(e["tests"], "tests")
    assert len(ours) == 2 * 73 + 1 and {r for r, _ in ours.values()} == {"passed"}
    assert decided_tests(n["tests"], "received") == ours  # EUCOM's verdicts, shown at NDMC
    assert decided_tests(n["tests"], "tests") == decided_tests(e["tests"], "received") == {}
    assert flash_states(e["flash"]) == flash_states(n["flash"]) and len(e["flash"]) == 1
    assert request_outcomes(e["calls"]) == request_outcomes(n["calls"])
    assert sum(len(o) for _, o in request_outcomes(e["calls"]).values()) == 9
    assert e["refused"] == n["refused"] == ()
    # No miss alarmed at either end (EUCOM recorded every test passed); each warning NDMC gave
    # when its own copy of a deadline passed was followed by EUCOM's verdict, PASSED.
    assert alarms_logged(eucom, "(MISSED)") == alarms_logged(ndmc, "(MISSED)") == set()
    urged = alarms_logged(ndmc, r"LINE TEST from the peer \((.+?)\) still unanswered")
    assert alarms_logged(ndmc, r"LINE TEST of (.+?) PASSED: the tester's verdict") == urged


def _processes_under(folder: Path) -> list[str]:
    """Command lines of the running processes that name ``folder`` (the demo's stations do)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(folder) in cmd:
                found.append(cmd)
    return found


@pytest.mark.timeout(120)
def test_sigterm_stops_the_demo_and_both_stations_and_removes_its_folder(tmp_path: Path) -> None:
    """Issue 11, item 6: SIGTERM (not only Ctrl-C) stops both stations and removes the demo's
    temporary folder; piped output is not wrapped at all (a sentence or a command stays whole)."""
    import os
    import signal

    demo = subprocess.Popen(
        [sys.executable, "-m", "redline", "demo", "--days", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "TMPDIR": str(tmp_path), "REDLINE_DEMO_KEEP": ""}, text=True,
    )  # fmt: skip
    assert demo.stdout is not None
    out: list[str] = []
    for line in demo.stdout:
        out.append(line)
        if "The two stations keep running" in line:
            break
    folders = list(tmp_path.glob("redline-demo-*"))
    assert len(folders) == 1 and len(_processes_under(folders[0])) == 2, "".join(out)
    demo.send_signal(signal.SIGTERM)
    rest, _ = demo.communicate(timeout=60)
    out.append(rest)
    text = "".join(out)
    assert demo.returncode == 0, text
    assert _processes_under(folders[0]) == [] and not folders[0].exists(), text
    assert "stations stopped;" in text and "removed" in text
    assert "they match, so both confirm." in text  # one line, however long
    assert any(line.strip().endswith(" status") and "REDLINE_STATION=" in line for line in text.splitlines())
