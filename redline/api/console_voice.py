"""Voice at the console (issue 16): ring, pick up, decline, hang up, and the audio between a console
and its own station over the console's WebSocket (``/api/events``).

Routes (a mixin of ``app.Api``, like ``console_routes``): ``ring`` and ``pick-up`` are signed by the
logged-in person (CALL_RING, CALL_ANSWER are person-signed, as ACK is); ``decline`` and ``hang-up``
are the station's (CALL_DECLINE, CALL_HANGUP). A ring is refused while the line is not in sync.

Audio (docs/API.md, "Voice"): the browser encodes its microphone with WebCodecs Opus and sends each
encoded chunk as one binary WebSocket message, ``u8 1 || call id (32 bytes) || u32 packet number ||
u32 timestamp (ms) || Opus packet``; the station numbers, hashes and forwards it as an AUDIO frame
(``Station.send_audio``), so what the evidence digests cover is exactly what the browser encoded.
The peer's packets come back to the consoles on the call in the same shape (the sender station's
seq and timestamp). A console is on a call once it said ``{"type": "join", "call": id}`` (after
it rang or picked up); the first console to join with the ``operate`` capability holds the
microphone, and audio from any other is refused. Refused, counted, never fatal: a chunk before
the pick-up or after the end (``not_live``), over ``max_audio_packet_bytes`` (``oversized``), faster
than ``max_audio_packets_per_second`` (``too_fast``), a number not after the last (``duplicate``),
from a console not holding the microphone (``not_talker``), while no path of the line is up
(``no_path``: not sent, so not in the digest either), or not a chunk at all (``malformed``).
The console hears of the first refusal of each reason (``{"type": "audio_refused"}``); the counts
are in the voice view (``console``).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from redline import jsonin, media
from redline.api import app as _app
from redline.api.auth import OPERATE, ApiError, Session
from redline.config import Limits
from redline.errors import EncodingError, LocalProtocolError, NoPathError

if TYPE_CHECKING:
    from starlette.requests import Request

    from redline.ops.voice import VoiceCall
    from redline.session import LineSession
    from redline.station import Station

log = logging.getLogger("redline.api")
AUDIO: Final = 1  # the first byte of a binary WebSocket message that carries one audio packet
HEAD: Final = struct.Struct(">B32sII")  # type, call (the ring's envelope id), packet number, timestamp ms
RELAY_QUEUE: Final = 50  # packets (1 s) waiting for a slow console before the oldest are dropped
MAX_TEXT: Final = 4096  # a console's JSON message
MEDIA_HEAD: Final = len(media.AudioPacket(call="00" * 32, seq=0, ts=0, data=b"").encode())  # the station's header


def _obj(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props, "additionalProperties": False}


_STR = {"type": "string"}
_KEY = {"type": "string", "description": "one per press: a retry with it files nothing more"}
_RING_ID = {"type": "string", "description": "the CALL_RING id or a 6+ hex digit prefix (default: the open call)"}
VOICE_SPECS: tuple[dict[str, Any], ...] = (
    {"method": "POST", "path": "/api/lines/{line}/ring", "handler": "ring", "role": OPERATE,
     "summary": "Ring the peer station (a voice call), signed as the logged-in person; refused unless in sync",
     "body": _obj([], test_id=_STR, idempotency_key=_KEY)},
    {"method": "POST", "path": "/api/lines/{line}/pick-up", "handler": "pick_up", "role": OPERATE,
     "summary": "Pick up the peer's ringing call, signed as the logged-in person",
     "body": _obj([], ring_id=_RING_ID)},
    {"method": "POST", "path": "/api/lines/{line}/decline", "handler": "decline", "role": OPERATE,
     "summary": "Decline the peer's ringing call",
     "body": _obj([], ring_id=_RING_ID, reason=_STR, idempotency_key=_KEY)},
    {"method": "POST", "path": "/api/lines/{line}/hang-up", "handler": "hang_up", "role": OPERATE,
     "summary": "Hang up the live call (or cancel our own ring)",
     "body": _obj([], ring_id=_RING_ID, idempotency_key=_KEY)},
)  # fmt: skip


def chunk(call: str, number: int, ts: int, data: bytes) -> bytes:
    """One audio WebSocket message (both directions)."""
    return HEAD.pack(AUDIO, bytes.fromhex(call), number & 0xFFFFFFFF, ts & 0xFFFFFFFF) + data


@dataclass(eq=False)
class VoiceConn:
    """One console WebSocket's part in the voice calls."""

    session: Session
    out: asyncio.Queue[bytes | dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(RELAY_QUEUE))
    joined: str | None = None  # the call this console is on
    last: int = -1  # the browser's last packet number taken
    window: tuple[int, int] = (0, 0)  # (second, chunks in it)
    told: set[str] = field(default_factory=set)  # refusal reasons already said to this console

    def put(self, item: bytes | dict[str, Any]) -> bool:
        if self.out.full():
            if not isinstance(item, bytes):
                return False
            self.out.get_nowait()  # a slow console loses the oldest audio, never the newest
        self.out.put_nowait(item)
        return True


class ConsoleVoice:
    """Which console is on which call and holds its microphone; the counts of what was refused."""

    def __init__(self, station: Station) -> None:
        self.station = station
        self.conns: set[VoiceConn] = set()
        self.talker: dict[str, VoiceConn] = {}  # call id -> the console whose microphone is on it
        self.counters: dict[str, dict[str, int]] = {}  # line (or "?": no such call) -> reason -> count

    def connect(self, session: Session) -> VoiceConn:
        conn = VoiceConn(session)
        if not self.conns:
            self.station.audio_listeners.append(self._relay)
        self.conns.add(conn)
        return conn

    def disconnect(self, conn: VoiceConn) -> None:
        self.conns.discard(conn)
        for call, c in list(self.talker.items()):
            if c is conn:
                del self.talker[call]
        if not self.conns and self._relay in self.station.audio_listeners:
            self.station.audio_listeners.remove(self._relay)

    def _count(self, line: str, what: str) -> None:
        counts = self.counters.setdefault(line, {})
        counts[what] = counts.get(what, 0) + 1

    def _call(self, call_id: str) -> tuple[str, VoiceCall] | None:
        for line, ops in self.station.ops.items():
            call = ops.voice.calls.get(call_id)
            if call is not None:
                return line, call
        return None

    def _relay(self, line: str, packet: media.AudioPacket) -> None:
        """The peer's packet, in order, to every console on its call."""
        message = chunk(packet.call, packet.seq, packet.ts, packet.data)
        for conn in self.conns:
            if conn.joined == packet.call:
                conn.put(message)
                self._count(line, "relayed")

    async def take(self, conn: VoiceConn, message: Mapping[str, Any]) -> None:
        """One message from a console: a JSON ``join``/``leave``, or a binary audio chunk."""
        if message.get("bytes") is not None:
            await self._audio(conn, message["bytes"])
        elif message.get("text") is not None:
            self._control(conn, message["text"])

    def _control(self, conn: VoiceConn, text: str) -> None:
        try:
            msg = jsonin.loads(text) if len(text) <= MAX_TEXT else None
        except EncodingError:
            msg = None  # as any other malformed message: ignored, and nothing logged
        if not isinstance(msg, dict):
            return
        if msg.get("type") == "leave":
            self._leave(conn)
        elif msg.get("type") == "join" and isinstance(msg.get("call"), str):
            found = self._call(msg["call"])
            if found is None or found[1].state not in ("ringing", "live"):
                conn.put({"type": "join_refused", "call": msg["call"], "reason": "no such call ringing or live"})
                return
            self._leave(conn)
            conn.joined, conn.last = found[1].id, -1
            talking = conn.session.can(OPERATE) and self.talker.setdefault(conn.joined, conn) is conn
            conn.put({"type": "joined", "call": conn.joined, "talking": talking})

    def _leave(self, conn: VoiceConn) -> None:
        if conn.joined is not None and self.talker.get(conn.joined) is conn:
            del self.talker[conn.joined]
        conn.joined = None

    def _refuse(self, conn: VoiceConn, line: str, reason: str, call: str | None, number: int | None) -> None:
        self._count(line, reason)
        if reason not in conn.told:
            conn.told.add(reason)
            conn.put({"type": "audio_refused", "reason": reason, "call": call, "packet": number})

    async def _audio(self, conn: VoiceConn, data: bytes) -> None:
        limits = self.station.limits
        if len(data) < HEAD.size + 1 or data[0] != AUDIO:
            on = self._call(conn.joined) if conn.joined is not None else None  # counted on the console's line
            self._refuse(conn, on[0] if on is not None else "?", "malformed", None, None)
            return
        _, raw_call, number, _ts = HEAD.unpack_from(data)
        call_id, payload = raw_call.hex(), data[HEAD.size :]
        found = self._call(call_id)
        line = found[0] if found is not None else "?"
        if len(payload) > max_payload(limits):
            self._refuse(conn, line, "oversized", call_id, number)
            return
        if found is None or found[1].state != "live" or self.station.ops[line].voice.live() is not found[1]:
            self._refuse(conn, line, "not_live", call_id, number)
            return
        if conn.joined != call_id or self.talker.get(call_id) is not conn or not conn.session.can(OPERATE):
            self._refuse(conn, line, "not_talker", call_id, number)
            return
        if number <= conn.last:
            self._refuse(conn, line, "duplicate", call_id, number)
            return
        second = int(asyncio.get_running_loop().time())
        start, n = conn.window if conn.window[0] == second else (second, 0)
        if n >= limits.max_audio_packets_per_second:
            self._refuse(conn, line, "too_fast", call_id, number)
            return
        conn.window, conn.last = (start, n + 1), number
        try:
            await self.station.send_audio(line, payload)
        except NoPathError:  # every path is down: the console hears of it, nothing is hashed
            self._refuse(conn, line, "no_path", call_id, number)
            return
        except (LocalProtocolError, ValueError):  # the call ended meanwhile
            self._refuse(conn, line, "not_live", call_id, number)
            return
        self._count(line, "accepted")


def max_payload(limits: Limits) -> int:
    """The largest Opus packet a console may send: its AUDIO frame must fit max_audio_packet_bytes."""
    return limits.max_audio_packet_bytes - MEDIA_HEAD


class VoiceHandlers:
    """Mixed into ``app.Api``: the voice routes over the same station, sessions and checks."""

    station: Station
    voice: ConsoleVoice

    if TYPE_CHECKING:

        def line(self, line: str) -> LineSession: ...

        def _writable(self, line: LineSession) -> None: ...

        async def _signed(
            self, session: Session, line: LineSession, kind: str, content: dict[str, Any], *,
            key_field: str | None = None, idem: str | None = None,
        ) -> dict[str, Any]: ...  # fmt: skip

        async def act_once(
            self, body: dict[str, Any], line: LineSession, kind: str, content: dict[str, Any], *,
            prio: str | None = None,
        ) -> dict[str, Any]: ...  # fmt: skip

    def _voice_call(
        self, line: LineSession, body: dict[str, Any], *, want: str, ours: bool | None, retry_of: str | None = None
    ) -> VoiceCall:
        """The call a voice route acts on: the one named, else the open one; 409 if it is not
        ``want`` (ringing, or open: ringing or live). ``retry_of``: the request's idempotency key.
        If it is accepted already and this request is about the call its first submit named (named
        again, or the only one it can mean: none is open), that call whatever its state since (the
        session answers with the first acceptance); any other call is checked as for a first submit,
        and its content, not the first one's, reaches the session, which refuses it under the key."""
        voice = self.station.ops[line.line].voice
        ring_id = _app._opt_str(body, "ring_id")
        held = None if retry_of is None else self.station.ledger.outbox_by_idem(line.line, retry_of)
        ring = held.content.get("ring") if held is not None else None
        first = ring.get("id") if isinstance(ring, dict) else None  # the call the key's first submit named
        if ring_id is None and not voice.open_calls() and first is not None:
            ring_id = first  # nothing else is open: the retry names its first submit's call
        if ring_id is None:
            open_calls = voice.open_calls()
            if not open_calls:
                raise ApiError(409, "no voice call is ringing or live on this line")
            call = open_calls[-1]
        else:
            found = [c for c in voice.calls.values() if len(ring_id) >= 6 and c.id.startswith(ring_id)]
            if len(found) != 1:
                raise ApiError(404, f"no voice call {ring_id[:64]!r} on this line")
            call = found[0]
        if call.id == first:  # a retry about the same call: its state moved on with the first submit
            return call
        states = ("ringing",) if want == "ringing" else ("ringing", "live")
        if call.state not in states:
            by = f" by {call.answered_by}" if call.state == "live" and call.answered_by else ""
            raise ApiError(409, f"that call is {call.state}{by}")
        if ours is not None and call.ours != ours:
            raise ApiError(409, "that is our own ring: hang up to cancel it" if call.ours
                           else "the peer's ringing call is picked up or declined, not hung up")  # fmt: skip
        return call

    async def ring(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        body = await _app._body(request, 4096)
        idem = _app._idem(body, "CALL_RING", session.name)
        # A retry of a ring already filed is not judged by the state its first submit changed (the
        # call rings now): the session answers it with the first acceptance, or refuses other content.
        if not self.station.is_retry(line.line, idem):
            if not (line.record.active and line.link.synced):
                raise ApiError(409, "the line is not in sync: voice calls are refused until it is")
            if self.station.ops[line.line].voice.open_calls():
                raise ApiError(409, "a voice call is already ringing or live on this line; hang up first")
        content: dict[str, Any] = {}
        if (test_id := _app._opt_str(body, "test_id")) is not None:
            content["test"] = test_id
        return await self._signed(session, line, "CALL_RING", content, idem=idem)

    async def pick_up(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        body = await _app._body(request, 4096)
        call = self._voice_call(line, body, want="ringing", ours=False)
        # One pick-up per person and call however often it is pressed (the key is the ring's id).
        return await self._signed(session, line, "CALL_ANSWER", {"ring": call.id}, key_field="ring")

    async def decline(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        body = await _app._body(request, 4096)
        call = self._voice_call(line, body, want="ringing", ours=False, retry_of=_app._idem(body, "CALL_DECLINE"))
        content: dict[str, Any] = {"ring": call.id}
        reason = _app._opt_str(body, "reason")
        if reason is not None and reason.strip():
            content["reason"] = reason.strip()[:500]
        return await self.act_once(body, line, "CALL_DECLINE", content, prio="priority")

    async def hang_up(self, request: Request, session: Session) -> dict[str, Any]:
        line = self.line(request.path_params["line"])
        body = await _app._body(request, 4096)
        call = self._voice_call(line, body, want="open", ours=None, retry_of=_app._idem(body, "CALL_HANGUP"))
        if call.state == "ringing" and not call.ours:
            raise ApiError(409, "the peer's ringing call is picked up or declined, not hung up")
        content = self.station.ops[line.line].voice.hangup_content(call)
        return await self.act_once(body, line, "CALL_HANGUP", content, prio="priority")
