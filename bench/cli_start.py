"""The ``redline`` command as a whole process: how long ``--version``, ``--help``, ``status``, ``send``
and ``log`` take from exec to exit, next to ``python -c pass`` (the interpreter's own start, the floor)
measured in the same run, and the same commands of the baseline revision (``bench.baseline``).

Two real stations are paired (``tests/procs.paired_stations``, no relays) so ``status`` and ``send``
talk to a running station over its control socket and ``log`` reads beside it, holding 50 messages
first so ``log`` always draws a full page (its default ``--limit``; before 3 Dec 2026 it drew 5 rows
and one more per timed ``send``, 21 to 37 in a full run). Since ab21353 a running station gives
``log`` that page over its control socket, as a duty officer gets it beside a running station; a
baseline older than that reads the store (read-only), as its ``log`` did. Each
command runs ``n`` times after one warm-up run (the page cache holds the files then); the median and
the 90th percentile of the wall time are reported. A command's runs from both trees and
``python -c pass`` are taken in turn (``timed_together``), so a load from other processes that
comes and goes weighs on each alike (both ``log`` runs see the same transcript too). The baseline's ``log`` reads
the same running store (a copy taken back to schema 1 when the old code knows only that), in a copy
of the station's folder whose config.json leaves out the limits the old code does not know and whose
control socket is the running station's (so both ``log`` runs read beside a running station).

Both trees run as an installed package does: ``python -m redline`` with the tree first on the path
(not the venv's console script, which an editable install points at the shared checkout, whatever
tree the bench runs from), and with the tree's bytecode compiled beforehand (``compileall``, as pip
does at install). Before 3 Dec 2026 neither was so: with ``PYTHONDONTWRITEBYTECODE`` set in the
bench's environment every run compiled redline's modules again (about 30-40 ms of a command's time).

Run alone: ``.venv/bin/python -m bench.cli_start [--quick] [--baseline REV]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import baseline as base
from bench.common import Figures, Row, percentile, table
from tests.procs import StationProc, paired_stations

AIM_S = 0.1
LOG_ROWS = 50  # 'redline log' shows the last 50 entries unless told otherwise
COMMANDS = ("version", "help", "status", "send", "log")


HERE = Path(__file__).resolve().parent.parent  # the tree this bench belongs to


def installed(tree: Path) -> None:
    """Compile ``tree``'s package to bytecode, as an install does (no command then compiles at start)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "redline")], check=True, timeout=300,
                   capture_output=True)  # fmt: skip


Run = tuple[list[str], Path | None, dict[str, str] | None]  # argv, working folder, environment


def timed_together(runs: dict[str, Run], n: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    """The wall times (s) of ``n`` runs of each command after one warm-up, and each one's exit
    status. The runs are taken in turn (one of each, then again), so a load that comes and goes on
    the machine (other processes) weighs on each command alike: their ratios hold when the absolute
    times do not."""
    samples: dict[str, list[float]] = {k: [] for k in runs}
    codes = dict.fromkeys(runs, 0)
    for i in range(n + 1):
        for key, (argv, cwd, env) in runs.items():
            began = time.perf_counter()
            out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, timeout=120)
            if i:
                samples[key].append(time.perf_counter() - began)
            codes[key] = out.returncode
    return samples, codes


def schema_1_copy(store: Path, dest: Path) -> None:
    """A copy of a live store (SQLite's backup, nothing else touches its files) taken back to schema 1."""
    src = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)
        dst.executescript(
            "DROP TABLE merkle; DROP TABLE chain_bytes; DROP INDEX envelopes_ops; "
            "ALTER TABLE envelopes DROP COLUMN prio; UPDATE meta SET value='1' WHERE key='schema_version'; "
            "DELETE FROM meta WHERE key='clean_close';"
        )
        dst.commit()
    finally:
        src.close()
        dst.close()


def old_config(tree: Path, config: Path) -> None:
    """Leave out of ``config`` the limits the code in ``tree`` does not know (it refuses them)."""
    code = ("import dataclasses, json; from redline.config import Limits; "
            "print(json.dumps([f.name for f in dataclasses.fields(Limits)]))")
    known = set(base.run_python(tree, code, timeout=60))
    obj = json.loads(config.read_text())
    obj["limits"] = {k: v for k, v in obj.get("limits", {}).items() if k in known}
    config.write_text(json.dumps(obj, indent=2))


def label(name: str) -> str:
    """How a command of ``COMMANDS`` is written: ``--version``, ``--help``, ``status``..."""
    return f"--{name}" if name in ("version", "help") else name


def argvs(redline: list[str], home: Path, line: str, log_home: Path) -> dict[str, list[str]]:
    return {
        "version": [*redline, "--version"],
        "help": [*redline, "--help"],
        "status": [*redline, "status", "--station", str(home)],
        "send": [*redline, "send", "--station", str(home), line, "cli start bench"],
        "log": [*redline, "log", "--station", str(log_home), line],
    }


async def run(root: Path, n: int, rev: str | None) -> Figures:
    f: Figures = {"n": float(n)}
    a, b, line, _ = await paired_stations(root, relays=False)
    try:
        # A full page for log: its default --limit of rows, whatever n (the sends the bench times
        # only add to a transcript log already shows 50 rows of; rendering them is a third of log).
        for i in range(LOG_ROWS):
            await a.call({"op": "send", "line": line, "text": f"hello {i}: a line of the transcript"})
        with contextlib.ExitStack() as stack:
            installed(HERE)
            redline = [sys.executable, "-m", "redline"]  # the tree's own package, from its folder
            trees = {"": (HERE, argvs(redline, a.home, line, a.home))}
            if rev:
                old = stack.enter_context(base.tree(rev))
                trees["before_"] = (old, argvs(redline, a.home, line, before_home(old, root, a)))
                installed(old)
            passes: list[float] = []
            for name in COMMANDS:  # the command of each tree in turn, and the interpreter alone
                runs: dict[str, Run] = {"pass": ([sys.executable, "-c", "pass"], None, None)}
                runs.update({prefix: (cmds[name], tree, base.env(tree)) for prefix, (tree, cmds) in trees.items()})
                samples, codes = await asyncio.to_thread(timed_together, runs, n)
                passes += samples.pop("pass")
                for prefix, times in samples.items():
                    f[f"{prefix}{name}_s"] = statistics.median(times)
                    f[f"{prefix}{name}_p90_s"] = percentile(times, 0.9)
                    f[f"{prefix}{name}_exit"] = float(codes[prefix])
            f["python_pass_s"], f["python_pass_p90_s"] = statistics.median(passes), percentile(passes, 0.9)
    finally:
        a.stop()
        b.stop()
    return f


def before_home(old: Path, root: Path, a: StationProc) -> Path:
    """The folder the baseline's ``log`` reads: a copy of ``a``'s whose store is ``a``'s running one
    (or a copy of it at schema 1 when the old code knows only that)."""
    model = old / "redline" / "ledger" / "model.py"
    log_home = root / "eucom-before"
    shutil.copytree(a.home, log_home, ignore=shutil.ignore_patterns("ledger.sqlite*", "control.sock", "*.log"))
    old_config(old, log_home / "config.json")
    if not model.exists() or "SCHEMA_VERSION = 1" in model.read_text():  # the old code refuses schema 2
        schema_1_copy(a.home / "ledger.sqlite", log_home / "ledger.sqlite")
    else:  # the running station's store itself, as 'now' reads it (its WAL beside the real file)
        (log_home / "ledger.sqlite").symlink_to(a.home / "ledger.sqlite")
    # The station answers there too, as beside 'now': a reader of a running station's store leaves
    # the raw check of its files to the station (without this, 'before' checked them: about 80 ms more).
    (log_home / "control.sock").symlink_to(a.home / "control.sock")
    return log_home


def measure(folder: Path | None = None, *, quick: bool = False, rev: str | None = base.BASELINE) -> Figures:
    with tempfile.TemporaryDirectory(prefix="redline-cli-start-", dir=folder) as tmp:
        return asyncio.run(run(Path(tmp), 3 if quick else 15, rev))


def rows(f: Figures) -> list[Row]:
    out = [Row("`python -c pass` (the interpreter alone)", f["python_pass_s"] * 1000, "ms",
               note=f"p90 {f['python_pass_p90_s'] * 1000:.0f} ms")]  # fmt: skip
    for name in COMMANDS:
        exit_note = "" if not f.get(f"{name}_exit") else f"; exit {f[f'{name}_exit']:.0f}"
        note = f"p90 {f[f'{name}_p90_s'] * 1000:.0f} ms; {f[f'{name}_s'] / f['python_pass_s']:.1f}x python -c pass"
        if f"before_{name}_s" in f:
            bexit = f" (exit {f[f'before_{name}_exit']:.0f})" if f.get(f"before_{name}_exit") else ""
            note += f"; before: {f[f'before_{name}_s'] * 1000:.0f} ms{bexit}"
        out.append(Row(f"`redline {label(name)}`, whole process", f[f"{name}_s"] * 1000, "ms", "aim", AIM_S * 1000,
                       note=note + exit_note))  # fmt: skip
    return out


def report(f: Figures) -> str:
    return table(f"CLI start: the command as a whole process, median of {f['n']:.0f} runs", rows(f))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs each instead of 15")
    parser.add_argument("--baseline", default=base.BASELINE, help="revision for the 'before' figures ('none': none)")
    args = parser.parse_args(argv)
    print(report(measure(quick=args.quick, rev=None if args.baseline == "none" else args.baseline)))


if __name__ == "__main__":
    main()
