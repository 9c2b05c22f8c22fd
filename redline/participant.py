"""The headless participant (``redline call join``): takes part in a voice call exactly as a duty
console does, without a browser or a person at a microphone: for tests, unattended automated
voice tests and the demo.

It logs in to the station's API as a station user (its key unlocked by the station, as at the
console), rings (``POST …/ring``) or waits for the peer's ring and picks it up (``POST …/pick-up``,
so the pick-up is signed by that user), joins the call on the console WebSocket (``/api/events``,
``{"type": "join"}``) and sends a WAV file as Opus packets of 20 ms, paced in real time, in the
console's binary audio messages (docs/API.md, "Voice"); it keeps what the peer sent and writes it
to a WAV file. So the station cannot tell it from a console: what it sends is hashed, recorded and
forwarded by the same code.

Opus is encoded and decoded by PyAV (libopus): no codec here. The HTTP and WebSocket clients are
the standard library's ``http.client`` and ``wsproto`` (already a dependency of the API).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import numpy as np
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from redline.api.console_voice import chunk
from redline.errors import RedlineError

RATE: Final = 48_000
FRAME: Final = RATE // 50  # 20 ms
AUDIO: Final = 1


class ParticipantError(RedlineError):
    """The headless participant could not take part (login refused, no ring, the station went away)."""


def read_wav(path: Path) -> np.ndarray[Any, np.dtype[np.int16]]:
    """A WAV file (or anything ffmpeg reads) as 48 kHz mono 16-bit samples."""
    import av

    try:
        with av.open(str(path)) as c:
            stream = next((s for s in c.streams if s.type == "audio"), None)
            if stream is None:
                raise ParticipantError(f"{path} holds no audio")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            parts = [f.to_ndarray().reshape(-1) for frame in c.decode(stream)
                     if isinstance(frame, av.AudioFrame) for f in resampler.resample(frame)]  # fmt: skip
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except (av.FFmpegError, OSError) as exc:
        raise ParticipantError(f"cannot read {path}: {exc}") from None
    return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)


def write_wav(path: Path, pcm: np.ndarray[Any, np.dtype[np.int16]]) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.astype("<i2").tobytes())


def tone(seconds: float, freq: float) -> np.ndarray[Any, np.dtype[np.int16]]:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * freq * t) * 12_000).astype(np.int16)


def encode(pcm: np.ndarray[Any, np.dtype[np.int16]]) -> list[bytes]:
    """Opus packets of 20 ms (libopus through PyAV, 24 kbit/s as the console's WebCodecs encoder)."""
    import av

    enc = av.CodecContext.create("libopus", "w")
    assert isinstance(enc, av.AudioCodecContext)
    enc.sample_rate, enc.layout, enc.format = RATE, "mono", "s16"
    enc.bit_rate = 24_000
    whole = len(pcm) // FRAME * FRAME
    out: list[bytes] = []
    for i in range(0, whole, FRAME):
        frame = av.AudioFrame.from_ndarray(pcm[i : i + FRAME].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = RATE, i
        out += [bytes(p) for p in enc.encode(frame)]
    out += [bytes(p) for p in enc.encode(None)]
    return out


def opus_packets(seconds: float, freq: float = 440.0) -> list[bytes]:
    """Real Opus packets (20 ms each) of a sine tone: for tests, as a browser's encoder makes them."""
    return encode(tone(seconds, freq))


def decode(packets: list[bytes]) -> np.ndarray[Any, np.dtype[np.int16]]:
    import av

    dec = av.CodecContext.create("libopus", "r")
    assert isinstance(dec, av.AudioCodecContext)
    dec.sample_rate, dec.layout = RATE, "mono"
    parts = []
    for data in packets:
        try:
            frames = dec.decode(av.Packet(data))
        except av.FFmpegError:
            continue  # a packet that does not decode is a gap in what we heard, not the end
        for f in frames:
            parts.append(f.to_ndarray().reshape(-1))
    if not parts:
        return np.zeros(0, np.int16)
    pcm = np.concatenate(parts)
    if pcm.dtype.kind == "f":
        pcm = np.clip(pcm * 32767, -32768, 32767)
    return pcm.astype(np.int16)


@dataclass
class Api:
    """The station's HTTP API as a console uses it (one request per connection, the session cookie)."""

    url: str
    cookie: str | None = None
    insecure: bool = False  # accept a self-signed certificate (a test station)

    def __post_init__(self) -> None:
        u = urlsplit(self.url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ParticipantError(f"{self.url!r} is not the station's console address (http[s]://host:port/)")
        self.tls = u.scheme == "https"
        self.host, self.port = u.hostname, u.port or (443 if self.tls else 80)

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context()
        if self.insecure:
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        return ctx

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        ctx = self.ssl_context()
        conn = (http.client.HTTPSConnection(self.host, self.port, timeout=30, context=ctx) if ctx
                else http.client.HTTPConnection(self.host, self.port, timeout=30))  # fmt: skip
        headers = {"Content-Type": "application/json"}
        if self.cookie:
            headers["Cookie"] = self.cookie
        try:
            conn.request(method, path, json.dumps(body).encode() if body is not None else None, headers)
            resp = conn.getresponse()
            data = resp.read()
            for k, v in resp.getheaders():
                if k.lower() == "set-cookie" and "=" in v:
                    self.cookie = v.split(";", 1)[0]
        except OSError as exc:
            raise ParticipantError(f"the station's API at {self.url} cannot be reached: {exc}") from None
        finally:
            conn.close()
        try:
            result = json.loads(data) if data else None
        except ValueError:
            result = None
        if resp.status >= 400:
            why = result.get("error") if isinstance(result, dict) else data[:200].decode(errors="replace")
            raise ParticipantError(f"{method} {path}: {resp.status} {why}")
        return result


@dataclass
class Outcome:
    call: str
    sent: int = 0  # packets we sent
    heard: list[bytes] = field(default_factory=list)  # the peer's packets, in the order relayed
    refused: list[dict[str, Any]] = field(default_factory=list)
    state: str = "live"  # the call's state when we left it


async def _ws_connect(api: Api) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, WSConnection]:
    reader, writer = await asyncio.open_connection(api.host, api.port, ssl=api.ssl_context())
    ws = WSConnection(ConnectionType.CLIENT)
    headers = [(b"cookie", (api.cookie or "").encode())]
    writer.write(ws.send(Request(host=f"{api.host}:{api.port}", target="/api/events", extra_headers=headers)))
    await writer.drain()
    while True:
        data = await reader.read(65536)
        if not data:
            raise ParticipantError("the station closed the console WebSocket before accepting it")
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                return reader, writer, ws
            if isinstance(event, RejectConnection):
                raise ParticipantError(f"the station refused the console WebSocket ({event.status_code})")


class Participant:
    def __init__(self, api: Api, line: str, *, say: Callable[[str], None] = lambda s: None) -> None:
        self.api, self.line, self.say = api, line, say

    def login(self, user: str, password: str) -> None:
        self.api.call("POST", "/api/login", {"user": user, "password": password})

    def voice(self) -> dict[str, Any]:
        result: dict[str, Any] = self.api.call("GET", f"/api/lines/{self.line}/voice")
        return result

    async def _poll(self, want: Callable[[dict[str, Any]], Any], what: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = want(await asyncio.to_thread(self.voice))
            if got:
                return got
            await asyncio.sleep(0.1)
        raise ParticipantError(f"timed out after {timeout:g} s waiting for {what}")

    async def ring(self, test_id: str | None, timeout: float) -> str:
        body = {"test_id": test_id} if test_id else {}
        await asyncio.to_thread(self.api.call, "POST", f"/api/lines/{self.line}/ring", body)
        current = await self._poll(lambda v: v["current"] if v["current"] and v["current"]["ours"] else None,
                                   "our ring to be signed", timeout)  # fmt: skip
        self.say(f"ringing the peer (call {current['id'][:12]})")
        return str(current["id"])

    async def pick_up(self, timeout: float) -> str:
        current = await self._poll(
            lambda v: v["current"] if v["current"] and not v["current"]["ours"] and v["current"]["state"] == "ringing"
            else None, "the peer to ring", timeout)  # fmt: skip
        await asyncio.to_thread(self.api.call, "POST", f"/api/lines/{self.line}/pick-up", {"ring_id": current["id"]})
        self.say(f"picked up the peer's call {current['id'][:12]} (from {current['caller']})")
        return str(current["id"])

    async def talk(self, call: str, packets: list[bytes], *, stay: float, hang_up: bool, timeout: float) -> Outcome:
        """Wait until the call is live, join it, send ``packets`` every 20 ms, keep what the peer sends;
        then hang up (``hang_up``) or stay until the call ends (at most ``stay`` s after our audio)."""
        def live(v: dict[str, Any]) -> str | None:
            calls = [c for c in v["calls"] if c["id"] == call]
            state = calls[-1]["state"] if calls else None
            return state if state and state != "ringing" else None

        state = await self._poll(live, "the call to be picked up", timeout)
        out = Outcome(call=call, state=state)
        if state != "live":
            self.say(f"the call was {state}")
            return out
        reader, writer, ws = await _ws_connect(self.api)
        joined = asyncio.Event()
        closed = asyncio.Event()
        over = asyncio.Event()  # the station said the call is no longer live

        async def receive() -> None:
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        return
                    ws.receive_data(data)
                    for event in ws.events():
                        if isinstance(event, BytesMessage):
                            msg = bytes(event.data)
                            if len(msg) > 41 and msg[0] == AUDIO and msg[1:33].hex() == call:
                                out.heard.append(msg[41:])
                        elif isinstance(event, TextMessage):
                            obj = json.loads(event.data)
                            if obj.get("type") == "joined":
                                joined.set()
                            elif obj.get("type") == "audio_refused" and obj.get("reason") == "not_live":
                                over.set()  # the call ended (the peer hung up): not a fault of ours
                            elif obj.get("type") in ("audio_refused", "join_refused"):
                                out.refused.append(obj)
                                if obj["type"] == "join_refused":
                                    joined.set()
                        elif isinstance(event, Ping):
                            writer.write(ws.send(event.response()))
                        elif isinstance(event, CloseConnection):
                            return
            finally:
                closed.set()

        receiver = asyncio.ensure_future(receive())
        try:
            writer.write(ws.send(TextMessage(data=json.dumps({"type": "join", "call": call}))))
            await writer.drain()
            async with asyncio.timeout(10):
                await joined.wait()
            loop = asyncio.get_running_loop()
            start = loop.time()
            for n, data in enumerate(packets):
                # Paced in real time, as a microphone would: packet n leaves at 20 ms * n.
                await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))
                if closed.is_set() or over.is_set():
                    break
                writer.write(ws.send(BytesMessage(data=chunk(call, n, n * 20, data))))
                await writer.drain()
                out.sent += 1
            if hang_up and not closed.is_set() and not over.is_set():
                await asyncio.sleep(0.3)  # the peer's last packets are on their way
                await asyncio.to_thread(self.api.call, "POST", f"/api/lines/{self.line}/hang-up", {"ring_id": call})
                self.say("hung up")
            elif not closed.is_set():
                deadline = loop.time() + stay
                while loop.time() < deadline and not closed.is_set():
                    if await asyncio.to_thread(lambda: live(self.voice())) != "live":
                        break
                    await asyncio.sleep(0.2)
        except OSError as exc:
            raise ParticipantError(f"the station's console WebSocket failed: {exc}") from None
        finally:
            receiver.cancel()
            writer.close()
        try:
            out.state = await asyncio.to_thread(lambda: live(self.voice()) or "?")
        except ParticipantError:
            if closed.is_set():
                raise ParticipantError(f"the station went away mid-call (call {call[:12]}: its console WebSocket "
                                       f"closed after {out.sent} packets and its API does not answer)") from None
            out.state = "unknown (the station cannot be reached)"
        return out


async def join(
    url: str, line: str, user: str, password: str, *, ring: bool, play: np.ndarray[Any, np.dtype[np.int16]],
    record: Path | None, test_id: str | None = None, stay: float = 30.0, hang_up: bool = False,
    timeout: float = 60.0, insecure: bool = False, say: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:  # fmt: skip
    """Take part in one call (ring, or pick up the peer's ring) and return what happened."""
    p = Participant(Api(url, insecure=insecure), line, say=say)
    await asyncio.to_thread(p.login, user, password)
    packets = encode(play)
    call = await (p.ring(test_id, timeout) if ring else p.pick_up(timeout))
    out = await p.talk(call, packets, stay=stay, hang_up=hang_up, timeout=timeout)
    if record is not None:
        write_wav(record, decode(out.heard))
    return {"call": call, "sent": out.sent, "heard": len(out.heard), "state": out.state, "refused": out.refused,
            "record": str(record) if record else None}  # fmt: skip
