"""A peer's receipts bound nothing of ours: an ended call's audio is sealed on our clock.

The attack (attack pass, voice): our CALL_AUDIO of a call we hung up waits for the peer's receipt of
that hang-up (ops/voice.py ``audio_ready``: its receipt comes after its last packets). A peer that
withholds every receipt kept the call's audio state and both recording files (``….opus.part``)
open here until it chose to receipt, for ever. Now the wait ends ``receipt_wait_ms`` (twice
``call_lost_seconds``) after our hang-up on our clock: the recordings are sealed, CALL_AUDIO files
what arrived, the call's audio is dropped from memory, and a late receipt or packet changes nothing.
Time is driven explicitly (``tests.test_ops.Line``, ``StationPair``'s simulated clock)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

from redline import recording
from redline.config import Limits
from redline.media import AudioPacket
from redline.ops.model import Entry
from redline.protocol.framing import FrameType
from redline.testing import StationPair
from tests.test_ops import SECOND, Line, rosters
from tests.test_voice import ring_and_pick_up, stored, until
from tests.test_voice_ops import pick_up, ring

NO_AUDIO = {"digest": "00" * 32, "packets": 0, "ms": 0}


class Withholding(Line):
    """The Line of tests/test_ops.py whose NDMC (b) stores EUCOM's envelopes but, once ``withhold``
    is set, never receipts them."""

    withhold = False

    def deliver(self) -> None:
        for sender, e in self.in_flight:
            self.peer(sender).observe(replace(e, ours=False, stored_at=self.now))
            if not (self.withhold and sender is self.a):
                sender.receipted(e.seq, self.now)
        self.in_flight.clear()


def _hung_up_by_us_with_receipts_withheld() -> tuple[Withholding, Entry, Entry]:
    """A call rung, picked up and hung up by EUCOM, whose receipts NDMC withholds from then on:
    the line, the ring and our hang-up."""
    line = Withholding()
    rosters(line)
    r = ring(line)
    p = pick_up(line, r)
    line.withhold = True
    return line, r, line.file(line.a, "CALL_HANGUP", {"ring": r.ref, "answer": p.ref})


def test_peer_withholding_receipts_cannot_keep_an_ended_calls_audio_waiting_past_twice_call_lost_seconds() -> None:
    line, r, hangup = _hung_up_by_us_with_receipts_withheld()
    voice = line.a.ops.voice
    call = voice.calls[r.id]
    assert call.state == "ended" == line.b.ops.voice.calls[r.id].state
    assert voice.audio_due() == []  # waiting for NDMC's receipt, which comes after its last packets
    line.advance(60 * SECOND - 1)
    assert line.ticks() == ([], []) and voice.audio_due() == []  # under the bound: still waiting
    line.advance(1)
    assert line.ticks() == ([], [])  # nothing to file on the line: the station files CALL_AUDIO itself
    assert voice.audio_due() == [call]
    assert any("has not receipted our hang-up in 60 s" in t for t in line.a.texts()), line.a.texts()
    line.file(line.a, "CALL_AUDIO", {"ring": r.ref, "sent": NO_AUDIO, "received": NO_AUDIO})
    assert voice.audio_due() == []
    alarms = list(line.a.alarms)
    line.withhold = False
    line.a.receipted(hangup.seq + 1, line.now)  # the receipt comes at last: it changes nothing
    assert not call.hangup_receipted and voice.audio_due() == [] and line.a.alarms == alarms
    line.advance(60 * SECOND)
    assert line.ticks() == ([], []) and line.a.alarms == alarms  # the bound is said once


def test_a_receipt_inside_the_bound_files_the_audio_as_before_and_the_bound_never_fires() -> None:
    line, r, hangup = _hung_up_by_us_with_receipts_withheld()
    line.advance(59 * SECOND)
    line.a.receipted(hangup.seq, line.now)
    call = line.a.ops.voice.calls[r.id]
    assert call.hangup_receipted and line.a.ops.voice.audio_due() == [call]
    line.advance(2 * SECOND)
    line.ticks()
    assert call.receipt_waited_out_at is None
    assert not any("has not receipted" in t for t in line.a.texts())


async def _talk(sp: StationPair, n: int) -> None:
    for i in range(n):
        await sp.a.send_audio(sp.line, b"\xfc" + bytes([i]) * 40)
        await sp.b.send_audio(sp.line, b"\xfc" + bytes([i + 100]) * 40)

    def heard(st: Any) -> Any:
        return (st.view(sp.line, "voice")["audio"] or {}).get("received", {}).get("packets")

    await until(lambda: heard(sp.a) == n == heard(sp.b), f"{n} packets each way")


def _parts(sp: StationPair, who: str) -> list[Path]:
    home = sp.dir_a.path if who == "a" else sp.dir_b.path
    return sorted((home / "recordings").rglob("*.part"))


async def _late_audio(sp: StationPair, ring: str, seq: int) -> None:
    """NDMC's station writes one more AUDIO frame of the call on every path to EUCOM."""
    before = sp.a.audio_dropped.get(sp.line, 0)
    frame = bytes([FrameType.AUDIO]) + AudioPacket(call=ring, seq=seq, ts=seq * 20, data=b"\xfc" + b"L" * 40).encode()
    conns = [c for (line, _), c in sp.b._conns.items() if line == sp.line]
    assert conns
    for conn in conns:
        conn.write(frame)
        await conn.drain()
    await until(lambda: sp.a.audio_dropped.get(sp.line, 0) >= before + len(conns), "the late frame dropped")


def test_peer_withholding_receipts_cannot_keep_an_ended_calls_audio_open(tmp_path: Path) -> None:
    """Station level: the recording files stay open and the call's audio in memory until the bound
    (2 x call_lost_seconds after our hang-up, here 2 x 2 s), not before; then both are sealed,
    CALL_AUDIO says what arrived, memory is freed; a late packet and a late receipt change nothing."""

    async def main() -> None:
        async with StationPair(tmp_path, limits=Limits(test_times_utc=(), call_lost_seconds=2.0)) as sp:
            ring, pickup = await ring_and_pick_up(sp)
            await _talk(sp, 5)
            session = sp.a.sessions[sp.line]
            real = session._on_receipt
            session._on_receipt = lambda raw: []  # type: ignore[method-assign]  # NDMC's receipts never land
            await sp.a.act(sp.line, "CALL_HANGUP", {"ring": ring, "answer": pickup})
            hung_up = sp.a.wall()
            call = sp.a.ops[sp.line].voice.calls[ring]
            await until(lambda: sp.b.ops[sp.line].voice.calls[ring].state == "ended", "the hang-up at NDMC")
            assert call.state == "ended" and not call.hangup_receipted
            while sp.a.wall() - hung_up < 3_900:  # under the bound: still waiting, files open
                sp.sim.advance(0.3)
                await sp.a.tick()
                await sp.b.tick()
                await asyncio.sleep(0.02)
                assert len(_parts(sp, "a")) == 2 and ring in sp.a.recordings
                assert ring in sp.a.media.get(sp.line, {})
                assert not [c for ours, c in stored(sp.a, sp.line, "CALL_AUDIO") if ours]
            sp.sim.advance(0.2)  # past 4 s on EUCOM's clock since its hang-up
            await sp.a.tick()
            await until(lambda: [c for ours, c in stored(sp.a, sp.line, "CALL_AUDIO") if ours], "EUCOM's CALL_AUDIO")
            await sp.a.tick()  # the tick after it is stored lets go of the call's audio
            assert _parts(sp, "a") == [] and ring not in sp.a.recordings
            assert ring not in sp.a.media.get(sp.line, {})
            ours = next(c for mine, c in stored(sp.a, sp.line, "CALL_AUDIO") if mine)
            assert ours["sent"]["packets"] == 5 == ours["received"]["packets"]
            assert "interrupted" not in ours  # EUCOM did not stop: its record is what arrived, whole
            for direction in ("sent", "received"):
                path = recording.path_of(sp.dir_a.path, sp.line, ring, direction)
                assert len(recording.parse(path.read_bytes()).packets) == 5, direction
            assert any("has not receipted our hang-up in 4 s" in a[2] for a in sp.alarms if a[0] == "a"), sp.alarms
            sealed = {d: recording.path_of(sp.dir_a.path, sp.line, ring, d).read_bytes() for d in ("sent", "received")}
            # A late packet of the call: dropped and counted, nothing recorded, nothing raised.
            await _late_audio(sp, ring, 5)
            assert ring not in sp.a.media.get(sp.line, {}) and ring not in sp.a.recordings
            # NDMC's receipts land again: the late receipt of the hang-up changes nothing.
            session._on_receipt = real  # type: ignore[method-assign]
            await sp.send("a", "receipt this")
            await sp.advance(1)
            await sp.advance(1)
            assert not call.hangup_receipted
            assert len([c for mine, c in stored(sp.a, sp.line, "CALL_AUDIO") if mine]) == 1
            for d, data in sealed.items():
                assert recording.path_of(sp.dir_a.path, sp.line, ring, d).read_bytes() == data
            for st in (sp.a, sp.b):  # everything arrived before the bound: the evidence matches
                assert st.view(sp.line, "voice")["calls"][-1]["audio"]["evidence"] == "match"
            assert not [a for a in sp.alarms if "MISMATCH" in a[2] or "RECORDING" in a[2]], sp.alarms

    asyncio.run(main())


def test_peer_that_hung_up_and_keeps_sending_cannot_keep_our_recordings_open(tmp_path: Path) -> None:
    """The other direction: the peer hung up; its hang-up comes after its last packets, so our
    CALL_AUDIO is filed at once on it (no wait on the peer at all), and more audio from it is dropped."""

    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            ring, pickup = await ring_and_pick_up(sp)
            await _talk(sp, 3)
            await sp.act("b", "CALL_HANGUP", {"ring": ring, "answer": pickup})
            await sp.a.tick()
            await until(lambda: [c for ours, c in stored(sp.a, sp.line, "CALL_AUDIO") if ours], "EUCOM's CALL_AUDIO")
            await sp.a.tick()
            assert _parts(sp, "a") == [] and ring not in sp.a.recordings
            assert ring not in sp.a.media.get(sp.line, {})
            for seq in (3, 4):
                await _late_audio(sp, ring, seq)
            ours = next(c for mine, c in stored(sp.a, sp.line, "CALL_AUDIO") if mine)
            assert ours["received"]["packets"] == 3
            path = recording.path_of(sp.dir_a.path, sp.line, ring, "received")
            assert len(recording.parse(path.read_bytes()).packets) == 3

    asyncio.run(main())
