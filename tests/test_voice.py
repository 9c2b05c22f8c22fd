"""Voice between two whole stations (``redline.testing.StationPair``) over real loopback TLS, on two
paths: ring, pick up, real Opus packets (PyAV) both ways as AUDIO frames, a path cut mid-call with the
audio going on over the other, hang-up, and both stations' CALL_AUDIO digests equal per direction.
Plus the attacks on the audio frame, named after them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from nacl.pwhash.argon2id import MEMLIMIT_MIN, OPSLIMIT_MIN

from redline import canonical, persons
from redline.config import Limits
from redline.envelope import split
from redline.errors import NoPathError
from redline.home import StationDir
from redline.media import AudioPacket
from redline.participant import opus_packets
from redline.protocol.framing import FrameType
from redline.testing import SimClock, StationClock, StationPair, free_ports, make_station, pair_directly
from tests.test_spec import validator

PASSWORD = "test-password-1"
FAST = {"ops": OPSLIMIT_MIN, "mem": MEMLIMIT_MIN}


class TwoPathPair(StationPair):
    """StationPair whose EUCOM listens on two addresses: NDMC dials both, so the line has two paths."""

    def __init__(self, root: Path) -> None:
        from redline.station import Station

        self._station = Station
        self.limits = Limits(test_times_utc=())
        ports = free_ports(3)
        self.dir_a = StationDir(root / "EUCOM")
        self.dir_a.init(name="EUCOM", lang="en", listen=[f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}"],
                        limits=self.limits)  # fmt: skip
        self.dir_b = make_station(root, "NDMC", "ru", ports[2], self.limits)
        self.line = pair_directly(self.dir_a, self.dir_b)
        self.sim = SimClock()
        self.clocks = {"a": StationClock(self.sim), "b": StationClock(self.sim)}
        self.alarms: list[tuple[str, str, str]] = []
        self.a = self._new("a")
        self.b = self._new("b")


async def signed_act(sp: StationPair, who: str, kind: str, content: dict[str, Any], name: str) -> dict[str, Any]:
    st = sp.station(who)
    home = st.home.path
    person = next(p for p in persons.load_users(home) if p.name == name)
    resolved = await st.control({"op": "resolve", "line": sp.line, "kind": kind, "content": content})
    return await sp.act(who, kind, persons.sign_content(resolved, person, persons.unlock(home, name, PASSWORD)))


def stored(st: Any, line: str, kind: str) -> list[tuple[bool, dict[str, Any]]]:
    out = []
    for sender, _, raw, _ in st.ledger.stored_in_order(line):
        env = split(raw)
        header = canonical.decode_object(env.header_bytes, "header")
        if header["kind"] == kind:
            body = canonical.decode_object(env.body_bytes, "body")["content"]
            out.append((sender == st.keys.fingerprint, body))
    return out


async def until(cond: Any, what: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


def paths_open(st: Any, line: str) -> int:
    return sum(1 for s in st.sessions[line].link.paths.values() if s.name == "OPEN")


async def ring_and_pick_up(sp: StationPair) -> tuple[str, str]:
    persons.add_user(sp.dir_a.path, "Duty EUCOM", "duty", PASSWORD, **FAST)
    persons.add_user(sp.dir_b.path, "Dezhurny", "duty", PASSWORD, **FAST)
    ring = await signed_act(sp, "a", "CALL_RING", {}, "Duty EUCOM")
    assert sp.b.view(sp.line, "voice")["current"]["state"] == "ringing"
    pickup = await signed_act(sp, "b", "CALL_ANSWER", {"ring": ring["id"]}, "Dezhurny")
    assert sp.a.view(sp.line, "voice")["current"]["state"] == "live" == sp.b.view(sp.line, "voice")["current"]["state"]
    return ring["id"], pickup["id"]


def test_audio_both_ways_over_tls_survives_a_path_cut_and_both_call_audio_digests_match(tmp_path: Path) -> None:
    tone_a, tone_b = opus_packets(1.0, 1000.0)[:50], opus_packets(1.0, 440.0)[:50]  # real Opus, 20 ms each

    async def main() -> None:
        async with TwoPathPair(tmp_path) as sp:
            await until(lambda: paths_open(sp.a, sp.line) == 2 == paths_open(sp.b, sp.line), "two paths open")
            heard: dict[str, list[AudioPacket]] = {"a": [], "b": []}
            sp.a.audio_listeners.append(lambda line, p: heard["a"].append(p))
            sp.b.audio_listeners.append(lambda line, p: heard["b"].append(p))
            ring, pickup = await ring_and_pick_up(sp)
            for i in range(25):
                await sp.a.send_audio(sp.line, tone_a[i])
                await sp.b.send_audio(sp.line, tone_b[i])
                sp.sim.advance(0.02)
            await until(lambda: len(heard["a"]) == 25 == len(heard["b"]), "the first half heard")
            # Cut the second path for good: its listener closes and its connection dies mid-call.
            sp.a._servers[1].close()
            port = sp.a.config.listen[1].rsplit(":", 1)[1]
            second = next(p for p in sp.b.sessions[sp.line].link.paths if p.endswith(port))
            sp.b._conns[(sp.line, second)].abort()
            await until(lambda: paths_open(sp.a, sp.line) == 1 == paths_open(sp.b, sp.line), "one path left")
            for i in range(25, 50):
                await sp.a.send_audio(sp.line, tone_a[i])
                await sp.b.send_audio(sp.line, tone_b[i])
                sp.sim.advance(0.02)
            await until(lambda: len(heard["a"]) == 50 == len(heard["b"]), "the second half heard on the other path")
            assert [p.data for p in heard["b"]] == tone_a and [p.data for p in heard["a"]] == tone_b
            assert [p.seq for p in heard["b"]] == list(range(50))
            health = sp.b.view(sp.line, "voice")["audio"]["paths"]
            assert len(health) == 2 and sum(h["first"] for h in health.values()) == 50
            # NDMC hangs up; each side files CALL_AUDIO once no more audio can reach it.
            await sp.act("b", "CALL_HANGUP", {"ring": ring, "answer": pickup})
            await sp.advance(1)
            await sp.advance(1)
            for st in (sp.a, sp.b):
                audio = stored(st, sp.line, "CALL_AUDIO")
                assert len(audio) == 2, audio
                for _, content in audio:
                    validator("CALL_AUDIO").validate(content)
                ours = next(c for mine, c in audio if mine)
                theirs = next(c for mine, c in audio if not mine)
                assert ours["sent"] == theirs["received"] and ours["received"] == theirs["sent"]
                assert ours["sent"]["packets"] == 50 == ours["received"]["packets"]
                view = st.view(sp.line, "voice")
                assert view["calls"][-1]["state"] == "ended" and view["calls"][-1]["audio"]["evidence"] == "match"
            for kind in ("CALL_RING", "CALL_ANSWER", "CALL_HANGUP"):
                for _, content in stored(sp.a, sp.line, kind):
                    validator(kind).validate(content)
            assert not [a for a in sp.alarms if "MISMATCH" in a[2]]

    asyncio.run(main())


def test_audio_frames_before_the_call_is_answered_are_dropped(tmp_path: Path) -> None:
    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            persons.add_user(sp.dir_a.path, "Duty EUCOM", "duty", PASSWORD, **FAST)
            ring = await signed_act(sp, "a", "CALL_RING", {}, "Duty EUCOM")
            with pytest.raises(Exception, match="no voice call is live"):
                await sp.a.send_audio(sp.line, b"early")
            # A peer that sends audio anyway, before anyone picked up: dropped, counted, line up.
            frame = bytes([FrameType.AUDIO]) + AudioPacket(call=ring["id"], seq=0, ts=0, data=b"x" * 50).encode()
            for conn in [c for (line, _), c in sp.a._conns.items() if line == sp.line]:
                conn.write(frame)
                await conn.drain()
            await until(lambda: sp.b.audio_dropped.get(sp.line, 0) >= 1, "the early frame dropped")
            assert sp.b.view(sp.line, "voice")["audio"] is None
            paths = sp.b.status().to_obj()["lines"][0]["paths"]
            assert paths and all(p["up"] for p in paths.values())
            await sp.send("a", "still up")

    asyncio.run(main())


def test_a_peers_oversized_audio_frame_closes_nothing_but_is_dropped_and_counted(tmp_path: Path) -> None:
    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            ring, _ = await ring_and_pick_up(sp)
            big = bytes([FrameType.AUDIO]) + AudioPacket(call=ring, seq=0, ts=0, data=b"z" * 5000).encode()
            for conn in [c for (line, _), c in sp.a._conns.items() if line == sp.line]:
                conn.write(big)
                await conn.drain()
            await until(lambda: (sp.b.view(sp.line, "voice")["audio"] or {}).get("dropped", {}).get("oversized") == 1,
                        "the oversized frame counted")  # fmt: skip
            await sp.a.send_audio(sp.line, b"ok" * 30)
            await until(lambda: sp.b.view(sp.line, "voice")["audio"]["received"]["packets"] == 1, "audio goes on")
            await sp.send("a", "still up")

    asyncio.run(main())


def test_audio_while_every_path_is_down_is_not_sent_hashed_or_recorded(tmp_path: Path) -> None:
    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            await ring_and_pick_up(sp)
            await sp.a.send_audio(sp.line, b"\xfc" + b"a" * 40)
            await until(lambda: (sp.b.view(sp.line, "voice")["audio"] or {}).get("received", {}).get("packets") == 1,
                        "one heard")  # fmt: skip
            for server in sp.b._servers:  # NDMC stops listening and every connection dies: no path left
                server.close()
            for conn in list(sp.a._conns.values()) + list(sp.b._conns.values()):
                conn.abort()
            await until(lambda: paths_open(sp.a, sp.line) == 0, "every path down")
            before = sp.a.view(sp.line, "voice")["audio"]["sent"]
            with pytest.raises(NoPathError, match="no path of the line is up"):
                await sp.a.send_audio(sp.line, b"\xfc" + b"b" * 40)
            assert sp.a.view(sp.line, "voice")["audio"]["sent"] == before  # not in the digest
            assert sp.a.recordings[sp.a.view(sp.line, "voice")["current"]["id"]].sent.packets == 1

    asyncio.run(main())


def test_audio_a_dying_path_swallowed_is_sent_again_for_the_record_not_for_playout(tmp_path: Path) -> None:
    tone = opus_packets(1.0, 1000.0)[:40]

    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            ring, pickup = await ring_and_pick_up(sp)
            heard: list[AudioPacket] = []
            sp.b.audio_listeners.append(lambda line, p: heard.append(p))
            for i in range(10):
                await sp.a.send_audio(sp.line, tone[i])
                sp.sim.advance(0.02)
            await until(lambda: len(heard) == 10, "the first ten heard")
            # The path goes black: what EUCOM writes to it vanishes, while EUCOM still thinks it is up.
            perform = sp.a._perform

            async def black_hole(session: Any, actions: list[Any]) -> None:
                await perform(session, [a for a in actions if getattr(a, "data", b"")[4:5] != bytes([FrameType.AUDIO])])

            sp.a._perform = black_hole
            for i in range(10, 30):
                await sp.a.send_audio(sp.line, tone[i])
                sp.sim.advance(0.02)
            sp.a._perform = perform
            sp.sim.advance(2.5)  # path_dead_after: by the time they come again, they are stale
            for conn in list(sp.a._conns.values()):  # found dead at last; it is dialled again
                conn.abort()
            await until(lambda: paths_open(sp.a, sp.line) == 1 == paths_open(sp.b, sp.line), "the path back")
            await until(lambda: sp.b.view(sp.line, "voice")["audio"]["received"]["packets"] == 30, "the gap filled")
            for i in range(30, 40):
                await sp.a.send_audio(sp.line, tone[i])
                sp.sim.advance(0.02)
            await until(lambda: len(heard) == 20, "the last ten heard")
            assert [p.seq for p in heard] == [*range(10), *range(30, 40)]  # the stale ones were not played
            await sp.act("a", "CALL_HANGUP", {"ring": ring, "answer": pickup})
            await sp.advance(1)
            await sp.advance(1)
            for st in (sp.a, sp.b):
                last = st.view(sp.line, "voice")["calls"][-1]
                assert last["audio"]["evidence"] == "match", last
            assert next(c for mine, c in stored(sp.b, sp.line, "CALL_AUDIO") if mine)["received"]["packets"] == 40

    asyncio.run(main())


def test_the_survivor_of_a_peer_killed_mid_call_ends_it_as_lost_and_both_ends_agree_once_it_is_back(
    tmp_path: Path,
) -> None:
    tone_a, tone_b = opus_packets(0.4, 1000.0)[:10], opus_packets(0.4, 440.0)[:10]

    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            ring, _ = await ring_and_pick_up(sp)
            for i in range(10):
                await sp.a.send_audio(sp.line, tone_a[i])
                await sp.b.send_audio(sp.line, tone_b[i])
                sp.sim.advance(0.02)
            heard = lambda st: (st.view(sp.line, "voice")["audio"] or {}).get("received", {}).get("packets")  # noqa: E731
            await until(lambda: heard(sp.a) == 10 == heard(sp.b), "ten packets each way")
            await sp.crash("b", start_again=False)  # NDMC killed mid-call; it stays down
            await until(lambda: paths_open(sp.a, sp.line) == 0, "EUCOM sees no path")
            await sp.a.tick()  # the station's 100 ms tick notes when the line went quiet
            sp.sim.advance(29.0)  # under call_lost_seconds (30) of silence: still live at EUCOM
            await sp.a.tick()
            assert sp.a.view(sp.line, "voice")["current"]["state"] == "live"
            sp.sim.advance(2.0)
            await sp.a.tick()  # EUCOM ends the call: CALL_HANGUP reason "lost", on its own clock
            await sp.a._flush()  # signed and stored though the line is down (it waits to be sent)
            await sp.a.tick()  # ... and files its CALL_AUDIO at once (nothing more can reach it)
            await sp.a._flush()
            call = sp.a.view(sp.line, "voice")["calls"][-1]
            assert (call["id"], call["state"], call["reason"]) == (ring, "ended", "lost")
            assert sp.a.view(sp.line, "voice")["current"] is None
            # Recorded: durable in EUCOM's outbox, signed once NDMC's HELLO agrees again (guarantee 2).
            waiting = {i.kind: i.content for i in sp.a.ledger.pending(sp.line)}
            assert sorted(waiting) == ["CALL_AUDIO", "CALL_HANGUP"] and waiting["CALL_HANGUP"]["reason"] == "lost"
            validator("CALL_HANGUP").validate(waiting["CALL_HANGUP"])
            ours = waiting["CALL_AUDIO"]
            assert ours["sent"]["packets"] == 10 == ours["received"]["packets"]
            assert "interrupted" not in ours  # EUCOM did not stop: its record of the call is whole
            assert not list((sp.dir_a.path / "recordings").rglob("*.part"))  # sealed before CALL_AUDIO
            assert any("this station lost the line" in a["text"] for a in sp.a.alarms), sp.a.alarms
            # ops asks for both filings again at every tick until they are stored: nothing is written again
            begun: list[str] = []
            sp.a.ledger._db.set_trace_callback(lambda sql: begun.append(sql) if sql.startswith("BEGIN") else None)
            for _ in range(10):
                sp.sim.advance(0.1)
                await sp.a.tick()
            sp.a.ledger._db.set_trace_callback(None)
            assert begun == [] and len(sp.a.ledger.pending(sp.line)) == 2
            # NDMC comes back: it seals what it kept and hangs up "interrupted"; EUCOM's "lost" stands.
            await sp.start("b")
            sp.sim.advance(1.0)
            await sp.a.tick()
            await sp.b.tick()
            await sp.synced()
            await sp.advance(1)
            await sp.advance(1)
            for st in (sp.a, sp.b):
                call = st.view(sp.line, "voice")["calls"][-1]
                assert (call["state"], call["reason"]) == ("ended", "lost"), call
                assert call["audio"]["ours"] is not None and call["audio"]["theirs"] is not None, call
                assert len(stored(st, sp.line, "CALL_AUDIO")) == 2
            theirs = next(c for mine, c in stored(sp.b, sp.line, "CALL_AUDIO") if mine)
            assert theirs["interrupted"] is True
            # NDMC's own "interrupted" hang-up is filed only if it started before EUCOM's "lost" came.
            reasons = sorted((c.get("reason") or "") for _, c in stored(sp.b, sp.line, "CALL_HANGUP"))
            assert reasons in (["lost"], ["interrupted", "lost"]), reasons

    asyncio.run(main())


def test_a_survivor_restarted_before_the_line_is_back_keeps_its_lost_verdict_and_whole_call_audio(
    tmp_path: Path,
) -> None:
    tone = opus_packets(0.4, 1000.0)[:10]

    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            await ring_and_pick_up(sp)
            for i in range(10):
                await sp.a.send_audio(sp.line, tone[i])
                await sp.b.send_audio(sp.line, tone[i])
                sp.sim.advance(0.02)
            heard = lambda st: (st.view(sp.line, "voice")["audio"] or {}).get("received", {}).get("packets")  # noqa: E731
            await until(lambda: heard(sp.a) == 10 == heard(sp.b), "ten packets each way")
            await sp.crash("b", start_again=False)
            await until(lambda: paths_open(sp.a, sp.line) == 0, "EUCOM sees no path")
            await sp.a.tick()
            sp.sim.advance(31.0)
            for _ in range(2):
                await sp.a.tick()
                await sp.a._flush()
            assert [i.kind for i in sp.a.ledger.pending(sp.line)] == ["CALL_HANGUP", "CALL_AUDIO"]
            await sp.crash("a", start_again=False)  # EUCOM too goes down, its verdict still unsent
            sp.a = sp._new("a")
            await sp.a.start()  # alone: not in sync until NDMC is back
            await sp.start("b")
            for _ in range(3):
                await sp.advance(1)
            for st in (sp.a, sp.b):
                call = st.view(sp.line, "voice")["calls"][-1]
                assert (call["state"], call["reason"], call["audio"]["evidence"]) == ("ended", "lost", "match"), call
            eucom = next(c for mine, c in stored(sp.a, sp.line, "CALL_AUDIO") if mine)
            assert "interrupted" not in eucom and eucom["sent"]["packets"] == 10  # filed before its restart
            assert not [a for a in sp.alarms if "MISMATCH" in a[2]]

    asyncio.run(main())


def test_the_call_record_and_both_readouts_reference_the_voice_calls_audio_evidence(tmp_path: Path) -> None:
    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            ring, pickup = await ring_and_pick_up(sp)
            for data in opus_packets(0.2, 440.0)[:5]:
                await sp.a.send_audio(sp.line, data)
                await sp.b.send_audio(sp.line, data)
            await until(lambda: sp.b.view(sp.line, "voice")["audio"]["received"]["packets"] == 5, "heard")
            await sp.act("b", "CALL_HANGUP", {"ring": ring, "answer": pickup})
            await sp.advance(1)
            await sp.advance(1)
            record = await signed_act(sp, "a", "CALL_RECORD", {
                "start": sp.sim.wall - 60_000, "end": sp.sim.wall, "principals": ["Duty EUCOM", "Dezhurny"],
                "participants": ["Duty EUCOM", "Dezhurny"], "voice": ring[:12]}, "Duty EUCOM")  # fmt: skip
            for who, name, text in (("a", "Duty EUCOM", "Line tested by voice."), ("b", "Dezhurny", "Связь есть.")):
                await signed_act(sp, who, "READOUT", {"call": record["id"], "text": text}, name)
            [(_, content)] = stored(sp.b, sp.line, "CALL_RECORD")
            validator("CALL_RECORD").validate(content)
            assert content["voice"]["id"] == ring  # the prefix was resolved to the full reference
            for st in (sp.a, sp.b):
                [pair] = st.view(sp.line, "calls")
                [call] = pair["calls"]
                assert call["voice"] == ring and call["audio_evidence"] == "match"
                assert set(call["readouts"]) == {"ours", "theirs"}

    asyncio.run(main())
