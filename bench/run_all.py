"""Every benchmark in one run, each figure beside this run's own machine limits (issue 6).

``.venv/bin/python -m bench.run_all [--quick] [--json FILE] [--profile DIR] [--skip PART ...] [--baseline REV]``;
``scripts/bench`` installs the peers' requirements first and runs this.

Parts, in order: machine limits (before), ledger and verification, the line (latency and
throughput between two real stations), peers (Prosody without storage, Prosody with mod_mam in
SQLite, Synapse with SQLite), the line with EUCOM's store on PostgreSQL, local and with a
synchronous standby, beside SQLite (``pg``, bench.pg_line: skipped with one line without
PostgreSQL), failover, notices, a station holding 1,000,000 envelopes (memory,
start-up, ``redline verify``), the CLI, many lines (one station with 100 lines idling, and a mesh of
100 stations on the sans-IO core), machine limits (after). Then the aims of issue 6, each with its
ratio and whether it is met.

``--quick`` (about a minute; CI runs it to keep the suite working, with no thresholds): short
loops, 10,000 notices, 100,000 envelopes instead of 1,000,000, ``redline verify`` on the
failover run's transcript instead of the big store, and the peers only when they are already
installed (tiny loops). Its figures mean nothing.

The machine limits are measured twice, before and after; the ratios use the mean of the two,
and both are printed so a noisy run shows itself. Nothing here passes or fails on time. Every
comparison is also a JSON field whose name ends in ``_ratio`` (under ``"ratios"``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl

from bench import baseline, cli_start, failover, idle, ledger_bench, line_bench, memory, mesh, notices_bench, pg_line
from bench import limits as machine
from bench.common import Figures, Row, fmt, table
from bench.peers import run_peer

REPO = Path(__file__).resolve().parent.parent
PARTS = ("ledger", "line", "peers", "pg", "failover", "notices", "memory", "cli", "lines")


def describe() -> dict[str, str]:
    try:
        rev = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        rev = "?"
    load = os.getloadavg()
    cpu = "?"
    with_model = Path("/proc/cpuinfo")
    if with_model.exists():
        for line in with_model.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with_mem = Path("/proc/meminfo")
    if with_mem.exists():
        kb = int(with_mem.read_text().split()[1])
        mem = f"{kb / 1024**2:.0f} GiB"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "revision": rev or "?",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "pynacl": str(getattr(nacl, "__version__", "?")),
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": str(os.cpu_count()),
        "memory": mem,
        "load": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    }


def busy_elsewhere(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy during ``seconds`` while this process sleeps: other work on the box."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return float("nan")
    return (busy1 - busy0) / max(1, total1 - total0)


def mean_limits(before: Figures, after: Figures) -> Figures:
    out = {k: (before[k] + after[k]) / 2 for k in before}
    out["implied_latency_us"] = machine.implied_latency_us(out)
    return out


# -- ratios -----------------------------------------------------------------------------------------
def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower().replace("µs", "us")).strip("_")


def ratio_fields(section: str, rows: list[Row]) -> dict[str, float]:
    """Every row set against something, as ``SECTION.FIGURE_vs_AGAINST_ratio``: value / reference."""
    out: dict[str, float] = {}
    for r in rows:
        if r.against and r.limit and r.limit == r.limit and r.value == r.value:
            out[f"{section}.{slug(r.what)}_vs_{slug(r.against)}_ratio"] = r.value / r.limit
    return out


# -- peers ------------------------------------------------------------------------------------------
GUARANTEES = {
    "redline": "stored (SQLite FULL) at both stations, signed by the sender, verified and receipted with a signed "
    "receipt that is back and verified at the sender when the send returns (kept in memory there and stored "
    "with its next commit or within a second; the receiver sends its latest receipt again on every path that "
    "opens)",
    "prosody_plain": "nothing durable; routed in memory to bob's open stream; no acknowledgement to the sender",
    "prosody_mam": "stored in the server's SQLite archive (2 rows, rollback journal, FULL) before routing; "
    "no acknowledgement to the sender; nothing signed end to end",
    "synapse": "stored in the server's SQLite database (WAL, FULL) before the PUT answers; "
    "the latency is until bob's /sync returns it; signed by the server only",
}


def peer_section(line: Figures, peers: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """The side-by-side table of redline and its peers, and the redline/peer ratio rows."""
    red_lat, red_tp = line["durable_p50_us"], line["tput_stored_per_s"]
    systems: list[tuple[str, str, float, float, float]] = [
        ("redline (this run)", "redline", red_lat, line["durable_p99_us"], red_tp)
    ]
    pros = peers.get("prosody", {})
    for key, name in (("plain", "Prosody, no storage"), ("mam", "Prosody + mod_mam (SQLite)")):
        if f"{key}_latency_p50_us" in pros:
            systems.append((name, f"prosody_{key}", pros[f"{key}_latency_p50_us"], pros[f"{key}_latency_p99_us"],
                            pros[f"{key}_throughput_per_s"]))  # fmt: skip
    syn = peers.get("synapse", {})
    if "latency_p50_us" in syn:
        systems.append(("Synapse (SQLite)", "synapse", syn["latency_p50_us"], syn["latency_p99_us"],
                        syn["throughput_per_s"]))  # fmt: skip
    head = "| system | latency p50 | latency p99 | throughput | redline/peer latency | redline/peer throughput |"
    lines = ["## Peers on the same box, same run (1 KiB messages, 127.0.0.1)", "", head, "|" + "---|" * 6]
    ratios: dict[str, float] = {}
    for name, key, p50, p99, tp in systems:
        lat_r = red_lat / p50 if key != "redline" else float("nan")
        tp_r = red_tp / tp if key != "redline" else float("nan")
        if key != "redline":
            ratios[f"peers.latency_p50_redline_to_{key}_ratio"] = lat_r
            ratios[f"peers.latency_p99_redline_to_{key}_ratio"] = line["durable_p99_us"] / p99
            ratios[f"peers.throughput_redline_to_{key}_ratio"] = tp_r
        rel = ("", "") if key == "redline" else (f"{lat_r:.3f}x", f"{tp_r:.2f}x")
        lines.append(f"| {name} | {fmt(p50, 'µs')} | {fmt(p99, 'µs')} | {fmt(tp, '/s')} | {rel[0]} | {rel[1]} |")
    for name, why in peers.get("skipped", {}).items():
        lines.append(f"| {name}: skipped | {why} | | | | |")
    lines += ["", "What each side guarantees when the clock stops:", ""]
    lines += [f"- **{k}**: {v}" for k, v in GUARANTEES.items()]
    if pros:
        lines.append(f"- Prosody throughput: a burst of {pros.get('plain_burst_n', 0):,.0f} (plain) and "
                     f"{pros.get('mam_burst_n', 0):,.0f} (mam) from one client, until the other has all; server CPU "
                     f"{pros.get('plain_server_cpu_us_per_msg', math.nan):.0f} / "
                     f"{pros.get('mam_server_cpu_us_per_msg', math.nan):.0f} µs per message, the slixmpp clients "
                     f"{pros.get('plain_client_cpu_us_per_msg', math.nan):.0f} / "
                     f"{pros.get('mam_client_cpu_us_per_msg', math.nan):.0f} µs; archive rows "
                     f"{pros.get('mam_archive_rows', math.nan):,.0f} for "
                     f"{pros.get('mam_sent', math.nan):,.0f} messages")  # fmt: skip
    if syn:
        lines.append(f"- Synapse throughput: {syn.get('burst_n', 0):,.0f} messages on {syn.get('senders', 0):.0f} "
                     f"connections at once, until bob's /sync has all; the PUT alone: p50 "
                     f"{fmt(syn.get('put_p50_us', math.nan), 'µs')}; server CPU "
                     f"{syn.get('server_cpu_us_per_msg', math.nan):,.0f} µs per message")  # fmt: skip
    return "\n".join(lines), ratios


# -- aims -------------------------------------------------------------------------------------------
def aims(res: dict[str, Any], lim: Figures) -> list[dict[str, Any]]:
    """Issue 6's aims: each measured value, its target, ``ratio`` = value / reference, met or not."""
    out: list[dict[str, Any]] = []

    def aim(name: str, value: float, target: float, *, at_most: bool, unit: str, ref: float = 1.0) -> None:
        """``value`` against ``target``; the ratio is value / ``ref`` (``ref`` the base of a relative aim)."""
        ok = (value <= target if at_most else value >= target) if value == value else None
        out.append({"aim": name, "value": value, "unit": unit, "target": target, "at_most": at_most,
                    "ratio": value / ref if ref else math.nan, "ratio_target": target / ref if ref else math.nan,
                    "met": ok})  # fmt: skip

    line = res.get("line", {})
    if line:
        implied = lim["implied_latency_us"]
        aim(
            "durable latency p50 ≤ 1.5x the implied limit",
            line["durable_p50_us"],
            1.5 * implied,
            at_most=True,
            unit="µs",
            ref=implied,
        )
        aim("durable latency p99 < 2 ms", line["durable_p99_us"], 2000.0, at_most=True, unit="µs", ref=2000.0)
        aim("durable throughput ≥ 12,000 msg/s (stored at B)", line["tput_stored_per_s"], 12_000.0, at_most=False,
            unit="/s", ref=12_000.0)  # fmt: skip
    peers = res.get("peers", {})
    pros, syn = peers.get("prosody", {}), peers.get("synapse", {})
    if line and "mam_latency_p50_us" in pros:
        ref = pros["mam_latency_p50_us"]
        aim("latency < 0.5x Prosody+MAM's", line["durable_p50_us"], 0.5 * ref, at_most=True, unit="µs", ref=ref)
        ref = pros["mam_throughput_per_s"]
        aim("throughput ≥ 20x Prosody+MAM's", line["tput_stored_per_s"], 20 * ref, at_most=False, unit="/s", ref=ref)
    if line and "plain_throughput_per_s" in pros:
        ref = pros["plain_throughput_per_s"]
        aim("throughput > Prosody without storage", line["tput_stored_per_s"], ref, at_most=False, unit="/s", ref=ref)
    if line and "latency_p50_us" in syn:
        ref = syn["latency_p50_us"]
        aim("latency < 0.1x Synapse's", line["durable_p50_us"], 0.1 * ref, at_most=True, unit="µs", ref=ref)
    fo = res.get("failover", {})
    if fo:
        gap = max(fo["cut_gap_ms"], fo["stall_gap_ms"]) / 1000
        aim("failover < 3 s (worst of cut and silent stall)", gap, 3.0, at_most=True, unit="s", ref=3.0)
        dead = max(fo["dead_detect_a_ms"], fo["dead_detect_b_ms"], fo["stall_detect_a_ms"], fo["stall_detect_b_ms"])
        aim("dead line (or path) noticed < 3 s", dead / 1000, 3.0, at_most=True, unit="s", ref=3.0)
        aim("nothing lost in failover", fo["lost"], 0.0, at_most=True, unit="", ref=0.0)
    mem = res.get("memory", {})
    ver = mem if "verify_per_s" in mem else res.get("verify", {})
    if ver:
        bound = 1e6 / lim["verify_us"]
        aim(
            "redline verify ≥ 70% of the Ed25519 verify bound",
            ver["verify_per_s"],
            0.7 * bound,
            at_most=False,
            unit="/s",
            ref=bound,
        )
    no = res.get("notices", {})
    if no:
        aim(
            f"notice check against {no['active']:,.0f} < 10 ms (p50)",
            no["add_p50_ms"],
            10.0,
            at_most=True,
            unit="ms",
            ref=10.0,
        )
    close_to_the_machine(res, lim, aim)
    if mem:
        worst = max(mem["full_idle_rss_a_mb"], mem["full_load_rss_a_mb"], mem["full_idle_rss_b_mb"],
                    mem["full_load_rss_b_mb"])  # fmt: skip
        aim(
            f"station RSS < 200 MB at {mem['held_a']:,.0f} envelopes (idle and load)",
            worst,
            200.0,
            at_most=True,
            unit="MB",
            ref=200.0,
        )
    return out


CPU_AIM_US = 80.0  # CPU per message at each station ("close to the machine")
CLI_AIM_S = 0.1


def close_to_the_machine(res: dict[str, Any], lim: Figures, aim: Callable[..., None]) -> None:
    """The aims of issue "Close to the machine": start-up in seconds at any size, verify on every
    core in little memory, half the CPU per message, a CLI that starts fast."""
    mem = res.get("memory", {})
    if mem:
        aim(f"start-up holding {mem['held_a']:,.0f} envelopes ≤ 5 s (clean stop, EUCOM)", mem["startup_a_s"],
            memory.STARTUP_AIM_S, at_most=True, unit="s", ref=memory.STARTUP_AIM_S)  # fmt: skip
    ver = mem if "verify_per_s" in mem else res.get("verify", {})
    if ver:
        bound = 1e6 / lim["verify_us"]
        aim(f"redline verify ≥ {memory.VERIFY_AIM}x one core's Ed25519 verify (both cores)", ver["verify_per_s"],
            memory.VERIFY_AIM * bound, at_most=False, unit="/s", ref=bound)  # fmt: skip
    if "verify_rss_sum_mb" in ver:
        aim("redline verify peak RSS ≤ 300 MB (verifier and workers)", ver["verify_rss_sum_mb"],
            memory.VERIFY_RSS_AIM_MB, at_most=True, unit="MB", ref=memory.VERIFY_RSS_AIM_MB)  # fmt: skip
    line = res.get("line", {})
    if line:
        for side, key in (("A (sender)", "tput_cpu_a_us"), ("B (receiver)", "tput_cpu_b_us")):
            aim(f"CPU per message at {side} ≤ 80 µs", line[key], CPU_AIM_US, at_most=True, unit="µs", ref=CPU_AIM_US)
    many = res.get("lines", {})
    if many:
        got = many["idle"]
        aim(f"idle CPU of one station with {got['lines']:.0f} lines < 5 % of one core", 100 * got["cpu_share"],
            100 * idle.AIM_SHARE, at_most=True, unit="%", ref=100 * idle.AIM_SHARE)  # fmt: skip
        got = many["mesh"]
        aim(f"mesh of {got['stations']} stations: no property broken (nothing lost, no fork)",
            float(len(got["problems"])), 0.0, at_most=True, unit="", ref=0.0)  # fmt: skip
    cli = res.get("cli", {})
    for name in cli_start.COMMANDS if cli else ():
        label = cli_start.label(name)
        aim(f"`redline {label}` as a whole process ≤ 0.1 s", cli[f"{name}_s"], CLI_AIM_S, at_most=True, unit="s",
            ref=CLI_AIM_S)  # fmt: skip


def many_lines(*, quick: bool) -> dict[str, Any]:
    """Issue 12's point 5: one real station with 100 lines idling (``bench.idle``), and a mesh of
    100 stations, every pair paired, on the sans-IO core (``bench.mesh``). Quick: 4 lines, 6 stations."""
    if quick:
        return {"idle": idle.measure(lines=4, seconds=2.0, settle=1.0), "mesh": mesh.measure(6)}
    return {"idle": idle.measure(lines=100), "mesh": mesh.measure(100)}


def before_after(res: dict[str, Any], lim: Figures) -> str:
    """The baseline revision's figures next to this one's, both measured in this run."""
    rev = res.get("baseline", "")
    lines = [f"## Before ({rev}) and after (this revision), measured in this run", "",
             "| figure | before | after | after / before | reference (same run) |",
             "|---|---|---|---|---|"]  # fmt: skip
    line, old = res.get("line", {}), res.get("line_before", {})

    def row(what: str, unit: str, b: float, a: float, ref: str = "") -> None:
        ratio = f"{a / b:.2f}x" if b and b == b and a == a else ""
        lines.append(f"| {what} | {fmt(b, unit)} | {fmt(a, unit)} | {ratio} | {ref} |")

    if line and old:
        row("CPU per message at A (sender)", "µs", old["tput_cpu_a_us"], line["tput_cpu_a_us"],
            f"Ed25519 sign {fmt(lim['sign_us'], 'µs')}")  # fmt: skip
        row("CPU per message at B (receiver)", "µs", old["tput_cpu_b_us"], line["tput_cpu_b_us"],
            f"Ed25519 verify {fmt(lim['verify_us'], 'µs')}")  # fmt: skip
        for side, who in (("a", "A (sender)"), ("b", "B (receiver)")):
            if f"one_cpu_{side}_us" in old and f"one_cpu_{side}_us" in line:
                row(f"CPU per message, one in flight, at {who}", "µs", old[f"one_cpu_{side}_us"],
                    line[f"one_cpu_{side}_us"])  # fmt: skip
        row("durable send-to-receipt, p50", "µs", old["durable_p50_us"], line["durable_p50_us"],
            f"implied limit {fmt(lim['implied_latency_us'], 'µs')}")  # fmt: skip
        row("durable send-to-receipt, p99", "µs", old["durable_p99_us"], line["durable_p99_us"], "aim 2,000 µs")
        row("throughput, stored at B", "/s", old["tput_stored_per_s"], line["tput_stored_per_s"], "aim 12,000 /s")
        row("in-memory session pair, CPU per message (both sides)", "µs", old["mem_cpu_us"], line["mem_cpu_us"])
    cli = res.get("cli", {})
    for name in cli_start.COMMANDS if cli else ():
        if f"before_{name}_s" in cli:
            label = cli_start.label(name)
            row(f"`redline {label}`, whole process", "ms", 1000 * cli[f"before_{name}_s"], 1000 * cli[f"{name}_s"],
                f"`python -c pass` {1000 * cli['python_pass_s']:.0f} ms")  # fmt: skip
    return "\n".join(lines) if len(lines) > 4 else ""


def aims_table(rows: list[dict[str, Any]]) -> str:
    lines = ["## Aims (issue 6, and \"Close to the machine\")", "",
             "| aim | this run | target | ratio (target) | met | miss by |", "|" + "---|" * 6]  # fmt: skip
    for a in rows:
        unit = a["unit"]
        val, tgt = fmt(a["value"], unit), fmt(a["target"], unit)
        met = {True: "yes", False: "**no**", None: "n/a"}[a["met"]]
        miss = ""
        if a["met"] is False and a["target"] and a["value"]:
            if a["at_most"]:
                miss = f"{a['value'] / a['target']:.2f}x over the target"
            else:
                miss = f"{a['target'] / a['value']:.2f}x short of the target"
        elif a["met"] is False:
            miss = f"{a['value']:g}"
        ratio = f"{a['ratio']:.3g}x ({'≤' if a['at_most'] else '≥'} {a['ratio_target']:.3g}x)" if a["ratio"] == a[
            "ratio"] else ""  # fmt: skip
        lines.append(f"| {a['aim']} | {val} | {tgt} | {ratio} | {met} | {miss} |")
    return "\n".join(lines)


def no_nan(obj: Any) -> Any:
    """JSON has no NaN: a figure that could not be measured is written as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [no_nan(v) for v in obj]
    return obj


# -- main -------------------------------------------------------------------------------------------
def timed(name: str, fn: Callable[[], Any], took: dict[str, float]) -> Any:
    print(f"... {name}", flush=True)
    began = time.perf_counter()
    try:
        return fn()
    finally:
        took[name] = time.perf_counter() - began


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about a minute: a smoke run, not figures")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write every figure to FILE")
    parser.add_argument("--profile", metavar="DIR", type=Path, help="py-spy the stations of the line part into DIR")
    parser.add_argument("--skip", nargs="*", default=[], choices=PARTS, help="leave these parts out")
    parser.add_argument("--baseline", default=baseline.BASELINE, metavar="REV",
                        help="the revision measured in this run for the 'before' figures ('none': none)")  # fmt: skip
    args = parser.parse_args(argv)
    quick: bool = args.quick

    info = describe()
    busy = busy_elsewhere()
    info["busy_before"] = f"{100 * busy:.0f}%"
    info["mode"] = "quick (figures mean nothing)" if quick else "full"
    print("# redline benchmarks")
    print()
    print("  ".join(f"{k}: {v}" for k, v in info.items()))
    if busy > 0.10:
        print(f"NOTE: {100 * busy:.0f}% of the CPUs were busy with other work in the second before the start; "
              "expect noisy figures (the same-run limits and ratios absorb part of it).")  # fmt: skip
    started = time.perf_counter()
    took: dict[str, float] = {}
    res: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    before = timed("machine limits (before)", lambda: machine.measure(quick=quick), took)
    if "ledger" not in args.skip:
        res["ledger"] = timed("ledger", lambda: ledger_bench.measure(before, quick=quick), took)
    rev = None if args.baseline == "none" else args.baseline
    if rev:
        res["baseline"] = baseline.describe(rev)
        info["baseline"] = res["baseline"]
        print(f"baseline (the 'before' figures, measured in this run): {res['baseline']}")
    if "line" not in args.skip:
        res["line"] = timed("line", lambda: line_bench.measure(before, quick=quick, profile=args.profile), took)
        if rev:
            try:
                res["line_before"] = timed("line (baseline)", lambda: line_bench.measure_baseline(rev, quick=quick),
                                           took)  # fmt: skip
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                skipped["line (baseline)"] = str(exc)[-300:]
    if "peers" not in args.skip:
        peers: dict[str, Any] = {}
        for name in ("prosody", "synapse"):
            figures, why = timed(f"peer {name}", lambda n=name: run_peer(n, [], quick=quick), took)  # type: ignore[misc]
            if why:
                skipped[name] = why
                print(f"    {name} skipped: {why}")
            else:
                peers[name] = figures
        peers["skipped"] = dict(skipped)
        res["peers"] = peers
    if "pg" not in args.skip:
        try:
            res["pg_line"] = timed("line on PostgreSQL", lambda: pg_line.measure(before, quick=quick), took)
        except pg_line.NoPostgres as exc:
            skipped["line on PostgreSQL"] = str(exc)
            print(f"    line on PostgreSQL skipped: {exc}")
    if "failover" not in args.skip:
        res["failover"] = timed("failover", lambda: failover.measure(quick=quick, verify=quick), took)
        if quick and "verify_per_s" in res["failover"]:
            res["verify"] = {k: v for k, v in res["failover"].items() if k.startswith("verify_")}
    if "notices" not in args.skip:
        res["notices"] = timed("notices", lambda: notices_bench.measure(quick=quick), took)
    if "memory" not in args.skip:
        res["memory"] = timed("memory", lambda: memory.measure(quick=quick, verify=not quick), took)
    if "cli" not in args.skip:
        res["cli"] = timed("cli", lambda: cli_start.measure(quick=quick, rev=rev), took)
    if "lines" not in args.skip:
        res["lines"] = timed("many lines", lambda: many_lines(quick=quick), took)
    after = timed("machine limits (after)", lambda: machine.measure(quick=quick), took)
    lim = mean_limits(before, after)

    ratios: dict[str, float] = {}
    out: list[str] = []
    for title, f in (("Machine limits, measured before", before), ("Machine limits, measured after", after)):
        out.append(table(title, machine.rows(f)))
    ratios.update(ratio_fields("limits", machine.rows(lim)))
    if "ledger" in res:
        rows = ledger_bench.rows(res["ledger"], lim)
        out.append(table("Ledger and verification (issue 2)", rows))
        ratios.update(ratio_fields("ledger", rows))
    if "line" in res:
        rows = line_bench.rows(res["line"], lim)
        out.append(table(f"1. The line: two station processes over TLS, {res['line']['paths']:.0f} paths", rows))
        ratios.update(ratio_fields("line", rows))
    if "pg_line" in res:
        out.append(pg_line.report(res["pg_line"]))
        ratios.update(pg_line.ratios(res["pg_line"]))
    if "peers" in res and "line" in res:
        text, peer_ratios = peer_section(res["line"], res["peers"])
        out.append(text)
        ratios.update(peer_ratios)
    elif "peers" in res:
        out.append("## Peers\n\n(the line part was skipped: nothing to compare)")
    if "failover" in res:
        rows = failover.rows(res["failover"])
        out.append(table("3. Failover and dead-line detection (two paths, steady durable traffic)", rows))
        ratios.update(ratio_fields("failover", rows))
    ver = res.get("verify") or res.get("memory")
    if ver and "verify_per_s" in ver:
        rows = memory.verify_rows(ver, lim)
        out.append(table("4. `redline verify`", rows))
        ratios.update(ratio_fields("verify", rows))
    if "notices" in res:
        rows = notices_bench.rows(res["notices"])
        out.append(table(f"5. Notices: conflict check against {res['notices']['active']:,.0f} active", rows))
        ratios.update(ratio_fields("notices", rows))
    if "memory" in res:
        rows = memory.rows(res["memory"])
        out.append(memory.report(res["memory"]))
        ratios.update(ratio_fields("memory", rows))
    if "cli" in res:
        rows = cli_start.rows(res["cli"])
        out.append(table(f"7. The CLI as a whole process, median of {res['cli']['n']:.0f} runs", rows))
        ratios.update(ratio_fields("cli", rows))
    if "lines" in res:
        rows = idle.rows(res["lines"]["idle"]) + mesh.rows(res["lines"]["mesh"])
        out.append(table("8. Many lines on one station: idle, and a mesh on the sans-IO core", rows))
        ratios.update(ratio_fields("lines", rows))
    compared = before_after(res, lim)
    if compared:
        out.append(compared)
    goals = aims(res, lim)
    for g in goals:
        ratios[f"aims.{slug(g['aim'])}_ratio"] = g["ratio"]
    out.append(aims_table(goals))
    print()
    print("\n\n".join(out))
    print()
    print(f"(ratios against the mean of the two limit runs; {time.perf_counter() - started:.0f} s in all: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in took.items())
          + f"; load average at the end {os.getloadavg()[0]:.2f})")  # fmt: skip
    if skipped:
        print("skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    if args.json:
        doc = {"info": info, "seconds": took, "limits_before": before, "limits_after": after, "limits": lim,
               **res, "aims": goals, "ratios": ratios}  # fmt: skip
        with tempfile.NamedTemporaryFile("w", dir=args.json.parent or ".", delete=False, suffix=".tmp") as tmp:
            json.dump(no_nan(doc), tmp, indent=2, allow_nan=False)
            tmp.write("\n")
        os.replace(tmp.name, args.json)


if __name__ == "__main__":
    main()
