"""The running station: wires ledger, sessions, transport and the local control socket.

The only place that knows all layers. It owns the clock (monotonic for deadlines, wall for
claims) and the scheduler: a tick every 100 ms (a line's session only when its heartbeats or
timers fall due, or after input on it), and a group-commit flush of the lines with input after
each burst of it. One asyncio thread does everything, so the ledger has exactly one writer.

Who dials whom: the station that accepted an invitation (the joiner) dials every address of the
inviter, one path per address; the inviter only listens. So each path is one TLS connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import logging
import re
import sqlite3
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from redline import canonical, control, kinds, media, pairing, persons, readmodel, recording, transport, views
from redline import keys as keyfiles
from redline.alarmtext import TEMPLATES, AlarmCode, Param, Value, render
from redline.ceremony import Ceremony
from redline.clock import Clock, SettableClock, SystemClock
from redline.config import StationConfig, parse_hostport
from redline.display import shown
from redline.envelope import KINDS, PRIORITIES, Envelope, RawEnvelope, split
from redline.errors import (
    ConnectionClosedError,
    FencedError,
    LimitError,
    LocalProtocolError,
    NoPathError,
    PairingError,
    ReceiptTimeoutError,
    RedlineError,
    RemoteProtocolError,
    StorageError,
)
from redline.home import StationDir, StationKeys
from redline.identity import SignedCert
from redline.ledger.interface import LedgerStore
from redline.ledger.model import LineRecord
from redline.ledger.stores import shown_url
from redline.ops.engine import NOT_KEPT, NOTICES_PAGE_MAX, LineOps, check_operator_content
from redline.ops.model import Alarm, Entry, Intent
from redline.ops.views import (
    VIEWS,
    CallPairView,
    CallRecordView,
    CallRequestView,
    FlashView,
    LineTestsView,
    LiveAudioView,
    MessageView,
    NoticeDetail,
    NoticesPage,
    RefusedView,
    TranslationView,
    VoiceView,
)
from redline.persons import PERSON_SIGNED_KINDS, parse_roster
from redline.protocol.events import Action, Close, Send
from redline.protocol.framing import FrameType
from redline.protocol.link import MAX_ADDRESSES
from redline.protocol.state import PathState
from redline.session import LineSession, PathStatus

if TYPE_CHECKING:
    from redline.standby import Pair  # psycopg loads only for a station on PostgreSQL

log = logging.getLogger("redline.station")
MAX_ALARM_CHARS = 2000
MAX_ALARM_RECORDS = 10  # records of a list param (the conflicts a notice conflict alarm names: 3 today)
MAX_IDEM_CHARS = 256  # an API key (128) with its scope: "api:", a kind and a person name (63) between colons
TICK = 0.1
# users/ is read afresh at least this often even when its stamp has not changed (persons.users_stamp:
# a same-size rewrite within the file system's clock tick keeps the stamp).
ROSTER_REREAD_SECONDS = 1.0
ALARMS_KEPT = 200  # rows of Station.alarms (status and the console show the latest)
# The flash, tests, requests, translations and calls views are paged as the notices view is: a peer's whole
# history (each text up to max_body_bytes) must not go out at every console refresh. A page holds
# what is still open first (a FLASH not acknowledged, a test pending, a request open), then the rest,
# newest first; it is shown in time order. Texts in a page are cut (the log and ``show`` have them whole).
VIEW_PAGE = 100
VIEW_PAGE_MAX = NOTICES_PAGE_MAX
VIEW_TEXT_CHARS = 2000
_ALARM_VARIES = re.compile(r"[0-9a-f]{8,}|\d+")  # what differs between alarms of one kind: seqs, ids, counts
_HEARTBEAT = bytes([FrameType.HEARTBEAT])
_T = TypeVar("_T")


class Station:
    def __init__(
        self, home: StationDir, *, on_alarm: Callable[[str, str, str], None] | None = None, clock: Clock | None = None,
        ha: Pair | None = None,
    ) -> None:  # fmt: skip
        self.home = home
        home.require()
        # Before anything reads or repairs the folder (a key promotion a crash interrupted, the
        # store's raw check, call recordings left open): one process serves a station at a time.
        self._hold = home.hold("redline serve")
        try:
            self._open(home, on_alarm, clock, ha)
        except BaseException:
            self._hold.release()
            raise

    def _open(
        self, home: StationDir, on_alarm: Callable[[str, str, str], None] | None, clock: Clock | None, ha: Pair | None
    ) -> None:
        home.check_private()
        self.config: StationConfig = home.config()
        self.keys: StationKeys = home.load_keys()
        # A TLS rotation under way (redline/keys.py): the next certificate (DER) and the root's over it.
        self.tls_next: tuple[bytes, SignedCert] | None = keyfiles.pending_tls(home.keys)
        self.ledger: LedgerStore = home.open_ledger()
        self.ha = ha  # one process of an HA pair on PostgreSQL (standby.py): writes only under its lease
        if ha is not None:
            ha.attach(self.ledger)
        self.limits = self.config.limits
        self.sessions: dict[str, LineSession] = {}
        self.alarms: list[dict[str, Any]] = []
        self._alarm_kinds: list[tuple[str, str, str]] = []  # each row's kind (_drop_alarm), in the same order
        self._alarm_counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self._on_alarm = on_alarm
        self._alarm_queue: list[tuple[str, str, str]] = []
        self._conns: dict[tuple[str, str], transport.Connection] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._draining: set[transport.Connection] = set()  # watched by a task of their own (_drain_later)
        self._servers: list[transport.Server] = []
        self._flush_scheduled = False
        self._flush_all = False  # the scheduled flush covers every line, not only ``_dirty``
        self._dirty: dict[str, None] = {}  # lines with input since the last flush, in order
        # Each line's next tick as its session computed it (the session it was for, monotonic s,
        # wall ms): the ticker skips a line until then, or until input on it drops the entry.
        self._tick_due: dict[str, tuple[LineSession, float, float]] = {}
        self._roster: tuple[dict[str, Any], dict[str, persons.Person] | None] = ({"users": []}, None)  # last read
        self._roster_error: str | None = None
        self._roster_stamp: persons.Stamp | None = None  # users/ when last read (None: read it)
        self._roster_read_at = 0.0  # monotonic s
        self.ceremony = Ceremony(self)
        self._stopping = asyncio.Event()
        self._receipt_waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self.ops: dict[str, LineOps] = {}
        # (session, kind, prio, content, idem, what the station filled in, the caller's future)
        self._accepts: list[
            tuple[LineSession, str, str, dict[str, Any], str | None, frozenset[str], asyncio.Future[int]]
        ] = []
        # Injected: a demo or test station runs on a SettableClock (control op "clock"), a real one
        # on the system clock, in-memory tests on a simulated one.
        self.clock: Clock = clock or SystemClock()
        self._skewed: set[str] = set()  # lines whose peer clock is off by more than max_clock_skew_seconds
        self.wire_bytes: dict[tuple[str, str, str], int] = {}  # (line, path, sent|received) -> bytes, for metrics
        # Voice (media.py): the audio of each call, outside the ledger; who hears it. Keyed by call, not
        # by line: an ended call's audio waits here for its CALL_AUDIO (after the peer's receipt of our
        # hang-up) while the next call may already be live, and each call's digests are its own.
        self.media: dict[str, dict[str, media.CallMedia]] = {}  # line -> call id -> its audio, until filed
        self._last_media: dict[str, media.CallMedia] = {}  # line -> audio of its latest call (the voice view)
        self.audio_dropped: dict[str, int] = {}  # line -> AUDIO frames for no call live here
        self.audio_listeners: list[Callable[[str, media.AudioPacket], None]] = []
        self.recordings: dict[str, recording.CallRecording] = {}  # call id -> its recording, while it runs
        self._restored: dict[str, media.CallMedia] = {}  # call id -> audio of a call this process did not see end
        self._pathless_since: dict[str, int] = {}  # line -> ms: no path up since, during a live call
        # Lines whose session could not be rebuilt from the store after a write failed (the store
        # unreachable: a database failing over): their memory is ahead of the store, so nothing may
        # use it; each use first tries to rebuild it (``_rebuilt``) and is refused while it cannot.
        self._stale: set[str] = set()
        for record in self.ledger.lines():
            self._open_session(record)

    # -- sessions ----------------------------------------------------------------------------------
    def wall(self) -> int:
        """This station's clock (ms since 1970, UTC): what it claims in envelopes and runs ops on."""
        return self.clock.wall()

    def _open_session(self, record: LineRecord) -> LineSession:
        session = LineSession(
            self.ledger, self.keys, record, lang=self.config.lang, limits=self.limits,
            alarm=functools.partial(self.alarm, record.line),
        )  # fmt: skip
        if self.ha is not None:  # the peer alarms when this term rises: our pair failed over (§8.3)
            session.link.term = self.ha.term
        if record.we_invited:  # the peer dials us: it learns where at every HELLO, not only from the token
            told = [a for a in self.config.addresses if parse_hostport(a)[0] not in ("0.0.0.0", "::", "")]
            session.link.addresses = tuple(told[:MAX_ADDRESSES])  # a wildcard listen address reaches nobody
        self.sessions[record.line] = session
        ops = LineOps(us=self.keys.fingerprint, peer=record.peer, limits=self.limits, since=record.created_at,
                      roots={True: self.keys.root_public, False: bytes.fromhex(record.peer_root)},
                      root_for=session.gate.root_for)  # fmt: skip
        self.ops[record.line] = ops
        # Rebuild pending tests, escalations and requests from the ledger (guarantee 8): replay
        # quietly, then the first tick fires whatever is overdue. Only what ops acts on is read
        # (every kind but plain TEXT, through an index), and for our own of those only the first
        # receipt covering each: what a replay of everything would tell ops, without reading a
        # million envelopes and receipts (tests/test_startup.py checks the two agree).
        ours: list[int] = []
        for sender, seq, raw, stored_at in self.ledger.stored_for_ops(record.line):
            if sender == self.keys.fingerprint:
                ours.append(seq)
            entry = _entry(split(raw), sender == self.keys.fingerprint, stored_at)
            try:
                ops.observe(entry)
            except Exception:  # as live (_observe): one envelope ops cannot read never stops a start
                a = self._not_interpreted(record.line, entry.kind, seq, stored_at)
                self.alarm(record.line, a.level, a.code, **a.params)
        for seq, stored_at in self.ledger.receipts_covering(record.line, record.peer, ours):
            ops.receipted(seq, stored_at)
        session.on_stored = functools.partial(self._observe, record.line)
        session.on_receipted = ops.receipted
        session.watch_accepted(ops.accepted)  # our ACK waiting unsigned stops its FLASH's escalation
        self._recover_calls(record.line, record.peer)
        return session

    def _recover_calls(self, line: str, peer: str) -> None:
        """Calls picked up whose CALL_AUDIO we never filed: this process did not see them end (kill -9,
        power cut), so their audio here is over. Their digests are taken from what the recordings
        kept, sealed now; the call is hung up and its CALL_AUDIO filed ``interrupted`` (ops/voice.py)."""
        for call in self.ops[line].voice.calls.values():
            if call.answer is None or True in call.audio:
                continue
            running = self.recordings.pop(call.id, None)
            if running is not None:  # the session rebuilt in this process (_restart_session): close it first
                running.seal()
            packets, problems = recording.recover(self.home.path, line, call.id, self.keys.fingerprint, peer)
            m = media.CallMedia(
                call=call.id, us=self.keys.fingerprint, peer=peer, started_at=call.answer.stored_at,
                max_bytes=self.limits.max_audio_packet_bytes, max_rate=self.limits.max_audio_packets_per_second,
            )  # fmt: skip
            m.restore(packets["sent"], packets["received"])
            call.interrupted = True
            self._restored[call.id] = m
            for p in problems:
                self.alarm(line, "alarm", "recording.unreadable", seq=call.ring.seq, problem=p)

    def _observe(self, line: str, env: Envelope, ours: bool, stored_at: int) -> None:
        """Interpret a stored envelope (runs inside the ledger batch that stores it). Storage comes
        first: a fault in interpretation is alarmed and never rolls the batch back, so it can
        never stop a direction of the line from being stored and receipted."""
        h = env.header
        try:
            entry = Entry(
                sender=h.sender, ours=ours, seq=h.seq, id=env.id, kind=h.kind, prio=h.prio, sent_at=h.sent_at,
                stored_at=stored_at, lang=h.lang, content=env.content(), seen=h.seen_seq,
            )  # fmt: skip
            alarms = self.ops[line].observe(entry)
        except Exception:  # a bug in ops/ on hostile content must not lose the envelope: it is stored
            alarms = [self._not_interpreted(line, h.kind, h.seq, stored_at)]
        for a in alarms:
            self.alarm(line, a.level, a.code, **a.params)

    @staticmethod
    def _not_interpreted(line: str, kind: str, seq: int, stored_at: int) -> Alarm:
        """What a stored envelope ops could not interpret (a bug in ops/, on content the peer chose)
        says, live or at start: logged with the traceback, stored, not acted on."""
        log.exception("operations could not interpret %s seq %d of line %s", kind, seq, line[:8])
        return Alarm(level="alarm", code="ops.internal_error", params={"kind": kind, "seq": seq}, at=stored_at)

    def alarm(self, line: str, level: str, code: AlarmCode, /, **params: Param) -> None:
        """Record alarm ``code`` (redline/alarmtext.py) with ``params``: the row carries them and
        the English text they render. A repeat of the latest one of the line (same level and text)
        counts up instead of adding a row, and a flood of one kind pushes out only its own kind
        (``_drop_alarm``), so a peer cannot flood the list. The sinks (terminal, log,
        WebSocket) run later, outside whatever ledger batch raised the alarm, and their failure is
        logged and never propagates."""
        # One line, bounded, whatever peer text it quotes: an alarm can never forge another alarm's
        # line on a terminal, nor hold a megabyte; each text param is bounded the same way (the
        # console renders the params), a list param to MAX_ALARM_RECORDS records and each text of
        # them too (the English then counts the records cut as not named), and the text once more.
        params = {k: tuple({rk: _bounded(rv) for rk, rv in r.items()} for r in v[:MAX_ALARM_RECORDS])
                  if isinstance(v, tuple) else _bounded(v) for k, v in params.items()}  # fmt: skip
        text = shown(render(code, params), MAX_ALARM_CHARS, newlines=False)
        if code not in TEMPLATES:  # a caller outside the package, which mypy does not check: its own text
            params = {}
        now = self.wall()
        last = next((a for a in reversed(self.alarms) if a["line"] == line), None)
        if last is not None and last["level"] == level and last["text"] == text:
            last["count"] = last.get("count", 1) + 1
            last["last"] = now
            return
        self.alarms.append({"time": now, "line": line, "level": level, "code": code if code in TEMPLATES else "text",
                            "params": params, "text": text, "count": 1, "last": now})  # fmt: skip
        # The kind is the code: never the text, which carries the peer's words (a call request's
        # subject), so a peer varying them would make each row a kind of its own, and the oldest row
        # (an equivocation) would go first. Only a caller's own text (no code) is kinded by its words.
        kind = (line, level, code if code in TEMPLATES else _ALARM_VARIES.sub("#", text))
        self._alarm_kinds.append(kind)
        self._alarm_counts[kind] += 1
        if len(self.alarms) > ALARMS_KEPT:
            self._drop_alarm()
        self._alarm_queue.append((line, level, text))
        if len(self._alarm_queue) == 1:
            try:
                asyncio.get_running_loop().call_soon(self._deliver_alarms)
            except RuntimeError:  # no loop (a tool using the station synchronously): deliver now
                self._deliver_alarms()

    def _drop_alarm(self) -> None:
        """Keep ``ALARMS_KEPT`` rows by dropping the oldest of the most numerous kind of alarm (its
        code, on its line and level). A flood of one kind, such as refusals each naming a seq the
        peer chose or call requests each with a subject of its own, then pushes out only its own
        kind, not an equivocation or a missed FLASH raised before it (which 200 newer rows of any one
        kind used to push out)."""
        worst = max(self._alarm_counts, key=self._alarm_counts.__getitem__)
        i = self._alarm_kinds.index(worst)
        del self.alarms[i], self._alarm_kinds[i]
        self._alarm_counts[worst] -= 1
        if not self._alarm_counts[worst]:
            del self._alarm_counts[worst]

    def _deliver_alarms(self) -> None:
        queue, self._alarm_queue = self._alarm_queue, []
        for line, level, text in queue:
            try:
                log.log(logging.WARNING if level != "info" else logging.INFO, "%s: %s", line[:8], text,
                        extra={"line": line, "event": "alarm", "alarm_level": level})  # fmt: skip
                if self._on_alarm:
                    self._on_alarm(line, level, text)
            except Exception:  # a broken sink never stops storage or the line
                log.exception("an alarm sink failed")

    def _pins(self) -> list[bytes]:
        """The peers' TLS certificates accepted now (two for a line whose peer rotates its TLS key)."""
        return [der for s in self.sessions.values() for der, _ in s.tls_pins()]

    def _session_for_spki(self, spki: str | None) -> LineSession | None:
        for s in self.sessions.values():
            if any(h == spki for _, h in s.tls_pins()):
                return s
        return None

    # -- running -------------------------------------------------------------------------------------
    async def start(self) -> None:
        control_socket = await control.listen(self, self.home.control_path)  # first: it may fail
        for addr in self.config.listen:
            host, port = parse_hostport(addr)
            server = await transport.Server.start(
                host, port, server_cert=self.home.keys / "tls.crt", server_key=self.home.keys / "tls.key",
                pins=self._pins, on_connection=functools.partial(self._inbound, addr), limits=self.limits,
            )  # fmt: skip
            self._servers.append(server)
        for session in self.sessions.values():
            self._dial_paths(session)
        self._spawn(self._ticker())
        self._spawn(control.serve(control_socket))
        if self.ha is not None:
            self._spawn(self.ha.keep(self))

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _dial_paths(self, session: LineSession) -> None:
        if session.record.we_invited:
            return
        for addr in session.record.paths:
            self._dial_path(session, addr)

    def _dial_path(self, session: LineSession, addr: str) -> None:
        pins = _PeerPins(self, session.line)  # read at each dial: a TLS rotation moves them
        host, port = parse_hostport(addr)
        connect = functools.partial(
            transport.dial, host, port, cert=self.home.keys / "tls.crt", key=self.home.keys / "tls.key",
            pins=pins, limits=self.limits,
        )  # fmt: skip
        self._spawn(
            transport.keep_connected(
                connect, functools.partial(self._run_path, session.line, addr), limits=self.limits,
                on_down=functools.partial(self._path_failed, session.line, addr),
            )
        )

    def _path_failed(self, line: str, path: str, message: str, delay: float) -> None:
        session = self.sessions.get(line)
        if session is not None:
            status = session.paths.setdefault(path, PathStatus())
            if message.endswith(" closed") and status.reason and not status.reason.startswith("connection closed"):
                message = status.reason.split("; redialling")[0]  # keep why it closed, not just that it did
            status.up, status.reason = False, f"{message}; redialling in {delay:.1f} s"
            self._tick_due.pop(line, None)  # a path known down: the line-down alarm's clock may start

    async def _inbound(self, listen_addr: str, conn: transport.Connection) -> None:
        session = self._session_for_spki(conn.peer_spki)
        if session is None:
            return
        await self._run_path(session.line, listen_addr, conn)

    async def _run_path(self, line: str, path: str, conn: transport.Connection) -> None:
        """Feed one connection's frames to its line until it closes."""
        if self.ha is not None and not self.ha.may_serve(self):  # a deposed process serves no path
            conn.abort()
            return
        if not self._rebuilt(line):  # memory ahead of an unreadable store: no path until it is rebuilt
            conn.abort()
            return
        session = self.sessions[line]
        session.tls_seen(conn.peer_spki)
        old = self._conns.get((line, path))
        if old is not None:
            old.abort()
        self._conns[(line, path)] = conn
        reason = "connection closed"
        try:
            self._tick_due.pop(line, None)
            await self._perform(session, session.path_up(path, self.clock.monotonic(), self.wall()))
            while not conn.closed:
                try:
                    payload = await conn.recv()
                except RemoteProtocolError as exc:  # a frame refused by its length: the peer is told why
                    await self._perform(session, session.refused(path, str(exc), self.wall()))
                    raise
                # transport strips the length prefix; the sans-IO decoder wants the whole frame
                data = len(payload).to_bytes(4, "big") + payload
                self.wire_bytes[(line, path, "received")] = self.wire_bytes.get((line, path, "received"), 0) + len(data)
                if payload[:1] == bytes([FrameType.AUDIO]):
                    await self._audio_in(session, path, payload[1:])
                    continue
                was_open = session.link.paths.get(path) is PathState.OPEN
                actions = session.receive(path, data, self.clock.monotonic(), self.wall())
                await self._perform(session, actions, reading=conn)
                if payload[:1] == _HEARTBEAT:
                    # A heartbeat moves the path's deadlines later and measures the peer's clock:
                    # nothing to store, nothing due sooner. An error in it closes the path.
                    self._watch_skew(session)
                    continue
                self._tick_due.pop(line, None)
                while session.new_paths:  # the peer's HELLO named addresses the line did not dial yet
                    self._dial_path(session, session.new_paths.pop(0))
                if not was_open and session.link.paths.get(path) is PathState.OPEN:
                    await self._audio_resend(session, path)
                self._wake_receipt_waiters(session)  # the peer's verified receipt is what they wait for
                self._schedule_flush(session)
            if conn.broken is not None:  # seen by a drain (this reader's or _drain_later's), not by recv
                raise ConnectionClosedError(conn.broken)
        except StorageError as exc:
            self._storage_failed(session, exc)
        except RedlineError as exc:
            reason = str(exc)
            log.warning("path %s of line %s closed: %s", path, line[:8], exc,
                        extra={"line": line, "event": "path_closed"})  # fmt: skip
        finally:
            if self._conns.get((line, path)) is conn:
                del self._conns[(line, path)]
                self._tick_due.pop(line, None)
                await self._perform(session, session.path_down(path, reason, self.wall()))
            conn.close()

    async def _perform(
        self, session: LineSession, actions: list[Action], *, reading: transport.Connection | None = None
    ) -> None:
        """``_perform_soon``, then, for a path's reader (``reading``: the connection it reads), wait
        until that path has taken what was written to it: a reader reads no faster than its own
        path takes its answers (back-pressure), and waits on no other path."""
        if self._perform_soon(session, actions, reading=reading) and reading is not None:
            await self._drain(reading)

    def _write_actions(self, session: LineSession, actions: list[Action]) -> list[transport.Connection]:
        """``_perform`` without the wait: write (and close) now; the connections written to and left open."""
        touched: dict[str, transport.Connection] = {}
        burst: dict[str, list[bytes]] = {}
        for act in actions:
            conn = self._conns.get((session.line, act.path))
            if conn is None or conn.closed:
                continue
            if isinstance(act, Send):
                burst.setdefault(act.path, []).append(act.data[4:])  # transport adds its own length prefix
                key = (session.line, act.path, "sent")
                self.wire_bytes[key] = self.wire_bytes.get(key, 0) + len(act.data)
                touched[act.path] = conn
            elif isinstance(act, Close):
                self._write_burst(conn, burst.pop(act.path, []))
                # Not waited on below: a closed connection's drain fails, and the abort that failure
                # brings would drop a final ERROR frame still queued; the abort in 1 s is its own.
                touched.pop(act.path, None)
                log.warning("closing path %s of line %s: %s", act.path, session.line[:8], act.reason,
                            extra={"line": session.line, "event": "path_closing"})  # fmt: skip
                conn.close()  # lets a final ERROR frame go out; a silent (black-holed) peer never
                asyncio.get_running_loop().call_later(1.0, conn.abort)  # answers the TLS close
        for path, payloads in burst.items():
            self._write_burst(touched[path], payloads)
        return list(touched.values())

    def _perform_soon(
        self, session: LineSession, actions: list[Action], *, reading: transport.Connection | None = None
    ) -> bool:
        """Write every frame of a burst now, so frames keep the order the link chose: each path's
        frames as one write (``write_frames``), before a Close of that path. Nothing here waits for
        a path to take them: a path that has not taken everything (a stalled or black-holed one
        backs up until it is found dead) is watched by one task of its own (``_drain_later``), so it
        holds up no sender, no other path or line, and no tick, which is what finds it dead.
        Returns whether ``reading``'s path has not taken everything (``_perform`` waits on it)."""
        own = False
        for conn in self._write_actions(session, actions):
            if conn.must_drain():
                if conn is reading:
                    own = True
                else:
                    self._drain_later(conn)
        return own

    def _drain_later(self, conn: transport.Connection) -> None:
        """Wait for ``conn`` to take its frames in a task, one per connection however many bursts
        back up there (aborted if it breaks meanwhile)."""
        if conn not in self._draining:
            self._draining.add(conn)
            self._spawn(self._drain(conn)).add_done_callback(lambda _task: self._draining.discard(conn))

    @staticmethod
    async def _drain(conn: transport.Connection) -> None:
        try:
            await conn.drain()
        except RedlineError:
            conn.abort()

    @staticmethod
    def _write_burst(conn: transport.Connection, payloads: list[bytes]) -> None:
        if payloads:
            try:
                conn.write_frames(payloads)
            except RedlineError:  # a frame over the limit, or the connection closed meanwhile
                conn.abort()

    def _schedule_flush(self, session: LineSession | None = None) -> None:
        """Flush ``session``'s line soon (every line: None), with whatever else is asked meanwhile."""
        if session is None:
            self._flush_all = True
        else:
            self._dirty[session.line] = None
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_scheduled_lines)

    def _flush_scheduled_lines(self) -> None:
        """The lines with input since the last flush (with 100 lines, a heartbeat's burst of input
        on one no longer flushes the 99 others), or every line after a tick. A plain callback, not
        a task: with one message in flight, a task per flush was a loop turn more per message."""
        self._flush_scheduled = False
        dirty, every = self._dirty, self._flush_all
        self._dirty, self._flush_all = {}, False
        for session, actions in self._flush_lines(None if every else dirty):
            self._perform_soon(session, actions)
        for line in dirty:  # what was stored (by this flush or another) may make a tick due sooner
            self._tick_due.pop(line, None)

    async def _flush(self, lines: Collection[str] | None = None) -> None:
        """Group commit: everything that arrived in this burst shares one fsync. ``lines``: only
        these (by id), else every line. Returns once stored, the frames written (``_perform_soon``)."""
        for session, actions in self._flush_lines(lines):
            await self._perform(session, actions)

    def _flush_lines(self, lines: Collection[str] | None) -> Iterator[tuple[LineSession, list[Action]]]:
        """Commit each line's input in turn and yield the frames to send after that commit (the
        caller sends them before the next line is committed)."""
        sessions = list(self.sessions.values()) if lines is None else [
            self.sessions[line] for line in lines if line in self.sessions
        ]  # fmt: skip
        for session in sessions:
            if session.line in self._stale:  # memory ahead of the store: rebuilt (its input dropped), not flushed
                self._rebuilt(session.line)
                continue
            if session.has_pending:  # the peer's envelopes stored: the checkpoint timer may fall due
                self._tick_due.pop(session.line, None)
            try:
                actions = session.flush(self.wall())
            except StorageError as exc:
                self._storage_failed(session, exc)
                continue
            except Exception as exc:  # a bug must not leave memory ahead of the store, silently
                log.exception("storing on line %s failed", session.line[:8])
                self.alarm(session.line, "alarm", "storing.internal_error", exc=repr(exc))
                self._restart_session(session)
                continue
            self._wake_receipt_waiters(session)
            yield session, actions
            if session.has_pending:  # recovery handed over more in this flush: store it now
                self._schedule_flush(session)
        self._promote_keys()

    def _promote_keys(self) -> None:
        """A signing-key rotation is complete once every line's chain signs with the next key:
        the key files follow (redline/rotation.py; a no-op unless a rotation is under way)."""
        if self.keys.next_signing is not None:
            from redline import rotation

            rotation.promote_if_done(self)
        if self.tls_next is not None:
            from redline import rotation

            rotation.promote_tls_if_done(self)

    def _storage_failed(self, session: LineSession, exc: StorageError) -> None:
        """A write failed (disk full, I/O error): that transaction stored, receipted and sent nothing.

        The session's memory ran ahead of the store (chain tails, link, outbox count, ops), so it is
        rebuilt from the store, as a restart would, and the line's connections are dropped: the peer
        redials and resends whatever we did not receipt. Until the store takes writes again every
        acceptance fails the same way, with this reason; nothing unstored is ever acknowledged."""
        if isinstance(exc, FencedError):
            self.step_down(str(exc))
            return
        line = session.line
        if self.config.store:  # PostgreSQL: the likely cause is the database or the way to it, not our disk
            self.alarm(line, "alarm", "storage.failed.db", exc=str(exc), url=shown_url(self.config.store))
        else:
            self.alarm(line, "alarm", "storage.failed.disk", exc=str(exc))
        self._restart_session(session)

    def _restart_session(self, session: LineSession) -> None:
        """Rebuild a line's session from the store, as a restart would, and drop its connections."""
        line = session.line
        for (conn_line, _), conn in list(self._conns.items()):
            if conn_line == line:
                conn.abort()
        if self.sessions.get(line) is session:
            self._stale.add(line)
            if not self._rebuilt(line):
                self.alarm(line, "alarm", "storage.unreadable")

    def _rebuilt(self, line: str) -> bool:
        """A stale line's session rebuilt from the store (True), or still stale (False: the store
        cannot be read yet; logged). The stale session's memory is dropped, never stored: nothing in
        it was receipted, and the peer resends it."""
        if line not in self._stale:
            return True
        try:
            self._open_session(self.ledger.line(line))
        except (RedlineError, sqlite3.DatabaseError) as exc:
            log.warning("line %s: the store cannot be read back yet: %s", line[:8], exc)
            return False
        self._stale.discard(line)
        return True

    def _wake_receipt_waiters(self, session: LineSession) -> None:
        waiters = self._receipt_waiters.get(session.line)
        if not waiters:
            return
        done = session.receipted_seq
        keep = []
        for seq, fut in waiters:
            if seq <= done:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((seq, fut))
        self._receipt_waiters[session.line] = keep

    async def wait_receipted(self, line: str, seq: int, timeout: float = 30.0) -> None:
        """Return once the peer has receipted our envelope ``seq`` (stored it durably)."""
        session = self.session(line)
        if session.receipted_seq >= seq:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._receipt_waiters.setdefault(session.line, []).append((seq, fut))
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            raise ReceiptTimeoutError(
                f"envelope seq {seq} is durable here but the peer has not receipted it within {timeout:g} s; "
                "it stays in the transcript and will be resent when a path is up"
            ) from None

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                await self.tick(every_line=False)
            except Exception:  # a bug must not end the ticker: every line's heartbeats and deadlines run on it
                log.exception("the tick failed; ticking again in %g s", TICK)

    async def tick(self, *, every_line: bool = True) -> None:
        """Run what fell due on the lines. ``every_line`` False (the 100 ms ticker): a line's session
        is ticked only once its ``next_due`` comes (or after input on it), so an idle line's
        heartbeats and deadlines run when due and not ten times a second in between."""
        now, wall = self.clock.monotonic(), self.wall()
        roster, published = self._read_roster()  # once per tick, for every line's roster check
        for session in list(self.sessions.values()):
            if session.line in self._stale and not self._rebuilt(session.line):
                continue  # memory ahead of a store that cannot be read yet: nothing runs on it
            session = self.sessions[session.line]
            try:
                await self._tick_line(session, now, wall, (roster, published), every_line=every_line)
            except StorageError as exc:  # a store that cannot be read (a database failing over)
                self._storage_failed(session, exc)
            except Exception:  # a bug on one line must not stop the others' heartbeats and deadlines
                log.exception("the tick of line %s failed", session.line[:8])
                self.alarm(session.line, "alarm", "tick.internal_error")
        self._schedule_flush()

    async def _tick_line(
        self, session: LineSession, now: float, wall: int,
        roster: tuple[dict[str, Any], dict[str, persons.Person] | None], *, every_line: bool,
    ) -> None:  # fmt: skip
        due = None if every_line else self._tick_due.get(session.line)
        # a margin for rounding: the session compares differences, the due times are sums
        if due is None or due[0] is not session or now >= due[1] - 0.001 or wall >= due[2] - 1:
            await self._perform(session, session.tick(now, wall))
            self._watch_skew(session)
            self._tick_due[session.line] = (session, *session.next_due(self.clock.monotonic()))
        self._ops_due(session, wall, roster, every_line=every_line)

    def _read_roster(self) -> tuple[dict[str, Any], dict[str, persons.Person] | None]:
        """Our users as a ROSTER's content, and its people (None: nobody listed), read from users/.
        A file there that cannot be read (edited by hand, half written) keeps the last roster read
        and is logged once: it must not stop the tick, which sends every heartbeat.

        Read by every tick and every batch of sends: the files are parsed again only when users/
        has changed (its stamp) or after ROSTER_REREAD_SECONDS; parsing them each time cost 255 us
        a batch with 8 people, more than the rest of a message's CPU under load."""
        now = self.clock.monotonic()
        try:
            stamp: persons.Stamp | None = persons.users_stamp(self.home.path)
        except OSError:
            stamp = None  # changing as we look: read it
        if stamp is not None and stamp == self._roster_stamp and now - self._roster_read_at < ROSTER_REREAD_SECONDS:
            return self._roster
        self._roster_stamp, self._roster_read_at = stamp, now
        try:
            roster = persons.roster_content(persons.load_users(self.home.path), persons.load_removed(self.home.path))
            read = (roster, parse_roster(roster) if roster["users"] else None)
        except (OSError, ValueError, KeyError, TypeError, RedlineError) as exc:
            why = f"users/ cannot be read, the roster stays as last read: {type(exc).__name__}: {exc}"
            if why != self._roster_error:
                self._roster_error = why
                log.error("%s", shown(why, MAX_ALARM_CHARS, newlines=False), extra={"event": "roster_unreadable"})
            return self._roster
        self._roster, self._roster_error = read, None
        return read

    def _watch_skew(self, session: LineSession) -> None:
        """Alarm once when the peer's clock (heartbeats measure it on every up path) is off ours by
        more than ``max_clock_skew_seconds``, and once when it is back: each end measures the other,
        so a wrong clock alarms at both ends."""
        skews = [p.skew_ms for p in session.paths.values() if p.up and p.skew_ms is not None]
        if not skews:
            return
        worst, limit = max(skews, key=abs), self.limits.max_clock_skew_seconds
        if (abs(worst) > limit * 1000) == (session.line in self._skewed):
            return
        if session.line in self._skewed:
            self._skewed.discard(session.line)
            off = round(abs(worst) / 1000, 1)  # a number, which the console writes its reader's way ("2,5")
            self.alarm(session.line, "info", "clock.skew_back", limit=f"{limit:g}", peer=session.record.peer_name,
                       off=off)  # fmt: skip
            return
        self._skewed.add(session.line)
        self.alarm(session.line, "alarm", "clock.skew.ahead" if worst > 0 else "clock.skew.behind",
                   peer=session.record.peer_name, span=abs(worst), limit=f"{limit:g}")  # fmt: skip

    # -- voice (media.py; the calls themselves are ops/voice.py's) ------------------------------------
    def _call_media(self, line: str, call_id: str) -> media.CallMedia | None:
        """The audio of ``call_id`` while it may still flow here: picked up and our CALL_AUDIO not
        yet filed (after our own hang-up the peer's last packets are still on their way)."""
        call = self.ops[line].voice.calls.get(call_id)
        if call is None or call.answer is None or True in call.audio:
            return None
        if call_id in self._restored:
            return self._restored[call_id]
        calls = self.media.setdefault(line, {})
        m = calls.get(call_id)
        if m is None:
            peer = self.sessions[line].peer
            m = media.CallMedia(
                call=call_id, us=self.keys.fingerprint, peer=peer, started_at=call.answer.stored_at,
                max_bytes=self.limits.max_audio_packet_bytes, max_rate=self.limits.max_audio_packets_per_second,
            )  # fmt: skip
            if call.state == "live":  # never for a call already over: its recording is sealed
                # Each packet goes to the call's recording as it enters the hash (recording.py).
                rec = recording.CallRecording(self.home.path, line, call_id, self.keys.fingerprint, peer)
                m.sink = rec.add
                self.recordings[call_id] = rec
                self._last_media[line] = m
            calls[call_id] = m
        return m

    def _live_media(self, line: str) -> media.CallMedia | None:
        """The audio of the line's live call, if it has begun here."""
        call = self.ops[line].voice.live()
        return None if call is None else self.media.get(line, {}).get(call.id)

    async def _audio_in(self, session: LineSession, path: str, payload: bytes) -> None:
        """A peer's AUDIO frame: taken only on an open path of a confirmed line, for a call that was
        picked up; anything else is dropped and counted, and closes nothing."""
        if not session.record.active or session.link.paths.get(path) is not PathState.OPEN:
            self.audio_dropped[session.line] = self.audio_dropped.get(session.line, 0) + 1
            return
        if session.has_pending:
            # What came before this frame on the path (a pick-up) is stored before it is judged.
            await self._flush()
        call_id = payload[:32].hex() if len(payload) >= 32 else ""
        m = self._call_media(session.line, call_id)
        if m is None:
            self.audio_dropped[session.line] = self.audio_dropped.get(session.line, 0) + 1
            return
        for packet in m.receive(path, payload, self.wall()):
            if packet.resent:
                continue  # a copy of what a dying path swallowed: for the record, too late to play
            for listener in list(self.audio_listeners):
                try:
                    listener(session.line, packet)
                except Exception:  # a broken listener (a closed console) never stops the call
                    log.exception("an audio listener failed")

    async def send_audio(self, line: str, data: bytes) -> media.AudioPacket:
        """Send one encoded audio packet of the live call on every open path of ``line``, at once
        (not behind the group commit: only heartbeats share the paths' order with it)."""
        session = self.session(line)
        call = self.ops[session.line].voice.live()
        if call is None or not session.record.active:
            raise LocalProtocolError("no voice call is live on this line: audio goes only to a picked-up call")
        m = self._call_media(session.line, call.id)
        assert m is not None
        paths = [p for p, state in session.link.paths.items() if state is PathState.OPEN]
        if not paths:
            # Not numbered, hashed or recorded: what we "sent" must be what could reach the peer.
            raise NoPathError("no path of the line is up: the audio was not sent")
        packet = m.packet(data, self.wall())
        frame = bytes([FrameType.AUDIO]) + packet.encode()
        actions: list[Action] = [Send(path=p, data=len(frame).to_bytes(4, "big") + frame) for p in paths]
        await self._perform(session, actions)
        return packet

    async def _audio_resend(self, session: LineSession, path: str) -> None:
        """A path opened during a call: send our last packets again on it (media.RESEND_PACKETS),
        for the record: what a path that died swallowed reaches the peer's hash after all."""
        m = self._live_media(session.line)
        if m is None or m.ended or not m.recent:
            return
        frames = [bytes([FrameType.AUDIO]) + payload for payload in m.resend()]
        await self._perform(session, [Send(path=path, data=len(f).to_bytes(4, "big") + f) for f in frames])

    def _watch_call_line(self, session: LineSession, wall: int) -> None:
        """Tell ops/voice.py since when the live call's line has had no path up and no audio from the
        peer (it ends the call after ``call_lost_seconds``: the survivor of a peer killed mid-call)."""
        line = session.line
        voice = self.ops[line].voice
        call = voice.live()
        if call is None or any(s is PathState.OPEN for s in session.link.paths.values()):
            self._pathless_since.pop(line, None)
            voice.line_quiet(None)
            return
        since = self._pathless_since.setdefault(line, wall)
        m = self.media.get(line, {}).get(call.id)
        heard = [h.last_at for h in m.paths.values() if h.last_at is not None] if m else []
        voice.line_quiet(max([since, *heard]))

    def _audio_intents(self, line: str) -> list[Intent]:
        """CALL_AUDIO for each call over whose audio can no longer arrive here (ops/voice.py)."""
        out = []
        voice = self.ops[line].voice
        calls = self.media.get(line, {})
        for done in [c for c, _ in calls.items() if c not in voice.calls or True in voice.calls[c].audio]:
            del calls[done]  # its CALL_AUDIO is stored: its audio here is over
        for call in voice.audio_due():
            m = self._call_media(line, call.id)
            assert m is not None
            body = {"ring": call.ring.ref, **m.end()}
            if call.interrupted:
                body["interrupted"] = True
            rec = self.recordings.pop(call.id, None)
            # Sealed (fsynced) before CALL_AUDIO is filed: the recording the digests name is on disk.
            for problem in rec.seal() if rec is not None else []:
                self.alarm(line, "alarm", "recording.incomplete", seq=call.ring.seq, problem=problem)
            out.append(Intent(kind="CALL_AUDIO", prio=kinds.default_priority("CALL_AUDIO"), content=body,
                              idem=f"call-audio:{call.id}"))  # fmt: skip
        return out

    def _ops_due(
        self, session: LineSession, wall: int, roster: tuple[dict[str, Any], dict[str, persons.Person] | None],
        *, every_line: bool = True,
    ) -> None:  # fmt: skip
        """Record every time-dependent decision that is due (test results, escalations, expiries):
        by the ticker only once ops' ``next_due`` comes (a call not over: at every tick)."""
        if not session.record.active:
            return
        ops = self.ops[session.line]
        intents: list[Intent] = []
        alarms: list[Alarm] = []
        if every_line or wall >= ops.next_due(wall) - 1:
            self._watch_call_line(session, wall)
            intents, alarms = ops.due(wall)
            intents += self._audio_intents(session.line)
        roster_intent = self._roster_change(ops, *roster)
        if roster_intent is not None:
            intents.insert(0, roster_intent)
        # ops asks again at every tick until it sees the filing stored (a lost call's hang-up while the
        # line is down, waiting in the outbox): one already accepted under its key is not filed again,
        # and no write transaction is opened only for the ledger to answer "already accepted".
        intents = [i for i in intents if i.idem is None or self.ledger.outbox_by_idem(session.line, i.idem) is None]
        if not intents and not alarms:
            return
        for a in alarms:
            self.alarm(session.line, a.level, a.code, **a.params)
        refused: dict[str, str] = {}  # kind -> why
        with self.ledger.batch():
            for intent in intents:
                try:
                    session.accept(intent.kind, intent.prio, intent.content, intent.idem, wall)
                except (LimitError, LocalProtocolError) as exc:  # the outbox or the disk budget is full
                    refused.setdefault(intent.kind, str(exc))
        if refused:  # not filed yet: ops asks again at every tick until it sees the filing stored
            self.alarm(session.line, "alarm", "file.later", kinds=", ".join(sorted(refused)),
                       exc=next(iter(refused.values())))  # fmt: skip

    async def run_forever(self) -> None:
        await self.start()
        await self.wait_stopped()

    async def wait_stopped(self) -> None:
        """Return once ``stop()`` was called (a signal, or the control op ``stop``)."""
        await self._stopping.wait()

    def stop(self) -> None:
        self._stopping.set()

    def step_down(self, reason: str) -> None:
        """Deposed (standby.py): alarm, drop every path, listen no more, and stop; the ledger
        already refuses every write, so nothing more is committed or sent."""
        if self.ha is None or self._stopping.is_set():  # once: a stopped station is done with the pair
            return
        self.ha.stepped_down(reason)
        for line in self.sessions:
            self.alarm(line, "alarm", "ha.deposed", reason=reason)
        for conn in list(self._conns.values()):
            conn.abort()
        for server in self._servers:
            server.close()
        self.stop()

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        self.ceremony.close()
        for conn in list(self._conns.values()):
            conn.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for session in self.sessions.values():
            try:
                session.close(self.wall())
            except StorageError as exc:
                log.error("line %s: could not save the peer's latest receipt at stop: %s", session.line[:8], exc)
        with contextlib.suppress(FileNotFoundError):
            self.home.control_path.unlink()  # ours: nobody else may serve this folder (the hold)
        if self.ha is not None:
            self.ha.release()  # the standby takes over at its next poll, not at expiry
        self.ledger.close()
        self._hold.release()  # last: until the store is closed, no reader checks its files

    # -- operations ----------------------------------------------------------------------------------
    def session(self, line: str) -> LineSession:
        """A line by exact id (the common case, from scripts), else by id prefix or peer name."""
        found = line if line in self.sessions else self.ledger.find_line(line).line
        if not self._rebuilt(found):
            raise StorageError(f"line {found[:8]}: the store cannot be read back after a failed write; nothing is "
                               "accepted on this line until it can (see the STORAGE FAILURE alarm)")  # fmt: skip
        return self.sessions[found]

    async def send(
        self, line: str, text: str, *, kind: str = "TEXT", prio: str = "ROUTINE", idem: str | None = None
    ) -> views.Accepted:
        """Accept a text message: durable in the outbox (and signed, if the line is in sync) on return."""
        if not isinstance(text, str) or not isinstance(prio, str) or not isinstance(kind, str):
            raise LocalProtocolError("text, kind and priority must be strings")
        size = len(text.encode("utf-8"))
        if size > self.limits.max_text_bytes:
            raise LimitError(
                f"message is {size} bytes; the limit is {self.limits.max_text_bytes} bytes (max_text_bytes): "
                "shorten it or split it"
            )
        if not text.strip():
            raise LocalProtocolError("the message is empty")
        return await self.act(line, kind, {"text": text}, prio=prio, idem=idem)

    async def act(
        self, line: str, kind: str, content: dict[str, Any], *, prio: str | None = None, idem: str | None = None
    ) -> views.Accepted:
        """File anything an operator may file (kinds.OPERATOR), checked before acceptance."""
        if not isinstance(content, dict):
            raise LocalProtocolError("content must be a JSON object")
        session = self.session(line)
        ops = self.ops[session.line]
        find = functools.partial(self._find, session.line)
        given = content.keys()
        retry = self.is_retry(session.line, idem)
        content = check_operator_content(ops, kind, content, find, now=self.wall(), retry=retry)
        filled = frozenset(content.keys() - given)  # what the check added (a CALL_REQUEST's default expiry)
        if kind in PERSON_SIGNED_KINDS:
            persons.check_signer(kind, content, {p.name: p for p in persons.load_users(self.home.path)})
        prio = (prio or kinds.default_priority(kind)).upper()
        if prio not in PRIORITIES:
            raise LocalProtocolError(f"priority must be one of {', '.join(p.lower() for p in PRIORITIES)}")
        if kind not in KINDS:
            raise LocalProtocolError(f"unknown message kind {kind!r}")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._accepts.append((session, kind, prio, content, idem, filled, fut))
        if len(self._accepts) == 1:
            asyncio.get_running_loop().call_soon(self._commit_accepts)
        local = await fut
        item = self.ledger.outbox_item(local)
        return views.Accepted(
            line=session.line, outbox=item.local, seq=item.seq, id=item.envelope_id, kind=kind,
            state="signed and sent" if item.seq else "accepted; waiting in the outbox until the line is in sync",
        )  # fmt: skip

    def _commit_accepts(self) -> None:
        """Group commit for operators: every request that arrived in this turn of the event loop is
        made durable (and signed, where the line is in sync) in one transaction, one fsync; each
        caller hears back only after that commit. A plain callback, not a task (one loop turn less
        per message with one in flight); the frames go out as ``_perform_soon`` writes them."""
        batch, self._accepts = self._accepts, []
        wall = self.wall()
        done: list[tuple[asyncio.Future[int], int | BaseException]] = []
        touched: dict[str, LineSession] = {}
        # Our users, read once per batch by the tick's own reader: a users/ file broken by hand keeps
        # the roster last read (logged once) instead of raising here, which left every caller of the
        # batch waiting for an answer that never came. Our people do not change within a batch, nor
        # does what we last published before it is sealed: each line's roster intent once per batch
        # (a repeat would be the same, idempotent).
        roster_now, published = self._read_roster()
        rosters: dict[str, Intent | None] = {}
        try:
            with self.ledger.batch():
                for session, kind, prio, content, idem, filled, fut in batch:
                    try:
                        if session.line not in rosters:
                            rosters[session.line] = self._roster_change(self.ops[session.line], roster_now, published)
                        roster = rosters[session.line]
                        if roster is not None:
                            session.accept(roster.kind, roster.prio, roster.content, roster.idem, wall)
                        done.append((fut, session.accept(kind, prio, content, idem, wall, filled=filled).local))
                        touched[session.line] = session
                    except RedlineError as exc:
                        done.append((fut, exc))
                flushed = [(s, s.flush(wall)) for s in touched.values()]
        except Exception as exc:  # rolled back: nothing of the batch is stored, and every caller hears why
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            # The sessions' memory ran ahead of the store (outbox count, chain tails, link): rebuilt
            # from it, as a restart would. A bug (not a RedlineError) is said so, as _flush_lines does.
            for session in {id(item[0]): item[0] for item in batch}.values():
                if isinstance(exc, StorageError):
                    self._storage_failed(session, exc)
                else:
                    what = str(exc) if isinstance(exc, RedlineError) else f"INTERNAL ERROR {exc!r}"
                    if not isinstance(exc, RedlineError):
                        log.exception("accepting on line %s failed", session.line[:8])
                    self.alarm(session.line, "alarm", "accept.failed", exc=what)
                    self._restart_session(session)
            return
        # Committed: the frames go out first, then the callers hear (one of them may have gone: a
        # cancelled caller's future is done, and answering it must not keep the others waiting).
        for session, actions in flushed:
            self._wake_receipt_waiters(session)
            self._perform_soon(session, actions)
        for fut, outcome in done:
            if fut.done():
                continue
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)
        self._promote_keys()

    def _find(self, line: str, prefix: str) -> list[Entry]:
        """Envelopes of ``line`` whose id starts with ``prefix``: ops' own, then the ledger's."""
        found = [e for eid, e in self.ops[line].entries.items() if eid.startswith(prefix)]
        if found or len(prefix) < 6:
            return found
        return [
            _entry(split(raw), sender == self.keys.fingerprint, stored_at)
            for sender, raw, stored_at in self.ledger.find_by_id_prefix(line, prefix, limit=2)
        ]

    @staticmethod
    def _roster_change(ops: LineOps, roster: dict[str, Any], people: dict[str, persons.Person] | None) -> Intent | None:
        """The ROSTER for ``roster`` (its people parsed: None when it lists none) if it is not what
        we last published on the line (the tick builds and parses it once for all lines)."""
        if people is None or people == ops.person_roster():
            return None
        idem = "roster:" + hashlib.sha256(canonical.encode(roster)).hexdigest()
        return Intent(kind="ROSTER", prio="PRIORITY", content=roster, idem=idem)

    # -- read views (ops/views.py types them; readmodel.to_obj makes them JSON) ---------------------
    def tests_view(self, line: str, *, offset: int = 0, limit: int | None = None) -> LineTestsView:
        """The line tests (the counts over all of them); with ``limit``, a page of each list."""
        session = self.session(line)
        view = self.ops[session.line].tests.history(self.wall())
        if limit is None:
            return view
        return dataclasses.replace(
            view,
            tests=_page(view.tests, lambda t: t.result == "pending", lambda t: t.sent_at, offset, limit),
            received=_page(view.received, lambda t: t.result == "pending", lambda t: t.stored_at, offset, limit),
            to_answer=_page(view.to_answer, lambda t: True, lambda t: t.sent_at, offset, limit),
        )  # fmt: skip

    def flash_view(self, line: str, *, offset: int = 0, limit: int | None = None) -> tuple[FlashView, ...]:
        """Every FLASH both ways, oldest first; with ``limit``, a page (open ones first), texts cut."""
        flashes = self.ops[self.session(line).line].flash.flashes.values()
        if limit is None:
            return tuple(f.view() for f in sorted(flashes, key=lambda f: f.entry.stored_at))
        page = _page(flashes, lambda f: f.ack is None, lambda f: f.entry.stored_at, offset, limit)
        return tuple(dataclasses.replace(v, text=_cut(v.text)) for v in (f.view() for f in page))

    def calls_view(self, line: str, *, offset: int = 0, limit: int | None = None) -> tuple[CallPairView, ...]:
        """Per pair of principals (the counts over all); with ``limit``, a page of pairs (those with an
        open request first, then the latest active), each with a page of its requests (open first) and
        its latest call records, texts cut."""
        session = self.session(line)
        ops = self.ops[session.line]
        evidence = {ring: call.evidence for ring, call in ops.voice.calls.items()}  # CALL_RECORD's voice call
        pairs = ops.calls.summary(self.wall(), self.keys.fingerprint, session.peer, evidence)
        if limit is None:
            return pairs

        def latest(p: CallPairView) -> int:
            return max([0, *(r.sent_at for r in p.outcomes), *(c.start or 0 for c in p.calls)])

        def cut(r: CallRequestView) -> CallRequestView:
            return dataclasses.replace(r, subject=_cut(r.subject) or "")

        def cut_readouts(c: CallRecordView) -> CallRecordView:
            return dataclasses.replace(c, readouts={k: dataclasses.replace(v, text=_cut(v.text) or "")
                                                    for k, v in c.readouts.items()})  # fmt: skip

        return tuple(
            dataclasses.replace(
                p, outcomes=tuple(cut(r) for r in _page(p.outcomes, lambda r: r.state == "open", lambda r: r.sent_at,
                                                        0, limit)),
                calls=tuple(cut_readouts(c) for c in p.calls[-limit:]),
            )
            for p in _page(pairs, lambda p: p.open > 0, latest, offset, limit)
        )  # fmt: skip

    def requests_view(self, line: str, *, offset: int = 0, limit: int | None = None) -> tuple[CallRequestView, ...]:
        """Every call request both ways, oldest first; with ``limit``, a page (open ones first)."""
        requests = self.ops[self.session(line).line].calls.requests_view()
        if limit is None:
            return requests
        page = _page(requests, lambda r: r.state == "open", lambda r: r.sent_at, offset, limit)
        return tuple(dataclasses.replace(r, subject=_cut(r.subject) or "") for r in page)

    def notices_view(
        self, line: str, *, offset: int = 0, limit: int | None = None, notice: str | None = None
    ) -> NoticesPage | NoticeDetail:
        """A page of notices (``offset``, ``limit``), or one notice whole (``notice``: an id prefix)."""
        ops = self.ops[self.session(line).line]
        if limit is None:
            return ops.notices_view(self.wall(), offset=offset, notice=notice)
        return ops.notices_view(self.wall(), offset=offset, limit=limit, notice=notice)

    def voice_view(self, line: str) -> VoiceView:
        session = self.session(line)
        m = self._live_media(session.line) or self._last_media.get(session.line)
        audio = None if m is None else LiveAudioView(
            call=m.call, sent=m.sent.view(), received=m.received.view(), dropped=dict(vars(m.counters)),
            paths=m.health(self.wall()),
        )  # fmt: skip
        voice = self.ops[session.line].voice.view()
        return dataclasses.replace(voice, audio=audio, dropped_no_call=self.audio_dropped.get(session.line, 0))

    def refused_view(self, line: str) -> tuple[RefusedView, ...]:
        return self.ops[self.session(line).line].refused_view()

    def view(
        self, line: str, what: str, *, offset: int = 0, limit: int | None = None, notice: str | None = None
    ) -> Any:
        """The read view ``what`` of ``line`` as JSON-ready data: the one entry of the control
        socket and the API (``VIEWS`` names them)."""
        if what == "notices":
            return readmodel.to_obj(self.notices_view(line, offset=offset, limit=limit, notice=notice))
        page = min(max(1, VIEW_PAGE if limit is None else limit), VIEW_PAGE_MAX)  # never the whole history
        paged: dict[str, Callable[..., Any]] = {
            "tests": self.tests_view, "flash": self.flash_view, "requests": self.requests_view,
            "translations": self.translations_view, "calls": self.calls_view,
        }  # fmt: skip
        if what in paged:
            return readmodel.to_obj(paged[what](line, offset=max(0, offset), limit=page))
        views_of: dict[str, Callable[[str], Any]] = {"voice": self.voice_view, "refused": self.refused_view}
        if what not in views_of:
            raise LocalProtocolError(f"unknown view {what!r}: {', '.join(VIEWS)}")
        return readmodel.to_obj(views_of[what](line))

    async def confirm(self, line: str, code: str) -> dict[str, Any]:
        session = self.session(line)
        if pairing.normalize_code(code) != session.record.safety_code:
            raise PairingError(
                "that safety code does not match the one computed for this line; do NOT confirm. Compare "
                "again by voice; if they still differ, the pairing may be intercepted: pair again"
            )
        try:
            actions = session.confirm(self.wall())
        except StorageError as exc:
            self._storage_failed(session, exc)
            raise
        await self._perform(session, actions)
        self._tick_due.pop(session.line, None)
        self._schedule_flush()
        return {"line": session.line, "confirmed_local": True, "confirmed_peer": session.record.confirmed_peer}

    async def confirm_root(self, line: str, code: str) -> dict[str, Any]:
        """Our operator typed the new safety code of the peer's root rotation, heard by voice: the
        ROOT_CONFIRM is filed only if it matches (PROTOCOL.md section 5.9, ROOT_CONFIRM)."""
        session = self.session(line)
        try:
            with self.ledger.batch():
                session.confirm_root(code, self.wall())
                actions = session.flush(self.wall())
        except StorageError as exc:
            self._storage_failed(session, exc)
            raise
        await self._perform(session, actions)
        pending = session.gate.root_history[session.peer][-1]
        return {"line": session.line, "confirmed_version": pending.version}

    def status(self) -> views.StationStatus:
        return views.StationStatus(
            station=self.config.name, fingerprint=self.keys.fingerprint, listen=tuple(self.config.listen),
            lines=tuple(s.status() for s in self.sessions.values()), alarms=tuple(self.alarms[-20:]),
            ha=None if self.ha is None else self.ha.view(),
        )

    # -- pairing (ceremony.py runs the key ceremony; a completed one adds a line here) -----------
    async def invite(self) -> dict[str, Any]:
        return await self.ceremony.invite()

    async def pair(self, token_text: str) -> dict[str, Any]:
        return await self.ceremony.pair(token_text)

    def add_line(self, line: str, party: pairing.Party, peer_fp: str, code: str, *, we_invited: bool) -> None:
        """A line both sides agreed at pairing: pin the peer's keys, open its session, dial it. A
        pairing always makes a new line: the inviter names its id, and one naming a line held here
        would have its record replaced (peer, keys, paths, confirmation), its transcript sent to the
        new peer once its safety code was confirmed."""
        if peer_fp == self.keys.fingerprint:
            raise PairingError("the other station is this station itself: a line joins two stations")
        if line in self.sessions or any(r.line == line for r in self.ledger.lines()):
            held = self.sessions[line].record.peer_name if line in self.sessions else "another station"
            raise PairingError(
                f"this pairing names line {line[:8]}, which this station already holds with {held}: refused, "
                "nothing changed (a new pairing always makes a new line: do not trust this invitation)"
            )
        record = LineRecord(
            line=line, peer=peer_fp, peer_name=party.name, peer_root=party.root.hex(),
            peer_tls_cert=party.tls_der.hex(), paths=party.addrs, peer_lang=party.lang, we_invited=we_invited,
            safety_code=code, created_at=self.wall(),
        )  # fmt: skip
        signing = party.signing_cert.verify(party.root)
        tls = party.tls_cert.verify(party.root)
        with self.ledger.batch():
            self.ledger.put_line(record)
            self.ledger.put_cert(peer_fp, signing.key_id, "signing", party.signing_cert)
            self.ledger.put_cert(peer_fp, tls.key_id, "tls", party.tls_cert)
        session = self._open_session(record)
        self._dial_paths(session)

    # -- control socket (control.py: the server, the client and the table of operations) ---------
    async def control(self, request: dict[str, Any]) -> Any:
        """Answer one control request (the socket's, or the API's own use of the same operations)."""
        return await control.answer(self, request)

    def resolve(self, line: str, kind: str, content: dict[str, Any], idem: object = None) -> dict[str, Any]:
        """Operator content checked and with its references resolved, before a person signs it
        (``idem``: the request's idempotency key, judged as ``act`` judges it)."""
        session = self.session(line)
        find = functools.partial(self._find, session.line)
        return check_operator_content(self.ops[session.line], kind, content, find, now=self.wall(),
                                      retry=self.is_retry(session.line, idem))  # fmt: skip

    def is_retry(self, line: str, idem: object) -> bool:
        """A request whose idempotency key is accepted already (a lost answer, a double click): it
        is checked for what it says, never for what its first submit changed (the notice it amended
        no longer stands, the call it hung up is ended); the session answers it with the first
        acceptance, or refuses other content under the key. A key that is not a string of at most
        ``MAX_IDEM_CHARS`` is refused here, the one place every filing asks."""
        if idem is None:
            return False
        if not isinstance(idem, str) or len(idem) > MAX_IDEM_CHARS:
            raise LocalProtocolError(f"an idempotency key is a string of at most {MAX_IDEM_CHARS} characters")
        return self.ledger.outbox_by_idem(line, idem) is not None

    def show(self, line: str, prefix: str) -> MessageView:
        """One envelope of ``line`` by id prefix, with its translations."""
        session = self.session(line)
        found = self._find(session.line, prefix)
        if len(found) != 1:
            raise LocalProtocolError(f"no single envelope on this line has an id starting {prefix!r}")
        e = found[0]
        if e.kind in NOT_KEPT:  # ops keeps it without its large members: the ledger's copy
            ((sender, raw, stored_at),) = self.ledger.find_by_id_prefix(session.line, e.id, limit=1)
            e = _entry(split(raw), sender == self.keys.fingerprint, stored_at)
        return MessageView(
            id=e.id, seq=e.seq, kind=e.kind, ours=e.ours, lang=e.lang, sent_at=e.sent_at, content=e.content,
            translations=tuple(self.ops[session.line].translations.get(e.id, ())),
        )

    def translations_view(
        self, line: str, *, offset: int = 0, limit: int | None = None
    ) -> dict[str, tuple[TranslationView, ...]]:
        """Every translation of ``line``, by the id of the envelope it translates; with ``limit``, those
        of a page of envelopes, the latest translated first, texts cut."""
        translations = self.ops[self.session(line).line].translations
        if limit is None:
            return {eid: tuple(ts) for eid, ts in translations.items()}
        ids = list(itertools.islice(reversed(translations.keys()), offset, offset + limit))
        return {eid: tuple(dataclasses.replace(t, text=_cut(t.text) or "") for t in translations[eid])
                for eid in reversed(ids)}  # fmt: skip

    def has(self, line: str, prefix: str) -> bool:
        session = self.session(line)
        return bool(self._find(session.line, prefix))

    async def set_clock(self, advance_ms: int = 0, set_ms: int | None = None) -> dict[str, Any]:
        """Move a demo or test station's clock and run what falls due; a real station refuses."""
        if not isinstance(self.clock, SettableClock):
            raise LocalProtocolError("this station's clock is the system clock; it cannot be set")
        self.clock.advance(advance_ms)
        if set_ms is not None:
            self.clock.set(set_ms)
        await self.tick()
        return {"now": self.wall()}


def _entry(env: Envelope | RawEnvelope, ours: bool, stored_at: int) -> Entry:
    header = canonical.decode_object(env.header_bytes, "envelope header")
    content = canonical.decode_object(env.body_bytes, "envelope body")["content"] if env.body_bytes else {}
    return Entry(
        sender=header["sender"], ours=ours, seq=header["seq"], id=env.id, kind=header["kind"], prio=header["prio"],
        sent_at=header["sent_at"], stored_at=stored_at, lang=header["lang"], content=content,
        seen=int(header["seen"]["seq"]) if isinstance(header.get("seen"), dict) else 0,
    )  # fmt: skip


class _PeerPins(Collection[str]):
    """The SPKI hashes a dialled path of ``line`` accepts, read at each dial (a TLS rotation moves them)."""

    def __init__(self, st: Station, line: str) -> None:
        self._st, self._line = st, line

    def _now(self) -> list[str]:
        s = self._st.sessions.get(self._line)
        return [h for _, h in s.tls_pins()] if s is not None else []

    def __iter__(self) -> Iterator[str]:
        return iter(self._now())

    def __len__(self) -> int:
        return len(self._now())

    def __contains__(self, spki: object) -> bool:
        return spki in self._now()


def _page(items: Iterable[_T], still_open: Callable[[_T], bool], at: Callable[[_T], int], offset: int,
          limit: int) -> tuple[_T, ...]:  # fmt: skip
    """A page of a view (``VIEW_PAGE``): the open items first (oldest first: due soonest), then the
    others, newest first; ``offset`` and ``limit`` over that order; the page itself in time order."""
    ranked = sorted(items, key=lambda x: (not still_open(x), at(x) if still_open(x) else -at(x)))
    return tuple(sorted(ranked[offset : offset + limit], key=at))


def _cut(text: str | None) -> str | None:
    """A text as a view's page shows it: at most ``VIEW_TEXT_CHARS`` characters, cut with "…"."""
    return text if text is None or len(text) <= VIEW_TEXT_CHARS else text[:VIEW_TEXT_CHARS] + "…"


def _bounded(value: Value) -> Value:
    """An alarm's param (or a record's value) as the row keeps it: a text on one line, escaped
    and cut like the alarm's text (``MAX_ALARM_CHARS``); a number as it is."""
    return shown(shown(value, newlines=False), MAX_ALARM_CHARS) if isinstance(value, str) else value
