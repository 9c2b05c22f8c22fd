"""Operations end to end over two real station processes: line tests a person answers, FLASH
escalation and acknowledgement, call requests (with expiry), call records and both readouts.
Time is driven explicitly through the stations' settable clocks (REDLINE_SETTABLE_CLOCK=1)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.procs import StationProc, paired_stations, wait_until

PASSWORD = "correct horse battery"
ENV = {"REDLINE_SETTABLE_CLOCK": "1", "REDLINE_PWHASH_COST": "interactive"}


def rl(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ENV, "REDLINE_STATION": str(home), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "redline", *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip().startswith(("{", "[")) else result.stdout


async def advance(procs: tuple[StationProc, ...], ms: int) -> None:
    for p in procs:
        await p.call({"op": "clock", "advance_ms": ms})


@pytest.mark.timeout(300)
def test_tests_flash_calls_and_readouts_between_real_stations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)

    async def main() -> None:
        a, b, line, relays = await paired_stations(tmp_path, relays=False)
        both = (a, b)
        try:
            await asyncio.to_thread(ok, rl(a.home, "user", "add", "Duty EUCOM", "--role", "duty", stdin=PASSWORD))
            for name, role in (("Dezhurny", "duty"), ("Zamestitel", "deputy"), ("Nachalnik", "supervisor")):
                await asyncio.to_thread(ok, rl(b.home, "user", "add", name, "--role", role, stdin=PASSWORD))

            # --- a line test, answered by a named person at the peer
            t = await asyncio.to_thread(ok, rl(a.home, "test", line[:8], "--json"))
            await wait_until(lambda: _pending_test(b, line), "NDMC to hold the test")
            ans = rl(b.home, "answer", line[:8], "--user", "Dezhurny", "--json", stdin=PASSWORD)
            await asyncio.to_thread(ok, ans)
            await wait_until(lambda: _test_result(a, line, t["id"], "passed"), "the test to pass")
            hist = await a.call({"op": "view", "line": line, "what": "tests"})
            assert hist["passed"] == 1 and hist["tests"][-1]["answered_by"] == "Dezhurny"
            assert hist["tests"][-1]["receipted_at"] is not None

            # --- a wrong password changes nothing
            bad = await asyncio.to_thread(rl, b.home, "answer", line[:8], t["id"][:10], "--user", "Dezhurny",
                                          stdin="not the password")  # fmt: skip
            assert bad.returncode != 0 and "wrong password" in bad.stderr

            # --- a missed test alarms at both ends
            await asyncio.to_thread(ok, rl(a.home, "test", line[:8], "--json"))
            await wait_until(lambda: _pending_test(b, line), "NDMC to hold the second test")
            await advance(both, 301_000)
            await wait_until(lambda: _alarm(a, "LINE TEST MISSED"), "EUCOM to alarm the missed test")
            await wait_until(lambda: _alarm(b, "LINE TEST MISSED here"), "NDMC to alarm the missed test")

            # --- FLASH: escalation level by level, then a named acknowledgement
            f = await a.call({"op": "send", "line": line, "text": "FLASH: aircraft near the border", "kind": "FLASH",
                              "priority": "flash"})  # fmt: skip
            await wait_until(lambda: _flash_state(b, line, f["id"]), "NDMC to hold the FLASH")
            await advance(both, 41_000)
            await wait_until(lambda: _escalated(a, line, f["id"], ["deputy"]), "escalation to deputy, seen by EUCOM")
            ackr = rl(b.home, "ack", line[:8], f["id"][:10], "--user", "Zamestitel", "--json", stdin=PASSWORD)
            await asyncio.to_thread(ok, ackr)
            await wait_until(lambda: _acked(a, line, f["id"], "Zamestitel"), "EUCOM to see the acknowledgement")
            await advance(both, 120_000)  # after the ACK no further escalation happens
            await asyncio.sleep(0.3)
            flashes = await a.call({"op": "view", "line": line, "what": "flash"})
            assert [e["level"] for e in flashes[-1]["escalations"]] == ["deputy"]

            # --- calls: a request left unanswered expires (decided by the requester); another is accepted
            r1 = await asyncio.to_thread(ok, rl(a.home, "call", "request", line[:8], "--from-role", "Secretary",
                                                "--to-role", "Minister", "--subject", "Ceasefire",
                                                "--json"))  # fmt: skip
            await advance(both, 8 * 86_400_000)
            await wait_until(lambda: _calls(a, line, lambda p: p["unanswered"] == 1), "the request to expire")
            r2 = await asyncio.to_thread(ok, rl(a.home, "call", "request", line[:8], "--from-role", "Secretary",
                                                "--to-role", "Minister", "--subject", "Lines of communication",
                                                "--json"))  # fmt: skip
            await wait_until(lambda: _has(b, r2["id"]), "NDMC to hold the request")
            await asyncio.to_thread(ok, rl(b.home, "call", "reply", line[:8], r2["id"][:10], "accept", "--time",
                                           "2022-05-13T11:00Z", "--json"))  # fmt: skip
            rec = await asyncio.to_thread(ok, rl(
                a.home, "call", "record", line[:8], "--start", "2022-05-13T11:00Z", "--end", "2022-05-13T12:00Z",
                "--principal", "Secretary", "--principal", "Minister", "--request", r2["id"][:10],
                "--user", "Duty EUCOM", "--json", stdin=PASSWORD))  # fmt: skip
            await wait_until(lambda: _has(b, rec["id"]), "NDMC to hold the call record")
            await asyncio.to_thread(ok, rl(a.home, "readout", line[:8], rec["id"][:10],
                                           "The Secretary urged an immediate ceasefire.", "--user", "Duty EUCOM",
                                           stdin=PASSWORD))  # fmt: skip
            await asyncio.to_thread(ok, rl(b.home, "readout", line[:8], rec["id"][:10],
                                           "Обсуждены актуальные вопросы международной безопасности.",
                                           "--user", "Nachalnik", stdin=PASSWORD))  # fmt: skip
            def both_readouts(p: dict[str, Any]) -> bool:
                return len(p["calls"]) == 1 and len(p["calls"][0]["readouts"]) == 2

            await wait_until(lambda: _calls(a, line, both_readouts), "both readouts at EUCOM")
            summary = (await a.call({"op": "view", "line": line, "what": "calls"}))[0]
            assert summary["declined"] == 0 and summary["accepted"] == 1 and summary["unanswered"] == 1
            ro = summary["calls"][0]["readouts"]
            assert ro["ours"]["lang"] == "en" and ro["theirs"]["lang"] == "ru" and ro["theirs"]["by"] == "Nachalnik"
            human = await asyncio.to_thread(rl, a.home, "calls", line[:8])
            assert "urged an immediate ceasefire" in human.stdout and "Обсуждены" in human.stdout
            assert r1["id"]

            # --- an acknowledgement without a person signature is refused before it is accepted
            with pytest.raises(Exception, match="person signature"):
                await b.call({"op": "act", "line": line, "kind": "ACK", "content": {"ref": f["id"]}})

            # --- a crash in the middle: the restarted station rebuilds its ops from the ledger
            b.kill9()
            await b.start()
            await wait_until(lambda: _calls(b, line, lambda p: len(p["calls"]) == 1), "NDMC to rebuild calls")
        finally:
            a.stop()
            b.stop()
            for r in relays:
                await r.cut()
        for home in (a.home, b.home):
            assert "VERIFIED" in rl(home, "verify").stdout

    asyncio.run(main())


async def _view(p: StationProc, line: str, what: str) -> Any:
    return await p.call({"op": "view", "line": line, "what": what})


async def _pending_test(p: StationProc, line: str) -> bool:
    return bool((await _view(p, line, "tests"))["to_answer"])


async def _test_result(p: StationProc, line: str, test_id: str, result: str) -> bool:
    return any(t["id"] == test_id and t["result"] == result for t in (await _view(p, line, "tests"))["tests"])


async def _alarm(p: StationProc, text: str) -> bool:
    return any(text in a["text"] for a in (await p.call({"op": "status"}))["alarms"])


async def _flash_state(p: StationProc, line: str, fid: str) -> bool:
    return any(f["id"] == fid for f in await _view(p, line, "flash"))


async def _escalated(p: StationProc, line: str, fid: str, levels: list[str]) -> bool:
    flashes = await _view(p, line, "flash")
    return any(f["id"] == fid and [e["level"] for e in f["escalations"]] == levels for f in flashes)


async def _acked(p: StationProc, line: str, fid: str, who: str) -> bool:
    return any(f["id"] == fid and f["acked_by"] == who for f in await _view(p, line, "flash"))


async def _calls(p: StationProc, line: str, pred: Any) -> bool:
    pairs = await _view(p, line, "calls")
    return bool(pairs) and bool(pred(pairs[0]))


async def _has(p: StationProc, eid: str) -> bool:
    line = (await p.status_line())["line"]
    return bool(await p.call({"op": "has", "line": line, "id": eid}))
