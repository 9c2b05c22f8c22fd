"""A call's audio evidence is its own (station.py keeps media by call, not by line).

The attack (attack_ops V1): our CALL_AUDIO of a call we hung up waits for the peer's receipt of that
hang-up (ops/voice.py ``audio_ready``). A peer that holds that receipt back, rings again and lets it
through in the middle of the next call used to make us file call 1's CALL_AUDIO from a fresh, empty
media that also replaced call 2's: both digests wrong, call 2's recording restarted from zero, and
AUDIO EVIDENCE MISMATCH at both ends for calls nobody tampered with."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from redline import persons, recording
from redline.testing import StationPair
from tests.test_voice import FAST, PASSWORD, stored, until


async def signed_act(sp: StationPair, who: str, kind: str, content: dict[str, Any], name: str) -> dict[str, Any]:
    """Filed without waiting for the line to be in sync (the peer holds its receipts back)."""
    st = sp.station(who)
    person = next(p for p in persons.load_users(st.home.path) if p.name == name)
    resolved = await st.control({"op": "resolve", "line": sp.line, "kind": kind, "content": content})
    signed = persons.sign_content(resolved, person, persons.unlock(st.home.path, name, PASSWORD))
    return (await st.act(sp.line, kind, signed)).to_obj()


def test_a_peer_holding_back_its_receipt_of_our_hangup_cannot_spoil_two_calls_audio_evidence(tmp_path: Path) -> None:
    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            persons.add_user(sp.dir_a.path, "Duty EUCOM", "duty", PASSWORD, **FAST)
            persons.add_user(sp.dir_b.path, "Dezhurny", "duty", PASSWORD, **FAST)

            async def talk(first: int, n: int) -> None:
                for i in range(first, first + n):
                    await sp.a.send_audio(sp.line, bytes([i]) * 40)
                    await sp.b.send_audio(sp.line, bytes([i + 100]) * 40)
                await asyncio.sleep(0.2)

            ring1 = await signed_act(sp, "a", "CALL_RING", {}, "Duty EUCOM")
            await until(lambda: ring1["id"] in sp.b.ops[sp.line].voice.calls, "ring at B")
            pick1 = await signed_act(sp, "b", "CALL_ANSWER", {"ring": ring1["id"]}, "Dezhurny")
            await until(lambda: sp.a.ops[sp.line].voice.live() is not None, "live at A")
            await talk(0, 5)
            # The peer holds back its receipts from here on (as if B never sent them).
            session = sp.a.sessions[sp.line]
            real = session._on_receipt
            session._on_receipt = lambda raw: []  # type: ignore[method-assign]
            await sp.a.act(sp.line, "CALL_HANGUP", {"ring": ring1["id"], "answer": pick1["id"]})
            for _ in range(3):  # A's ticks run: its CALL_AUDIO of call 1 waits for B's receipt
                sp.sim.advance(0.1)
                await sp.a.tick()
                await sp.b.tick()
                await asyncio.sleep(0.05)
            assert not [c for ours, c in stored(sp.a, sp.line, "CALL_AUDIO") if ours]
            ring2 = await signed_act(sp, "b", "CALL_RING", {}, "Dezhurny")
            await until(lambda: ring2["id"] in sp.a.ops[sp.line].voice.calls, "ring 2 at A")
            pick2 = await signed_act(sp, "a", "CALL_ANSWER", {"ring": ring2["id"]}, "Duty EUCOM")
            await until(lambda: sp.b.ops[sp.line].voice.live() is not None, "call 2 live at B")
            await talk(50, 3)
            session._on_receipt = real  # type: ignore[method-assign]  # B lets its receipt through, mid call 2
            await sp.send("a", "hello")  # anything: B receipts A's chain again
            await sp.advance(0.1)  # A files its CALL_AUDIO of call 1 now, during call 2
            assert [c for ours, c in stored(sp.a, sp.line, "CALL_AUDIO") if ours]
            await talk(53, 3)
            await sp.act("b", "CALL_HANGUP", {"ring": ring2["id"], "answer": pick2["id"]})
            await sp.advance(1)
            await sp.advance(1)
            for st in (sp.a, sp.b):
                filed = {c["ring"]["id"]: c for ours, c in stored(st, sp.line, "CALL_AUDIO") if ours}
                counts = {k: (v["sent"]["packets"], v["received"]["packets"]) for k, v in filed.items()}
                assert counts == {ring1["id"]: (5, 5), ring2["id"]: (6, 6)}, counts
                for ring, n in ((ring1["id"], 5), (ring2["id"], 6)):  # each recording whole, not restarted
                    for direction in ("sent", "received"):
                        path = recording.path_of(st.home.path, sp.line, ring, direction)
                        assert len(recording.parse(path.read_bytes()).packets) == n, (ring[:8], direction)
            assert not [a for a in sp.alarms if "MISMATCH" in a[2] or "RECORDING" in a[2]], sp.alarms

    asyncio.run(main())
