"""Voice through the API (redline/api/console_voice.py), in-process over httpx.ASGITransport against
two real stations (tests/test_api.py's pair): ring, pick up, decline and hang up change the voice view
at both ends, the peer's ring is an alarm condition at the console until it is settled; audio
chunks on the console's WebSocket reach the peer station only once the call is picked up, an
oversized one is refused, the peer's audio comes back to the console on the call, and both
stations' CALL_AUDIO digests agree per direction."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from redline.api.console_voice import HEAD, chunk, max_payload
from redline.participant import opus_packets
from tests.test_api import AsgiWebSocket, Pair, _client, error, eventually, run


class VoiceSocket(AsgiWebSocket):
    """The console's WebSocket, with binary messages both ways."""

    def send_json(self, obj: dict[str, Any]) -> None:
        self.outbox.put_nowait({"type": "websocket.receive", "text": json.dumps(obj)})

    def send_bytes(self, data: bytes) -> None:
        self.outbox.put_nowait({"type": "websocket.receive", "bytes": data})

    async def next(self, want: Any) -> Any:
        """The next message ``want`` takes (JSON as a dict, audio as bytes); others are skipped."""
        while True:
            msg = await self._next()
            if msg["type"] != "websocket.send":
                continue
            item = msg["bytes"] if msg.get("bytes") is not None else json.loads(msg["text"])
            if want(item):
                return item

    async def close(self) -> None:
        self.outbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, 5)


def voice(p: Pair, who: str = "a") -> dict[str, Any]:
    view: dict[str, Any] = (p.a if who == "a" else p.b).view(p.line, "voice")
    return view


def counts(p: Pair) -> dict[str, int]:
    """What EUCOM's consoles sent, taken or refused (the voice route's ``console``)."""
    result: dict[str, int] = p.app.state.api.voice.counters.get(p.line, {})
    return result


def state(p: Pair, who: str) -> str | None:
    current = voice(p, who)["current"]
    return None if current is None else str(current["state"])


def test_ring_decline_ring_pick_up_hang_up_through_the_routes_change_the_voice_view_at_both_ends(
    tmp_path: Path,
) -> None:
    async def scenario(p: Pair) -> None:
        await p.login()
        url = f"/api/lines/{p.line}"
        async with _client(p.b) as ndmc:
            assert (await ndmc.post("/api/login", json={"user": "Dezhurny", "password": "correct horse battery"})
                    ).status_code == 200  # fmt: skip
            r = await p.client.post(f"{url}/ring", json={"idempotency_key": "ring-1"})
            assert r.status_code == 200, r.text
            ring = r.json()["id"]
            again = await p.client.post(f"{url}/ring", json={"idempotency_key": "ring-1"})  # a retry: the same ring
            assert again.status_code == 200 and again.json()["id"] == ring
            assert "already ringing or live" in error(await p.client.post(f"{url}/ring", json={}), 409)
            await eventually(lambda: state(p, "b") == "ringing", "the ring at NDMC")
            assert state(p, "a") == "ringing" and voice(p, "a")["current"]["caller"] == "Duty EUCOM"
            # at NDMC the ring is an alarm condition with the caller's name, above anything but a FLASH
            w = (await ndmc.get(f"{url}/watch")).json()
            assert w["conditions"][0]["code"] == "voice_ring" and w["conditions"][0]["level"] == "alarm"
            assert w["conditions"][0]["params"]["caller"] == "Duty EUCOM"
            assert "our own ring" in error(await p.client.post(f"{url}/pick-up", json={}), 409)
            assert "picked up or declined" in error(await ndmc.post(f"{url}/hang-up", json={}), 409)
            r = await ndmc.post(f"{url}/decline", json={"reason": "in a briefing"})
            assert r.status_code == 200, r.text
            await eventually(lambda: voice(p, "a")["calls"][-1]["state"] == "declined", "the decline at EUCOM")
            assert voice(p, "a")["calls"][-1]["reason"] == "in a briefing" and voice(p, "a")["current"] is None
            assert not [c for c in (await ndmc.get(f"{url}/watch")).json()["conditions"] if c["code"] == "voice_ring"]

            ring = (await p.client.post(f"{url}/ring", json={})).json()["id"]
            await eventually(lambda: state(p, "b") == "ringing", "the second ring at NDMC")
            r = await ndmc.post(f"{url}/pick-up", json={"ring_id": ring[:10]})
            assert r.status_code == 200, r.text
            await eventually(lambda: state(p, "a") == "live" == state(p, "b"), "the call live at both ends")
            assert voice(p, "a")["current"]["answered_by"] == "Dezhurny"
            assert "live by Dezhurny" in error(await ndmc.post(f"{url}/pick-up", json={"ring_id": ring}), 409)
            # the pick-up is signed by the person who pressed it, and EUCOM accepted that signature
            assert p.a.view(p.line, "refused") == []
            r = await p.client.post(f"{url}/hang-up", json={})
            assert r.status_code == 200, r.text
            await eventually(lambda: voice(p, "b")["calls"][-1]["state"] == "ended", "the hang-up at NDMC")
            assert voice(p, "a")["calls"][-1]["state"] == "ended" and voice(p, "b")["current"] is None
            assert "no voice call is ringing or live" in error(await p.client.post(f"{url}/hang-up", json={}), 409)
            # the voice view is a route like the others
            view = (await p.client.get(f"{url}/voice")).json()
            assert [c["state"] for c in view["calls"]] == ["declined", "ended"] and "console" in view

    run(tmp_path, scenario)


def test_console_audio_goes_out_only_once_picked_up_an_oversized_chunk_is_refused_and_the_peer_is_heard(
    tmp_path: Path,
) -> None:
    tone = opus_packets(0.5, 1000.0)  # real Opus packets, as a browser's AudioEncoder makes them
    back = opus_packets(0.5, 440.0)

    async def scenario(p: Pair) -> None:
        await p.login()
        url = f"/api/lines/{p.line}"
        ws = VoiceSocket(p.app, cookie=p.client.cookies["redline_session"])
        await ws.next(lambda m: isinstance(m, dict) and m["type"] == "hello")
        ring = (await p.client.post(f"{url}/ring", json={})).json()["id"]
        ws.send_json({"type": "join", "call": ring})
        joined = await ws.next(lambda m: isinstance(m, dict) and m["type"] == "joined")
        assert joined == {"type": "joined", "call": ring, "talking": True}
        # ringing, not picked up: the chunk is refused here and nothing reaches the peer
        ws.send_bytes(chunk(ring, 0, 0, tone[0]))
        refused = await ws.next(lambda m: isinstance(m, dict) and m["type"] == "audio_refused")
        assert refused["reason"] == "not_live" and refused["packet"] == 0
        assert counts(p)["not_live"] == 1 and voice(p, "a")["audio"] is None
        await eventually(lambda: state(p, "b") == "ringing", "the ring at NDMC")
        await _pick_up_at_ndmc(p, ring)
        await eventually(lambda: state(p, "a") == "live", "the pick-up at EUCOM")
        for i, packet in enumerate(tone[:20]):
            ws.send_bytes(chunk(ring, i + 1, 20 * i, packet))
        await eventually(lambda: (voice(p, "b")["audio"] or {}).get("received", {}).get("packets") == 20,
                         "20 packets at NDMC")  # fmt: skip
        # over max_audio_packet_bytes: refused, counted, the call goes on
        ws.send_bytes(chunk(ring, 100, 500, b"\xfc" * (max_payload(p.a.limits) + 1)))
        refused = await ws.next(lambda m: isinstance(m, dict) and m["type"] == "audio_refused")
        assert refused["reason"] == "oversized"
        ws.send_bytes(chunk(ring, 100, 500, b"\xfc" * max_payload(p.a.limits)))  # exactly at the limit: taken
        ws.send_bytes(b"\x07 not audio")
        await eventually(lambda: counts(p).get("malformed") == 1, "the malformed one counted")
        got = (await p.client.get(f"{url}/voice")).json()["console"]
        assert got["oversized"] == 1 and got["accepted"] == 21 and got["not_live"] == 1, got
        await eventually(lambda: voice(p, "b")["audio"]["received"]["packets"] == 21, "the 21st at NDMC")
        # NDMC talks back: its packets reach this console, in order, as sent
        for packet in back[:10]:
            await p.b.send_audio(p.line, packet)
        heard = [await ws.next(lambda m: isinstance(m, bytes)) for _ in range(10)]
        assert [h[HEAD.size :] for h in heard] == back[:10]
        assert [int.from_bytes(h[33:37], "big") for h in heard] == list(range(10))
        assert counts(p)["relayed"] == 10
        r = await p.client.post(f"{url}/hang-up", json={})
        assert r.status_code == 200, r.text
        ws.send_bytes(chunk(ring, 200, 9000, tone[0]))  # after the hang-up: refused again
        await eventually(lambda: counts(p)["not_live"] == 2, "the late chunk refused")

        def evidence() -> bool:
            return all(voice(p, w)["calls"][-1]["audio"]["evidence"] == "match" for w in ("a", "b"))

        await eventually(evidence, "both CALL_AUDIO filed and equal per direction", timeout=30)
        audio = voice(p, "a")["calls"][-1]["audio"]
        assert audio["ours"]["sent"]["packets"] == 21 and audio["ours"]["received"]["packets"] == 10
        assert audio["ours"]["sent"] == audio["theirs"]["received"]
        await ws.close()

    run(tmp_path, scenario)


async def _pick_up_at_ndmc(p: Pair, ring: str) -> None:
    async with _client(p.b) as ndmc:
        r = await ndmc.post("/api/login", json={"user": "Dezhurny", "password": "correct horse battery"})
        assert r.status_code == 200, r.text
        r = await ndmc.post(f"/api/lines/{p.line}/pick-up", json={"ring_id": ring})
        assert r.status_code == 200, r.text


def test_a_ring_is_refused_while_the_line_is_not_in_sync(tmp_path: Path) -> None:
    async def scenario(p: Pair) -> None:
        await p.login()
        await p.b.close()  # NDMC stops: EUCOM's line goes out of sync
        await eventually(lambda: not p.a.sessions[p.line].link.synced, "EUCOM's line out of sync")
        before = p.our_seq()
        message = error(await p.client.post(f"/api/lines/{p.line}/ring", json={"idempotency_key": "r"}), 409)
        assert "not in sync" in message and "refused" in message
        assert p.our_seq() == before and voice(p)["current"] is None  # nothing filed

    run(tmp_path, scenario)


def test_a_retried_hang_up_decline_or_ring_gets_the_first_acceptance_not_the_calls_new_state(tmp_path: Path) -> None:
    """The attack is a lost answer: the console keeps its key and submits again, and the route judged
    the retry by the state its first submit changed ("that call is cancelled", "already ringing"),
    telling the operator a hang-up that went out had failed. A retry is answered with the first
    acceptance; another request under the same key is still refused."""

    async def scenario(p: Pair) -> None:
        await p.login()
        url = f"/api/lines/{p.line}"
        ring = {"idempotency_key": "ring-1"}
        r1 = await p.client.post(f"{url}/ring", json=ring)
        assert r1.status_code == 200, r1.text
        await eventually(lambda: state(p, "a") == "ringing", "ringing")
        again = await p.client.post(f"{url}/ring", json=ring)
        assert again.status_code == 200 and again.json()["id"] == r1.json()["id"], again.text
        hang = {"ring_id": r1.json()["id"], "idempotency_key": "hang-1"}
        h1 = await p.client.post(f"{url}/hang-up", json=hang)
        assert h1.status_code == 200, h1.text
        await eventually(lambda: state(p, "a") is None, "ended")
        for body in (hang, {"idempotency_key": "hang-1"}):  # with the ring named, or not
            h2 = await p.client.post(f"{url}/hang-up", json=body)
            assert h2.status_code == 200 and h2.json()["id"] == h1.json()["id"], h2.text
        other = await p.client.post(f"{url}/ring", json={**ring, "test_id": "0" * 12})  # another ring, same key
        assert other.status_code in (400, 409), other.text

    run(tmp_path, scenario)


def test_a_reused_hang_up_or_decline_key_does_not_answer_for_another_call(tmp_path: Path) -> None:
    """The attack on the retry rule (an outside review): the key of a hang-up (or decline) that
    named no call, sent again while ANOTHER call was open, was taken for a retry of the first
    call's: 200 with that old acceptance, and the call open now rang on. A key only answers for
    the call its first submit named; for any other it is refused and the open call is untouched."""

    async def scenario(p: Pair) -> None:
        await p.login()
        url = f"/api/lines/{p.line}"
        async with _client(p.b) as ndmc:
            login = {"user": "Dezhurny", "password": "correct horse battery"}
            assert (await ndmc.post("/api/login", json=login)).status_code == 200
            for first_key, again in (("hang-1", "hang-up"), ("dec-1", "decline")):
                caller = p.client if again == "hang-up" else ndmc  # we hang up our ring; decline NDMC's
                x = await caller.post(f"{url}/ring", json={})
                assert x.status_code == 200, x.text
                await eventually(lambda: state(p, "a") == "ringing", "the first call rings")
                done = await p.client.post(f"{url}/{again}", json={"idempotency_key": first_key})
                assert done.status_code == 200, done.text
                await eventually(lambda: state(p, "a") is None and state(p, "b") is None, "the first call ended")
                y = await caller.post(f"{url}/ring", json={})
                assert y.status_code == 200, y.text
                await eventually(lambda: state(p, "a") == "ringing", "another call rings")
                reused = await p.client.post(f"{url}/{again}", json={"idempotency_key": first_key})
                assert "already used for a different message" in error(reused, 409), again
                assert state(p, "a") == "ringing", again  # the open call is untouched
                assert (await p.client.post(f"{url}/{again}", json={})).status_code == 200
                await eventually(lambda: state(p, "a") is None and state(p, "b") is None, "the other call ended")

    run(tmp_path, scenario)
