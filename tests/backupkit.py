"""What the tests of crafted and signed backups share: the CLI run as an operator runs it, a copy of
a backup to tamper with, its manifest hashed (and signed) again, and the check that a refusal is
one line and leaves the target empty."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from redline import backup
from redline.home import StationDir

PASSPHRASE = "a passphrase kept apart from the backup"
ENV = {**os.environ, "REDLINE_PWHASH_COST": "interactive", "COLUMNS": "200"}


def rl(*args: str, station: Path, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**ENV, "REDLINE_STATION": str(station)}
    return subprocess.run([sys.executable, "-m", "redline", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, input=stdin)  # fmt: skip


def copy_backup(src: Path, tmp: Path) -> Path:
    dest = tmp / "bk"
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    return dest


def rehash(dest: Path, home: Path | None = None) -> None:
    """The manifest's hashes and sizes recomputed, as anyone who can write the folder can; with
    ``home``, signed again by that station's signing key, as only the station can: what is left to
    refuse a crafted file then is the parser that reads it (``check_backup``)."""
    m = json.loads((dest / "manifest.json").read_text())
    signed = "signature" in m
    files = {rel: (dest / rel).read_bytes() for rel in backup._files(dest)}
    digests = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    m["files"] = {rel: {"sha256": d, "size": len(files[rel])} if signed else d for rel, d in digests.items()}
    if signed and home is not None:
        m["signature"] = backup.sign_manifest(m, StationDir(home).load_keys().signing)
    (dest / "manifest.json").write_text(json.dumps(m))


def refused_untouched(out: subprocess.CompletedProcess[str], target: Path, *words: str) -> None:
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert all(w in out.stderr for w in words), out.stderr
    assert not target.exists() or not any(target.iterdir()), sorted(target.iterdir())  # bad input changes nothing
