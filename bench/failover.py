"""Failover and dead-line detection under steady traffic, between two real station processes.

EUCOM and NDMC are paired by the real ceremony (``tests/procs.paired_stations``); NDMC dials each
of EUCOM's two listening addresses through its own TCP relay (``tests.procs.Relay``, extended here
with a silent stall), so either path can be cut or black-holed while the other carries on.
Steady traffic throughout: durable sends (``wait: receipt``, 1 KiB) one after the other on a held
control connection to EUCOM; each completion is a message stored at NDMC and its signed receipt
back at EUCOM. Status is polled at both stations every 20 ms.

1. **cut** (RST, like a severed cable, ``Relay.cut``) of path 1: the *gap* from the cut to the next
   completed durable send (traffic flowing on path 2), the longest interval between two
   completions around the cut against the median interval, and the time until ``status`` shows
   path 1 down at each station. Then path 1 is restored and the time until it is up again is read.
2. **silent stall** of path 2 (the relay keeps both sockets open and drops every byte: no RST, no
   FIN; only the heartbeats can tell): the same gap, and the time until ``status`` shows path 2
   down (``path_dead_after`` is the setting that decides it).
3. **dead line**: both paths stalled at once. The time until ``status`` shows no path up at each
   station; with the full run also until the ``LINE DOWN`` alarm (``line_down_alarm_seconds``).
   A few messages are accepted during the outage. Both paths are released, and the time to the
   next completed durable send is the recovery. (Released, the black-holed connections carry bytes
   again; with ``--quick`` they are reset instead, which is faster to recover from.)
4. **nothing lost**: afterwards EUCOM's chain and NDMC's copy of it must be the same length with
   nothing unreceipted, and NDMC must hold (``has``) every envelope id any send returned. A durable
   send in flight when the whole line goes silent answers with an error once ``wait_receipted``
   gives up (30 s; the envelope stays in the transcript and is resent): it is counted apart, and
   the equal chain lengths show it arrived.

Run alone: ``.venv/bin/python -m bench.failover [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Figures, Row, table
from bench.line_bench import TEXT, Control
from redline.home import StationDir
from tests.procs import Relay, StationProc, paired_stations, pipelined

AIM_FAILOVER_S = 3.0
AIM_DEAD_S = 3.0
POLL = 0.02
RELEASE_NOTE = {
    False: "the black-holed connections carry bytes again (not reset)",
    True: "--quick: the black-holed connections are reset (RST) when released",
}


StallRelay = Relay  # tests.procs.Relay can stall (black-hole) and release a path


@dataclass
class Traffic:
    """Durable sends one after the other; ``done`` holds (completion time, seq, id) of each."""

    home: Path
    line: str
    done: list[tuple[float, int, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stopping: bool = False

    async def run(self) -> None:
        ctl = await Control.open(self.home)
        try:
            while not self.stopping:
                try:
                    r = await ctl.request({"op": "send", "line": self.line, "text": TEXT, "wait": "receipt"})
                except RuntimeError as exc:
                    self.failures.append(str(exc))
                    continue
                self.done.append((time.perf_counter(), r["seq"], r["id"]))
        finally:
            ctl.close()

    def first_after(self, t: float) -> float:
        for when, _, _ in self.done:
            if when > t:
                return when
        return float("nan")

    def intervals(self, lo: float, hi: float) -> list[float]:
        times = [w for w, _, _ in self.done if lo <= w <= hi]
        return [b - a for a, b in itertools.pairwise(times)]


async def path_state(proc: StationProc, path: str) -> bool:
    st = await proc.status_line()
    return bool(st["paths"].get(path, {}).get("up"))


async def until(pred: Callable[[], Any], timeout: float) -> float:
    """Poll the async ``pred`` every 20 ms; the perf_counter time it first held (NaN on timeout)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        with contextlib.suppress(Exception):
            if await pred():
                return time.perf_counter()
        await asyncio.sleep(POLL)
    return float("nan")


async def detect(a: StationProc, b: StationProc, pa: str, pb: str, *, up: bool, timeout: float) -> tuple[float, float]:
    """Times at which station A's path ``pa`` and B's path ``pb`` are seen ``up`` (or down)."""

    async def at(proc: StationProc, path: str) -> float:
        async def ok() -> bool:
            return await path_state(proc, path) == up

        return await until(ok, timeout)

    ta, tb = await asyncio.gather(at(a, pa), at(b, pb))
    return ta, tb


async def release(relay: StallRelay, *, reset: bool) -> None:
    """End a stall. ``reset``: also reset the connections that were black-holed (RST), as a
    rebooted middlebox would; otherwise they carry bytes again (TLS on them is broken by the bytes
    that were dropped, so the stations must notice and drop them themselves)."""
    if reset:
        await relay.cut()
        relay.release()
        await relay.start()
    else:
        relay.release()


async def no_path_up(proc: StationProc) -> bool:
    st = await proc.status_line()
    return not any(p.get("up") for p in st["paths"].values())


async def run(root: Path, *, quick: bool) -> Figures:
    a, b, line, plain = await paired_stations(root, relays=True)
    for r in plain:  # swap the plain relays for ones that can also stall, on the same ports
        await r.cut()
    relays = [StallRelay(r.listen_port, r.target_port) for r in plain]
    for r in relays:
        await r.start()
    limits = StationDir(a.home).config().limits
    # path names: at EUCOM (it listens) the listening address, at NDMC (it dials) the relay's address
    at_a = [f"127.0.0.1:{r.target_port}" for r in relays]
    at_b = [f"127.0.0.1:{r.listen_port}" for r in relays]
    f: Figures = {
        "quick": float(quick),
        "path_dead_after_s": limits.path_dead_after,
        "heartbeat_s": limits.heartbeat_interval,
        "line_down_alarm_s": limits.line_down_alarm_seconds,
    }
    traffic = Traffic(a.home, line)
    task = asyncio.ensure_future(traffic.run())
    try:
        for i in range(2):  # NDMC redials through the new relays
            ta, tb = await detect(a, b, at_a[i], at_b[i], up=True, timeout=30)
            if ta != ta or tb != tb:
                raise RuntimeError(f"path {i + 1} did not come up through the bench relay")
        settle = 1.0 if quick else 3.0
        await asyncio.sleep(settle)
        steady = traffic.intervals(time.perf_counter() - settle, time.perf_counter())
        f["interval_p50_ms"] = statistics.median(steady) * 1000 if steady else float("nan")
        f["steady_per_s"] = len(steady) / settle

        # 1. RST cut of path 1
        t_cut = time.perf_counter()
        await relays[0].cut()
        ta, tb = await detect(a, b, at_a[0], at_b[0], up=False, timeout=15)
        f["cut_detect_a_ms"], f["cut_detect_b_ms"] = (ta - t_cut) * 1000, (tb - t_cut) * 1000
        await asyncio.sleep(1.0)
        f["cut_gap_ms"] = (traffic.first_after(t_cut) - t_cut) * 1000
        f["cut_max_interval_ms"] = max(traffic.intervals(t_cut - 0.5, t_cut + 1.0), default=float("nan")) * 1000
        t_back = time.perf_counter()
        await relays[0].start()
        ta, tb = await detect(a, b, at_a[0], at_b[0], up=True, timeout=30)
        f["cut_restore_ms"] = (max(ta, tb) - t_back) * 1000

        # 2. silent stall of path 2
        await asyncio.sleep(0.5)
        t_stall = time.perf_counter()
        relays[1].stall()
        ta, tb = await detect(a, b, at_a[1], at_b[1], up=False, timeout=30)
        f["stall_detect_a_ms"], f["stall_detect_b_ms"] = (ta - t_stall) * 1000, (tb - t_stall) * 1000
        f["stall_gap_ms"] = (traffic.first_after(t_stall) - t_stall) * 1000
        f["stall_max_interval_ms"] = max(traffic.intervals(t_stall - 0.5, ta), default=float("nan")) * 1000
        t_back = time.perf_counter()
        await release(relays[1], reset=quick)
        ta, tb = await detect(a, b, at_a[1], at_b[1], up=True, timeout=60)
        f["stall_restore_ms"] = (max(ta, tb) - t_back) * 1000

        # 3. dead line: both paths silent
        await asyncio.sleep(0.5)
        t_dead = time.perf_counter()
        for r in relays:
            r.stall()
        during = [{"op": "send", "line": line, "text": TEXT} for _ in range(10)]
        accepted = await pipelined(a.home, during)
        ta, tb = await asyncio.gather(until(lambda: no_path_up(a), 30), until(lambda: no_path_up(b), 30))
        f["dead_detect_a_ms"], f["dead_detect_b_ms"] = (ta - t_dead) * 1000, (tb - t_dead) * 1000
        if not quick:

            async def alarmed() -> bool:
                st = await a.call({"op": "status"})
                return any("LINE DOWN" in al["text"] for al in st["alarms"])

            f["dead_alarm_ms"] = (await until(alarmed, 30) - t_dead) * 1000
        t_release = time.perf_counter()
        for r in relays:
            await release(r, reset=quick)

        async def resumed() -> bool:
            return math.isfinite(traffic.first_after(t_release))

        await until(resumed, 60)
        f["dead_recovery_ms"] = (traffic.first_after(t_release) - t_release) * 1000
        await asyncio.sleep(0.5)
    finally:
        traffic.stopping = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 40)

    try:
        # 4. nothing lost
        async def settled() -> bool:
            sa, sb = await a.status_line(), await b.status_line()
            return bool(sa["unreceipted"] == 0 and sa["outbox"] == 0 and sb["their_seq"] == sa["our_seq"])

        await until(settled, 60)
        sa, sb = await a.status_line(), await b.status_line()
        ids = [i for _, _, i in traffic.done] + [r["result"]["id"] for r in accepted if r.get("ok")]
        ids = [i for i in ids if i]
        held = await pipelined(b.home, [{"op": "has", "line": line, "id": i} for i in ids])
        f["sent_durable"] = float(len(traffic.done))
        f["sent_during_outage"] = float(sum(1 for r in accepted if r.get("ok")))
        f["send_failures"] = float(len(traffic.failures) + sum(1 for r in accepted if not r.get("ok")))
        f["missing_at_b"] = float(sum(1 for h in held if not h.get("result")))
        f["our_seq_a"], f["their_seq_b"], f["unreceipted_a"] = sa["our_seq"], sb["their_seq"], sa["unreceipted"]
        f["lost"] = float(f["missing_at_b"] + abs(sa["our_seq"] - sb["their_seq"]) + sa["unreceipted"])
    finally:
        for r in relays:
            await r.cut()
        a.stop()
        b.stop()
    return f


def measure(folder: Path | None = None, *, quick: bool = False, verify: bool = False) -> Figures:
    """``verify``: also time ``redline verify`` over EUCOM's transcript afterwards (the quick run's
    stand-in for verifying the big store)."""
    with tempfile.TemporaryDirectory(prefix="redline-failover-", dir=folder) as tmp:
        f = asyncio.run(run(Path(tmp), quick=quick))
        if verify:
            from bench.memory import verify_cli

            f.update(verify_cli(Path(tmp) / "eucom"))
        return f


def rows(f: Figures) -> list[Row]:
    dead = f"path_dead_after = {f['path_dead_after_s']:g} s, heartbeat every {f['heartbeat_s']:g} s"
    out = [
        Row("steady durable traffic (one in flight)", f["steady_per_s"], "/s",
            note=f"median interval {f['interval_p50_ms']:.1f} ms"),
        Row("cut (RST) of path 1: gap until the next delivery", f["cut_gap_ms"] / 1000, "s", "aim", AIM_FAILOVER_S,
            note=f"longest interval around the cut {f['cut_max_interval_ms']:.1f} ms"),
        Row("cut (RST): status shows path 1 down at EUCOM", f["cut_detect_a_ms"] / 1000, "s", "aim", AIM_DEAD_S),
        Row("cut (RST): status shows path 1 down at NDMC", f["cut_detect_b_ms"] / 1000, "s", "aim", AIM_DEAD_S),
        Row("cut (RST): path 1 up again after the relay returns", f["cut_restore_ms"] / 1000, "s",
            note="NDMC redials with backoff"),
        Row("silent stall of path 2: gap until the next delivery", f["stall_gap_ms"] / 1000, "s", "aim",
            AIM_FAILOVER_S, note=f"longest interval before it was declared dead {f['stall_max_interval_ms']:.1f} ms"),
        Row("silent stall: status shows path 2 down at EUCOM", f["stall_detect_a_ms"] / 1000, "s", "aim",
            AIM_DEAD_S, note=dead),
        Row("silent stall: status shows path 2 down at NDMC", f["stall_detect_b_ms"] / 1000, "s", "aim", AIM_DEAD_S),
        Row("silent stall: path 2 up again after the stall ends", f["stall_restore_ms"] / 1000, "s",
            note=RELEASE_NOTE[bool(f["quick"])]),
        Row("dead line (both paths silent): no path up at EUCOM", f["dead_detect_a_ms"] / 1000, "s", "aim",
            AIM_DEAD_S),
        Row("dead line: no path up at NDMC", f["dead_detect_b_ms"] / 1000, "s", "aim", AIM_DEAD_S),
    ]  # fmt: skip
    if "dead_alarm_ms" in f:
        out.append(Row("dead line: LINE DOWN alarm at EUCOM", f["dead_alarm_ms"] / 1000, "s",
                       note=f"line_down_alarm_seconds = {f['line_down_alarm_s']:g}"))  # fmt: skip
    out += [
        Row("dead line released: next delivery after", f["dead_recovery_ms"] / 1000, "s",
            note=RELEASE_NOTE[bool(f["quick"])]),
        Row("lost (missing at NDMC + seq mismatch + unreceipted)", f["lost"], "",
            note=f"{f['sent_durable']:,.0f} durable sends + {f['sent_during_outage']:.0f} during the outage; "
                 f"{f['send_failures']:.0f} answered with an error (see below)"),
    ]  # fmt: skip
    return out


def report(f: Figures) -> str:
    return table("Failover and dead-line detection (two paths, steady traffic)", rows(f))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter settling; no wait for the LINE DOWN alarm")
    args = parser.parse_args(argv)
    print(report(measure(quick=args.quick)))


if __name__ == "__main__":
    main()
