"""Helpers for the peer benchmarks (run in the bench venv: standard library only, no redline)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from bench.common import Figures, median_p99

BODY = "x" * 1024  # 1 KiB of text, as every other figure in bench/


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    """Until 127.0.0.1:``port`` accepts a connection; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server did not listen on port {port} within {timeout:g} s: {tail(log)}")


def tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def server(
    cmd: Sequence[str], log: Path, *, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` (output to ``log``) for the block; stop that process (by its PID) after."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, env=env)  # fmt: skip
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latency_figures(prefix: str, samples_us: list[float]) -> Figures:
    p50, p99 = median_p99(samples_us)
    return {f"{prefix}_p50_us": p50, f"{prefix}_p99_us": p99, f"{prefix}_n": float(len(samples_us))}


def main_with(measure: Callable[[argparse.Namespace], Figures], parser: argparse.ArgumentParser) -> None:
    """Common command line: ``--json FILE`` and ``--quick``; figures printed and written."""
    parser.add_argument("--quick", action="store_true", help="short loops: a smoke run, not figures")
    parser.add_argument("--json", metavar="FILE", type=Path, help="write the figures to FILE")
    args = parser.parse_args()
    figures = measure(args)
    for k, v in figures.items():
        print(f"{k:40s} {v:,.1f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
