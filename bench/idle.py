"""The idle cost of one real station with many lines (issue 12: "a station with 100 paired lines
idles under 5 % of one core with heartbeats on every path, and its memory per line is reported").

One hub station runs as its own ``redline serve`` process with two listening addresses; N peer
stations (100 by default), each paired with it (``redline.testing.pair_directly``: what a finished
pairing ceremony stores), run as real ``Station`` objects in this process's event loop and dial
both of the hub's addresses: N lines, 2N TLS connections, a heartbeat each second on every path
in each direction, nothing else (no traffic, no line tests). Once every line is in sync on both
paths, and ``--settle`` seconds later (by default past ``checkpoint_every_seconds``: from then on a
line that stays idle is in its steady state, its last checkpoint covering everything), the hub's
CPU (user + kernel, from /proc) is read over ``--seconds`` and given as a share of one core, with
its resident memory; the memory per line is the hub's RSS with N lines up less its RSS before any
peer connected (its N sessions loaded, no path up), divided by N, beside the whole RSS over N.

Run alone: ``.venv/bin/python -m bench.idle [--lines N] [--seconds S] [--settle S] [--json FILE]
[--profile DIR] [--baseline REV [--rounds N]]`` (``--profile``: the hub sampled with py-spy over the
measured window, CPU only, as ``bench.line_bench`` does; ``python -m bench.profile_top
DIR/idle-hub.txt`` summarises it. ``--baseline``: the same measurement of revision REV's station,
this code's and REV's runs taking turns, ``--rounds`` of each, in one run of this busy machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.baseline import describe, run_python, tree
from bench.common import Figures, Row, table
from redline.config import Limits
from redline.home import StationDir
from redline.testing import free_ports, make_station, pair_directly
from tests.procs import StationProc

AIM_SHARE = 0.05  # of one core
SETTLE = Limits().checkpoint_every_seconds + 5.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(root: Path, n: int, seconds: float, settle: float, profile: Path | None = None) -> Figures:
    from bench.line_bench import profiled
    from redline.station import Station

    limits = Limits(test_times_utc=())  # no scheduled line tests: idle is heartbeats only
    ports = free_ports(2 + n)
    hub = StationDir(root / "HUB")
    hub.init(name="HUB", lang="en", listen=[f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}"], limits=limits)
    peers = [make_station(root, f"P{i:03d}", "en", ports[2 + i], limits) for i in range(n)]
    for p in peers:
        pair_directly(hub, p)  # the hub invited: each peer dials both of its paths
    proc = StationProc(hub.path)
    await proc.start()
    assert proc.proc is not None
    pid = proc.proc.pid
    stations = [Station(p) for p in peers]
    try:
        await asyncio.sleep(1.0)
        rss_no_paths = _rss_mb(pid)
        for st in stations:
            await st.start()
        began = time.monotonic()
        while True:
            lines = (await proc.call({"op": "status"}))["lines"]
            up = sum(1 for ln in lines if ln["synced"] and sum(p["up"] for p in ln["paths"].values()) == 2)
            if up == n:
                break
            if time.monotonic() - began > 120:
                raise RuntimeError(f"only {up} of {n} lines in sync on both paths after 120 s")
            await asyncio.sleep(0.5)
        took = time.monotonic() - began
        await asyncio.sleep(settle)  # the handshakes' after-effects, and the first checkpoints' timer
        async with profiled(profile, "idle", {"hub": proc}, idle=False):
            cpu0, t0 = _cpu_s(pid), time.monotonic()
            await asyncio.sleep(seconds)
            cpu1, t1 = _cpu_s(pid), time.monotonic()
        rss = _rss_mb(pid)
        lines = (await proc.call({"op": "status"}))["lines"]
        still = sum(1 for ln in lines if sum(p["up"] for p in ln["paths"].values()) == 2)
    finally:
        for st in stations:
            await st.close()
        proc.stop()
    return {
        "lines": float(n), "paths_up": float(2 * still), "connect_s": took, "seconds": t1 - t0,
        "cpu_share": (cpu1 - cpu0) / (t1 - t0), "rss_mb": rss, "rss_no_paths_mb": rss_no_paths,
        "mb_per_line": rss / n, "mb_per_line_paths": (rss - rss_no_paths) / n,
    }  # fmt: skip


def measure(
    folder: Path | None = None, *, lines: int = 100, seconds: float = 20.0, settle: float = SETTLE,
    profile: Path | None = None,
) -> Figures:  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="redline-idle-", dir=folder) as tmp:
        return asyncio.run(run(Path(tmp), lines, seconds, settle, profile))


def measure_in(root: Path, *, lines: int, seconds: float, settle: float) -> Figures:
    """``measure`` (this file's, the same procedure) with the station code of the tree ``root``."""
    code = (f"import json, runpy; m = runpy.run_path({str(Path(__file__).resolve())!r}); "
            f"print(json.dumps(m['measure'](lines={lines}, seconds={seconds}, settle={settle})))")  # fmt: skip
    figures: Figures = run_python(root, code, timeout=600 + settle + seconds)
    return figures


def against(rev: str, rounds: int, *, lines: int, seconds: float, settle: float) -> list[tuple[Figures, Figures]]:
    """(this code, revision ``rev``) figures, ``rounds`` times, taking turns (which goes first turns
    too): on a shared machine only what is measured side by side compares."""
    here = Path(__file__).resolve().parent.parent
    out = []
    with tree(rev) as old:
        for i in range(rounds):
            order = [here, old] if i % 2 == 0 else [old, here]
            got = {root: measure_in(root, lines=lines, seconds=seconds, settle=settle) for root in order}
            out.append((got[here], got[old]))
    return out


def comparison(rev: str, runs: list[tuple[Figures, Figures]]) -> list[Row]:
    def median(key: str, side: int) -> float:
        return statistics.median(r[side][key] for r in runs)

    each = ", ".join(f"{100 * now['cpu_share']:.2f} / {100 * old['cpu_share']:.2f}" for now, old in runs)
    n = int(runs[0][0]["lines"])
    return [
        Row(f"idle CPU of one station with {n} lines, this code (median of {len(runs)})",
            round(100 * median("cpu_share", 0), 2), "%", "aim", 100 * AIM_SHARE,
            note=f"this / {rev} each round: {each} %"),
        Row(f"the same, revision {rev}", round(100 * median("cpu_share", 1), 2), "%", "aim", 100 * AIM_SHARE,
            note=describe(rev)[:70]),
        Row("this code / that revision", round(median("cpu_share", 0) / median("cpu_share", 1), 2), "x"),
        Row("memory per line, this code / that revision", round(median("mb_per_line_paths", 0) * 1024), "KiB",
            note=f"{median('mb_per_line_paths', 1) * 1024:,.0f} KiB at {rev}; paths up, over the station without them"),
    ]  # fmt: skip


def rows(f: Figures) -> list[Row]:
    n = int(f["lines"])
    return [
        Row(f"idle CPU of one station with {n} lines, {int(f['paths_up'])} paths up",
            round(100 * f["cpu_share"], 2), "%", "aim", 100 * AIM_SHARE,
            note=f"of one core, over {f['seconds']:.0f} s; heartbeat every 1 s per path"),
        Row("its resident memory", f["rss_mb"], "MB", note=f"{f['rss_no_paths_mb']:.0f} MB with the {n} lines loaded "
            "and no path up"),
        Row("memory per line", round(f["mb_per_line_paths"] * 1024), "KiB",
            note=f"paths up, over the same station without them; {f['mb_per_line'] * 1024:,.0f} KiB: all of its RSS "
            f"/ {n}"),
        Row(f"all {n} lines in sync on both paths after start", f["connect_s"], "s"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=SETTLE, help="seconds idle before measuring")
    parser.add_argument("--baseline", metavar="REV", help="measure revision REV's station too, taking turns")
    parser.add_argument("--rounds", type=int, default=2, help="with --baseline: runs of each")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--profile", metavar="DIR", type=Path, help="sample the hub with py-spy into DIR")
    args = parser.parse_args(argv)
    if args.baseline:
        runs = against(args.baseline, args.rounds, lines=args.lines, seconds=args.seconds, settle=args.settle)
        print(table("One station with many lines, idle, against an older revision", comparison(args.baseline, runs)))
        print()
        print(table("The last round, this code", rows(runs[-1][0])))
        if args.json:
            args.json.write_text(json.dumps({"this": [r[0] for r in runs], args.baseline: [r[1] for r in runs]}))
        return
    f = measure(lines=args.lines, seconds=args.seconds, settle=args.settle, profile=args.profile)
    print(table("One station with many lines, idle", rows(f)))
    if args.json:
        args.json.write_text(json.dumps(f, indent=2))


if __name__ == "__main__":
    main()
