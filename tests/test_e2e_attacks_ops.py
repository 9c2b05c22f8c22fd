"""Attacks on operations between two real station processes, each part named for what it tries.

NDMC runs looser limits than EUCOM (it honours FLASH windows down to 1 s), so it files, signs and
sends what EUCOM, on its defaults, must refuse: EUCOM stores each envelope (signed evidence), keeps
the refusal with its reason and alarms, and its own deadlines and pinned people stay as they were.
What is on the notice board is no station's setting (PROTOCOL.md 5.9): NDMC refuses to sign a notice
every reader would keep off the board, and both stations show one board with the same conflicts.
Time is driven through the stations' settable clocks.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nacl.pwhash
import pytest

from redline import persons
from redline.config import Limits
from redline.testing import make_station, pair_directly
from tests.procs import StationProc, both, free_ports, wait_until
from tests.test_attacks_ops import polygon_notice
from tests.test_e2e_ops import ENV, ok, rl

PASSWORD = "correct horse battery"
FAST = {"ops": nacl.pwhash.argon2id.OPSLIMIT_MIN, "mem": nacl.pwhash.argon2id.MEMLIMIT_MIN}
MAY_13_11Z = 1_652_439_600_000  # the notices' window (13 May 2022, 09:00Z + 1 day) is open


@pytest.mark.timeout(300)
def test_hostile_peer_windows_notices_roles_and_roster_swap_between_real_stations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)

    async def main() -> None:
        pa, pb = free_ports(2)
        da = make_station(tmp_path, "EUCOM", "en", pa)
        db = make_station(tmp_path, "NDMC", "ru", pb, Limits(peer_window_min_seconds=1))
        line = pair_directly(da, db)
        for name, role in (("Duty EUCOM", "duty"), ("Revizor", "auditor")):
            persons.add_user(da.path, name, role, PASSWORD, **FAST)
        persons.add_user(db.path, "Dezhurny", "duty", PASSWORD, **FAST)
        a, b = StationProc(da.path), StationProc(db.path)
        await a.start()
        await b.start()
        try:
            await wait_until(lambda: both(a, b, lambda ln: ln["active"] and ln["synced"]), "line in sync")
            for p in (a, b):
                await p.call({"op": "clock", "set_ms": MAY_13_11Z})

            # --- peer_flash_ack_window_cannot_escalate_us: NDMC asks for an ACK within 1 s
            await b.call({"op": "act", "line": line, "kind": "FLASH", "priority": "flash",
                          "content": {"text": "FLASH: acknowledge within 1 s", "ack_within_ms": 1000}})  # fmt: skip
            await wait_until(lambda: _view(a, line, "flash"), "EUCOM to hold the FLASH")
            [flash] = await _view(a, line, "flash")
            assert flash["deadline"] - flash["accepted_at"] == 120_000
            for p in (a, b):  # each clock op runs the station's tick before it answers
                await p.call({"op": "clock", "advance_ms": 5000})
            [flash] = await _view(a, line, "flash")
            assert flash["escalations"] == [] and flash["state"] == "waiting for acknowledgement"

            # --- auditor_cannot_file_ack_via_the_cli: refused before anything is accepted
            seq = (await a.status_line())["our_seq"]
            bad = await asyncio.to_thread(rl, a.home, "ack", line[:8], flash["id"][:10], "--user", "Revizor",
                                          stdin=PASSWORD)  # fmt: skip
            assert bad.returncode != 0 and "Revizor is auditor" in bad.stderr
            assert (await a.status_line())["our_seq"] == seq
            await asyncio.to_thread(ok, rl(a.home, "ack", line[:8], flash["id"][:10], "--user", "Duty EUCOM",
                                           stdin=PASSWORD))  # fmt: skip
            await wait_until(lambda: _acked(b, line, "Duty EUCOM"), "NDMC to see who acknowledged")

            # --- notices_of_8000_points_are_no_stations_setting: NDMC's operator files one, and
            # NDMC refuses to sign it (every reader would keep it off the board), in one line
            seq = (await b.status_line())["our_seq"]
            with pytest.raises(Exception, match=r"area has more than 2000 points; at most 2000 \(PROTOCOL.md 5.9\)"):
                await b.call({"op": "act", "line": line, "kind": "NOTICE", "priority": "priority",
                              "content": polygon_notice(28.0, 45.0, 8000)})  # fmt: skip
            assert (await b.status_line())["our_seq"] == seq
            for i in range(3):  # within the protocol's limits, overlapping: three pairs in conflict
                await b.call({"op": "act", "line": line, "kind": "NOTICE", "priority": "priority",
                              "content": polygon_notice(28.0 + i * 0.01, 45.0, 1999)})  # fmt: skip
            await wait_until(lambda: _total(a, line, 3), "NDMC's notices on EUCOM's board")
            mine, theirs = await _view(a, line, "notices"), await _view(b, line, "notices")
            # One board: the same notices (each station marks which are its own) and the same conflicts.
            assert [{**n, "ours": None} for n in mine["active"]] == [{**n, "ours": None} for n in theirs["active"]]
            assert mine["conflicts"] == theirs["conflicts"]
            assert mine["total"] == 3 and mine["conflicts_total"] == 3
            assert all(len(n["area"]["coordinates"][0]) <= 100 for n in mine["active"])  # outlines only
            assert await _alarm(a, "conflicts with 2 active notices") and await _alarm(b, "conflicts with 2 active")
            assert not [r for r in await _view(a, line, "refused") if r["kind"] == "NOTICE"]

            # --- peer_roster_key_swap_is_refused: NDMC's admin re-creates Dezhurny with a new key
            (db.path / "users" / "Dezhurny.json").unlink()
            persons.add_user(db.path, "Dezhurny", "duty", PASSWORD, **FAST)
            await b.call({"op": "clock", "advance_ms": 1000})  # its tick publishes the new ROSTER
            await wait_until(lambda: _alarm(a, "changes the pinned key of Dezhurny"), "EUCOM's PINNED KEY alarm")
            f2 = await a.call({"op": "send", "line": line, "text": "FLASH two", "kind": "FLASH",
                               "priority": "flash"})  # fmt: skip
            await wait_until(lambda: _has(b, line, f2["id"]), "NDMC to hold the second FLASH")
            await asyncio.to_thread(ok, rl(b.home, "ack", line[:8], f2["id"][:10], "--user", "Dezhurny",
                                           stdin=PASSWORD))  # fmt: skip
            await wait_until(lambda: _refused(a, line, "ACK", 1), "EUCOM to refuse the swapped key's ACK")
            assert not await _acked(a, line, "Dezhurny")

            # --- the pins survive a restart: EUCOM replays its ledger into the same state
            a.kill9()
            # Back on the day the notices are for (the clock restarts at now, past their windows),
            # after every time it stored.
            a.args = ("--clock-start", str(MAY_13_11Z + 300_000))
            await a.start()
            assert await _refused(a, line, "ACK", 1) and await _refused(a, line, "ROSTER", 1)
            flashes = {f["id"]: f for f in await _view(a, line, "flash")}
            assert flashes[f2["id"]]["acked_by"] is None and flashes[flash["id"]]["acked_by"] == "Duty EUCOM"
            assert (await _view(a, line, "notices"))["total"] == 3
        finally:
            a.stop()
            b.stop()
        for home in (a.home, b.home):
            assert "VERIFIED" in rl(home, "verify").stdout

    asyncio.run(main())


async def _view(p: StationProc, line: str, what: str) -> Any:
    return await p.call({"op": "view", "line": line, "what": what})


async def _alarm(p: StationProc, text: str) -> bool:
    return any(text in a["text"] for a in (await p.call({"op": "status"}))["alarms"])


async def _acked(p: StationProc, line: str, who: str) -> bool:
    return any(f["acked_by"] == who for f in await _view(p, line, "flash"))


async def _refused(p: StationProc, line: str, kind: str, n: int) -> bool:
    return sum(r["kind"] == kind for r in await _view(p, line, "refused")) == n


async def _total(p: StationProc, line: str, n: int) -> bool:
    return bool((await _view(p, line, "notices"))["total"] == n)


async def _has(p: StationProc, line: str, eid: str) -> bool:
    return bool(await p.call({"op": "has", "line": line, "id": eid}))
