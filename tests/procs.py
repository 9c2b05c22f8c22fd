"""Real station processes and a cuttable TCP relay, for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redline.config import Limits
from redline.control import call
from redline.home import StationDir
from redline.testing import free_ports


def kill_9_and_read(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGKILL ``proc`` and what it wrote after the lines already read from it. Read through its own
    buffered readers: ``communicate()`` reads the pipes' fds directly, so lines a ``readline()`` had
    already buffered would be lost (and look like work the process never reported)."""
    os.kill(proc.pid, signal.SIGKILL)
    out = proc.stdout.read() if proc.stdout is not None else ""
    err = proc.stderr.read() if proc.stderr is not None else ""
    proc.wait(timeout=30)
    return out, err


class StationProc:
    """``redline serve`` in its own process, driven through its control socket."""

    def __init__(self, home: Path, args: tuple[str, ...] = ()) -> None:
        self.home = home
        self.args = args  # more options for 'redline serve' (--http, --metrics, --log-format...)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home / "serve.log"

    async def start(self) -> None:
        sock = StationDir(self.home).control_path
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        with open(self.log, "ab") as log:
            # Tests that drive time start their stations on a settable clock (the harness decides,
            # by this variable; the station itself reads no environment for it).
            clock = ["--settable-clock"] if os.environ.get("REDLINE_SETTABLE_CLOCK") == "1" else []
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "redline", "serve", "--station", str(self.home), *clock, *self.args],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"station exited: {self.log.read_text()[-2000:]}")
            if sock.exists():
                with contextlib.suppress(Exception):
                    await call(self.home, {"op": "status"})
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError("station did not start")

    def kill9(self) -> None:
        """SIGKILL, and wait for the process to be gone (blocking, briefly)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, and wait up to 15 s for the clean stop. This blocks: from a coroutine whose loop
        also runs relays, proxies, traffic or anything that times the stations, call it as
        ``await asyncio.to_thread(proc.stop)`` (on the loop, it stalled those and skewed what they
        measured: the connection flood test in CI at 58f183d)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def call(self, request: dict[str, Any]) -> Any:
        return await call(self.home, request)

    async def status_line(self) -> dict[str, Any]:
        st = await self.call({"op": "status"})
        line: dict[str, Any] = st["lines"][0]
        return line


async def pipelined(home: Path, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send many control requests on one connection without waiting; answers come in order."""
    reader, writer = await asyncio.open_unix_connection(str(StationDir(home).control_path), limit=2**24)
    try:
        writer.write(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
        await writer.drain()
        return [json.loads(await reader.readline()) for _ in requests]
    finally:
        writer.close()


class Relay:
    """A TCP relay standing in for one network path; ``cut`` drops it like a severed cable and
    ``stall`` turns it into a black hole (sockets open, no byte forwarded) until ``release``."""

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port, self.target_port = listen_port, target_port
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.stalled = False

    def stall(self) -> None:
        self.stalled = True

    def release(self) -> None:
        self.stalled = False

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.listen_port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if not self.stalled:
                        dst.write(data)
                        await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        with contextlib.suppress(asyncio.CancelledError):  # the loop is shutting down
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def cut(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()


async def paired_stations(
    root: Path,
    *,
    relays: bool = True,
    serve_args: tuple[tuple[str, ...], tuple[str, ...]] = ((), ()),
    store: str = "",
    redial_max: float | None = None,
) -> tuple[StationProc, StationProc, str, list[Relay]]:
    """EUCOM (inviter, two paths through relays) and NDMC, paired by the real ceremony, confirmed.
    ``serve_args``: more 'redline serve' options for EUCOM and for NDMC. ``store``: EUCOM's store
    ('redline init --store', a postgresql:// URL; "" for SQLite in its folder); NDMC's is SQLite.
    ``redial_max``: both stations' ``redial_max`` (default 5 s). NDMC dials, and its backoff
    starts again only after a connection that stayed up that long: a test that restarts EUCOM
    every second or two would otherwise wait out a backoff grown to 5 s at each restart (what it
    tests is not the backoff, which tests/test_transport.py holds)."""
    p = free_ports(6)
    eucom, ndmc = StationDir(root / "eucom"), StationDir(root / "ndmc")
    listen = [f"127.0.0.1:{p[0]}", f"127.0.0.1:{p[1]}"]
    advertise = [f"127.0.0.1:{p[4]}", f"127.0.0.1:{p[5]}"] if relays else []
    # The scheduled line test is set twelve hours away from now, so a test that moves the clock a
    # few minutes never runs into one by the time of day it happens to run at.
    far = Limits(test_times_utc=((datetime.now(UTC) + timedelta(hours=12)).strftime("%H:%M"),))
    if redial_max is not None:
        far = replace(far, redial_max=redial_max)
    eucom.init(name="EUCOM", lang="en", listen=listen, advertise=advertise, limits=far, store=store)
    ndmc.init(name="NDMC", lang="ru", listen=[f"127.0.0.1:{p[2]}", f"127.0.0.1:{p[3]}"], limits=far)
    rs = [Relay(p[4], p[0]), Relay(p[5], p[1])] if relays else []
    for r in rs:
        await r.start()
    a, b = StationProc(eucom.path, serve_args[0]), StationProc(ndmc.path, serve_args[1])
    await a.start()
    await b.start()
    token = (await a.call({"op": "invite"}))["token"]
    paired = await b.call({"op": "pair", "token": token})
    line = paired["line"]
    for _ in range(100):
        st = await a.call({"op": "status"})
        if st["lines"]:
            break
        await asyncio.sleep(0.05)
    assert st["lines"][0]["safety_code"] == paired["safety_code"]
    await a.call({"op": "confirm", "line": line, "code": paired["safety_code"]})
    await b.call({"op": "confirm", "line": line, "code": paired["safety_code"]})
    await wait_until(lambda: both(a, b, lambda ln: ln["active"] and ln["synced"]), "line in sync")
    return a, b, line, rs


async def both(a: StationProc, b: StationProc, pred: Any) -> bool:
    return bool(pred(await a.status_line()) and pred(await b.status_line()))


async def wait_until(pred: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if await pred():
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
