"""The seed scenario end to end: `redline demo` replays 1 March - 13 May 2022 over two real
station processes; afterwards both stores are read back independently and must show the figures
SCENARIO.md reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from redline.config import Limits
from redline.envelope import split
from redline.home import StationDir
from redline.ledger.sqlite import Ledger
from redline.ops.engine import LineOps
from redline.ops.model import Entry
from redline.scenario import ms
from redline.station import _entry


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
    now = ms("2022-05-13T13:00:00Z")
    eucom, _ = replay(tmp_path / "eucom")
    ndmc, _ = replay(tmp_path / "ndmc")

    # tested twice a day from 1 March, every test answered by a named NDMC duty officer
    tests = eucom.tests.history(now)
    assert tests["sent"] == tests["passed"] == 2 * 73 + 1 and tests["missed"] == 0
    assert {t["answered_by"] for t in tests["tests"]} == {"Dezhurny Orlov"}

    # weeks of unanswered requests, then the 13 May call: the first in 84 days, both readouts
    pairs = {tuple(p["principals"]): p for p in eucom.calls.summary(now, eucom.us, eucom.peer)}
    ministers = pairs[("Minister", "Secretary")]
    assert ministers["requests"][eucom.us] == 6 and ministers["unanswered"] == 5 and ministers["accepted"] == 1
    call = ministers["calls"][-1]
    assert call["days_since_previous"] == 84
    assert call["readouts"]["ours"]["lang"] == "en" and "ceasefire" in call["readouts"]["ours"]["text"]
    assert call["readouts"]["theirs"]["lang"] == "ru"
    assert "американской стороны" in call["readouts"]["theirs"]["text"]
    chiefs = pairs[("Chairman", "Chief of General Staff")]
    assert chiefs["unanswered"] == 3 and not chiefs["calls"]
    # the other side's record says the same, from its own side
    theirs = {tuple(p["principals"]): p for p in ndmc.calls.summary(now, ndmc.us, ndmc.peer)}
    assert theirs[("Minister", "Secretary")]["calls"][-1]["readouts"]["ours"]["lang"] == "ru"

    # two notices near the border conflict, at both ends; the FLASH about it acknowledged by name
    for ops in (eucom, ndmc):
        conflicts = ops.board.conflicts()
        assert len(conflicts) == 1 and conflicts[0].distance_m == 0
    flashes = [f.view() for f in eucom.flash.flashes.values() if f.entry.ours]
    assert flashes[-1]["acked_by"] == "Dezhurny Orlov"

    for home in ("eucom", "ndmc"):
        result = subprocess.run([sys.executable, "-m", "redline", "verify", "--station", str(tmp_path / home)],
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert result.returncode == 0 and "VERIFIED" in result.stdout, result.stdout
