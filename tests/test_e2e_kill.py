"""kill -9 of the sender and of the receiver at random moments under traffic: every accepted
message is delivered exactly once, in order (guarantees 1 and 2, end to end)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from redline.errors import RedlineError
from redline.home import StationDir
from tests.procs import StationProc, both, paired_stations, wait_until
from tests.test_e2e_line import chain_texts, verify_cli

KILLS = 24
PER_SIDE = 600


async def sender(proc: StationProc, line: str, texts: list[str], accepted: list[str]) -> None:
    """Send each text until the station accepts it; a retry reuses the idempotency key, so a
    message accepted just before a crash (answer lost) is not sent twice."""
    for i, text in enumerate(texts):
        while True:
            try:
                await proc.call({"op": "send", "line": line, "text": text, "idem": f"{proc.home.name}-{i}"})
                accepted.append(text)
                break
            except (RedlineError, OSError, ConnectionError, TimeoutError):
                await asyncio.sleep(0.02)


@pytest.mark.timeout(600)
def test_kill_minus_nine_sender_and_receiver_under_traffic(tmp_path: Path) -> None:
    rng = random.Random(20220513)

    async def main() -> None:
        a, b, line, relays = await paired_stations(tmp_path, redial_max=1.0)
        kills = {"EUCOM": 0, "NDMC": 0}
        try:
            texts = {
                "a": [f"EUCOM {i:04d}" for i in range(PER_SIDE)],
                "b": [f"НЦУО {i:04d}" for i in range(PER_SIDE)],
            }
            accepted: dict[str, list[str]] = {"a": [], "b": []}
            traffic = asyncio.gather(
                sender(a, line, texts["a"], accepted["a"]), sender(b, line, texts["b"], accepted["b"])
            )
            for _ in range(KILLS):
                await asyncio.sleep(rng.uniform(0.05, 0.4))
                victim = rng.choice([a, b])
                victim.kill9()
                kills["EUCOM" if victim is a else "NDMC"] += 1
                await victim.start()
            await traffic
            await wait_until(
                lambda: both(a, b, lambda ln: ln["outbox"] == 0 and ln["unreceipted"] == 0
                             and ln["their_seq"] == PER_SIDE),
                "all traffic receipted after the crashes", timeout=120,
            )  # fmt: skip
        finally:
            a.stop()
            b.stop()
            for r in relays:
                await r.cut()
        assert kills["EUCOM"] > 0 and kills["NDMC"] > 0
        assert accepted["a"] == texts["a"] and accepted["b"] == texts["b"]
        fa, fb = StationDir(a.home).load_keys().fingerprint, StationDir(b.home).load_keys().fingerprint
        assert chain_texts(b.home, line, fa) == texts["a"]  # exactly once, in order
        assert chain_texts(a.home, line, fb) == texts["b"]
        for home in (a.home, b.home):
            result = verify_cli(home)
            assert result.returncode == 0, result.stdout

    asyncio.run(main())
