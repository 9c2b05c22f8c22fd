"""The code before: an older revision of redline, measured in the same run as this one.

``tree(rev)`` unpacks ``git archive REV`` into a temporary folder; ``run_module(tree, module,
code)`` runs Python there (its own ``redline``, ``bench`` and ``tests`` first on the path, the
current working directory too, so nothing of this checkout leaks in) with this interpreter and
venv, and returns what the code printed as JSON on its last line. The bench parts use it for
their "before" columns: the old revision's own ``bench.line_bench`` (CPU per message, latency,
throughput) and its CLI's start time. Nothing here passes or fails on time.

``BASELINE`` is the revision before the work of issue "Close to the machine" (start-up, verify,
CPU per message, CLI start); ``run_all --baseline REV`` picks another, ``--baseline none`` none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The git repository the revisions come from: this checkout, unless $REDLINE_BASELINE_REPO names one
# (a copy of the tree outside git, as when the bench runs from an exported snapshot).
REPO = Path(os.environ.get("REDLINE_BASELINE_REPO") or Path(__file__).resolve().parent.parent)
BASELINE = "865ebcb"


@contextmanager
def tree(rev: str) -> Iterator[Path]:
    """The files of revision ``rev``, unpacked in a temporary folder (removed afterwards)."""
    folder = Path(tempfile.mkdtemp(prefix=f"redline-baseline-{rev[:12]}-"))
    try:
        archive = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, timeout=120, check=True)
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True, timeout=120)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def env(root: Path) -> dict[str, str]:
    """The environment for a process that must run the code in ``root``, not this checkout's."""
    return {**os.environ, "PYTHONPATH": str(root)}


def run_python(root: Path, code: str, timeout: float = 1800) -> Any:
    """Run ``code`` with ``root``'s redline; the JSON its last line of output holds."""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env(root), capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(f"the baseline run failed ({out.returncode}): {out.stderr[-1500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def describe(rev: str) -> str:
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%h %cs %s", rev], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip()[:100] or rev
    except OSError:
        return rev
