"""Every benchmark in one run, each figure beside this run's own machine limits.

``.venv/bin/python -m bench.run_all`` (about 1-2 minutes; ``--quick`` for a smoke run of a few
seconds whose figures mean nothing; ``--json FILE`` also writes every figure; ``--profile DIR``
samples the two station processes with py-spy during the line benchmark).

The machine limits are measured twice, before and after the benchmarks; the ratios use the mean
of the two, and both are printed so a noisy run shows itself. Nothing here passes or fails on time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import time
from pathlib import Path

import nacl

from bench import ledger_bench, line_bench
from bench import limits as machine
from bench.common import Figures

REPO = Path(__file__).resolve().parent.parent


def describe() -> dict[str, str]:
    try:
        rev = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        rev = "?"
    load = os.getloadavg()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "revision": rev or "?",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "pynacl": str(getattr(nacl, "__version__", "?")),
        "cpus": str(os.cpu_count()),
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short loops: a smoke run, not figures")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write every figure to FILE")
    parser.add_argument("--profile", metavar="DIR", type=Path, help="py-spy the stations into DIR")
    args = parser.parse_args(argv)

    info = describe()
    busy = busy_elsewhere()
    info["busy_before"] = f"{100 * busy:.0f}%"
    print("# redline benchmarks")
    print()
    print("  ".join(f"{k}: {v}" for k, v in info.items()))
    if busy > 0.10:
        print(f"NOTE: {100 * busy:.0f}% of the CPUs were busy with other work in the second before the start; "
              "expect noisy figures (the same-run limits and ratios absorb part of it).")  # fmt: skip
    started = time.perf_counter()
    before = machine.measure(quick=args.quick)
    ledger = ledger_bench.measure(before, quick=args.quick)
    line = line_bench.measure(before, quick=args.quick, profile=args.profile)
    after = machine.measure(quick=args.quick)
    lim = mean_limits(before, after)

    print()
    print(machine.report(before).replace("Machine limits (this run)", "Machine limits, measured before"))
    print()
    print(machine.report(after).replace("Machine limits (this run)", "Machine limits, measured after"))
    print()
    print(ledger_bench.report(ledger, lim))
    print()
    print(line_bench.report(line, lim))
    print()
    print(f"(ratios against the mean of the two limit runs; {time.perf_counter() - started:.0f} s in all; "
          f"load average at the end {os.getloadavg()[0]:.2f})")  # fmt: skip
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "info": info,
                    "limits_before": before,
                    "limits_after": after,
                    "limits": lim,
                    "ledger": ledger,
                    "line": line,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
