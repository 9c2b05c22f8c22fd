"""Test and benchmark helpers, real parts everywhere but the clock and the process boundary.

- ``SessionPair``: two line sessions joined by simulated paths and a simulated clock. Real keys,
  real SQLite ledgers in a temporary directory, real frames; only the sockets are replaced by byte
  queues the test controls (cut, delay, reorder, duplicate).
- ``StationPair``: two whole running stations (ops, alarms, control operations) in one process,
  over real TLS on loopback, on a simulated clock; ``crash`` drops one as kill -9 would. The fast
  in-memory version of what otherwise needs two station processes (tests/procs.py keeps a few)."""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redline.alarmtext import render
from redline.config import Limits
from redline.home import StationDir, StationKeys
from redline.ledger.model import LineRecord
from redline.protocol.events import Action, Close, Send
from redline.session import LineSession


@dataclass
class SimClock:
    now: float = 1000.0  # monotonic seconds
    wall: int = 1_652_443_200_000  # 13 May 2022 12:00 UTC, in ms

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += round(seconds * 1000)  # int() would turn 2.01 s into 2009 ms


def make_station(root: Path, name: str, lang: str, port: int, limits: Limits | None = None) -> StationDir:
    d = StationDir(root / name)
    d.init(name=name, lang=lang, listen=[f"127.0.0.1:{port}"], limits=limits)
    return d


def pair_directly(a: StationDir, b: StationDir, *, confirmed: bool = True, created_at: int | None = None) -> str:
    """Pin each station's keys at the other, as a completed pairing ceremony would, at ``created_at``
    (now by default, as a ceremony records it: a line made at 0 would owe the last scheduled line test
    at its first tick, which raced tests counting envelopes)."""
    line = os.urandom(16).hex()
    created = int(time.time() * 1000) if created_at is None else created_at
    ka, kb = a.load_keys(), b.load_keys()
    for mine, theirs, theirs_dir, invited in ((a, kb, b, True), (b, ka, a, False)):
        ledger = mine.open_ledger()
        cfg = theirs_dir.config()
        ledger.put_line(
            LineRecord(
                line=line, peer=theirs.fingerprint, peer_name=cfg.name, peer_root=theirs.root_public.hex(),
                peer_tls_cert=theirs.tls_cert_der.hex(), paths=cfg.listen, peer_lang=cfg.lang,
                we_invited=invited, confirmed_local=confirmed, confirmed_peer=confirmed, safety_code="000000",
                created_at=created,
            )
        )  # fmt: skip
        ledger.put_cert(theirs.fingerprint, theirs.key_id, "signing", theirs.signing_cert)
        ledger.close()
    return line


@dataclass
class SimPath:
    """Two byte queues, one per direction; ``up`` False drops everything in flight."""

    name: str
    up: bool = True
    a_to_b: deque[bytes] = field(default_factory=deque)
    b_to_a: deque[bytes] = field(default_factory=deque)


class SessionPair:
    """Two LineSessions over simulated paths. ``run()`` moves bytes until nothing moves."""

    def __init__(self, root: Path, *, paths: int = 2, limits: Limits | None = None) -> None:
        self.root = root
        self.limits = limits or Limits()
        self.dir_a = make_station(root, "EUCOM", "en", 7401, self.limits)
        self.dir_b = make_station(root, "NDMC", "ru", 7501, self.limits)
        self.line = pair_directly(self.dir_a, self.dir_b)
        self.clock = SimClock()
        self.alarms: list[tuple[str, str, str]] = []
        self.paths = [SimPath(f"path{i}") for i in range(paths)]
        self.a = self._open("a", self.dir_a)
        self.b = self._open("b", self.dir_b)
        for p in self.paths:
            self.connect(p)

    def _open(self, who: str, d: StationDir) -> LineSession:
        ledger = d.open_ledger()
        keys: StationKeys = d.load_keys()
        return LineSession(
            ledger, keys, ledger.line(self.line), lang=d.config().lang, limits=self.limits,
            alarm=lambda level, code, /, **params: self.alarms.append((who, level, render(code, params))),
        )  # fmt: skip

    def restart(self, who: str) -> None:
        """Drop a session's memory (as a crash would) and reopen it from its ledger."""
        d = self.dir_a if who == "a" else self.dir_b
        old = self.a if who == "a" else self.b
        old.ledger.close()
        new = self._open(who, d)
        if who == "a":
            self.a = new
        else:
            self.b = new
        for p in self.paths:
            p.a_to_b.clear()
            p.b_to_a.clear()
            self.disconnect(p, "restart")
            self.connect(p)

    def connect(self, p: SimPath) -> None:
        p.up = True
        self._do("a", self.a.path_up(p.name, self.clock.now, self.clock.wall))
        self._do("b", self.b.path_up(p.name, self.clock.now, self.clock.wall))

    def disconnect(self, p: SimPath, reason: str = "cut") -> None:
        p.up = False
        p.a_to_b.clear()
        p.b_to_a.clear()
        self._do("a", self.a.path_down(p.name, reason, self.clock.wall))
        self._do("b", self.b.path_down(p.name, reason, self.clock.wall))

    def _path(self, name: str) -> SimPath:
        return next(p for p in self.paths if p.name == name)

    def _do(self, who: str, actions: list[Action]) -> None:
        for act in actions:
            p = self._path(act.path)
            if isinstance(act, Send):
                if p.up:
                    (p.a_to_b if who == "a" else p.b_to_a).append(act.data)
            elif isinstance(act, Close) and p.up:
                self.disconnect(p, act.reason)

    def flush(self) -> None:
        self._do("a", self.a.flush(self.clock.wall))
        self._do("b", self.b.flush(self.clock.wall))

    def step(self, chunk: int | None = None) -> bool:
        """Deliver every queued frame once (optionally split into ``chunk``-byte pieces)."""
        moved = False
        for p in self.paths:
            for queue, session, who in ((p.a_to_b, "b", "b"), (p.b_to_a, "a", "a")):
                while queue and p.up:
                    data = queue.popleft()
                    moved = True
                    target = self.a if session == "a" else self.b
                    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
                    for piece in pieces:
                        self._do(who, target.receive(p.name, piece, self.clock.now, self.clock.wall))
        self.flush()
        return moved

    def run(self, max_steps: int = 10_000, chunk: int | None = None) -> None:
        self.flush()
        for _ in range(max_steps):
            if not self.step(chunk):
                return
        raise AssertionError("the sessions did not settle")

    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self._do("a", self.a.tick(self.clock.now, self.clock.wall))
        self._do("b", self.b.tick(self.clock.now, self.clock.wall))

    def send(self, who: str, text: str, kind: str = "TEXT", prio: str = "ROUTINE") -> int:
        s = self.a if who == "a" else self.b
        with s.ledger.batch():
            item = s.accept(kind, prio, {"text": text}, None, self.clock.wall)
        return item.local

    def close(self) -> None:
        self.a.ledger.close()
        self.b.ledger.close()


# -- two running stations in one process --------------------------------------------------------------


@dataclass
class StationClock:
    """One station's view of a ``SimClock``: the shared time plus its own offset (a skewed clock)."""

    sim: SimClock
    offset_ms: int = 0

    def wall(self) -> int:
        return self.sim.wall + self.offset_ms

    def monotonic(self) -> float:
        return self.sim.now


def free_ports(n: int) -> list[int]:
    """``n`` loopback ports free right now (tests/procs.py, benches)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class StationPair:
    """EUCOM and NDMC as two real ``Station`` objects in this process and event loop: real keys,
    stores, TLS over loopback, ops; a simulated clock that moves only when told (``advance``), and
    ``crash`` that drops a station's memory as kill -9 would (its store stays as committed).

    Use inside a running event loop::

        async with StationPair(tmp_path) as sp:
            await sp.send("a", "hello")
            await sp.advance(130)
    """

    def __init__(self, root: Path, *, limits: Limits | None = None) -> None:
        from redline.station import Station

        self._station = Station
        self.limits = limits or Limits(test_times_utc=())
        ports = free_ports(2)
        self.dir_a = make_station(root, "EUCOM", "en", ports[0], self.limits)
        self.dir_b = make_station(root, "NDMC", "ru", ports[1], self.limits)
        self.line = pair_directly(self.dir_a, self.dir_b)
        self.sim = SimClock()
        self.clocks = {"a": StationClock(self.sim), "b": StationClock(self.sim)}
        self.alarms: list[tuple[str, str, str]] = []
        self.a = self._new("a")
        self.b = self._new("b")

    def _new(self, who: str) -> Any:
        home = self.dir_a if who == "a" else self.dir_b
        sink = lambda line, level, text: self.alarms.append((who, level, text))  # noqa: E731
        return self._station(home, on_alarm=sink, clock=self.clocks[who])

    def station(self, who: str) -> Any:
        return self.a if who == "a" else self.b

    async def __aenter__(self) -> StationPair:
        await self.a.start()
        await self.b.start()
        await self.synced()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.a.close()
        await self.b.close()

    async def synced(self, timeout: float = 10.0) -> None:
        """Wait (real time, for the loopback TLS) until both sides are in sync with nothing waiting."""
        import asyncio

        async def settled() -> bool:
            for st in (self.a, self.b):
                ln = st.status().lines[0]
                if not (ln.synced and ln.outbox == 0 and ln.unreceipted == 0):
                    return False
            a, b = self.a.status().lines[0], self.b.status().lines[0]
            return bool(a.their_seq == b.our_seq and b.their_seq == a.our_seq)

        async with asyncio.timeout(timeout):
            while not await settled():
                await asyncio.sleep(0.01)

    async def send(self, who: str, text: str, **kw: Any) -> dict[str, Any]:
        result: dict[str, Any] = (await self.station(who).send(self.line, text, **kw)).to_obj()
        await self.synced()
        return result

    async def act(self, who: str, kind: str, content: dict[str, Any], **kw: Any) -> dict[str, Any]:
        result: dict[str, Any] = (await self.station(who).act(self.line, kind, content, **kw)).to_obj()
        await self.synced()
        return result

    async def advance(self, seconds: float) -> None:
        """Move the shared clock, let both stations run what fell due, and settle: as the stations'
        own ticker does, each line only if something on it is due (``Station.tick``)."""
        self.sim.advance(seconds)
        await self.a.tick(every_line=False)
        await self.b.tick(every_line=False)
        await self.synced()

    async def crash(self, who: str, *, start_again: bool = True) -> None:
        """kill -9, in process: connections dropped, memory gone, nothing saved at stop; then the
        station starts again from its store (``start_again=False``: later, with ``start``)."""
        st = self.station(who)
        for conn in list(st._conns.values()):
            conn.abort()
        st.ceremony.close()
        for server in st._servers:
            server.close()
        for task in list(st._tasks):
            task.cancel()
        import asyncio

        await asyncio.gather(*st._tasks, return_exceptions=True)
        st.ledger.close()  # what is not committed is gone, as after kill -9
        st._hold.release()  # the kernel drops a killed process's lock on its folder
        if start_again:
            await self.start(who)

    async def start(self, who: str) -> None:
        """Start ``who`` again from its store (after ``crash(who, start_again=False)``)."""
        fresh = self._new(who)
        if who == "a":
            self.a = fresh
        else:
            self.b = fresh
        await fresh.start()
        await self.synced()
