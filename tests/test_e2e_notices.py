"""Notices, show/READ and translation through the CLI, between two real stations."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.procs import StationProc, paired_stations, wait_until
from tests.test_e2e_ops import ENV, ok, rl

SQUARE = '{"type":"Polygon","coordinates":[[[28.1,45.1],[28.9,45.1],[28.9,45.6],[28.1,45.6],[28.1,45.1]]]}'
BOWTIE = '{"type":"Polygon","coordinates":[[[28.1,45.1],[28.9,45.6],[28.9,45.1],[28.1,45.6],[28.1,45.1]]]}'
WINDOW = ("--start", "2022-05-13T12:00Z", "--end", "2022-05-13T16:00Z")


async def notices(p: StationProc, line: str) -> Any:
    return await p.call({"op": "view", "line": line, "what": "notices"})


@pytest.mark.timeout(180)
def test_notices_conflict_at_both_ends_and_bad_geometry_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)

    async def main() -> None:
        a, b, line, _ = await paired_stations(tmp_path, relays=False)
        try:
            for p in (a, b):  # notices expire when their window ends: live on 13 May 2022
                await p.call({"op": "clock", "set_ms": 1_652_439_600_000})
            before = (await a.status_line())["our_seq"]
            bad = await asyncio.to_thread(rl, a.home, "notice", line[:8], "--kind", "air", "--area", BOWTIE,
                                          "--floor", "6000", "--ceiling", "12000", *WINDOW)  # fmt: skip
            assert bad.returncode != 0 and "self-intersect" in bad.stderr.lower()
            inverted = await asyncio.to_thread(rl, a.home, "notice", line[:8], "--kind", "air", "--area", SQUARE,
                                               "--floor", "9000", "--ceiling", "1000", *WINDOW)  # fmt: skip
            assert inverted.returncode != 0 and "floor" in inverted.stderr
            assert (await a.status_line())["our_seq"] == before  # nothing was sent

            ours = await asyncio.to_thread(ok, rl(a.home, "notice", line[:8], "--kind", "air", "--area", SQUARE,
                                                  "--floor", "6000", "--ceiling", "12000", *WINDOW,
                                                  "--margin", "10000", "--json"))  # fmt: skip
            theirs = await asyncio.to_thread(ok, rl(b.home, "notice", line[:8], "--kind", "strike", "--area",
                                                    '{"type":"Point","coordinates":[29.05,45.45]}', "--radius",
                                                    "15000", "--floor", "0", "--ceiling", "10000",
                                                    "--start", "2022-05-13T13:00Z", "--end", "2022-05-13T15:00Z",
                                                    "--json"))  # fmt: skip
            for p in (a, b):
                await wait_until(lambda p=p: _conflicts(p, line, 1), "the conflict at both ends")
            view = await notices(b, line)
            assert {c["distance_m"] for c in view["conflicts"]} == {0}
            assert sorted(view["conflicts"][0]["ids"]) == sorted([ours["id"], theirs["id"]])
            human = await asyncio.to_thread(rl, a.home, "notices", line[:8])
            assert "CONFLICT" in human.stdout

            # a peer cannot withdraw our notice; we can, and the conflict clears at both ends
            wrong = await asyncio.to_thread(rl, b.home, "withdraw", line[:8], ours["id"][:10])
            assert wrong.returncode != 0
            await asyncio.to_thread(ok, rl(a.home, "withdraw", line[:8], ours["id"][:10]))
            for p in (a, b):
                await wait_until(lambda p=p: _conflicts(p, line, 0), "the conflict to clear at both ends")

            # show a message and record who read it; machine translation is absent by default
            await asyncio.to_thread(ok, rl(a.home, "send", line[:8], "Proverka svyazi"))
            msg = await a.call({"op": "send", "line": line, "text": "Please confirm the window."})
            await wait_until(lambda: _has(b, line, msg["id"]), "NDMC to hold the message")
            shown = await asyncio.to_thread(ok, rl(b.home, "show", line[:8], msg["id"][:10], "--user", "Dezhurny",
                                                   "--json"))  # fmt: skip
            assert shown["content"]["text"] == "Please confirm the window." and shown["read"]["kind"] == "READ"
            mt = await asyncio.to_thread(rl, b.home, "translate", line[:8], msg["id"][:10], "text", "--lang", "ru",
                                         "--translator", "Orlov", "--machine")  # fmt: skip
            assert mt.returncode != 0 and "no offline machine translation" in mt.stderr
            ru = "Пожалуйста, подтвердите окно."
            args = ("translate", line[:8], msg["id"][:10], ru, "--lang", "ru", "--translator", "Orlov")
            await asyncio.to_thread(ok, rl(b.home, *args))
            shown = await asyncio.to_thread(ok, rl(b.home, "show", line[:8], msg["id"][:10], "--json"))
            assert shown["translations"][0]["lang"] == "ru" and shown["content"]["text"].startswith("Please")
        finally:
            a.stop()
            b.stop()

    asyncio.run(main())


async def _conflicts(p: StationProc, line: str, n: int) -> bool:
    return len((await notices(p, line))["conflicts"]) == n


async def _has(p: StationProc, line: str, eid: str) -> bool:
    return bool(await p.call({"op": "has", "line": line, "id": eid}))
