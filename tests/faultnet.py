"""A fault-injecting TCP proxy standing in for one network path (issue item 1).

It sits between the dialling station and the listening one and works on the byte stream, below
TLS. TCP itself never loses, duplicates or reorders bytes, so what a middlebox or a broken link can
do to a stream is modelled directly on the stream:

==========  =======================================================================================
kind        what the proxy does
==========  =======================================================================================
corrupt     flips one byte of the next chunk in one direction (TLS: bad record MAC, path dies)
drop        swallows the next chunk in one direction (TLS: garbage or a hang, path dies)
duplicate   writes the next chunk twice (TLS: replayed record, path dies)
reorder     holds the next chunk back and writes it after the one that follows (path dies)
delay       adds latency to every chunk in one direction for a while (order kept; path survives
            if the added latency stays under ``path_dead_after``)
stall       stops forwarding (both ways, or one way only), sockets kept open, for a while (short:
            the path must survive; long: heartbeats must find the dead path)
cut         resets both TCP connections at once (RST), like a severed cable
outage      a cut, then new connections are refused (RST) or black-holed for a while
==========  =======================================================================================

Every decision comes from ``random.Random(seed)``: ``draw_plan`` turns a seed into a list of
``Fault`` (when, what, which direction, how long); byte positions come from a per-fault seed. The
same seed gives the same plan. What the stations do in between (how their bytes are cut into
chunks, when they redial) is real-time and not bit-for-bit repeatable, but a plan that exposed a bug
once is the first thing to replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass

# Relative weights of each kind in a drawn plan.
WEIGHTS: dict[str, float] = {
    "corrupt": 3, "drop": 2, "duplicate": 2, "reorder": 2, "delay": 3, "stall": 2, "cut": 2, "outage": 1,
}  # fmt: skip
KINDS = tuple(WEIGHTS)
CHUNK_FAULTS = ("corrupt", "drop", "duplicate", "reorder")
UP, DOWN = 0, 1  # UP: dialler -> listener (NDMC -> EUCOM); DOWN: the other way
_READ = 65536


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the plan starts
    kind: str
    direction: int  # UP or DOWN (chunk faults and delay)
    duration: float  # delay, stall and outage: how long; 0 otherwise
    amount: float  # delay: added latency in s; stall: 1 one way only; outage: 1 black-holes new connections
    seed: int  # byte positions and values

    def describe(self) -> str:
        d = "up" if self.direction == UP else "down"
        if self.kind == "delay":
            return f"{self.at:7.2f}s delay {d} +{self.amount * 1000:.0f} ms for {self.duration:.1f} s"
        if self.kind == "stall":
            return f"{self.at:7.2f}s stall {d + ' only' if self.amount else 'both ways'} {self.duration:.1f} s"
        if self.kind == "outage":
            how = "black-holed" if self.amount else "refused"
            return f"{self.at:7.2f}s outage {self.duration:.1f} s (new connections {how})"
        if self.kind in CHUNK_FAULTS:
            return f"{self.at:7.2f}s {self.kind} {d}"
        return f"{self.at:7.2f}s {self.kind}"


def draw_plan(
    rng: random.Random, seconds: float, *, mean_gap: float = 2.0, kinds: Iterable[str] = KINDS
) -> list[Fault]:
    """Faults at exponentially spaced moments over ``seconds``, kinds by ``WEIGHTS``."""
    names = [k for k in kinds if k in WEIGHTS]
    weights = [WEIGHTS[k] for k in names]
    plan: list[Fault] = []
    if not names:
        return plan
    t = rng.expovariate(1 / mean_gap)
    while t < seconds:
        kind = rng.choices(names, weights)[0]
        direction = rng.choice((UP, DOWN))
        duration = amount = 0.0
        if kind == "delay":
            duration = rng.uniform(0.5, 4.0)
            amount = rng.choice((rng.uniform(0.01, 0.3), rng.uniform(0.3, 2.0)))
        elif kind == "stall":
            # half under the dead-path threshold (must cost nothing), half well over it; one in
            # three stalls one direction only (an asymmetric black hole)
            duration = rng.uniform(0.3, 2.5) if rng.random() < 0.5 else rng.uniform(4.0, 10.0)
            amount = float(rng.random() < 1 / 3)
        elif kind == "outage":
            duration = rng.uniform(0.5, 6.0)
            amount = float(rng.random() < 0.3)
        plan.append(Fault(at=round(t, 3), kind=kind, direction=direction, duration=round(duration, 3),
                          amount=round(amount, 3), seed=rng.getrandbits(32)))  # fmt: skip
        t += rng.expovariate(1 / mean_gap)
    return plan


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST, not a FIN: what a middlebox dropping the flow looks like."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Pipe:
    """One direction of one proxied connection: a reader task and a writer task with a bounded
    queue between them, so latency keeps order and a stall pushes back on the sender's TCP."""

    def __init__(self, conn: _Conn, direction: int, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        self.conn, self.direction, self.src, self.dst = conn, direction, src, dst
        self.queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(maxsize=16)
        self.armed: deque[tuple[str, random.Random]] = deque()
        self.flowing = asyncio.Event()  # cleared while this direction is stalled
        self.flowing.set()
        self.latency = 0.0
        self.latency_until = 0.0

    async def read_loop(self) -> None:
        try:
            while not self.conn.closed:
                await self.flowing.wait()
                data = await self.src.read(_READ)
                now = time.monotonic()
                extra = self.latency if now < self.latency_until else 0.0
                await self.queue.put((now + extra, data or None))
                if not data:
                    return
        except (ConnectionError, OSError):
            await self.queue.put((0.0, None))

    async def write_loop(self) -> None:
        proxy = self.conn.proxy
        try:
            while True:
                release, data = await self.queue.get()
                if data is None:
                    break
                if (wait := release - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                await self.flowing.wait()
                if self.armed:
                    kind, r = self.armed.popleft()
                    if kind == "corrupt":
                        buf = bytearray(data)
                        buf[r.randrange(len(buf))] ^= r.randrange(1, 256)
                        data = bytes(buf)
                    elif kind == "drop":
                        proxy.applied("drop")
                        continue
                    elif kind == "duplicate":
                        data = data + data
                    elif kind == "reorder":
                        try:
                            async with asyncio.timeout(1.5):
                                _, following = await self.queue.get()
                        except TimeoutError:
                            following = b""  # nothing followed: the held chunk goes out alone
                        if following is None:
                            self.dst.write(data)
                            break
                        data = following + data
                    proxy.applied(kind)
                self.dst.write(data)
                await self.dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.conn.close()


class _Conn:
    def __init__(self, proxy: FaultProxy, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.proxy, self.client, self.upstream = proxy, client, upstream
        self.pipes: list[_Pipe] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False

    def close(self, *, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for w in (self.client, self.upstream):
            if reset:
                _rst(w)
            else:
                w.close()
        for p in self.pipes:
            for kind, _ in p.armed:
                self.proxy.missed[kind] += 1
            p.armed.clear()
        current = asyncio.current_task()
        for t in self.tasks:
            if t is not current:
                t.cancel()
        self.proxy.conns.discard(self)


class FaultProxy:
    """Listens on ``listen_port``, forwards to ``target_port``, injects ``plan`` once ``run`` starts.

    Also offers the ``Relay`` interface of tests/procs.py (``start``, ``cut``).
    """

    def __init__(self, listen_port: int, target_port: int, *, name: str = "path", plan: list[Fault] | None = None):
        self.listen_port, self.target_port, self.name = listen_port, target_port, name
        self.plan = list(plan or [])
        self.server: asyncio.Server | None = None
        self.conns: set[_Conn] = set()
        self.counts: Counter[str] = Counter()  # faults that hit traffic, by kind
        self.missed: Counter[str] = Counter()  # faults that found no connection (or no chunk) to hit
        self.connections = 0
        self.refused = 0
        self.events: deque[str] = deque(maxlen=200)
        self._outage_until = 0.0
        self._blackhole = False
        self._held: list[asyncio.StreamWriter] = []
        # chunk faults that found no connection: they hit the next one (often its TLS handshake)
        self._deferred: list[tuple[int, str, random.Random]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._t0 = time.monotonic()

    # -- plumbing ----------------------------------------------------------------------------------
    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.listen_port)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _note(self, text: str) -> None:
        self.events.append(f"{time.monotonic() - self._t0:7.2f}s {self.name}: {text}")

    def applied(self, kind: str) -> None:
        self.counts[kind] += 1
        self._note(f"{kind} hit")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._proxy(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self._outage_until:
            self.refused += 1
            if self._blackhole:
                self._held.append(writer)  # accepted, never answered: the dialler's handshake times out
            else:
                _rst(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            _rst(writer)
            return
        self.connections += 1
        conn = _Conn(self, writer, up_writer)
        conn.pipes = [_Pipe(conn, UP, reader, up_writer), _Pipe(conn, DOWN, up_reader, writer)]
        for direction, kind, r in self._deferred:
            conn.pipes[direction].armed.append((kind, r))
        self._deferred.clear()
        self.conns.add(conn)
        conn.tasks = [asyncio.ensure_future(f()) for p in conn.pipes for f in (p.read_loop, p.write_loop)]
        try:
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            conn.close()

    # -- faults ------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Apply the plan in real time (relative to when ``run`` is called)."""
        t0 = time.monotonic()
        for fault in self.plan:
            if (wait := t0 + fault.at - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            self.inject(fault)

    def inject(self, fault: Fault) -> None:
        self._note(fault.describe().strip())
        live = [c for c in self.conns if not c.closed]
        kind, r = fault.kind, random.Random(fault.seed)
        if kind == "outage":
            self.counts[kind] += 1
            self._outage_until = time.monotonic() + fault.duration
            self._blackhole = bool(fault.amount)
            for c in live:
                c.close(reset=True)
            self._spawn(self._end_outage(fault.duration))
            return
        if not live:
            if kind in CHUNK_FAULTS:
                self._deferred.append((fault.direction, kind, random.Random(r.getrandbits(32))))
            else:
                self.missed[kind] += 1
            return
        if kind == "cut":
            self.counts[kind] += 1
            for c in live:
                c.close(reset=True)
        elif kind == "stall":
            self.counts[kind] += 1
            for c in live:
                pipes = [c.pipes[fault.direction]] if fault.amount else c.pipes
                for p in pipes:
                    p.flowing.clear()
                self._spawn(self._unstall(pipes, fault.duration))
        elif kind == "delay":
            self.counts[kind] += 1
            for c in live:
                pipe = c.pipes[fault.direction]
                pipe.latency, pipe.latency_until = fault.amount, time.monotonic() + fault.duration
        elif kind in CHUNK_FAULTS:
            for c in live:
                c.pipes[fault.direction].armed.append((kind, random.Random(r.getrandbits(32))))

    async def _unstall(self, pipes: list[_Pipe], seconds: float) -> None:
        await asyncio.sleep(seconds)
        for p in pipes:
            p.flowing.set()

    async def _end_outage(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._release_held()

    def _release_held(self) -> None:
        for w in self._held:
            _rst(w)
        self._held.clear()

    def heal(self) -> None:
        """End every fault now: no outage, nothing stalled, armed or delayed. Count what was armed
        but never reached a chunk as missed."""
        self._outage_until = 0.0
        self._release_held()
        for _, kind, _ in self._deferred:
            self.missed[kind] += 1
        self._deferred.clear()
        for c in list(self.conns):
            for p in c.pipes:
                for kind, _ in p.armed:
                    self.missed[kind] += 1
                p.armed.clear()
                p.latency_until = 0.0
                p.flowing.set()
        for task in list(self._tasks):
            task.cancel()

    async def cut(self) -> None:
        """Stop listening and reset every connection (the ``Relay`` interface)."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for c in list(self.conns):
            c.close(reset=True)
        self._release_held()

    async def close(self) -> None:
        await self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Let every connection handler finish (its pipes were cancelled by the cut), so none is
        # left for the event loop's shutdown to cancel.
        await asyncio.wait(list(self._handlers), timeout=5) if self._handlers else None
