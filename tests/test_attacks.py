"""Attacks (issue 4) against real station processes on loopback, over real TLS.

Each attack is named for what it tries; each test checks that it was refused, that the refusal is
logged (``serve.log``) or alarmed with a clear reason, that nothing was stored that should not be
(python-tuf's rule: the trusted state is unchanged), and, where the attack is about availability,
that the real peer still gets through. EUCOM is the inviter (it listens); NDMC dials it. The
attacker's tools: raw sockets, ``openssl s_client``, a third station, and, for the attacks only an
insider can make (a modified peer, or someone holding the peer's stolen keys), NDMC's own keys
copied from its station directory and driven through ``redline.transport.dial`` frame by frame.

Attacks covered elsewhere, not repeated here (in-memory sessions, same code paths):
tests/test_session.py (forged and unpaired keys, cross-line replay with the peer's own key,
chain breaks, restored backups, equivocation on two paths), tests/test_link.py (frames before
HELLO, malformed HELLO and heartbeats, PAIR frames on a line), tests/test_transport.py (TLS 1.2,
unpinned certificates both ways, no tickets, pre-auth cap, handshake timeout),
tests/test_pairing.py (token and ceremony attacks), tests/test_storage_faults.py (restored
backup with real processes: no seq reused).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from redline import canonical, identity
from redline.config import Limits, StationConfig, parse_hostport
from redline.envelope import seal, split
from redline.home import StationDir
from redline.identity import KeyCert
from redline.protocol.framing import FrameType, encode_frame
from redline.transport import Connection, Server, dial
from tests.procs import StationProc, both, free_ports, paired_stations, wait_until

pytestmark = pytest.mark.timeout(120)

SPECCHECK = Path(__file__).parent / "vectors" / "external" / "ed25519-speccheck" / "cases.json"
L = 2**252 + 27742317777372353535851937790883648493  # order of the Ed25519 base point


# -- helpers ------------------------------------------------------------------------------------------


@dataclass
class Pair:
    a: StationProc  # EUCOM: the inviter, listens
    b: StationProc  # NDMC: dials
    line: str

    @property
    def fa(self) -> str:
        return StationDir(self.a.home).load_keys().fingerprint

    @property
    def fb(self) -> str:
        return StationDir(self.b.home).load_keys().fingerprint

    @property
    def listen(self) -> list[str]:
        return list(StationDir(self.a.home).config().listen)


def set_limits(home: Path, **limits: Any) -> None:
    cfg = StationConfig.load(home / "config.json")
    obj = cfg.to_obj()
    obj["limits"].update(limits)
    StationConfig.from_obj(obj).save(home / "config.json")


async def restart(proc: StationProc, **limits: Any) -> None:
    proc.stop()
    if limits:
        set_limits(proc.home, **limits)
    await proc.start()


async def synced(p: Pair) -> None:
    await wait_until(lambda: both(p.a, p.b, lambda ln: ln["synced"] and ln["outbox"] == 0), "line in sync", 30)


async def send(proc: StationProc, line: str, text: str) -> dict[str, Any]:
    try:
        return {"ok": True, **(await proc.call({"op": "send", "line": line, "text": text}))}
    except Exception as exc:
        return {"ok": False, "error": str(exc)}


async def round_trip(p: Pair, tag: str) -> None:
    """The real peer still gets through: one message each way, stored and receipted at the other end."""
    before_a, before_b = (await p.a.status_line())["their_seq"], (await p.b.status_line())["their_seq"]
    assert (await send(p.a, p.line, f"EUCOM {tag}"))["ok"]
    assert (await send(p.b, p.line, f"NDMC {tag}"))["ok"]
    await wait_until(
        lambda: both(p.a, p.b, lambda ln: ln["unreceipted"] == 0 and ln["outbox"] == 0), f"round trip {tag}", 30
    )
    assert (await p.a.status_line())["their_seq"] == before_a + 1
    assert (await p.b.status_line())["their_seq"] == before_b + 1


def log_text(proc: StationProc) -> str:
    return " ".join(proc.log.read_text(errors="replace").split())


def rows(home: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read a running station's store through a read-only connection (WAL: a consistent snapshot)."""
    db = sqlite3.connect((home / "ledger.sqlite").resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def head(home: Path, line: str, sender: str) -> tuple[int, str | None]:
    got = rows(home, "SELECT seq, id FROM envelopes WHERE line=? AND sender=? ORDER BY seq DESC LIMIT 1", line, sender)
    return (got[0][0], got[0][1]) if got else (0, None)


def line_bytes(home: Path, line: str, sender: str) -> int:
    """Disk one direction of a line takes (each direction has its own max_line_disk_bytes)."""
    sql = "SELECT COALESCE(SUM(length(raw)), 0) FROM envelopes WHERE line=? AND sender=?"
    return int(rows(home, sql, line, sender)[0][0])


def store_state(home: Path) -> tuple[Any, ...]:
    """Everything the trusted state is made of, to compare before and after an attack."""
    return tuple(
        rows(home, f"SELECT * FROM {t} ORDER BY rowid")
        for t in ("envelopes", "equivocations", "receipts", "checkpoints", "lines", "certs")
    )


def forge(peer: Path, line: str, seq: int, prev: str | None, *, kind: str = "TEXT", text: str = "forged",
          size: int = 0, signer: nacl.signing.SigningKey | None = None) -> bytes:  # fmt: skip
    """An envelope in the peer's name, signed with its real signing key (copied from its station
    directory) unless told otherwise: what a modified peer, or a thief of its keys, can make."""
    keys = StationDir(peer).load_keys()
    content: dict[str, Any] = {"text": text + "x" * size} if kind == "TEXT" else {"blob": text + "x" * size}
    return seal(
        signer or keys.signing, line=line, sender=keys.fingerprint, key=keys.key_id, seq=seq,
        sent_at=int(time.time() * 1000), kind=kind, prio="ROUTINE", prev=prev, seen_seq=0, seen_id=None, lang="ru",
        content=content, salt=os.urandom(16),
    ).encode()  # fmt: skip


def with_sig(raw: bytes, sig: bytes) -> bytes:
    return raw[: len(raw) - 64] + sig


class Impostor:
    """A TLS connection to a station made with another station's TLS key, then raw frames."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.closed = False
        self.frames: list[tuple[int, bytes]] = []

    @classmethod
    async def dial(cls, target: Path, addr: str, as_station: Path) -> Impostor:
        host, port = parse_hostport(addr)
        pins = {identity.spki_hash(StationDir(target).load_keys().tls_cert_der)}
        keys = as_station / "keys"
        conn = await dial(host, port, cert=keys / "tls.crt", key=keys / "tls.key", pins=pins, limits=Limits())
        return cls(conn)

    def write(self, ftype: FrameType, payload: bytes | dict[str, Any]) -> None:
        body = payload if isinstance(payload, bytes) else canonical.encode(payload)
        self.conn.write(encode_frame(ftype, body)[4:])

    def hello(self, line: str, station: str) -> None:
        self.write(FrameType.HELLO, {
            "versions": [1], "line": line, "station": station, "mine": {"seq": 0, "id": None},
            "yours": {"seq": 0, "id": None}, "time": int(time.time() * 1000), "confirmed": True,
        })  # fmt: skip

    def raw(self, data: bytes) -> None:
        self.conn._writer.write(data)  # bytes that are not frames at all

    async def read(self, seconds: float) -> None:
        """Collect what the station sends for ``seconds`` or until it closes the connection."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while not self.closed:
                    try:
                        payload = await self.conn.recv()
                    except Exception:  # ConnectionClosedError, a reset, a TLS alert: closed either way
                        self.closed = True
                        break
                    self.frames.append((payload[0], payload[1:]))

    def of(self, ftype: FrameType) -> list[bytes]:
        return [body for t, body in self.frames if t == ftype]

    def error(self) -> str:
        errors = self.of(FrameType.ERROR)
        return str(canonical.decode_object(errors[-1], "error")["message"]) if errors else ""

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.abort()


def openssl(*args: str, stdin: bytes = b"hello\n") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", "s_client", *args], input=stdin, capture_output=True, timeout=20)


def new_pair(root: Path) -> Pair:
    a, b, line, _ = asyncio.run(paired_stations(root, relays=False))
    return Pair(a, b, line)


@contextlib.contextmanager
def fresh_pair(root: Path, **limits_a: Any) -> Iterator[Pair]:
    p = new_pair(root)
    try:
        if limits_a:
            asyncio.run(restart(p.a, **limits_a))
        yield p
    finally:
        p.a.stop()
        p.b.stop()


def rss_kib(proc: StationProc) -> int:
    assert proc.proc is not None
    status = Path(f"/proc/{proc.proc.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


# -- attacks without any key: the shared pair ---------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """One pair for the attacks that hold no key of either station; each test leaves it in sync."""
    p = new_pair(tmp_path_factory.mktemp("shared"))
    try:
        asyncio.run(restart(p.a, handshake_timeout=1.0, max_preauth_per_source=4))
        asyncio.run(synced(p))
        yield p
    finally:
        p.a.stop()
        p.b.stop()


@pytest.fixture(scope="module")
def stranger_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("stranger")
    identity.new_tls_identity(d / "tls.key", d / "tls.crt", "NDMC")
    return d / "tls.crt", d / "tls.key"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command line tool")
@pytest.mark.parametrize(
    "attack",
    ["no client certificate", "downgrade to TLS 1.2", "downgrade to TLS 1.1", "a certificate never paired"],
)
def test_openssl_s_client_is_refused_with_a_logged_reason(
    shared: Pair, stranger_cert: tuple[Path, Path], attack: str
) -> None:
    port = parse_hostport(shared.listen[0])[1]
    args, reason = {
        "no client certificate": ([], "it presented no TLS certificate"),
        "downgrade to TLS 1.2": (["-tls1_2"], "TLS handshake failed"),
        "downgrade to TLS 1.1": (["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"], "TLS handshake failed"),
        "a certificate never paired": (
            ["-cert", str(stranger_cert[0]), "-key", str(stranger_cert[1])], "its TLS certificate is not the paired"
        ),
    }[attack]
    before = log_text(shared.a).count(reason)
    out = openssl("-connect", f"127.0.0.1:{port}", "-quiet", *args)
    assert out.returncode != 0, out.stdout  # nothing came back but a refusal
    assert b"redline" not in out.stdout
    asyncio.run(wait_until(_async(lambda: log_text(shared.a).count(reason) > before), f"log says {reason!r}", 5))
    asyncio.run(round_trip(shared, attack))


def _async(pred: Any) -> Any:
    async def check() -> bool:
        return bool(pred())

    return check


def test_third_station_with_the_paired_name_and_another_key_is_refused(shared: Pair, tmp_path: Path) -> None:
    """A station that calls itself NDMC, with its own keys, dials EUCOM as NDMC would."""
    fake = StationDir(tmp_path / "ndmc")
    fake.init(name="NDMC", lang="ru", listen=[f"127.0.0.1:{free_ports(1)[0]}"])
    before = store_state(shared.a.home)

    async def main() -> None:
        imp = await Impostor.dial(shared.a.home, shared.listen[0], fake.path)
        imp.hello(shared.line, fake.load_keys().fingerprint)
        imp.write(FrameType.ENVELOPE, forge(fake.path, shared.line, 1, None))
        await imp.read(3)
        assert imp.closed and imp.frames == []  # not one frame back: it never got past the TLS pin check
        await wait_until(_async(lambda: "its TLS certificate is not the paired station's" in log_text(shared.a)),
                         "refusal logged", 5)  # fmt: skip
        assert store_state(shared.a.home) == before
        await round_trip(shared, "after the third station")

    asyncio.run(main())


@pytest.mark.parametrize("order", ["real peer pinned first", "same-name station pinned first"])
def test_a_station_with_the_name_of_another_paired_one_locks_no_one_out(tmp_path: Path, order: str) -> None:
    """EUCOM holds two lines whose peers both call themselves NDMC (a second pairing, or a third
    station that got an invite): both pinned certificates must keep working."""
    keys = {}
    for who, name in (("eucom", "EUCOM"), ("ndmc", "NDMC"), ("other", "NDMC")):
        der = identity.new_tls_identity(tmp_path / f"{who}.key", tmp_path / f"{who}.crt", name)
        keys[who] = der
    pins = [keys["ndmc"], keys["other"]] if order.startswith("real") else [keys["other"], keys["ndmc"]]

    async def main() -> list[str]:
        seen: list[str] = []

        async def on_connection(conn: Connection) -> None:
            await conn.send(b"welcome")

        server = await Server.start(
            "127.0.0.1", 0, server_cert=tmp_path / "eucom.crt", server_key=tmp_path / "eucom.key",
            pins=lambda: pins, on_connection=on_connection, limits=Limits(), on_refused=seen.append,
        )  # fmt: skip
        try:
            for who in ("ndmc", "other"):
                conn = await dial("127.0.0.1", server.port, cert=tmp_path / f"{who}.crt", key=tmp_path / f"{who}.key",
                                  pins={identity.spki_hash(keys["eucom"])}, limits=Limits())  # fmt: skip
                try:
                    assert await asyncio.wait_for(conn.recv(), 3) == b"welcome", who
                finally:
                    conn.abort()
        finally:
            server.close()
            await server.wait_closed()
        return seen

    assert asyncio.run(main()) == []


def test_garbage_bytes_before_tls_are_refused_and_logged(shared: Pair) -> None:
    host, port = parse_hostport(shared.listen[1])

    async def main() -> None:
        before = log_text(shared.a).count("TLS handshake failed")
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(os.urandom(4096))
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(reader.read(100), 3) == b""
        writer.close()
        await wait_until(_async(lambda: log_text(shared.a).count("TLS handshake failed") > before), "logged", 5)
        await round_trip(shared, "after garbage")

    asyncio.run(main())


def test_connection_flood_and_slowloris_hold_the_preauth_cap_and_the_real_peer_still_connects(shared: Pair) -> None:
    """20 sources open 6 connections each (cap: 4 per source), 4 more drip a ClientHello a byte at
    a time; meanwhile NDMC restarts and must handshake, sync and deliver both ways."""
    host, port = parse_hostport(shared.listen[0])
    sources = [f"127.0.0.{i}" for i in range(2, 22)]
    log_before = shared.a.log.read_text(errors="replace")

    async def open_from(src: str) -> tuple[int, float, asyncio.Task[bool]]:
        """A connection's local port, the wall-clock time just before it was opened, and whether the
        station closed it (watched from the moment it opened)."""
        before = time.time()
        r, w = await asyncio.open_connection(host, port, local_addr=(src, 0))
        writers.append(w)
        return int(w.get_extra_info("sockname")[1]), before, asyncio.ensure_future(closed_within(r, 6))

    async def closed_within(r: asyncio.StreamReader, limit: float) -> bool:
        try:
            async with asyncio.timeout(limit):
                while await r.read(4096):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    async def drip(w: asyncio.StreamWriter, stop: asyncio.Event) -> None:
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64)
        for byte in hello:
            if stop.is_set() or w.is_closing():
                return
            with contextlib.suppress(ConnectionError, OSError):
                w.write(bytes([byte]))
            await asyncio.sleep(0.2)

    writers: list[asyncio.StreamWriter] = []
    opened: dict[tuple[str, int], float] = {}  # (source, port) -> wall-clock time just before it opened
    slow_keys: set[tuple[str, int]] = set()

    async def main() -> None:
        # Each source's six connections arrive together, so its first four are still waiting when the
        # fifth and sixth come, however slowly this machine gets round to the next source.
        flood = [(src, *c) for src in sources for c in await asyncio.gather(*(open_from(src) for _ in range(6)))]
        slow = [("127.0.0.30", *await open_from("127.0.0.30")) for _ in range(4)]
        stop = asyncio.Event()
        drips = [asyncio.ensure_future(drip(w, stop)) for w in writers[len(flood) :]]
        ends = asyncio.gather(*(watch for *_, watch in [*flood, *slow]))
        # stop() waits for the process to exit: in a thread, so that this loop goes on serving the
        # drips and the watches meanwhile (on the loop, it made the refusals look late: CI at 58f183d).
        await asyncio.to_thread(shared.b.stop)  # the real peer comes back in the middle of it all
        await shared.b.start()
        await synced(shared)
        await round_trip(shared, "during the flood")
        closed = await ends
        stop.set()
        await asyncio.gather(*drips)
        for w in writers:
            w.transport.abort()
        for (src, p, t, _), c in zip([*flood, *slow], closed, strict=True):
            assert c, f"the connection from {src}:{p} was held open past the handshake timeout"
            opened[src, p] = t
        slow_keys.update((src, p) for src, p, _, _ in slow)

    asyncio.run(main())
    new = shared.a.log.read_text(errors="replace")[len(log_before) :]
    # Which connections the station refused or closed, and when, from its own log: a time taken here,
    # when this process got round to seeing the close, is late whenever this process is paused (a
    # 0.6 s pause in the first 10 ms of the flood failed the test when it measured that way).
    stamp = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "
    capped = stamp + r"refused connection from (127\.0\.0\.\d+):(\d+): 127\.0\.0\.\d+ already has 4 connection"
    late = stamp + r"closed connection from (127\.0\.0\.\d+):(\d+): no TLS handshake within 1 s \(handshake_timeout\)"

    def logged(pattern: str) -> dict[tuple[str, int], float]:
        """(source, port) -> the station's time (wall clock, from its log line) of each matching line."""
        return {(src, int(p)): datetime.strptime(at, "%Y-%m-%d %H:%M:%S,%f").timestamp()
                for at, src, p in re.findall(pattern, new, re.MULTILINE)}  # fmt: skip

    refused, timed_out = logged(capped), logged(late)
    assert refused.keys() <= opened.keys(), sorted(refused.keys() - opened.keys())
    # Each source's fifth and sixth were refused, at once.
    for src in sources:
        assert len({k for k in refused if k[0] == src}) == 2, f"{src}: refused {sorted(refused)}"
    # At once: before a handshake timeout (1 s) could have closed them (a busy station's loop lags too).
    late_refusals = {k: at - opened[k] for k, at in refused.items() if at - opened[k] >= 1.0}
    assert not late_refusals, late_refusals
    # The four it held were closed for want of a handshake, after the timeout and not long after;
    # dripping a byte at a time bought the slow ones nothing more.
    kept = opened.keys() - refused.keys()
    assert slow_keys <= kept and kept <= timed_out.keys(), sorted(kept - timed_out.keys())
    # Not before the timeout; the upper bound only catches one held open far past it, on a busy box.
    off = {k: timed_out[k] - opened[k] for k in kept if not 0.8 <= timed_out[k] - opened[k] < 5.0}
    assert not off, off


def test_each_refused_connection_is_logged_once(shared: Pair) -> None:
    port = parse_hostport(shared.listen[0])[1]
    reason = "it presented no TLS certificate"
    before = log_text(shared.a).count(reason)
    openssl("-connect", f"127.0.0.1:{port}", "-quiet")
    # Until the station has logged this refusal (a fixed 0.3 s on a busy machine could look before
    # it did, and then find nothing to count twice).
    asyncio.run(wait_until(_async(lambda: log_text(shared.a).count(reason) > before), "the refusal logged", 10))
    lines = [ln for ln in shared.a.log.read_text().splitlines() if reason in ln]
    sources = [re.search(r"from (\S+):", ln).group(1) for ln in lines]  # type: ignore[union-attr]
    assert len(sources) == len(set(sources)), lines[-2:]


# -- attacks with NDMC's stolen keys, NDMC itself offline --------------------------------------------


@pytest.fixture(scope="module")
def insider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """A pair with traffic, then NDMC stopped: its keys are in the attacker's hands."""
    p = new_pair(tmp_path_factory.mktemp("insider"))
    try:
        asyncio.run(restart(p.a, path_dead_after=1.5))

        async def warm() -> None:
            await synced(p)
            for i in range(3):
                await round_trip(p, f"before {i}")

        asyncio.run(warm())
        p.b.stop()
        yield p
    finally:
        p.a.stop()
        p.b.stop()


def attack(p: Pair, *steps: Any, seconds: float = 2.0, hello: bool = True, path: int = 0, pace: float = 0) -> Impostor:
    """Dial EUCOM as NDMC, say HELLO, write ``steps`` (frames or raw bytes; all in one burst, or
    ``pace`` seconds apart), collect the answer."""

    async def main() -> Impostor:
        imp = await Impostor.dial(p.a.home, p.listen[path], p.b.home)
        if hello:
            imp.hello(p.line, p.fb)
        for step in steps:
            if isinstance(step, tuple):
                imp.write(*step)
            else:
                imp.raw(step)
            if pace:
                await asyncio.sleep(pace)
                if imp.conn.closed:
                    break
        await imp.read(seconds)
        imp.close()
        return imp

    return asyncio.run(main())


def test_replayed_tls_session_bytes_are_refused_at_the_handshake(insider: Pair) -> None:
    """Record every byte a real authenticated session sends, replay them into a new connection."""
    host, port = parse_hostport(insider.listen[0])
    before = store_state(insider.a.home)

    async def main() -> None:
        recorded = bytearray()

        async def relay(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            up_r, up_w = await asyncio.open_connection(host, port)

            async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, tap: bool) -> None:
                with contextlib.suppress(ConnectionError, OSError):
                    while data := await src.read(65536):
                        if tap:
                            recorded.extend(data)
                        dst.write(data)
                        await dst.drain()
                dst.close()

            await asyncio.gather(pump(r, up_w, True), pump(up_r, w, False))

        server = await asyncio.start_server(relay, "127.0.0.1", 0)
        relay_port = server.sockets[0].getsockname()[1]
        imp = await Impostor.dial(insider.a.home, f"127.0.0.1:{relay_port}", insider.b.home)
        imp.hello(insider.line, insider.fb)
        raws = [r[0] for r in rows(insider.a.home, "SELECT raw FROM envelopes WHERE sender=? ORDER BY seq", insider.fb)]
        for raw in raws:
            imp.write(FrameType.ENVELOPE, raw)
        await imp.read(1.0)
        assert not imp.closed and imp.of(FrameType.HELLO), "the recorded session itself was refused"
        imp.close()
        server.close()
        assert len(recorded) > 1000
        log_before = log_text(insider.a).count("TLS handshake failed")
        r, w = await asyncio.open_connection(host, port)
        w.write(bytes(recorded))
        with contextlib.suppress(ConnectionError, TimeoutError):
            while await asyncio.wait_for(r.read(1 << 20), 3):
                pass  # whatever the server says before it drops us: a fresh handshake, then an alert
        w.transport.abort()
        await wait_until(_async(lambda: log_text(insider.a).count("TLS handshake failed") > log_before), "logged", 5)

    asyncio.run(main())
    assert store_state(insider.a.home) == before


def test_replayed_envelope_frames_in_a_new_session_are_dropped_and_store_nothing(insider: Pair) -> None:
    before = store_state(insider.a.home)
    alarms_before = asyncio.run(insider.a.call({"op": "status"}))["alarms"]
    raws = [r[0] for r in rows(insider.a.home, "SELECT raw FROM envelopes WHERE sender=? ORDER BY seq", insider.fb)]
    assert len(raws) >= 3
    imp = attack(insider, *[(FrameType.ENVELOPE, raw) for raw in raws * 3], seconds=1.0)
    assert not imp.closed and imp.error() == ""  # copies are dropped quietly, before any verification
    assert store_state(insider.a.home) == before
    assert asyncio.run(insider.a.call({"op": "status"}))["alarms"] == alarms_before


def test_replayed_receipt_frames_store_nothing(insider: Pair) -> None:
    receipts = [r[0] for r in rows(insider.a.home, "SELECT raw FROM receipts WHERE by=? ORDER BY rowid", insider.fb)]
    assert receipts
    before = store_state(insider.a.home)
    attack(insider, *[(FrameType.RECEIPT, raw) for raw in receipts * 5], seconds=1.5)
    after = store_state(insider.a.home)
    assert len(after[2]) == len(before[2]), f"{len(after[2]) - len(before[2])} receipts stored again"


@pytest.mark.parametrize(
    "what,steps,hello,reason",
    [
        ("protocol version 0 only", [(FrameType.HELLO, "v0")], False, "peer speaks protocol versions [0]"),
        ("protocol version 2 only", [(FrameType.HELLO, "v2")], False, "peer speaks protocol versions [2]"),
        ("unknown frame type", [b"\x00\x00\x00\x05\xff" + os.urandom(4)], True, "unknown frame type 255"),
        ("zero-length frame", [b"\x00\x00\x00\x00", (FrameType.HEARTBEAT, b"{}")], True, "frame of 0 bytes"),
        ("envelope before HELLO", [(FrameType.ENVELOPE, b"x" * 80)], False, "ENVELOPE frame is not allowed"),
        ("a PAIR frame on the line", [(FrameType.PAIR, b"{}")], True, "PAIR frame is not allowed"),
        ("a second HELLO", [(FrameType.HELLO, "v1")], True, "HELLO frame is not allowed"),
        ("garbage envelope", [(FrameType.ENVELOPE, os.urandom(300))], True, "malformed envelope"),
    ],
)
def test_malformed_frames_from_an_authenticated_peer_close_the_path_with_a_reason(
    insider: Pair, what: str, steps: list[Any], hello: bool, reason: str
) -> None:
    before = store_state(insider.a.home)
    hellos = {
        "v0": {"versions": [0]}, "v2": {"versions": [2]}, "v1": {"versions": [1]},
    }  # fmt: skip
    built = []
    for step in steps:
        if isinstance(step, tuple) and isinstance(step[1], str):
            obj = {
                **hellos[step[1]], "line": insider.line, "station": insider.fb, "mine": {"seq": 0, "id": None},
                "yours": {"seq": 0, "id": None}, "time": 1, "confirmed": True,
            }  # fmt: skip
            built.append((step[0], obj))
        else:
            built.append(step)
    imp = attack(insider, *built, hello=hello, seconds=2)
    assert imp.closed, what
    assert reason in imp.error(), imp.error()  # the station tells the peer why, in an ERROR frame
    assert store_state(insider.a.home) == before


def test_oversized_frame_is_refused_before_its_payload_is_read(insider: Pair) -> None:
    before = store_state(insider.a.home)
    started = time.monotonic()
    imp = attack(insider, (0x7FFFFFF0).to_bytes(4, "big") + b"\x02" + b"x" * 1000, seconds=5)
    assert imp.closed and time.monotonic() - started < 3
    # Refused for its announced size, from the header alone (not cut off later as a stalled path):
    # the station says so in its ERROR frame.
    assert f"sent a frame of {0x7FFFFFF0} bytes, over the" in imp.error(), imp.error()
    assert store_state(insider.a.home) == before


def test_endless_frame_dripping_under_the_size_limit_is_cut_off_after_path_dead_after(insider: Pair) -> None:
    """A frame header announcing 1 MiB - 1, then one byte every 200 ms: never a whole frame."""
    before = store_state(insider.a.home)

    async def main() -> float:
        imp = await Impostor.dial(insider.a.home, insider.listen[1], insider.b.home)
        imp.hello(insider.line, insider.fb)
        await asyncio.sleep(0.2)
        imp.raw((1024 * 1024 - 1).to_bytes(4, "big") + b"\x02")
        started = time.monotonic()
        reader = asyncio.ensure_future(imp.read(10))
        while not reader.done() and time.monotonic() - started < 10:
            with contextlib.suppress(Exception):
                imp.raw(b"x")
            await asyncio.sleep(0.2)
        await reader
        imp.close()
        assert imp.closed
        return time.monotonic() - started

    took = asyncio.run(main())
    assert took < 1.5 + 2.0, f"an endless frame held the path for {took:.1f} s (path_dead_after 1.5 s)"
    assert store_state(insider.a.home) == before


def test_a_path_closed_for_a_protocol_error_is_logged_with_its_reason(insider: Pair) -> None:
    before = log_text(insider.a).count("unknown frame type 254")
    attack(insider, b"\x00\x00\x00\x05\xfejunk", seconds=1)  # a well-framed frame of unknown type
    # attack() stops reading after 1 s, closed or not: a busy station may log its reason later than
    # the fixed 0.3 s this looked after, so wait for the line itself.
    asyncio.run(wait_until(_async(lambda: log_text(insider.a).count("unknown frame type 254") > before),
                           "the reason logged", 10))  # fmt: skip


def test_the_real_peer_resumes_after_the_insider_attacks(insider: Pair) -> None:
    async def main() -> None:
        await insider.b.start()
        await synced(insider)
        await round_trip(insider, "after the insider attacks")
        st = await insider.a.status_line()
        assert not st["halted"]

    asyncio.run(main())


# -- attacks that change what a line holds: a fresh pair each ----------------------------------------


def test_ed25519_speccheck_signatures_arriving_as_envelopes_are_refused(tmp_path: Path) -> None:
    """The 12 edge cases of "Taming the many EdDSAs" as the signature of NDMC's next envelope, and the
    malleations a lax verifier accepts under NDMC's real key: S + L, small-order R with S = 0."""
    cases = json.loads(SPECCHECK.read_text())
    with fresh_pair(tmp_path, path_dead_after=1.5) as p:
        asyncio.run(round_trip(p, "warm"))
        p.b.stop()
        fb = p.fb
        seq, prev = head(p.a.home, p.line, fb)
        before = store_state(p.a.home)
        good = forge(p.b.home, p.line, seq + 1, prev, text="signed by NDMC's key")
        real_sig = good[-64:]
        s_plus_l = real_sig[:32] + (int.from_bytes(real_sig[32:], "little") + L).to_bytes(32, "little")
        small_r = bytes.fromhex(cases[0]["signature"])[:32] + bytes(32)
        sigs = [bytes.fromhex(c["signature"]) for c in cases] + [s_plus_l, small_r, bytes(64)]
        for i, sig in enumerate(sigs):
            imp = attack(p, (FrameType.ENVELOPE, with_sig(good, sig)), seconds=2)
            assert imp.closed, f"signature {i} was not refused"
            assert f"envelope seq {seq + 1} refused" in imp.error() and "signature does not verify" in imp.error()
        assert store_state(p.a.home) == before
        alarms = asyncio.run(p.a.call({"op": "status"}))["alarms"]  # a repeated alarm counts up in one row
        assert sum(a["count"] for a in alarms if "signature does not verify" in a["text"]) >= len(sigs)
        assert "signature does not verify" in log_text(p.a)

        async def resume() -> None:  # no seq was used up: NDMC's own next envelope is stored there
            await p.b.start()
            await synced(p)
            await round_trip(p, "after the edge cases")

        asyncio.run(resume())
        assert head(p.a.home, p.line, fb)[0] == seq + 1


def test_huge_seq_gaps_are_bounded_and_the_line_recovers(tmp_path: Path) -> None:
    """Envelopes a million seqs ahead, well signed: buffered only up to max_gap_buffer, a gap request
    goes back, nothing is stored, memory stays bounded; then the real peer goes on normally."""
    with fresh_pair(tmp_path, max_gap_buffer=16, path_dead_after=1.5) as p:
        asyncio.run(round_trip(p, "warm"))
        p.b.stop()
        seq0 = head(p.a.home, p.line, p.fb)[0]
        before = store_state(p.a.home)
        rss0 = rss_kib(p.a)
        far = [
            (FrameType.ENVELOPE, forge(p.b.home, p.line, 1_000_000 + i, os.urandom(32).hex(), size=500_000))
            for i in range(200)
        ]  # 100 MB of out-of-order envelopes
        imp = attack(p, *far, seconds=3)
        grew = rss_kib(p.a) - rss0
        gaps = [canonical.decode_object(g, "gap") for g in imp.of(FrameType.GAP)]
        assert gaps and gaps[0]["from"] == seq0 + 1 and gaps[0]["to"] == 999_999 and gaps[0]["station"] == p.fb
        assert len(gaps) <= 5, "one gap request per second at most"
        assert store_state(p.a.home) == before
        assert grew < 50_000, f"EUCOM grew by {grew} KiB holding a gap of 16 envelopes of 500 kB"

        async def resume() -> None:
            await p.b.start()
            await synced(p)
            for i in range(3):
                await round_trip(p, f"after the gap {i}")

        asyncio.run(resume())


def test_gap_request_for_a_huge_range_is_answered_within_max_gap_buffer(tmp_path: Path) -> None:
    with fresh_pair(tmp_path, max_gap_buffer=4) as p:
        for i in range(12):
            assert asyncio.run(send(p.b, p.line, f"NDMC {i}"))["ok"]
            assert asyncio.run(send(p.a, p.line, f"EUCOM {i}"))["ok"]
        asyncio.run(wait_until(lambda: both(p.a, p.b, lambda ln: ln["their_seq"] == 12 and ln["unreceipted"] == 0),
                               "12 each way"))  # fmt: skip
        p.b.stop()
        ours = attack(p, (FrameType.GAP, {"station": p.fa, "from": 1, "to": 10**15}), seconds=1.5)
        assert len(ours.of(FrameType.ENVELOPE)) <= 4 + 12  # EUCOM's chain: capped (+ the HELLO resend)
        theirs = attack(p, (FrameType.GAP, {"station": p.fb, "from": 1, "to": 10**15}), seconds=1.5)
        sent_back = [e for e in theirs.of(FrameType.ENVELOPE) if canonical.decode_object(
            split(e).header_bytes, "h")["sender"] == p.fb]  # fmt: skip
        assert len(sent_back) <= 4, f"a 10^15-long GAP for NDMC's own chain got {len(sent_back)} envelopes back"


def test_gap_buffer_is_bounded_in_bytes_with_default_limits(tmp_path: Path) -> None:
    with fresh_pair(tmp_path, path_dead_after=1.5) as p:
        p.b.stop()
        rss0 = rss_kib(p.a)
        far = [(FrameType.ENVELOPE, forge(p.b.home, p.line, 500 + i, os.urandom(32).hex(), size=1_000_000))
               for i in range(100)]  # fmt: skip
        attack(p, *far, seconds=3)
        grew = rss_kib(p.a) - rss0
        assert grew < 32_000, f"EUCOM holds {grew} KiB for one peer's out-of-order envelopes"


def unknown_kinds(p: Pair, n: int, size: int) -> list[tuple[FrameType, bytes]]:
    """``n`` well-signed envelopes in order, of a kind this station does not know, ``size`` bytes each."""
    seq, prev = head(p.a.home, p.line, p.fb)
    frames = []
    for i in range(n):
        raw = forge(p.b.home, p.line, seq + 1 + i, prev, kind="ZZ_FROM_THE_FUTURE", size=size)
        prev = split(raw).id
        frames.append((FrameType.ENVELOPE, raw))
    return frames


QUOTA = 400_000


def test_a_peer_filling_its_disk_budget_cannot_take_ours(tmp_path: Path) -> None:
    """Unknown kinds are stored up to the peer's budget and no further, with an alarm before the
    limit; our own direction keeps its whole budget (it used to be one quota for both)."""
    with fresh_pair(tmp_path, max_line_disk_bytes=QUOTA, path_dead_after=1.5) as p:
        p.b.stop()
        imp = attack(p, *unknown_kinds(p, 40, 20_000), pace=0.03, seconds=2)  # 800 kB, one by one
        stored = rows(p.a.home, "SELECT kind FROM envelopes WHERE sender=?", p.fb)
        assert len(stored) >= 15 and {k for (k,) in stored} == {"ZZ_FROM_THE_FUTURE"}, "unknown kinds are kept"
        assert "disk limit (max_line_disk_bytes)" in imp.error()
        alarms = [a["text"] for a in asyncio.run(p.a.call({"op": "status"}))["alarms"]]
        assert any("not stored, not receipted" in a and "max_line_disk_bytes" in a for a in alarms)
        assert any(a.startswith("DISK: NDMC's envelopes") for a in alarms), "warned before the limit"
        ours = asyncio.run(send(p.a, p.line, "EUCOM while the peer is at its quota " + "y" * 30_000))
        assert ours["ok"], ours
        assert line_bytes(p.a.home, p.line, p.fb) <= QUOTA
        again = attack(p, *unknown_kinds(p, 1, 20_000), seconds=1)  # the quota holds on the next connection
        assert "disk limit" in again.error() and line_bytes(p.a.home, p.line, p.fb) <= QUOTA


def test_a_burst_of_envelopes_cannot_overshoot_the_line_disk_quota(tmp_path: Path) -> None:
    with fresh_pair(tmp_path, max_line_disk_bytes=QUOTA, path_dead_after=1.5) as p:
        p.b.stop()
        attack(p, *unknown_kinds(p, 60, 20_000), seconds=2)  # 1.2 MB in one burst
        used = line_bytes(p.a.home, p.line, p.fb)
        assert used <= QUOTA, f"the line holds {used} bytes, over its {QUOTA}-byte quota"


def test_changed_peer_key_stops_traffic(tmp_path: Path) -> None:
    with fresh_pair(tmp_path) as p:
        asyncio.run(round_trip(p, "before the key change"))
        theirs = head(p.a.home, p.line, p.fb)
        p.b.stop()
        rotate_tls(p.b.home)  # a new TLS key, even one NDMC's root certifies: not the pinned one

        async def main() -> None:
            await p.b.start()
            queued = await send(p.b, p.line, "sent with the new key")
            assert queued["ok"] and queued["seq"] is None  # accepted, waits: the line is not in sync
            await wait_until(_async(lambda: "its TLS certificate is not the paired station's" in log_text(p.a)),
                             "EUCOM refuses NDMC's new key", 10)  # fmt: skip
            await asyncio.sleep(2)
            assert head(p.a.home, p.line, p.fb) == theirs  # traffic stopped
            assert not (await p.a.status_line())["synced"] and (await p.b.status_line())["outbox"] == 1

        asyncio.run(main())


def test_a_dialler_whose_key_the_peer_refuses_says_why_in_its_status(tmp_path: Path) -> None:
    with fresh_pair(tmp_path) as p:
        p.b.stop()
        rotate_tls(p.b.home)

        async def main() -> None:
            await p.b.start()
            await wait_until(_reason(p.b, "refused our TLS certificate"), "NDMC says why", 3)

        asyncio.run(main())


def test_pairing_again_after_a_key_change_restores_traffic(tmp_path: Path) -> None:
    with fresh_pair(tmp_path) as p:
        p.b.stop()
        rotate_tls(p.b.home)

        async def main() -> None:
            await p.b.start()
            token = (await p.a.call({"op": "invite"}))["token"]
            paired = await p.b.call({"op": "pair", "token": token})
            new_line = paired["line"]
            await p.a.call({"op": "confirm", "line": new_line, "code": paired["safety_code"]})
            await p.b.call({"op": "confirm", "line": new_line, "code": paired["safety_code"]})
            assert (await send(p.b, new_line, "on the new line"))["ok"]
            await wait_until(_async(lambda: head(p.a.home, new_line, p.fb)[0] == 1), "new line carries traffic", 4)

        asyncio.run(main())


def test_changed_key_at_the_listening_station_is_refused_by_the_dialler(tmp_path: Path) -> None:
    with fresh_pair(tmp_path) as p:
        p.a.stop()
        rotate_tls(p.a.home)

        async def main() -> None:
            await p.a.start()
            await wait_until(_reason(p.b, "which is not the paired station's key"), "NDMC refuses EUCOM", 15)
            queued = await send(p.b, p.line, "waits")
            assert queued["ok"] and queued["seq"] is None

        asyncio.run(main())


def rotate_tls(home: Path) -> None:
    """A new TLS key, certified by the station's own root: what a rotation without a KEY envelope is."""
    keys, name = home / "keys", StationDir(home).config().name
    for file in ("tls.key", "tls.crt"):
        (keys / file).unlink()
    der = identity.new_tls_identity(keys / "tls.key", keys / "tls.crt", name)
    root = identity.load_signing_key(keys / "root.key")
    fp = identity.fingerprint(bytes(root.verify_key))
    spki = identity.spki_hash(der)
    certs = json.loads((keys / "certs.json").read_text())
    certs["tls"] = identity.certify(
        root, KeyCert(station=fp, name=name, role="tls", key=spki, key_id=spki[:32], issued_at=1)
    ).to_obj()
    (keys / "certs.json").write_text(json.dumps(certs))


async def _reason_of(proc: StationProc, text: str) -> bool:
    st = await proc.status_line()
    return any(text in path["reason"] for path in st["paths"].values())


def _reason(proc: StationProc, text: str) -> Any:
    return lambda: _reason_of(proc, text)


def test_modified_peer_that_equivocates_is_kept_as_evidence_halted_and_alarmed_at_both_ends(tmp_path: Path) -> None:
    """NDMC's key signs a second, different envelope at seq 2, sent on one path while NDMC itself is
    connected on the other: EUCOM keeps both, halts, alarms, and NDMC hears it."""
    with fresh_pair(tmp_path) as p:
        for i in range(2):
            asyncio.run(round_trip(p, f"m{i}"))
        first = rows(p.a.home, "SELECT raw FROM envelopes WHERE sender=? AND seq=2", p.fb)[0][0]
        prev = rows(p.a.home, "SELECT id FROM envelopes WHERE sender=? AND seq=1", p.fb)[0][0]
        other = forge(p.b.home, p.line, 2, prev, text="we never said that")
        imp = attack(p, (FrameType.ENVELOPE, other), seconds=2)
        assert "EQUIVOCATION" in imp.error()

        async def main() -> None:
            await wait_until(_alarmed(p.a, "EQUIVOCATION"), "EUCOM alarms", 10)
            await wait_until(_alarmed(p.b, "EQUIVOCATION"), "NDMC hears it", 10)
            assert (await p.a.status_line())["halted"]
            assert (await send(p.b, p.line, "after the fork"))["ok"]
            await asyncio.sleep(1.5)
            assert head(p.a.home, p.line, p.fb)[0] == 2  # nothing more from NDMC is stored
            await restart(p.a)
            assert (await p.a.status_line())["halted"]  # halted for good, not until a restart

        asyncio.run(main())
        (evidence,) = rows(p.a.home, "SELECT seq, first, second FROM equivocations")
        assert evidence == (2, first, other)
        p.a.stop()
        out = subprocess.run([sys.executable, "-m", "redline", "verify", "--station", str(p.a.home)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode == 2 and "EQUIVOCATION" in out.stdout, out.stdout + out.stderr


async def _alarmed_async(proc: StationProc, text: str) -> bool:
    return any(text in a["text"] for a in (await proc.call({"op": "status"}))["alarms"])


def _alarmed(proc: StationProc, text: str) -> Any:
    return lambda: _alarmed_async(proc, text)


def test_envelopes_of_one_line_replayed_into_another_are_refused(tmp_path: Path) -> None:
    """EUCOM pairs with a second station, JOINT; JOINT replays NDMC's envelopes into its own line,
    and sends its own envelope carrying the first line's id."""
    with fresh_pair(tmp_path) as p:
        for i in range(2):
            asyncio.run(round_trip(p, f"line one {i}"))
        port = free_ports(1)[0]
        other = StationDir(tmp_path / "ndmc2")
        other.init(name="JOINT", lang="en", listen=[f"127.0.0.1:{port}"])
        c = StationProc(other.path)

        async def pair_c() -> str:
            await c.start()
            token = (await p.a.call({"op": "invite"}))["token"]
            paired = await c.call({"op": "pair", "token": token})
            await p.a.call({"op": "confirm", "line": paired["line"], "code": paired["safety_code"]})
            await c.call({"op": "confirm", "line": paired["line"], "code": paired["safety_code"]})
            await wait_until(lambda: _synced_line(c, paired["line"]), "second line in sync")
            return str(paired["line"])

        try:
            line2 = asyncio.run(pair_c())
        finally:
            c.stop()
        fc = other.load_keys().fingerprint
        before = store_state(p.a.home)
        line1_raws = [r[0] for r in rows(p.a.home, "SELECT raw FROM envelopes WHERE sender=? ORDER BY seq", p.fb)]

        async def main() -> None:
            imp = await Impostor.dial(p.a.home, p.listen[0], other.path)
            imp.hello(line2, fc)
            imp.write(FrameType.ENVELOPE, line1_raws[0])
            await imp.read(2)
            imp.close()
            assert imp.closed and "envelope from a station that is not on this line" in imp.error()
            imp = await Impostor.dial(p.a.home, p.listen[0], other.path)
            imp.hello(line2, fc)
            imp.write(FrameType.ENVELOPE, forge(other.path, p.line, 1, None, text="for the other line"))
            await imp.read(2)
            imp.close()
            assert imp.closed and "not this one (replayed from another line)" in imp.error()
            await wait_until(_alarmed(p.a, "not this one (replayed from another line)"), "alarm", 5)

        asyncio.run(main())
        assert store_state(p.a.home)[0] == before[0]
        assert head(p.a.home, line2, p.fb) == (0, None) and head(p.a.home, line2, fc) == (0, None)


async def _synced_line(proc: StationProc, line: str) -> bool:
    st = await proc.call({"op": "status"})
    return any(ln["line"] == line and ln["synced"] for ln in st["lines"])


def test_tls_client_that_offers_only_tls_1_2_with_the_peers_own_key_is_refused(tmp_path: Path) -> None:
    """A downgrade by someone holding NDMC's key: TLS 1.2 only, the right certificate."""
    with fresh_pair(tmp_path) as p:
        host, port = parse_hostport(p.listen[0])

        async def main() -> None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(p.b.home / "keys" / "tls.crt", p.b.home / "keys" / "tls.key")
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await asyncio.open_connection(host, port, ssl=ctx)
            await wait_until(_async(lambda: "TLS handshake failed (UNSUPPORTED_PROTOCOL)" in log_text(p.a)), "log", 5)
            await round_trip(p, "after the downgrade")

        asyncio.run(main())
