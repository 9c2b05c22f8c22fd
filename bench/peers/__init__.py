"""Peers measured on the same work as redline, each started by the bench on 127.0.0.1 and stopped
by its own PID afterwards: Prosody (Debian package) driven by slixmpp, and Synapse (PyPI) driven by
plain HTTP. The client libraries live in a separate venv (``.bench-venv``, made by
``scripts/bench``), so each peer runs as a subprocess of that venv's Python:
``.bench-venv/bin/python -m bench.peers.prosody --json FILE`` (or ``bench.peers.synapse``).

``run_peer`` is what ``bench.run_all`` calls: it never raises; when something the peer needs is
missing or the peer fails, it returns the reason, and the run goes on without that peer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.common import Figures

REPO = Path(__file__).resolve().parent.parent.parent
BENCH_VENV = Path(os.environ.get("REDLINE_BENCH_VENV", REPO / ".bench-venv"))


def bench_python() -> Path:
    return BENCH_VENV / "bin" / "python"


def missing(peer: str) -> str | None:
    """Why ``peer`` cannot run here (None when it can); cheap, nothing is started."""
    py = bench_python()
    if not py.exists():
        return f"no bench venv at {BENCH_VENV} (scripts/bench makes it; or set REDLINE_BENCH_VENV)"
    module = {"prosody": "slixmpp", "synapse": "synapse"}[peer]
    probe = subprocess.run([str(py), "-c", f"import {module}"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"{module} is not installed in {BENCH_VENV} ({probe.stderr.strip().splitlines()[-1:]})"
    if peer == "prosody" and not (shutil.which("prosody") and shutil.which("prosodyctl")):
        return "prosody is not installed (Debian: apt-get install -y prosody lua-dbi-sqlite3)"
    return None


def run_peer(peer: str, args: list[str], *, quick: bool, timeout: float = 900.0) -> tuple[Figures, str | None]:
    """Run ``bench.peers.PEER`` in the bench venv; (figures, None) or ({}, why it was skipped)."""
    why = missing(peer)
    if why:
        return {}, why
    with tempfile.TemporaryDirectory(prefix=f"redline-peer-{peer}-") as tmp:
        out = Path(tmp) / "figures.json"
        cmd = [str(bench_python()), "-m", f"bench.peers.{peer}", "--json", str(out), *args]
        if quick:
            cmd.append("--quick")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {}, f"{peer} did not finish within {timeout:.0f} s"
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {}, f"{peer} failed (exit {proc.returncode}): {' | '.join(tail)}"
        figures: Figures = json.loads(out.read_text())
        return figures, None
