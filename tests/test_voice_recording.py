"""Call recordings (redline/recording.py): each station keeps both directions of a call as Ogg Opus
in its directory, evidence checked against the digests it signed in CALL_AUDIO (gate.accept_recording),
carried in a bundle by ``export --recordings`` and checked by ``verify --bundle``; a station killed
mid-call seals what its recording kept at restart and files CALL_AUDIO ``interrupted``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from redline import recording
from redline.bundle import build_bundle, verify_bundle
from redline.errors import RecordingError, RecordingMismatchError
from redline.gate import accept_recording
from redline.kinds import CallAudio
from redline.media import AudioPacket
from redline.participant import opus_packets
from redline.testing import StationPair
from tests.test_voice import ring_and_pick_up, stored, until


def tone_of(path: Path) -> float:
    """The strongest frequency of a recording, decoded by ffmpeg (PyAV) as any player would."""
    with av.open(str(path)) as c:
        stream = next(s for s in c.streams if s.type == "audio")
        pcm = np.concatenate([f.to_ndarray().reshape(-1).astype(float) for f in c.decode(stream)])
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * 48_000 / len(pcm))


def own_audio(st: Any, line: str) -> CallAudio:
    [content] = [c for mine, c in stored(st, line, "CALL_AUDIO") if mine]
    return CallAudio.parse(content)


def bundle_of(sp: StationPair, who: str, files: list[Path]) -> dict[str, Any]:
    st = sp.station(who)
    data = st.ledger.line_data(sp.line, st.config.name)
    peer = st.sessions[sp.line].peer
    roots = {st.keys.fingerprint: bytes.fromhex((st.home.keys / "root.pub").read_text().strip()),
             peer: bytes.fromhex(st.sessions[sp.line].record.peer_root)}  # fmt: skip
    return build_bundle(data, roots, st.keys.fingerprint, exported_at=0, recordings=[f.read_bytes() for f in files])


async def talk(sp: StationPair, n: int) -> None:
    tone_a, tone_b = opus_packets(n * 0.02 + 0.1, 1000.0)[:n], opus_packets(n * 0.02 + 0.1, 440.0)[:n]
    heard: dict[str, list[AudioPacket]] = {"a": [], "b": []}
    sp.a.audio_listeners.append(lambda line, p: heard["a"].append(p))
    sp.b.audio_listeners.append(lambda line, p: heard["b"].append(p))
    for i in range(n):
        await sp.a.send_audio(sp.line, tone_a[i])
        await sp.b.send_audio(sp.line, tone_b[i])
        sp.sim.advance(0.02)
    await until(lambda: len(heard["a"]) == n == len(heard["b"]), "both sides heard")


def test_both_stations_record_both_directions_and_each_recording_matches_its_signed_digest(tmp_path: Path) -> None:
    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            ring, pickup = await ring_and_pick_up(sp)
            await talk(sp, 40)
            await sp.act("a", "CALL_HANGUP", {"ring": ring, "answer": pickup})
            await sp.advance(1)
            await sp.advance(1)
            for who, spoke, heard in (("a", 1000, 440), ("b", 440, 1000)):
                st = sp.station(who)
                files = recording.sealed_recordings(st.home.path, sp.line)
                assert sorted(f.name for f in files) == [f"{ring}.received.opus", f"{ring}.sent.opus"]
                assert not list(recording.directory(st.home.path, sp.line).glob("*.part"))
                audio, peer = own_audio(st, sp.line), st.sessions[sp.line].peer
                for f in files:
                    rec = accept_recording(f.read_bytes(), audio, st.keys.fingerprint, peer)
                    assert len(rec.packets) == 40
                # what a player hears: each station's recording of what it sent and what it heard
                assert abs(tone_of(recording.path_of(st.home.path, sp.line, ring, "sent")) - spoke) < 15
                assert abs(tone_of(recording.path_of(st.home.path, sp.line, ring, "received")) - heard) < 15
                report = verify_bundle(bundle_of(sp, who, files), [sp.a.keys.fingerprint, sp.b.keys.fingerprint])
                assert report.ok, report.summary()
                assert len(report.recordings) == 2
                assert any("call recording(s) match" in line for line in report.summary())

    asyncio.run(main())


def test_a_recording_altered_cut_or_swapped_fails_the_bundle_check(tmp_path: Path) -> None:
    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            ring, pickup = await ring_and_pick_up(sp)
            await talk(sp, 10)
            await sp.act("b", "CALL_HANGUP", {"ring": ring, "answer": pickup})
            await sp.advance(1)
            await sp.advance(1)
            fps = [sp.a.keys.fingerprint, sp.b.keys.fingerprint]
            sent = recording.path_of(sp.a.home.path, sp.line, ring, "sent")
            audio = own_audio(sp.a, sp.line)
            good = sent.read_bytes()
            parsed = recording.parse(good)
            # One audio packet's bytes changed, the page re-checksummed: a valid Ogg file that lies.
            forged = bytearray(good)
            last = list(recording.pages(good))[-1]
            forged[last.offset : last.end] = recording.page(last.serial, last.seqno, last.granule,
                                                            b"\xfc" + last.packet[1:], last.flags)  # fmt: skip
            with pytest.raises(RecordingMismatchError, match="does not hash"):
                accept_recording(bytes(forged), audio, sp.a.keys.fingerprint, sp.b.keys.fingerprint)
            with pytest.raises(RecordingError, match=r"not sealed|not a whole"):
                accept_recording(good[: parsed.whole - 30], audio, sp.a.keys.fingerprint, sp.b.keys.fingerprint)
            sent.write_bytes(bytes(forged))
            received = recording.path_of(sp.a.home.path, sp.line, ring, "received")
            bundle = bundle_of(sp, "a", [sent, received])
            report = verify_bundle(bundle, fps)
            assert not report.ok and report.recordings == [f"EUCOM received {ring[:12]}"]
            assert any("recordings[0]" in str(p) and "does not hash" in str(p) for p in report.all_problems)
            # The peer's recording passed off as ours: it names the other station as its sender.
            theirs = recording.path_of(sp.b.home.path, sp.line, ring, "received")
            bundle["recordings"][1]["ogg"] = theirs.read_bytes().hex()
            report = verify_bundle(bundle, fps)
            assert any("recordings[1]" in str(p) for p in report.all_problems)

    asyncio.run(main())


def test_verify_on_a_store_checks_its_own_recordings_altered_or_swapped_fail_missing_is_a_note(
    tmp_path: Path,
) -> None:
    import json

    from click.testing import CliRunner

    from redline.api.app import verify_station
    from redline.cli import main as cli
    from redline.home import StationDir

    async def call() -> str:
        async with StationPair(tmp_path) as sp:
            ring, pickup = await ring_and_pick_up(sp)
            await talk(sp, 10)
            await sp.act("a", "CALL_HANGUP", {"ring": ring, "answer": pickup})
            await sp.advance(1)
            await sp.advance(1)
            return str(ring)

    ring = asyncio.run(call())
    home = tmp_path / "EUCOM"

    def verify() -> tuple[int, dict[str, Any]]:
        """``redline verify``'s report, checked to be the duty console's verify too (the same rules)."""
        res = CliRunner().invoke(cli, ["verify", "--station", str(home), "--json"])
        [report] = json.loads(res.output)
        assert verify_station(StationDir(home)) == [report]
        return res.exit_code, report

    code, report = verify()
    assert code == 0 and report["ok"] and report["notes"] == [], report
    assert sorted(report["recordings"]) == [f"received {ring[:12]} (10 packets)", f"sent {ring[:12]} (10 packets)"]
    sent, received = (recording.path_of(home, report["line"], ring, d) for d in ("sent", "received"))
    good = sent.read_bytes()
    # One packet's bytes changed and its page re-checksummed: a valid Ogg file that lies.
    forged = bytearray(good)
    last = list(recording.pages(good))[-1]
    forged[last.offset : last.end] = recording.page(last.serial, last.seqno, last.granule, b"\xfc" + last.packet[1:],
                                                    last.flags)  # fmt: skip
    sent.write_bytes(bytes(forged))
    code, report = verify()
    assert code == 2 and not report["ok"]
    assert report["problems"] == [f"recording {ring[:12]} sent: " + report["problems"][0].split(": ", 1)[1]]
    assert "does not hash to the digest signed" in report["problems"][0]
    sent.write_bytes(received.read_bytes())  # the other direction's file under this name
    code, report = verify()
    assert code == 2 and any("sent" in p and ("swapped" in p or "wrong sender" in p) for p in report["problems"])
    sent.unlink()  # moved off the station: noted, not a failure
    code, report = verify()
    assert code == 0 and report["ok"], report
    note = f"recording {ring[:12]} sent: not kept on this station (10 packets signed in CALL_AUDIO)"
    assert report["notes"] == [note]
    res = CliRunner().invoke(cli, ["verify", "--station", str(home)])
    assert res.exit_code == 0 and "call recordings matching the signed CALL_AUDIO: 1" in res.output
    # In words, as the bundle's summary says it (it printed Python's dict reprs).
    assert "  envelopes: EUCOM " in res.output and "; co-signed prefix: EUCOM 1.." in res.output, res.output
    assert "{" not in res.output
    assert "note: recording" in res.output


def test_a_station_killed_mid_call_seals_its_recording_and_files_interrupted_call_audio(tmp_path: Path) -> None:
    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            ring, _ = await ring_and_pick_up(sp)
            await talk(sp, 15)
            part = recording.path_of(sp.a.home.path, sp.line, ring, "sent").with_suffix(".opus.part")
            assert part.is_file()
            with part.open("ab") as f:
                f.write(b"OggS\x00\x00torn")  # a page the crash cut short
            await sp.crash("a")  # kill -9 and restart from the store
            await sp.advance(1)
            await sp.advance(1)
            for st in (sp.a, sp.b):
                assert st.view(sp.line, "voice")["calls"][-1]["state"] == "ended"
                assert st.view(sp.line, "voice")["current"] is None
                assert len(stored(st, sp.line, "CALL_AUDIO")) == 2
            audio = own_audio(sp.a, sp.line)
            assert audio.interrupted is True and audio.sent.packets == 15 == audio.received.packets
            assert own_audio(sp.b, sp.line).interrupted is None
            for direction in recording.DIRECTIONS:
                f = recording.path_of(sp.a.home.path, sp.line, ring, direction)
                accept_recording(f.read_bytes(), audio, sp.a.keys.fingerprint, sp.b.keys.fingerprint)
            assert [c for mine, c in stored(sp.a, sp.line, "CALL_HANGUP") if mine]  # the restarted side hung up
            report = verify_bundle(bundle_of(sp, "a", recording.sealed_recordings(sp.a.home.path, sp.line)),
                                   [sp.a.keys.fingerprint, sp.b.keys.fingerprint])  # fmt: skip
            assert report.ok and all("(interrupted)" in r for r in report.recordings)

    asyncio.run(main())


def test_recordings_are_readable_by_the_station_owner_only(tmp_path: Path) -> None:
    rec = recording.Recorder(recording.path_of(tmp_path, "ab" * 16, "cd" * 32, "sent"), "cd" * 32, "ef" * 32, "sent")
    rec.add(0, 0, opus_packets(0.1)[0])
    sealed = rec.seal()
    assert sealed is not None
    for p in (sealed.parent.parent, sealed.parent):
        assert p.stat().st_mode & 0o777 == 0o700
    assert sealed.stat().st_mode & 0o777 == 0o600


def test_export_can_carry_the_recordings_of_chosen_calls_only(tmp_path: Path) -> None:
    line, one, two, other = "11" * 16, "aa" * 32, "aaaaaa" + "bb" * 29, "cc" * 32
    for call in (one, two, other):
        for direction in recording.DIRECTIONS:
            recording.Recorder(recording.path_of(tmp_path, line, call, direction), call, "dd" * 32, direction).seal()
    assert len(recording.sealed_recordings(tmp_path, line)) == 6
    chosen = recording.sealed_recordings(tmp_path, line, ["CCCCCC"])
    assert [p.name for p in chosen] == [f"{other}.received.opus", f"{other}.sent.opus"]
    assert len(recording.sealed_recordings(tmp_path, line, [one[:8], other])) == 4
    for bad, why in (("ccc", "names no call"), ("ee" * 32, "names no call"), ("aaaaaa", "names 2 calls")):
        with pytest.raises(RecordingError, match=why):
            recording.sealed_recordings(tmp_path, line, [bad])
