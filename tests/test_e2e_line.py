"""Two real station processes on loopback, paired by the real ceremony, over real TLS."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from redline.envelope import split
from redline.home import StationDir
from redline.ledger.sqlite import Ledger
from tests.procs import both, paired_stations, pipelined, wait_until

N = 10_000


def chain_texts(home: Path, line: str, sender: str) -> list[str]:
    ledger = Ledger(StationDir(home).ledger_path)
    try:
        from redline import canonical

        out = []
        for _, raw in ledger.raw_envelopes(line, sender):
            env = split(raw)
            assert env.body_bytes is not None
            out.append(canonical.decode_object(env.body_bytes, "body")["content"]["text"])
        return out
    finally:
        ledger.close()


def raw_chain(home: Path, line: str, sender: str) -> list[bytes]:
    ledger = Ledger(StationDir(home).ledger_path)
    try:
        return [raw for _, raw in ledger.raw_envelopes(line, sender)]
    finally:
        ledger.close()


def verify_cli(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redline", "verify", "--station", str(home)], capture_output=True, text=True, timeout=300
    )


@pytest.mark.timeout(600)
def test_ten_thousand_each_way_with_a_path_cut_half_way(tmp_path: Path) -> None:
    async def main() -> None:
        a, b, line, relays = await paired_stations(tmp_path)
        try:
            texts_a = [f"EUCOM {i:05d}" for i in range(N)]
            texts_b = [f"НЦУО {i:05d}" for i in range(N)]

            def reqs(texts: list[str]) -> list[dict[str, object]]:
                return [{"op": "send", "line": line, "text": t} for t in texts]

            half = N // 2
            r1 = await asyncio.gather(pipelined(a.home, reqs(texts_a[:half])), pipelined(b.home, reqs(texts_b[:half])))
            await relays[0].cut()  # path 1 severed mid-traffic; everything must go on over path 2
            r2 = await asyncio.gather(pipelined(a.home, reqs(texts_a[half:])), pipelined(b.home, reqs(texts_b[half:])))
            for rs in (*r1, *r2):
                assert all(r["ok"] for r in rs), [r for r in rs if not r["ok"]][:3]
            await wait_until(
                lambda: both(a, b, lambda ln: ln["outbox"] == 0 and ln["unreceipted"] == 0 and ln["their_seq"] == N),
                "all traffic receipted", timeout=300,
            )  # fmt: skip
            st = await a.status_line()
            assert sum(1 for p in st["paths"].values() if p["up"]) == 1, st["paths"]
        finally:
            a.stop()
            b.stop()
            for r in relays:
                await r.cut()
        fa, fb = (StationDir(a.home).load_keys().fingerprint, StationDir(b.home).load_keys().fingerprint)
        # every message exactly once, in the order it was accepted, at the other station
        assert chain_texts(b.home, line, fa) == texts_a
        assert chain_texts(a.home, line, fb) == texts_b
        # transcripts equal, byte for byte, at both ends
        assert raw_chain(a.home, line, fa) == raw_chain(b.home, line, fa)
        assert raw_chain(a.home, line, fb) == raw_chain(b.home, line, fb)
        for home in (a.home, b.home):
            result = verify_cli(home)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "VERIFIED" in result.stdout

    asyncio.run(main())
