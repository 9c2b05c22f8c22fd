"""Attack finding 2: a backup taken before a TLS or signing key rotation restores a station the
peer refuses at TLS for good, or that can never sign on its lines again, and nothing said so. A
key made after a backup cannot be in it, so the fix is loud: backups record the key ids they hold,
``keys rotate`` ends by telling the operator to take a backup now, ``doctor`` is CRITICAL while the
last backup lacks a key in force, and a backup taken during a rotation holds the prepared next key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from redline import backup
from redline import keys as keyfiles
from redline.doctor import CRITICAL, OK, Facts, examine
from redline.home import StationDir
from redline.testing import make_station, pair_directly
from tests.procs import free_ports

ENV = {**os.environ, "REDLINE_PWHASH_COST": "interactive", "COLUMNS": "200"}
PASSPHRASE = "a passphrase kept apart from the backup"


def rl(*args: str, station: Path) -> subprocess.CompletedProcess[str]:
    env = {**ENV, "REDLINE_STATION": str(station)}
    return subprocess.run([sys.executable, "-m", "redline", *args], capture_output=True, text=True, env=env,
                          timeout=120, input=PASSPHRASE + "\n")  # fmt: skip


def _backup_finding(home: StationDir) -> tuple[str, str, str]:
    last = json.loads((home.path / backup.LAST_BACKUP).read_text())
    found = [f for f in examine(home, Facts(running=False, now=last["taken_at"] + 1000)) if f.check == "backup"]
    assert len(found) == 1, found
    return found[0].severity, found[0].text, found[0].fix


def _paired(tmp_path: Path) -> StationDir:
    pa, pb = free_ports(2)
    a, b = make_station(tmp_path, "EUCOM", "en", pa), make_station(tmp_path, "NDMC", "ru", pb)
    pair_directly(a, b)
    return a


def test_doctor_is_critical_once_a_tls_rotation_follows_the_last_backup(tmp_path: Path) -> None:
    a = _paired(tmp_path)
    assert rl("backup", str(tmp_path / "bk1"), "--secrets", "encrypt", station=a.path).returncode == 0
    assert _backup_finding(a)[0] == OK
    manifest = json.loads((tmp_path / "bk1" / backup.MANIFEST).read_text())
    assert manifest["keys"] == json.loads((a.path / backup.LAST_BACKUP).read_text())["keys"]
    assert set(manifest["keys"]) == {"signing", "tls"}

    out = rl("keys", "rotate", "--tls", "--root-key", str(a.keys / "root.key"), station=a.path)
    assert out.returncode == 0, out.stderr
    assert "Take a backup now" in out.stdout, out.stdout
    a.load_keys()  # a stopped station: the rotation is filed; the new key is in force once promoted
    keyfiles.promote_tls(a.keys, keyfiles.pending_tls(a.keys)[1])  # type: ignore[index]
    severity, text, fix = _backup_finding(a)
    assert severity == CRITICAL and "TLS" in text and "redline backup" in fix, (severity, text, fix)

    assert rl("backup", str(tmp_path / "bk2"), "--secrets", "encrypt", station=a.path).returncode == 0
    assert _backup_finding(a)[0] == OK


def test_doctor_is_critical_once_a_signing_rotation_follows_the_last_backup(tmp_path: Path) -> None:
    a = _paired(tmp_path)
    assert rl("backup", str(tmp_path / "bk1"), "--secrets", "omit", station=a.path).returncode == 0
    out = rl("keys", "rotate", "--signing", "--root-key", str(a.keys / "root.key"), station=a.path)
    assert out.returncode == 0 and "Take a backup now" in out.stdout, (out.stdout, out.stderr)
    keyfiles.promote_signing(a.keys, a.load_keys().next_cert)  # type: ignore[arg-type]
    severity, text, _ = _backup_finding(a)
    assert severity == CRITICAL and "signing" in text, (severity, text)


def test_a_backup_taken_during_a_rotation_holds_and_restores_the_next_keys(tmp_path: Path) -> None:
    a = _paired(tmp_path)
    root = keyfiles.read_root(a.keys / "root.key", a.load_keys().root_public)
    keyfiles.prepare_signing(a.keys, root, "EUCOM", a.load_keys().fingerprint)
    keyfiles.prepare_tls(a.keys, root, "EUCOM", a.load_keys().fingerprint)
    assert rl("backup", str(tmp_path / "bk"), "--secrets", "encrypt", station=a.path).returncode == 0
    held = backup.held_keys(a.keys)
    assert set(held) == {"signing", "tls", "next_signing", "next_tls"}
    assert json.loads((tmp_path / "bk" / backup.MANIFEST).read_text())["keys"] == held
    target = tmp_path / "restored"
    out = rl("restore", str(tmp_path / "bk"), station=target)
    assert out.returncode == 0, out.stderr
    assert backup.held_keys(target / "keys") == held
    for name in (keyfiles.NEXT_KEY, keyfiles.TLS_NEXT_KEY):
        assert (target / "keys" / name).read_bytes() == (a.keys / name).read_bytes()
    # Once the rotation finishes, the backup still holds the keys in force: doctor has nothing to say.
    keyfiles.promote_signing(a.keys, a.load_keys().next_cert)  # type: ignore[arg-type]
    keyfiles.promote_tls(a.keys, keyfiles.pending_tls(a.keys)[1])  # type: ignore[index]
    assert backup.stale_keys(a.keys, json.loads((a.path / backup.LAST_BACKUP).read_text())) == []
